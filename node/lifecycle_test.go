package node

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// TestLifecycleInAnyOrder: Start, Shutdown and Kill may come in any order,
// twice, or at once from several goroutines; none panics or hangs, a
// stopped node does not start again, and a started one serves.
func TestLifecycleInAnyOrder(t *testing.T) {
	_, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "f", URI: "http://" + addr + "/f", Mount: "/f"})
	shutdown := func(n *Node) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return n.Shutdown(ctx)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name string
		cfg  func(Config) Config
		run  func(t *testing.T, n *Node)
	}{
		{"shutdown before start", nil, func(t *testing.T, n *Node) {
			if err := shutdown(n); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := n.Start(); !errors.Is(err, errEnded) {
				t.Fatalf("Start after Shutdown: %v, want errEnded", err)
			}
		}},
		{"kill before start", nil, func(t *testing.T, n *Node) {
			n.Kill()
			n.Kill()
			if err := shutdown(n); err != nil {
				t.Fatalf("Shutdown after Kill: %v", err)
			}
			if err := n.Start(); !errors.Is(err, errEnded) {
				t.Fatalf("Start after Kill: %v, want errEnded", err)
			}
		}},
		{"start twice, then stop twice", nil, func(t *testing.T, n *Node) {
			if err := n.Start(); err != nil {
				t.Fatal(err)
			}
			if err := n.Start(); !errors.Is(err, errStarted) {
				t.Fatalf("second Start: %v, want errStarted", err)
			}
			c := ssetest.Dial(t, "http://"+n.Addr()+"/f", nil)
			defer c.Close()
			if err := shutdown(n); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			n.Kill()
			if err := shutdown(n); err != nil {
				t.Fatalf("second Shutdown: %v", err)
			}
			if err := n.Start(); !errors.Is(err, errEnded) {
				t.Fatalf("Start after Shutdown: %v, want errEnded", err)
			}
		}},
		{"failed start, then shutdown and kill", func(c Config) Config {
			c.Listen = busy.Addr().String()
			return c
		}, func(t *testing.T, n *Node) {
			if err := n.Start(); err == nil {
				t.Fatal("Start on a port in use succeeded")
			}
			if err := n.Start(); !errors.Is(err, errEnded) {
				t.Fatalf("Start after a failed Start: %v, want errEnded", err)
			}
			if err := shutdown(n); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			n.Kill()
		}},
		{"start, shutdown and kill at once", nil, func(t *testing.T, n *Node) {
			var wg sync.WaitGroup
			var startErr error
			wg.Add(3)
			go func() { defer wg.Done(); startErr = n.Start() }()
			go func() { defer wg.Done(); _ = shutdown(n) }()
			go func() { defer wg.Done(); n.Kill() }()
			wg.Wait()
			if startErr != nil && !errors.Is(startErr, errEnded) {
				t.Fatalf("Start: %v", startErr)
			}
			if err := n.Start(); !errors.Is(err, errEnded) {
				t.Fatalf("Start afterwards: %v, want errEnded", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.cfg != nil {
				c = tc.cfg(c)
			}
			n, err := New(c, ssetest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			// A hang is a failure too; the test binary's own timeout is
			// much longer.
			watchdog := time.AfterFunc(20*time.Second, func() { panic(tc.name + ": lifecycle calls did not return within 20s") })
			defer watchdog.Stop()
			tc.run(t, n)
		})
	}
}
