package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary's main in a child process, so that
// signals reach a real process: the test binary re-executes itself with
// SSEMESH_RUN_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("SSEMESH_RUN_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestHangupReloadsAndNeverStopsTheNode(t *testing.T) {
	listen, admin := freeAddr(t), freeAddr(t)
	conf := filepath.Join(t.TempDir(), "node.yaml")
	src := fmt.Sprintf("listen: %s\nadmin: {listen: %s}\ndrain: 100ms\nbackends:\n  - {name: a, uri: 'http://127.0.0.1:1/x'}\n", listen, admin)
	if err := os.WriteFile(conf, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "run", "--config", conf)
	cmd.Env = append(os.Environ(), "SSEMESH_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	await := func(what string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("node exited (%v) before logging %q", <-exited, what)
				}
				if strings.Contains(l, what) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q in the log within 20s", what)
			}
		}
	}
	await("node started")
	for i := 0; i < 2; i++ {
		if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		await("SIGHUP received")
	}
	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil {
		t.Fatalf("node not serving after SIGHUP: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz after SIGHUP: %d", resp.StatusCode)
	}
	// `ssemesh reload` asks for the same over the admin API: the file's
	// new limit is taken; a broken file is refused and changes nothing.
	if err := os.WriteFile(conf, []byte(src+"limits: {max_clients: 7}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"reload", "--admin", admin}, &out, &errb); code != 0 || !strings.Contains(out.String(), "changed limits") {
		t.Fatalf("reload: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	if err := os.WriteFile(conf, []byte(src+"limits: {max_clients: lots}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"reload", "--admin", admin}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "limits.max_clients") {
		t.Fatalf("reload of a broken file: exit %d, stdout %q, stderr %q; want 1 naming the key", code, out.String(), errb.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range lines {
		}
	}()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("node exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node did not stop within 30s of SIGTERM")
	}
}
