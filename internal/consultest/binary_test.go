package consultest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func TestBinaryResolution(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares files under dir and returns the env to set and the
		// path Binary must return ("" when an error is expected).
		setup   func(t *testing.T, dir string) (env map[string]string, want string)
		wantErr string
	}{
		{
			name: "explicit binary wins over cache and PATH",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				explicit := filepath.Join(dir, "explicit", "consul")
				writeFile(t, explicit, 0o755)
				writeFile(t, filepath.Join(dir, "cache", "consul-"+ConsulVersion, "consul"), 0o755)
				writeFile(t, filepath.Join(dir, "bin", "consul"), 0o755)
				return map[string]string{
					EnvBinary:       explicit,
					"SSEMESH_CACHE": filepath.Join(dir, "cache"),
					"PATH":          filepath.Join(dir, "bin"),
				}, explicit
			},
		},
		{
			name: "explicit binary missing is an error, not a fallback",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				writeFile(t, filepath.Join(dir, "bin", "consul"), 0o755)
				return map[string]string{
					EnvBinary: filepath.Join(dir, "nope"),
					"PATH":    filepath.Join(dir, "bin"),
				}, ""
			},
			wantErr: EnvBinary,
		},
		{
			name: "explicit binary not executable",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				p := filepath.Join(dir, "consul")
				writeFile(t, p, 0o644)
				return map[string]string{EnvBinary: p}, ""
			},
			wantErr: "not executable",
		},
		{
			name: "SSEMESH_CACHE cache before PATH",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				cached := filepath.Join(dir, "cache", "consul-"+ConsulVersion, "consul")
				writeFile(t, cached, 0o755)
				writeFile(t, filepath.Join(dir, "bin", "consul"), 0o755)
				return map[string]string{
					"SSEMESH_CACHE": filepath.Join(dir, "cache"),
					"PATH":          filepath.Join(dir, "bin"),
				}, cached
			},
		},
		{
			name: "XDG_CACHE_HOME when SSEMESH_CACHE is unset",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				cached := filepath.Join(dir, "xdg", "ssemesh", "consul-"+ConsulVersion, "consul")
				writeFile(t, cached, 0o755)
				return map[string]string{"XDG_CACHE_HOME": filepath.Join(dir, "xdg"), "PATH": dir}, cached
			},
		},
		{
			name: "HOME/.cache as the last cache default",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				cached := filepath.Join(dir, "home", ".cache", "ssemesh", "consul-"+ConsulVersion, "consul")
				writeFile(t, cached, 0o755)
				return map[string]string{"HOME": filepath.Join(dir, "home"), "PATH": dir}, cached
			},
		},
		{
			name: "PATH when nothing is cached",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				onPath := filepath.Join(dir, "bin", "consul")
				writeFile(t, onPath, 0o755)
				return map[string]string{"SSEMESH_CACHE": filepath.Join(dir, "empty"), "PATH": filepath.Join(dir, "bin")}, onPath
			},
		},
		{
			name: "nothing anywhere names the build script",
			setup: func(t *testing.T, dir string) (map[string]string, string) {
				return map[string]string{"SSEMESH_CACHE": filepath.Join(dir, "empty"), "PATH": dir}, ""
			},
			wantErr: "deploy/consul/build.sh",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, k := range []string{EnvBinary, "SSEMESH_CACHE", "XDG_CACHE_HOME"} {
				t.Setenv(k, "")
			}
			env, want := tc.setup(t, dir)
			for k, v := range env {
				t.Setenv(k, v)
			}
			got, err := Binary()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Binary() = %q, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != want {
				t.Fatalf("Binary() = %q, %v; want %q", got, err, want)
			}
		})
	}
}

// recordingTB captures how Require ends a test without ending the real one.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestRequireWithoutBinary(t *testing.T) {
	tests := []struct {
		ci        string
		wantFatal bool
	}{
		{ci: "true", wantFatal: true},
		{ci: "", wantFatal: false},
		{ci: "false", wantFatal: false},
	}
	for _, tc := range tests {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv(EnvBinary, "")
			t.Setenv("SSEMESH_CACHE", dir)
			t.Setenv("PATH", dir)
			t.Setenv("CI", tc.ci)

			rec := &recordingTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Require(rec)
				t.Error("Require returned without a binary")
			}()
			<-done

			if tc.wantFatal {
				if rec.fatal == "" || rec.skip != "" {
					t.Fatalf("fatal=%q skip=%q; want a failure under CI", rec.fatal, rec.skip)
				}
				return
			}
			if rec.skip == "" || rec.fatal != "" {
				t.Fatalf("fatal=%q skip=%q; want a skip outside CI", rec.fatal, rec.skip)
			}
			if !strings.Contains(rec.skip, "deploy/consul/build.sh") {
				t.Fatalf("skip message %q does not name deploy/consul/build.sh", rec.skip)
			}
		})
	}
}

func TestPickPorts(t *testing.T) {
	for i := 0; i < 20; i++ {
		p, err := pickPorts()
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for _, port := range []int{p.http, p.serfLAN, p.serfWAN, p.server} {
			if port <= 0 || seen[port] {
				t.Fatalf("ports %+v: want four distinct positive ports", p)
			}
			seen[port] = true
		}
	}
}
