package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// fieldError is a configuration error as an operator reads it, with its key
// under the mesh section ("mesh.gossip.key: reason"): "" for nil, and
// marked untyped when err carries no *cfgerr.Error.
func fieldError(err error) string {
	if err == nil {
		return ""
	}
	var e *cfgerr.Error
	if !errors.As(err, &e) {
		return "untyped: " + err.Error()
	}
	var p *cfgerr.Error
	errors.As(cfgerr.Prefix("mesh", e), &p)
	return p.Key + ": " + p.Reason
}

// readyzServer answers /readyz with 200 on a loopback port, standing in for
// a node's admin listener so Consul's check passes.
func readyzServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" {
				http.NotFound(w, r)
				return
			}
			fmt.Fprintln(w, "ready")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// testConfig is a Fast gossip node on loopback with small timings.
func testConfig(t *testing.T, id string) Config {
	return Config{
		NodeID:       id,
		DC:           "dc1",
		Tier:         1,
		ClientAddr:   "127.0.0.1:18080",
		AdminAddr:    "127.0.0.1:18081",
		Capacity:     100,
		Gossip:       GossipConfig{Bind: "127.0.0.1:0", Fast: true},
		Settle:       30 * time.Millisecond,
		MetaInterval: 50 * time.Millisecond,
		LeaveTimeout: 2 * time.Second,
		Logger:       ssetest.BufferedLogger(t, logrus.DebugLevel).WithField("test", t.Name()),
	}
}

// startMesh starts a mesh and shuts it down when the test ends.
func startMesh(t *testing.T, cfg Config) *Mesh {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeID, err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Logf("Shutdown(%s): %v", cfg.NodeID, err)
		}
	})
	return m
}

// awaitView waits, on m's Changed signal, until cond holds for its view.
// Each mesh must have a single waiter at a time.
func awaitView(t *testing.T, m *Mesh, timeout time.Duration, what string, cond func(*View) bool) *View {
	t.Helper()
	var v *View
	ssetest.Await(t, m.cfg.NodeID+": "+what, timeout, m.Changed,
		func() bool { v = m.View(); return cond(v) },
		func() string { return dumpView(m.View()) })
	return v
}

// consulPoll is how often a test checks Consul's state: an external system,
// with no event to await.
const consulPoll = 50 * time.Millisecond

func dumpView(v *View) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version %d consulOK=%v consulError=%q\n", v.Version, v.ConsulOK, v.ConsulError)
	for _, m := range v.Members {
		fmt.Fprintf(&b, "  member %+v\n", m)
	}
	for _, be := range v.Backends {
		fmt.Fprintf(&b, "  backend %+v\n", be)
	}
	return b.String()
}

func memberState(v *View, id string) MemberState {
	m, ok := v.Member(id)
	if !ok {
		return ""
	}
	return m.State
}

func allAlive(ids ...string) func(*View) bool {
	return func(v *View) bool {
		for _, id := range ids {
			if memberState(v, id) != StateAlive {
				return false
			}
		}
		return true
	}
}
