package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/sse"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// newTunedRelay is newTestRelay with the relay's internals set.
func newTunedRelay(t *testing.T, cfg Config, tn tuning) *Relay {
	t.Helper()
	r, err := newRelay(cfg, ssetest.Logger(t), tn)
	if err != nil {
		t.Fatalf("newRelay: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

func TestShards(t *testing.T) {
	tests := []struct {
		workers, shardMin, clients, want int
	}{
		{4, 256, 0, 1},
		{4, 256, 255, 1},
		{4, 256, 511, 1},
		{4, 256, 512, 2},
		{4, 256, 20000, 4},
		{1, 256, 20000, 1},
		{3, 2, 8, 3},
		{3, 2, 3, 1},
		{3, 2, 4, 2},
	}
	for _, tc := range tests {
		r := &Relay{workers: tc.workers, shardMin: tc.shardMin}
		if got := r.shards(tc.clients); got != tc.want {
			t.Errorf("shards(%d) with %d workers, shardMin %d = %d, want %d", tc.clients, tc.workers, tc.shardMin, got, tc.want)
		}
	}
}

// stalledSubscriber is a subscriber on a raw connection that reads the
// response head and then nothing until told to, so its socket fills.
type stalledSubscriber struct {
	conn net.Conn
	br   *bufio.Reader
}

func subscribeStalled(t *testing.T, url string) *stalledSubscriber {
	t.Helper()
	host := strings.TrimPrefix(url, "http://")
	host, path, _ := strings.Cut(host, "/")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host)
	br := bufio.NewReaderSize(conn, 1<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stalled subscriber: %v %v", err, resp)
	}
	return &stalledSubscriber{conn: conn, br: br}
}

// readAll reads the subscriber's blocks until the connection ends or no
// block comes within a while; it returns their ids.
func (s *stalledSubscriber) readAll(t *testing.T, maxEventBytes int, want int) (ids []string, err error) {
	t.Helper()
	rd := sse.NewReader(s.br, maxEventBytes)
	for len(ids) < want {
		_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		ev, err := rd.Next()
		if err != nil {
			return ids, err
		}
		ids = append(ids, ev.ID)
	}
	return ids, nil
}

// TestFanOutBranches runs the dispatcher's fan-out below and above the
// writer pool's threshold, with and without a subscriber whose socket is
// full among the others. A stalled subscriber is cut when it lags more than
// client_lag_bytes, or catches up in order when it reads again, the same on
// both branches; every other subscriber gets every event in order.
func TestFanOutBranches(t *testing.T) {
	const (
		fast   = 7
		events = 400
	)
	big := strings.Repeat("x", 16<<10) // 400 of these fill any socket
	for _, branch := range []struct {
		name     string
		shardMin int
		pooled   bool // the pool must run jobs
	}{
		{"dispatcher alone", defaultShardMin, false},
		{"writer pool", 2, true},
	} {
		for _, slow := range []struct {
			name  string
			stall bool
			lag   int64 // client_lag_bytes
			cut   bool  // the stalled subscriber is cut rather than caught up
		}{
			{"all reading", false, 64 << 20, false},
			{"stalled catches up", true, 64 << 20, false},
			{"stalled cut", true, 1 << 20, true},
		} {
			t.Run(branch.name+"/"+slow.name, func(t *testing.T) {
				cfg := testConfig()
				cfg.MaxEventBytes = 64 << 10
				cfg.ClientLagBytes = slow.lag
				cfg.WriteTimeout = 30 * time.Second
				b := newFeedBackend(t, nil)
				var poolJobs atomic.Int64
				// Three writers: the dispatcher's fan-out to the 8
				// subscribers is cut into 3 shards above the threshold,
				// two of them run by the pool, the first holding the
				// stalled subscriber.
				r := newTunedRelay(t, cfg, tuning{workers: 3, shardMin: branch.shardMin, onPoolJob: func() { poolJobs.Add(1) }})
				url := startFront(t, r, b) + "/s"

				var stalled *stalledSubscriber
				n := 0
				if slow.stall {
					stalled = subscribeStalled(t, url)
					n++
					ssetest.Eventually(t, fmt.Sprintf("%d subscribers attached", n), 5*time.Second, func() bool { return r.Clients() == n })
				}
				tr := &http.Transport{}
				t.Cleanup(tr.CloseIdleConnections)
				readers := make([]*ssetest.Client, fast)
				for i := range readers {
					resp, err := (&http.Client{Transport: tr}).Get(url)
					if err != nil {
						t.Fatal(err)
					}
					readers[i] = ssetest.Read(resp)
					t.Cleanup(readers[i].Close)
					n++
					ssetest.Eventually(t, fmt.Sprintf("%d subscribers attached", n), 5*time.Second, func() bool { return r.Clients() == n })
				}

				for id := 1; id <= events; id++ {
					b.publishRaw(fmt.Sprintf("id: %d\ndata: %s\n\n", id, big))
				}
				for i, rd := range readers {
					for id := 1; id <= events; id++ {
						ev := rd.NextBlock(t, eventWait)
						if ev.ID != fmt.Sprint(id) || ev.Data != big {
							t.Fatalf("subscriber %d got id %s (%d bytes), want %d", i, ev.ID, len(ev.Data), id)
						}
					}
				}

				if got := poolJobs.Load(); (got > 0) != branch.pooled {
					t.Fatalf("the writer pool ran %d jobs; want pooled=%v", got, branch.pooled)
				}
				if !slow.stall {
					if n := r.Metrics().Snapshot().Disconnects; len(n) != 0 {
						t.Fatalf("disconnects %v with every subscriber reading", n)
					}
					return
				}
				if r.Metrics().SlowPath.Load() == 0 {
					t.Fatal("the stalled subscriber never left the fast path: the test proves nothing")
				}
				ids, err := stalled.readAll(t, cfg.MaxEventBytes, events)
				for i, id := range ids {
					if id != fmt.Sprint(i+1) {
						t.Fatalf("stalled subscriber's block %d has id %s: events out of order or lost", i+1, id)
					}
				}
				if !slow.cut {
					if err != nil {
						t.Fatalf("stalled subscriber got %d of %d events, then %v", len(ids), events, err)
					}
					return
				}
				if err == nil || len(ids) == events {
					t.Fatalf("stalled subscriber got all %d events, want it cut for lag", len(ids))
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("stalled subscriber still open after %d events, want it cut for lag", len(ids))
				}
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
					t.Fatalf("stalled subscriber ended with %v", err)
				}
				ssetest.Eventually(t, "the lag disconnect counted", 5*time.Second, func() bool {
					return r.Metrics().Snapshot().Disconnects[ReasonLag] == 1
				})
				if d := r.Metrics().Snapshot().Disconnects; len(d) != 1 {
					t.Fatalf("disconnects %v, want one for lag", d)
				}
			})
		}
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}
