package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/node"
	"github.com/ssemesh/ssemesh/topology"
)

const testToken = "cli-test-token"

// testNode runs a node in front of a synthetic back end, with one client
// subscribed to each of the given paths and one event relayed on each.
func testNode(t *testing.T, paths ...string) *node.Node {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	be := backend.New(backend.Config{}, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: be, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		be.Close()
		_ = srv.Close()
		<-served
	})

	cfg := node.DefaultConfig()
	cfg.Listen, cfg.Admin.Listen, cfg.Admin.Token = "127.0.0.1:0", "127.0.0.1:0", testToken
	cfg.NodeID = "cli-node-1"
	cfg.Drain = node.Duration(200 * time.Millisecond)
	cfg.Backends = []node.BackendSpec{{Name: "feeds", URI: "http://" + ln.Addr().String() + "/feed/", Mount: "/feeds", Prefix: true, QueryParams: []string{"lang"}}}
	n, err := node.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	for _, p := range paths {
		subscribe(t, "http://"+n.Addr()+"/feeds"+p, func() { be.Publish("/feed"+p, 1) })
	}
	return n
}

// subscribe opens a stream, calls publish once it is open, and returns after
// the first event arrived; the connection stays open until the test ends.
func subscribe(t *testing.T, url string, publish func()) {
	t.Helper()
	c := ssetest.Dial(t, url, nil)
	publish()
	c.Next(t, 5*time.Second)
}

// runCLI runs the command line as main does and returns its exit code and
// output.
func runCLI(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestTopologyTreePrintsEveryNodeOnce(t *testing.T) {
	n := testNode(t, "/a", "/b?lang=de")
	code, out, errOut := runCLI("topology", "--admin", n.AdminAddr(), "--token", testToken, "--format", "tree")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// The node table comes before the first stream's tree.
	table, trees, ok := strings.Cut(out, "\nstream ")
	if !ok {
		t.Fatalf("no stream trees in:\n%s", out)
	}
	if c := strings.Count(table, n.ID()); c != 1 {
		t.Errorf("node table names %s %d times, want once:\n%s", n.ID(), c, table)
	}
	for _, key := range []string{"/feeds/a", "/feeds/b?lang=de"} {
		if !strings.Contains(out, `stream "`+key+`"`) {
			t.Errorf("no tree for %q:\n%s", key, out)
		}
	}
	if c := strings.Count(trees, "─ "+n.ID()+" "); c != 2 {
		t.Errorf("stream trees hold %s %d times, want once per stream (2):\n%s", n.ID(), c, out)
	}
}

func TestTopologyFormatsAndErrors(t *testing.T) {
	n := testNode(t, "/a", "/b")
	admin := n.AdminAddr()

	t.Run("json from the environment's token", func(t *testing.T) {
		t.Setenv(adminTokenEnv, testToken)
		code, out, errOut := runCLI("topology", "--admin", "http://"+admin+"/", "--format", "json", "--stream", "/feeds/b")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var r topology.Report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(r.Nodes) != 1 || len(r.Streams) != 1 || r.Streams[0].Stream != "/feeds/b" {
			t.Fatalf("report: %+v", r)
		}
	})
	t.Run("dot", func(t *testing.T) {
		code, out, errOut := runCLI("topology", "--admin", admin, "--token", testToken, "--format", "dot")
		if code != 0 || !strings.HasPrefix(out, "digraph") {
			t.Fatalf("exit %d: %s\n%s", code, errOut, out)
		}
	})

	tests := []struct {
		name    string
		args    []string
		code    int
		message string
	}{
		{"no token", []string{"--admin", admin}, 1, "401 Unauthorized"},
		{"wrong token", []string{"--admin", admin, "--token", "nope"}, 1, "--token or $" + adminTokenEnv},
		{"unknown stream", []string{"--admin", admin, "--token", testToken, "--stream", "/feeds/none"}, 1, "not in the topology report"},
		{"nobody listening", []string{"--admin", "127.0.0.1:1", "--token", testToken}, 1, "127.0.0.1:1"},
		{"bad format", []string{"--admin", admin, "--format", "svg"}, exitUsage, `--format "svg"`},
		{"unknown flag", []string{"--admin", admin, "--colour"}, exitUsage, "flag provided but not defined"},
		{"bad admin URL", []string{"--admin", "ftp://x"}, exitUsage, "want host:port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(adminTokenEnv, "")
			code, out, errOut := runCLI(append([]string{"topology"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, errOut)
			}
			if !strings.Contains(errOut, tc.message) {
				t.Errorf("stderr lacks %q:\n%s", tc.message, errOut)
			}
			if out != "" {
				t.Errorf("stdout should be empty on failure, got:\n%s", out)
			}
		})
	}
}

func TestStatusSummary(t *testing.T) {
	n := testNode(t, "/a", "/b")
	code, out, errOut := runCLI("status", "--admin", n.AdminAddr(), "--token", testToken)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"node     " + n.ID() + "  READY", "load     2 clients of 19000", "2 streams",
		"admin " + n.AdminAddr(), "STREAM", "/feeds/a", "/feeds/b", "live"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Count(out, "\n"); lines > 24 {
		t.Errorf("status takes %d lines, want one screen:\n%s", lines, out)
	}

	code, _, errOut = runCLI("status", "--admin", n.AdminAddr(), "--token", "nope")
	if code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("wrong token: exit %d, stderr %s", code, errOut)
	}
}
