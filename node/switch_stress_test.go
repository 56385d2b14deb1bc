package node

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

// switchingRelay is a relay on its own listener whose upstream alternates
// between urls on every flip.
type switchingRelay struct {
	r    *relay.Relay
	url  string
	cur  atomic.Int32
	urls []string
}

func startSwitchingRelay(t *testing.T, name string, linger time.Duration, urls ...string) *switchingRelay {
	cfg := testConfig()
	cfg.Relay.Linger = linger
	sr := &switchingRelay{urls: urls}
	var err error
	sr.r, err = relay.New(cfg.Relay, ssetest.Logger(t).WithField("relay", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sr.r.Close)
	target := func(*relay.Attempt) (relay.Target, error) {
		u := sr.urls[sr.cur.Load()]
		return relay.Target{URL: u, Label: u, Parent: u, Fallback: true, Header: http.Header{ViaHeader: {name}}}, nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id, has := req.Header.Get("Last-Event-ID"), req.Header.Get("Last-Event-ID") != ""
		_ = sr.r.Serve(w, req, relay.Request{Key: streamPath, Target: target, LastEventID: id, HasLastEventID: has, Child: true})
	}))
	t.Cleanup(srv.Close)
	sr.url = srv.URL + streamPath
	return sr
}

func (sr *switchingRelay) flip() {
	sr.cur.Store((sr.cur.Load() + 1) % int32(len(sr.urls)))
	sr.r.Retarget(streamPath)
}

// startParents starts n nodes that take the stream from the back end at
// addr, and returns their stream URLs.
func startParents(t *testing.T, addr string, n int, linger time.Duration) []string {
	urls := make([]string, n)
	for i := range urls {
		cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
		cfg.NodeID = "parent-" + strconv.Itoa(i)
		cfg.Relay.Linger = time.Duration(linger)
		urls[i] = "http://" + startNode(t, cfg).Addr() + streamPath
	}
	return urls
}

// switchUnderTraffic publishes events one every 2 ms while calling flip
// every 10 ms, then checks the client got every event exactly once. It
// returns the number of flips.
func switchUnderTraffic(t *testing.T, be *backend.Backend, c *ssetest.Client, events int, flip func(round int)) int {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < events; i++ {
			be.Publish(streamPath, 1)
			time.Sleep(2 * time.Millisecond) // pacing of the load, not synchronisation
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	round := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
			round++
			flip(round)
		}
	}
	got, err := c.TryIDs(events, 20*time.Second)
	if want := seq(1, events); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after %d flips: got %d ids (%v): %s", round, len(got), err, firstDiff(got, want))
	}
	return round
}

func TestSwitchBetweenParentsUnderTraffic(t *testing.T) {
	// A relay switches make-before-break between two parent nodes again and
	// again while events flow; the parents drop the stream as soon as it
	// has no subscriber, so most switches open a fresh stream on the new
	// parent. The subscriber must see every event exactly once.
	be, addr := startBackend(t, backend.Config{})
	sr := startSwitchingRelay(t, "child", 30*time.Second, startParents(t, addr, 2, time.Millisecond)...)
	c := ssetest.Dial(t, sr.url, nil)
	ssetest.Eventually(t, "stream open", 5*time.Second, func() bool { return be.Stats(streamPath).Open == 1 })
	flips := switchUnderTraffic(t, be, c, 400, func(round int) {
		if round%2 == 0 { // every 20 ms
			sr.flip()
		}
	})
	t.Logf("%d flip requests, %d switches made", flips/2, sr.r.Metrics().Snapshot().Reparents)
}

func TestSwitchingAtEveryLevel(t *testing.T) {
	// Two levels of relays that each switch between two parents while
	// events flow: the middle relays drop their stream as soon as the
	// child leaves, so the child's switches often land on a stream that
	// is itself just opening or switching.
	be, addr := startBackend(t, backend.Config{})
	parents := startParents(t, addr, 2, 30*time.Second)
	mids := []*switchingRelay{
		startSwitchingRelay(t, "mid-0", time.Millisecond, parents...),
		startSwitchingRelay(t, "mid-1", time.Millisecond, parents[1], parents[0]),
	}
	leaf := startSwitchingRelay(t, "leaf", 30*time.Second, mids[0].url, mids[1].url)
	c := ssetest.Dial(t, leaf.url, nil)
	ssetest.Eventually(t, "stream open", 5*time.Second, func() bool { return be.Stats(streamPath).Open == 1 })
	flips := switchUnderTraffic(t, be, c, 400, func(round int) {
		[]*switchingRelay{leaf, mids[0], mids[1]}[round%3].flip()
	})
	t.Logf("%d flips; switches: leaf %d, mid-0 %d, mid-1 %d", flips, leaf.r.Metrics().Snapshot().Reparents,
		mids[0].r.Metrics().Snapshot().Reparents, mids[1].r.Metrics().Snapshot().Reparents)
}

// firstDiff describes where got departs from want.
func firstDiff(got, want []string) string {
	for i := range want {
		if i >= len(got) {
			return "missing from " + want[i]
		}
		if got[i] != want[i] {
			lo := max(0, i-3)
			return "at index " + strconv.Itoa(i) + ": got " + strconv.Quote(got[i]) + " want " + strconv.Quote(want[i]) +
				" (got around: " + strings.Join(got[lo:min(len(got), i+4)], " ") + ")"
		}
	}
	return "equal"
}
