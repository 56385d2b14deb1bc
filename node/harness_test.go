package node

import (
	"context"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// serve runs h on a fresh loopback listener until the test ends.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// startBackend runs a synthetic back end that emits only on Publish.
func startBackend(t testing.TB, cfg backend.Config) (*backend.Backend, string) {
	t.Helper()
	be := backend.New(cfg, ssetest.Logger(t))
	addr := serve(t, be)
	t.Cleanup(be.Close)
	return be, addr
}

// testConfig is a node on loopback ports with fast timings for tests.
func testConfig(backends ...BackendSpec) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.NodeID = "test"
	cfg.Drain = Duration(500 * time.Millisecond)
	cfg.Backends = backends
	cfg.Relay.BackoffMin = time.Duration(10 * time.Millisecond)
	cfg.Relay.BackoffMax = time.Duration(200 * time.Millisecond)
	cfg.Relay.Linger = time.Duration(200 * time.Millisecond)
	cfg.Relay.ConnectTimeout = time.Duration(3 * time.Second)
	cfg.Relay.ReadyTimeout = time.Duration(5 * time.Second)
	// Every test client comes from 127.0.0.1: the per-address limits have
	// tests of their own.
	cfg.Limits.PerIP = PerIPLimits{}
	return cfg
}

// testSecret is the mesh secret of test nodes.
const testSecret = "test-mesh-secret-0123456789abcdef"

// startNode builds, starts and (at cleanup) drains a node.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg, ssetest.Logger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
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
	return n
}

// seq returns "from".."to" as strings.
func seq(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, itoa(i))
	}
	return out
}

func itoa(i int) string {
	var b [20]byte
	p := len(b)
	if i == 0 {
		return "0"
	}
	for i > 0 {
		p--
		b[p] = byte('0' + i%10)
		i /= 10
	}
	return string(b[p:])
}

// parallel runs f(i) for i in [0,n) concurrently and waits.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) { defer wg.Done(); f(i) }(i)
	}
	wg.Wait()
}
