package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/cmd/ssemesh/cueimport"
	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/node"
)

// cueTestdata is where the CUE SSE Proxy configurations of the converter's
// tests are.
const cueTestdata = "cueimport/testdata"

func TestImportCueExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(cueTestdata, "one-backend.yaml")
	out := filepath.Join(dir, "node.yaml")
	copyOfGood := filepath.Join(dir, "sse-proxy.yaml")
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyOfGood, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // a part of standard output ("" when it must be empty)
		stderr string // a part of standard error
		file   string // a file that must have been written
	}{
		{"to standard output", []string{good}, 0, "# ssemesh configuration converted by ssemesh import-cue from", "import-cue: warning: trusted_proxies: ", ""},
		{"--out before the file", []string{"--out", out, good}, 0, "", "import-cue: wrote " + out + ": 1 back end(s), 1 warning(s)", out},
		{"--out after the file", []string{good, "--out", out}, 0, "", "import-cue: wrote " + out, out},
		{"an unreadable file", []string{filepath.Join(dir, "none.yaml")}, exitUsage, "", "none.yaml: cannot read the CUE SSE Proxy configuration: no such file or directory", ""},
		{"a directory", []string{dir}, exitUsage, "", "cannot read the CUE SSE Proxy configuration: is a directory", ""},
		{"not YAML", []string{filepath.Join(cueTestdata, "not-yaml.yaml")}, exitUsage, "", "not-yaml.yaml: not a YAML file: line 1", ""},
		{"no back end", []string{filepath.Join(cueTestdata, "no-backends.yaml")}, exitUsage, "", "config: backends: " + filepath.Join(cueTestdata, "no-backends.yaml") + ": no back end", ""},
		{"a bad uri", []string{filepath.Join(cueTestdata, "bad-uri.yaml")}, exitUsage, "", "config: backends[1].uri: " + filepath.Join(cueTestdata, "bad-uri.yaml") + " line 3: want an absolute http or https URL", ""},
		{"two files", []string{good, good}, exitUsage, "", "takes one CUE SSE Proxy configuration file, got 2", ""},
		{"no file", nil, exitUsage, "", "takes one CUE SSE Proxy configuration file, got 0", ""},
		{"--out onto the source", []string{"--out", copyOfGood, copyOfGood}, exitUsage, "", "is the CUE configuration itself", ""},
		{"an unknown flag", []string{"--force", good}, exitUsage, "", "flag provided but not defined: -force", ""},
		{"an unwritable --out", []string{"--out", filepath.Join(dir, "missing", "node.yaml"), good}, 1, "", "import-cue: writing " + filepath.Join(dir, "missing", "node.yaml"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(out)
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"import-cue"}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) ||
				(tc.stdout == "") != (stdout.Len() == 0) || !strings.Contains(stdout.String(), tc.stdout) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
			if tc.file == "" {
				return
			}
			fi, err := os.Stat(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600: it may hold passwords", tc.file, fi.Mode().Perm())
			}
			written, _ := os.ReadFile(tc.file)
			if !strings.HasPrefix(string(written), "# "+tc.file+", converted by ssemesh") {
				t.Errorf("the header does not name the file:\n%s", written)
			}
		})
	}
}

// Every converted testdata file passes `ssemesh run --check` with the
// variables it needs set, and only those: the others take their defaults.
func TestImportCueOutputPassesRunCheck(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(cueTestdata, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	converted := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		res, err := cueimport.Convert(raw, cueimport.Options{Source: f})
		if err != nil {
			continue // the files that are refused have tests of their own
		}
		converted++
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, v := range res.Env {
				value := ""
				if !v.Optional {
					value = "value-of-" + strings.ToLower(v.Name)
				}
				t.Setenv(v.Name, value)
			}
			out := filepath.Join(t.TempDir(), "node.yaml")
			var stdout, stderr bytes.Buffer
			if code := run([]string{"import-cue", "--out", out, f}, &stdout, &stderr); code != 0 {
				t.Fatalf("import-cue: exit %d: %s", code, stderr.String())
			}
			if n := strings.Count(stderr.String(), "import-cue: warning: "); n != len(res.Warnings) {
				t.Errorf("%d warnings on standard error, want %d:\n%s", n, len(res.Warnings), stderr.String())
			}
			stdout.Reset()
			stderr.Reset()
			if code := run([]string{"run", "--config", out, "--check"}, &stdout, &stderr); code != 0 {
				written, _ := os.ReadFile(out)
				t.Fatalf("run --check: exit %d: %s\n%s", code, stderr.String(), written)
			}
			if !strings.Contains(stdout.String(), "configuration ok") {
				t.Errorf("run --check printed %q", stdout.String())
			}
		})
	}
	if converted < 5 {
		t.Fatalf("converted %d testdata files, want at least 5", converted)
	}
}

// The CUE proxy's configuration, converted, serves the same stream at the
// same path: a client subscribed where the CUE proxy served the back end
// receives what the back end publishes, and the back end sees the login
// and the Host header of the CUE configuration.
func TestImportCueEndToEnd(t *testing.T) {
	const path = "/webservice/escenic/changelog/sse"
	log := ssetest.Logger(t)
	be := backend.New(backend.Config{}, log)
	t.Cleanup(be.Close)
	var refused atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "sse-proxy" || pass != "p@ss: w#rd" || r.Host != "cue.example.com" {
			refused.Add(1)
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		be.ServeHTTP(w, r)
	}))
	t.Cleanup(upstream.Close)

	dir := t.TempDir()
	cue := filepath.Join(dir, "sse-proxy.yaml")
	src := `server:
  applicationConnectors:
    - type: http
      bindHost: 127.0.0.1
      port: 0
  adminConnectors:
    - type: http
      bindHost: 127.0.0.1
      port: ${CUE_E2E_ADMIN_PORT:-0}
  gzip:
    enabled: false
backends:
  - uri: ` + upstream.URL + path + `
    httpHeaders:
      Host: cue.example.com
    credentials:
      username: ${CUE_E2E_USER}
      password: '${CUE_E2E_PASSWORD:-p@ss: w#rd}'
`
	if err := os.WriteFile(cue, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "node.yaml")
	var stdout, stderr bytes.Buffer
	if err := cmdImportCue(context.Background(), []string{"--out", out, cue}, &stdout, &stderr); err != nil {
		t.Fatalf("import-cue: %v\n%s", err, stderr.String())
	}
	env := map[string]string{"CUE_E2E_USER": "sse-proxy"}
	cfg, err := node.LoadConfig(out, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the node cannot read the converted file: %v", err)
	}
	cfg.Drain = node.Duration(100 * time.Millisecond) // the test's client is gone by then
	n, err := node.New(cfg, log)
	if err != nil {
		t.Fatalf("node.New: %v", err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	c, resp, err := ssetest.DialStatus("http://"+n.Addr()+path, http.Header{"Accept": {"text/event-stream"}})
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if c == nil {
		resp.Body.Close()
		t.Fatalf("GET %s: status %d (back end refused %d requests)", path, resp.StatusCode, refused.Load())
	}
	defer c.Close()
	// The node has its upstream once the client is admitted; wait until the
	// back end counts it, then publish.
	if _, ok := ssetest.Poll(5*time.Second, ssetest.PollEvery, func() bool { return be.Stats(path).Open > 0 }); !ok {
		t.Fatalf("the node never connected to the back end (refused %d)", refused.Load())
	}
	id := be.Publish(path, 1)
	// Next skips retry and heartbeat blocks.
	if ev := c.Next(t, 10*time.Second); ev.ID != "1" || id != 1 || !strings.HasSuffix(ev.Data, "/1") {
		t.Fatalf("got event id %q data %q, want the back end's event 1", ev.ID, ev.Data)
	}
	if refused.Load() != 0 {
		t.Errorf("the back end refused %d requests: the login or the Host header did not carry over", refused.Load())
	}
}
