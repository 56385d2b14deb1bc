package manifests_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The real node's checks

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// ssemeshBinary builds cmd/ssemesh from the main module once, or returns
// $SSEMESH_BIN.
func ssemeshBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("SSEMESH_BIN"); p != "" {
			binPath, binErr = filepath.Abs(p)
			return
		}
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			binErr = err
			return
		}
		gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
		if err != nil || !bytes.HasPrefix(gomod, []byte("module github.com/ssemesh/ssemesh\n")) {
			binErr = fmt.Errorf("%s is not the ssemesh main module (%v); set SSEMESH_BIN to an ssemesh binary", root, err)
			return
		}
		if binDir, binErr = os.MkdirTemp("", "ssemesh-k8s-test-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "ssemesh")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/ssemesh")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/ssemesh in %s: %v\n%s", root, err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// checkConfig runs `ssemesh run FLAGS --check` as the container would, with
// the ConfigMap's file in place of the mounted one and exactly env as the
// environment.
func checkConfig(t *testing.T, w *workload, env map[string]string) (exit int, stdout, stderr string) {
	t.Helper()
	bin := ssemeshBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, w.configKey)
	if err := os.WriteFile(file, []byte(w.rawConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"run"}
	for _, a := range w.flags {
		if a == w.configPath {
			a = file
		} else if strings.HasSuffix(a, "="+w.configPath) {
			a = strings.TrimSuffix(a, w.configPath) + file
		}
		args = append(args, a)
	}
	args = append(args, "--check")
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		exit = ee.ExitCode()
	default:
		t.Fatalf("running %s: %v", bin, err)
	}
	return exit, out.String(), errb.String()
}

// TestNodeConfigCheck validates every workload's node configuration with
// ssemesh itself: valid with the environment the container gets; refused
// without each secret (so each really comes from the Secret); refused with
// the template's placeholder values.
func TestNodeConfigCheck(t *testing.T) {
	s := manifests(t)
	ssemeshBinary(t) // one failure, not one per subtest, when it cannot be built
	for _, w := range workloads(t) {
		t.Run(w.name, func(t *testing.T) {
			env, err := containerEnv(w.container, testPodEnv(w.kind, w.name), testSecrets(s), s.configMaps)
			if err != nil {
				t.Fatal(err)
			}
			t.Run("valid", func(t *testing.T) {
				exit, out, errOut := checkConfig(t, w, env)
				if exit != 0 {
					t.Fatalf("ssemesh run --check exited %d: %s%s", exit, out, errOut)
				}
				if !strings.Contains(out, "mesh true") {
					t.Fatalf("ssemesh run --check: %q, want the node in a mesh", out)
				}
			})
			for _, se := range secretEnv {
				t.Run("without "+se.env, func(t *testing.T) {
					e := maps.Clone(env)
					delete(e, se.env)
					exit, out, errOut := checkConfig(t, w, e)
					// The key's own check, or, for a ${VAR} reference, the
					// interpolation's.
					if exit != 2 || !strings.Contains(errOut, "config: "+se.key+":") && !strings.Contains(errOut, "environment variable "+se.env+" is not set") {
						t.Fatalf("ssemesh run --check without %s: exit %d, %q%q; want exit 2 naming %s", se.env, exit, out, errOut, se.key)
					}
				})
			}
			t.Run("placeholders", func(t *testing.T) {
				placeholders := map[string]map[string]string{}
				for name, sec := range s.secrets {
					placeholders[name] = secretKeys(sec)
				}
				e, err := containerEnv(w.container, testPodEnv(w.kind, w.name), placeholders, s.configMaps)
				if err != nil {
					t.Fatal(err)
				}
				exit, out, errOut := checkConfig(t, w, e)
				if exit != 2 || !strings.Contains(errOut, "config: ") {
					t.Fatalf("ssemesh run --check with the placeholders of %s: exit %d (%q%q), want 2: an unedited template must not start a node", exampleSecrets, exit, out, errOut)
				}
				t.Logf("refused as it should be: %s", strings.TrimSpace(errOut))
			})
		})
	}
}
