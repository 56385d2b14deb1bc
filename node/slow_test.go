package node

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

// stalledClient opens a stream over a raw socket with a tiny receive buffer
// and never reads from it.
func stalledClient(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestStalledClientIsCutOthersKeepUp(t *testing.T) {
	const clients = 100
	be, n, url := oneBackend(t, backend.Config{PayloadSize: 16 << 10}, func(c *Config) {
		// The write deadline is long on purpose: the stalled client must be
		// cut by its lag, while it still blocks a write, not by a timeout.
		c.Relay.WriteTimeout = time.Duration(time.Minute)
		c.Relay.ClientLagBytes = 256 << 10
		c.Relay.MaxEventBytes = 64 << 10
	})
	cs := make([]*ssetest.Client, clients)
	for i := range cs {
		cs[i] = ssetest.Dial(t, url, nil)
	}
	stalledClient(t, n.Addr(), streamPath)
	ssetest.Eventually(t, "all clients attached", 5*time.Second, func() bool { return n.Relay().Clients() == clients+1 })

	// Lockstep: each event must reach all 100 readers before the next is
	// published, so a fan-out blocked by the stalled client would stop here.
	lag := func() uint64 { return n.Relay().Metrics().Snapshot().Disconnects[relay.ReasonLag] }
	id := 0
	for lag() == 0 {
		if id == 2000 {
			t.Fatalf("stalled client still connected after %d events of 16 KiB", id)
		}
		be.Publish(streamPath, 1)
		id++
		for i, c := range cs {
			if ev := c.Next(t, 5*time.Second); ev.ID != itoa(id) {
				t.Fatalf("client %d got id %s, want %d", i, ev.ID, id)
			}
		}
	}
	ssetest.Eventually(t, "stalled client released", 5*time.Second, func() bool { return n.Relay().Clients() == clients })
	// Everyone else is still served.
	be.Publish(streamPath, 1)
	for i, c := range cs {
		if ev := c.Next(t, 5*time.Second); ev.ID != itoa(id+1) {
			t.Fatalf("client %d got id %s after the cut, want %d", i, ev.ID, id+1)
		}
	}
	t.Logf("stalled client cut after %d events (%d KiB)", id, id*16)
}

func TestSlowClientCatchesUpWithoutGap(t *testing.T) {
	// A client that reads late (its socket fills while it sleeps) moves to
	// the slow path and must come back with every event exactly once.
	be, n, url := oneBackend(t, backend.Config{PayloadSize: 32 << 10}, func(c *Config) {
		c.Relay.ClientLagBytes = 64 << 20
	})
	gate := make(chan struct{})
	reader, _, err := ssetest.DialWith(ssetest.HTTPClient, url, nil, gate)
	if err != nil || reader == nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(reader.Close)
	fast := ssetest.Dial(t, url, nil)
	ssetest.Eventually(t, "clients attached", 5*time.Second, func() bool { return n.Relay().Clients() == 2 })
	const events = 300 // ~10 MB: more than socket buffers hold
	for i := 1; i <= events; i++ {
		be.Publish(streamPath, 1)
		if ev := fast.Next(t, 5*time.Second); ev.ID != itoa(i) {
			t.Fatalf("fast client got %s, want %d", ev.ID, i)
		}
	}
	if n.Relay().Metrics().SlowPath.Load() == 0 {
		t.Fatal("the paused reader never left the fast path: the test did not exercise catch-up")
	}
	close(gate)
	got := reader.IDs(t, events, 10*time.Second)
	for i, id := range got {
		if id != itoa(i+1) {
			t.Fatalf("slow client event %d has id %s", i+1, id)
		}
	}
	be.Publish(streamPath, 1)
	if ev := reader.Next(t, 5*time.Second); ev.ID != itoa(events+1) {
		t.Fatalf("after catching up got %s, want %d", ev.ID, events+1)
	}
}
