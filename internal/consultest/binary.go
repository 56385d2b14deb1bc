// Package consultest runs real Consul agents for tests.
//
// Agents are started from a Consul binary built by deploy/consul/build.sh (or
// named by $SSEMESH_CONSUL_BIN, or found on PATH) in -dev mode on 127.0.0.1,
// with every port picked free so that agents of parallel tests and of other
// processes never clash. The package is meant to be imported only from
// _test.go files.
package consultest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ConsulVersion is the Consul release that deploy/consul builds; it keys the
// cache directory so a version bump never picks up a stale binary.
const ConsulVersion = "v1.14.11"

// EnvBinary names an explicit Consul binary, overriding the cache and PATH.
const EnvBinary = "SSEMESH_CONSUL_BIN"

const buildHint = "run deploy/consul/build.sh (or scripts/install-test-deps.sh) to build it, or set " + EnvBinary

// Binary returns the path of the Consul binary: $SSEMESH_CONSUL_BIN when set,
// else the binary cached by deploy/consul/build.sh, else `consul` on PATH.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("consultest: $%s: %w", EnvBinary, err)
		}
		return p, nil
	}
	cached, cacheErr := CachedBinaryPath()
	if cacheErr == nil {
		if err := checkExecutable(cached); err == nil {
			return cached, nil
		}
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	if cacheErr != nil {
		return "", fmt.Errorf("consultest: no consul binary (cache: %w; none on PATH); %s", cacheErr, buildHint)
	}
	return "", fmt.Errorf("consultest: no consul binary at %s nor on PATH; %s", cached, buildHint)
}

// CachedBinaryPath returns where deploy/consul/build.sh puts the binary:
// ${SSEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ssemesh}/consul-<version>/consul.
// The rule is spelled out rather than taken from os.UserCacheDir so that it
// matches the shell script on every platform.
func CachedBinaryPath() (string, error) {
	root := os.Getenv("SSEMESH_CACHE")
	if root == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("consultest: locating cache directory: %w", err)
			}
			base = filepath.Join(home, ".cache")
		}
		root = filepath.Join(base, "ssemesh")
	}
	return filepath.Join(root, "consul-"+ConsulVersion, "consul"), nil
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", path)
	}
	return nil
}

// Require returns the Consul binary or ends the test. Under CI (CI=true) a
// missing binary is a failure, never a skip, so a broken CI image cannot pass
// silently; elsewhere the test is skipped with instructions.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err == nil {
		return bin
	}
	if isCI() {
		t.Fatalf("consul agent required under CI: %v", err)
	}
	t.Skipf("skipping: consul agent not available: %v", err)
	return ""
}

func isCI() bool {
	return os.Getenv("CI") == "true"
}
