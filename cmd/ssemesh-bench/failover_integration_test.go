package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/node"
)

// startNode runs a stand-alone ssemesh node in this process, in front of
// the back end at uri, until the test ends (or stop is called).
func startNode(t *testing.T, id, uri string) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.NodeID = id
	cfg.Listen = "127.0.0.1:0"
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Limits.PerIP = node.PerIPLimits{} // every client is 127.0.0.1
	cfg.Drain = node.Duration(500 * time.Millisecond)
	cfg.Relay.DrainRetry = time.Duration(200 * time.Millisecond)
	cfg.Backends = []node.BackendSpec{{Name: "bench", URI: uri}}
	n, err := node.New(cfg, quietLog())
	if err != nil {
		t.Fatalf("node %s: %v", id, err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("node %s: %v", id, err)
	}
	t.Cleanup(func() { stopNode(t, n) })
	return n
}

func stopNode(t *testing.T, n *node.Node) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("stopping node %s: %v", n.ID(), err)
	}
}

// TestFailoverBetweenNodes runs clients over two real nodes in front of one
// back end and stops one of them in the middle of the window: it drains
// its clients with a retry: hint, they resume on the other node with
// Last-Event-ID, and no client loses or repeats an event.
func TestFailoverBetweenNodes(t *testing.T) {
	const clients, rate = 40, 50
	b, srv := startBackend(t, backend.Config{Rate: rate, PayloadSize: 100, Format: backend.FormatBench})
	a := startNode(t, "a", srv.URL+"/bench")
	other := startNode(t, "b", srv.URL+"/bench")

	// Stop a once every client is on a node and 60 more events (1.2 s)
	// went by: inside the window, which starts 0.9 s after the first
	// client and lasts 3 s.
	stopped := make(chan time.Time, 1)
	go func() {
		var from int64
		if !poll(func() bool { return a.Relay().Clients()+other.Relay().Clients() == clients }) ||
			!poll(func() bool { from = b.Stats("/bench").LastID; return from > 0 }) ||
			!poll(func() bool { return b.Stats("/bench").LastID >= from+60 }) {
			stopped <- time.Time{}
			return
		}
		at := time.Now()
		stopNode(t, a)
		stopped <- at
	}()
	rep, _ := runLoadJSON(t, "--url", "a=http://"+a.Addr()+"/bench", "--url", "b=http://"+other.Addr()+"/bench",
		"--clients", strconv.Itoa(clients), "--procs", "1", "--ramp", "300ms", "--settle", "500ms",
		"--duration", "3s", "--drain", "500ms", "--retry", "100ms",
		"--backend-stats", srv.URL+"/_backend/stats", "--node-pids", "self="+strconv.Itoa(os.Getpid()))
	at := <-stopped
	if at.IsZero() {
		t.Fatal("the clients never all connected")
	}
	if !rep.WindowStart.Before(at) || !at.Before(rep.WindowEnd) {
		t.Fatalf("node stopped at %v, outside the window %v..%v", at, rep.WindowStart, rep.WindowEnd)
	}

	if rep.Connected != clients || rep.Failed != 0 || rep.LateConnects != 0 {
		t.Fatalf("connected %d failed %d late %d", rep.Connected, rep.Failed, rep.LateConnects)
	}
	if rep.EventsPerClient < 100 || rep.Expected != rep.Delivered || rep.Lost != 0 || rep.Duplicated != 0 {
		t.Fatalf("%d events per client: expected %d delivered %d lost %d dup %d",
			rep.EventsPerClient, rep.Expected, rep.Delivered, rep.Lost, rep.Duplicated)
	}
	ua, ub := rep.URLs[0], rep.URLs[1]
	if ua.Clients != clients/2 || ub.Clients != clients/2 || ua.Lost != 0 || ub.Lost != 0 {
		t.Fatalf("cohorts: a %+v, b %+v", ua, ub)
	}
	if ua.ConnectedAtStart != clients/2 || ub.ConnectedAtStart != clients/2 || ua.ConnectedAtEnd != 0 || ub.ConnectedAtEnd != clients {
		t.Fatalf("on a %d then %d, on b %d then %d", ua.ConnectedAtStart, ua.ConnectedAtEnd, ub.ConnectedAtStart, ub.ConnectedAtEnd)
	}
	// a's clients were closed by its drain (the end of their stream) and
	// came back on b; none came back to a, which refused or was gone.
	if ua.Drops["stream ended (EOF)"] != clients/2 || ub.Failovers != clients/2 || ub.Reconnects != clients/2 || ua.Sessions != clients/2 {
		t.Fatalf("a: drops %v sessions %d; b: failovers %d reconnects %d", ua.Drops, ua.Sessions, ub.Failovers, ub.Reconnects)
	}
	// Both nodes read the back end directly, each with one connection
	// opened on its first client: two at most, one once a stopped.
	be := rep.Backend
	if be == nil || be.Samples < 4 || be.Errors != 0 || be.OpenMax != 2 || be.NewConnections > 2 ||
		len(be.Changes) == 0 || be.Changes[len(be.Changes)-1].Open != 1 {
		t.Fatalf("back end %+v", rep.Backend)
	}
	if len(rep.Nodes) != 1 || rep.Nodes[0].RSSStartKB <= 0 || len(rep.Nodes[0].PIDs) != 1 {
		t.Fatalf("nodes %+v", rep.Nodes)
	}
}

// arrivals records when requests reached a server.
type arrivals struct {
	mu    sync.Mutex
	times []time.Time
}

func (a *arrivals) add() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.times = append(a.times, time.Now())
}

func (a *arrivals) sorted() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := slices.Clone(a.times)
	slices.SortFunc(out, func(x, y time.Time) int { return x.Compare(y) })
	return out
}

// TestFailoverHonoursRetryAfter has one URL refuse every client with 503,
// a JSON error code and Retry-After: the load counts the refusals by code,
// and the refused clients go to the other URL, no sooner than they were
// told (and no later than half as much again), and stay there.
func TestFailoverHonoursRetryAfter(t *testing.T) {
	b, _ := startBackend(t, backend.Config{Rate: 20, Format: backend.FormatBench})
	var refused, accepted arrivals
	full := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refused.add()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": 503, "error": "max_clients", "retry_after": 1})
	}))
	t.Cleanup(full.Close)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accepted.add()
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(ok.Close)
	const clients = 10
	rep, _ := runLoadJSON(t, "--url", "full="+full.URL+"/bench", "--url", "ok="+ok.URL+"/bench",
		"--clients", strconv.Itoa(clients), "--procs", "1", "--ramp", "0s", "--settle", "2s",
		"--duration", "1s", "--drain", "300ms")
	if rep.Connected != clients || rep.Failed != 0 || rep.LateConnects != 0 || rep.Lost != 0 {
		t.Fatalf("connected %d failed %d late %d lost %d", rep.Connected, rep.Failed, rep.LateConnects, rep.Lost)
	}
	uf, uo := rep.URLs[0], rep.URLs[1]
	if uf.Refusals["http status 503 max_clients"] != clients/2 || len(uf.Refusals) != 1 || uf.Sessions != 0 {
		t.Fatalf("full: refusals %v sessions %d", uf.Refusals, uf.Sessions)
	}
	if uo.Sessions != clients || uo.ConnectedAtStart != clients || uo.ConnectedAtEnd != clients {
		t.Fatalf("ok: sessions %d, on it %d then %d", uo.Sessions, uo.ConnectedAtStart, uo.ConnectedAtEnd)
	}
	r, a := refused.sorted(), accepted.sorted()
	if len(r) != clients/2 || len(a) != clients {
		t.Fatalf("%d refusals, %d accepted requests", len(r), len(a))
	}
	// The first half went to ok at once; the refused half came after
	// Retry-After (with up to 50% more).
	for _, at := range a[clients/2:] {
		if at.Before(r[0].Add(time.Second)) || at.After(r[len(r)-1].Add(1600*time.Millisecond)) {
			t.Fatalf("a refused client came back %v after the first refusal", at.Sub(r[0]))
		}
	}
}
