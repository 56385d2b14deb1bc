package relay

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// relayGoroutines lists the stacks of running goroutines that execute the
// relay's own code. Goroutines of an HTTP server that are inside Serve
// belong to that server, not the relay, and are left out.
func relayGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "net/http.(*conn).serve") {
			continue
		}
		// The wrapper of goLocked on top: the owned function returned and
		// the wait group was told; the goroutine is exiting.
		if lines := strings.SplitN(g, "\n", 3); len(lines) > 1 && strings.Contains(lines[1], "relay.(*Relay).goLocked.func1(") {
			continue
		}
		for _, owner := range []string{"relay.(*stream)", "relay.(*Relay)", "relay.(*client)", "relay.(*tlsSink)"} {
			if strings.Contains(g, "ssemesh/"+owner) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// statusBackend answers every request with status.
func statusBackend(t *testing.T, status int) TargetFunc {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return func(*Attempt) (Target, error) { return Target{URL: srv.URL + "/s", Label: "backend"}, nil }
}

// TestCloseLeavesNoGoroutine: Close waits for every goroutine the relay
// started, whatever state its streams are in, and leaves no stream in the
// table.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	big := strings.Repeat("x", 16<<10)
	tests := []struct {
		name string
		// setup brings the relay's streams into the state under test.
		setup func(t *testing.T, r *Relay, b *feedBackend, url string)
	}{
		{"live with subscribers", func(t *testing.T, r *Relay, b *feedBackend, url string) {
			c1, c2 := subscribe(t, url, nil), subscribe(t, url, nil)
			b.publish(1, 2)
			expectIDs(t, c1, 1, 2)
			expectIDs(t, c2, 1, 2)
		}},
		{"lingering without subscribers", func(t *testing.T, r *Relay, b *feedBackend, url string) {
			c := subscribe(t, url, nil)
			b.publish(1)
			expectIDs(t, c, 1)
			c.Resp.Body.Close()
			// Writes find the subscriber gone.
			for id := 2; r.Clients() > 0; id++ {
				if id > 1000 {
					t.Fatal("the subscriber that left is still attached")
				}
				b.publish(id)
				time.Sleep(5 * time.Millisecond)
			}
			if r.Streams() != 1 {
				t.Fatalf("%d streams, want the lingering one", r.Streams())
			}
		}},
		{"failed", func(t *testing.T, r *Relay, _ *feedBackend, _ string) {
			err := r.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/s", nil), Request{Key: "/failed", Target: statusBackend(t, http.StatusNotFound)})
			if e, ok := err.(*Error); !ok || e.Upstream != http.StatusNotFound {
				t.Fatalf("Serve = %v, want the upstream's 404", err)
			}
		}},
		{"ended", func(t *testing.T, r *Relay, _ *feedBackend, _ string) {
			err := r.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/s", nil), Request{Key: "/ended", Target: statusBackend(t, http.StatusNoContent)})
			if e, ok := err.(*Error); !ok || e.Status != http.StatusNoContent {
				t.Fatalf("Serve = %v, want 204", err)
			}
		}},
		{"ended while live", func(t *testing.T, r *Relay, b *feedBackend, url string) {
			c := subscribe(t, url, nil)
			b.publish(1)
			expectIDs(t, c, 1)
			r.End("/s")
			expectRetryThenEnd(t, c)
		}},
		{"drained", func(t *testing.T, r *Relay, b *feedBackend, url string) {
			c := subscribe(t, url, nil)
			b.publish(1)
			expectIDs(t, c, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r.Drain(ctx, 0)
			expectRetryThenEnd(t, c)
		}},
		{"connecting in backoff", func(t *testing.T, r *Relay, _ *feedBackend, _ string) {
			backoff := make(chan string, 1)
			r.onBackoff = func(key string) {
				select {
				case backoff <- key:
				default:
				}
			}
			addr := closedAddr(t)
			target := func(*Attempt) (Target, error) {
				return Target{URL: "http://" + addr + "/s", Label: "down", Hide: func(*Error) bool { return true }}, nil
			}
			if _, _, err := r.acquire("/down", target, "", false); err != nil {
				t.Fatal(err)
			}
			select {
			case <-backoff:
			case <-time.After(5 * time.Second):
				t.Fatal("no backoff within 5s")
			}
		}},
		{"stalled subscriber catching up", func(t *testing.T, r *Relay, b *feedBackend, url string) {
			c := subscribe(t, url, nil)
			stalled := subscribeStalled(t, url)
			ssetest.Eventually(t, "2 subscribers attached", 5*time.Second, func() bool { return r.Clients() == 2 })
			const events = 400
			for id := 1; id <= events; id++ {
				b.publishRaw(fmt.Sprintf("id: %d\ndata: %s\n\n", id, big))
			}
			for id := 1; id <= events; id++ {
				if ev := c.NextBlock(t, eventWait); ev.ID != fmt.Sprint(id) {
					t.Fatalf("got id %s, want %d", ev.ID, id)
				}
			}
			if r.Metrics().SlowPath.Load() == 0 {
				t.Fatal("the stalled subscriber never left the fast path")
			}
			_ = stalled
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if g := relayGoroutines(); len(g) > 0 {
				t.Fatalf("relay goroutines before the test:\n%s", strings.Join(g, "\n\n"))
			}
			cfg := testConfig()
			cfg.MaxEventBytes = 64 << 10
			cfg.WriteTimeout = 30 * time.Second
			cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
			b := newFeedBackend(t, nil)
			r, err := New(cfg, ssetest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			t.Cleanup(func() {
				if !closed {
					r.Close()
				}
			})
			url := startFront(t, r, b) + "/s"
			tc.setup(t, r, b, url)

			r.Close()
			closed = true
			if g := relayGoroutines(); len(g) > 0 {
				t.Fatalf("%d relay goroutines left after Close:\n%s", len(g), strings.Join(g, "\n\n"))
			}
			if n := r.Streams(); n != 0 {
				t.Fatalf("%d streams left in the table after Close", n)
			}
		})
	}
}

// expectRetryThenEnd expects the retry hint of a drain, then the end.
func expectRetryThenEnd(t *testing.T, c *ssetest.Client) {
	t.Helper()
	if ev := c.NextBlock(t, eventWait); ev.Retry < 0 || ev.HasData {
		t.Fatalf("got %+v, want a retry hint", ev)
	}
	expectEnd(t, c)
}
