package node

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

const streamPath = "/webservice/escenic/changelog/sse"

// oneBackend starts a publish-driven back end and a node in front of it.
func oneBackend(t *testing.T, bcfg backend.Config, mutate func(*Config)) (*backend.Backend, *Node, string) {
	t.Helper()
	be, addr := startBackend(t, bcfg)
	cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
	if mutate != nil {
		mutate(&cfg)
	}
	n := startNode(t, cfg)
	return be, n, "http://" + n.Addr() + streamPath
}

func TestFanOutOneUpstreamConnection(t *testing.T) {
	const clients, events = 500, 20
	be, n, url := oneBackend(t, backend.Config{}, nil)

	cs := make([]*ssetest.Client, clients)
	parallel(clients, func(i int) {
		c, resp, err := ssetest.DialStatus(url, nil)
		if err != nil || c == nil {
			t.Errorf("client %d: %v %v", i, err, resp)
			return
		}
		cs[i] = c
	})
	for _, c := range cs {
		if c != nil {
			t.Cleanup(c.Close)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	ssetest.Eventually(t, "all clients attached", 10*time.Second, func() bool { return n.Relay().Clients() == clients })
	be.Publish(streamPath, events)

	want := seq(1, events)
	parallel(clients, func(i int) {
		got, err := cs[i].TryIDs(events, 10*time.Second)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("client %d: got %v (%v), want %v", i, got, err, want)
		}
	})
	if st := be.Stats(streamPath); st.Total != 1 || st.Open != 1 {
		t.Fatalf("back end saw %d connections (%d open), want exactly 1", st.Total, st.Open)
	}
}

func TestUpstreamCutsResumeWithLastEventID(t *testing.T) {
	const clients, rounds, per = 50, 5, 10
	be, n, url := oneBackend(t, backend.Config{CutPartial: true}, nil)
	cs := make([]*ssetest.Client, clients)
	for i := range cs {
		cs[i] = ssetest.Dial(t, url, nil)
	}

	// A watcher sees what the node has relayed, so each cut lands after the
	// node holds a known last event.
	watch := ssetest.Dial(t, url, nil)
	ssetest.Eventually(t, "clients attached", 5*time.Second, func() bool { return n.Relay().Clients() == clients+1 })
	seen := 0
	for r := 0; r < rounds; r++ {
		be.Publish(streamPath, per)
		watch.IDs(t, per, 5*time.Second)
		seen += per
		// Cut with a partial event on the wire, then publish while the
		// node is disconnected: those must come back through the resume.
		if cut := be.Cut(streamPath); cut != 1 {
			t.Fatalf("round %d: cut %d connections, want 1", r, cut)
		}
		be.Publish(streamPath, per)
		ssetest.Eventually(t, "upstream reconnect", 5*time.Second, func() bool { return be.Stats(streamPath).Total == r+2 })
		watch.IDs(t, per, 5*time.Second)
		seen += per
	}
	be.Publish(streamPath, per)
	total := rounds*2*per + per

	want := seq(1, total)
	parallel(clients, func(i int) {
		got, err := cs[i].TryIDs(total, 10*time.Second)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("client %d: got %v (%v), want 1..%d exactly once", i, got, err, total)
		}
	})
	st := be.Stats(streamPath)
	if st.Total != rounds+1 {
		t.Fatalf("back end saw %d connections, want %d", st.Total, rounds+1)
	}
	// Every reconnect resumed from the last event the node had when the
	// connection was cut: 10, 30, 50, ... (partial events never count).
	for r := 1; r <= rounds; r++ {
		if got, want := st.LastEventIDs[r], itoa((2*r-1)*per); got != want {
			t.Errorf("reconnect %d sent Last-Event-ID %q, want %q (all: %v)", r, got, want, st.LastEventIDs)
		}
	}
}

func TestClientResumesWithLastEventID(t *testing.T) {
	// A long linger keeps the stream (and its ring) while nobody listens.
	be, _, url := oneBackend(t, backend.Config{}, func(c *Config) { c.Relay.Linger = time.Duration(time.Minute) })
	first := ssetest.Dial(t, url, nil)
	watch := ssetest.Dial(t, url, nil)
	be.Publish(streamPath, 10)
	if got := first.IDs(t, 10, 5*time.Second); !slices.Equal(got, seq(1, 10)) {
		t.Fatalf("first client got %v", got)
	}
	first.Close()
	be.Publish(streamPath, 10)      // 11..20 while the first client is away
	watch.IDs(t, 20, 5*time.Second) // the node holds them all now

	tests := []struct {
		name   string
		url    string
		header http.Header
		from   int
	}{
		{"header", url, http.Header{"Last-Event-Id": {"10"}}, 11},
		{"query", url + "?lastEventId=15", nil, 16},
		{"header wins over query", url + "?lastEventId=3", http.Header{"Last-Event-Id": {"18"}}, 19},
		{"at head", url, http.Header{"Last-Event-Id": {"20"}}, 21},
	}
	var cs []*ssetest.Client
	for _, tc := range tests {
		cs = append(cs, ssetest.Dial(t, tc.url, tc.header))
	}
	be.Publish(streamPath, 2) // 21, 22: the live seam
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 22 - tc.from + 1
			if got := cs[i].IDs(t, n, 5*time.Second); !slices.Equal(got, seq(tc.from, 22)) {
				t.Fatalf("got %v, want %d..22", got, tc.from)
			}
		})
	}
	if st := be.Stats(streamPath); st.Total != 1 {
		t.Fatalf("the lastEventId query parameter must not make a new stream: back end saw %d connections", st.Total)
	}
}

func TestResumeOlderThanRingAsksUpstream(t *testing.T) {
	be, n, url := oneBackend(t, backend.Config{}, func(c *Config) { c.Relay.RingEvents = 5 })
	live := ssetest.Dial(t, url, nil)
	publishStepwise(t, be, live, 30)

	// The ring holds 26..30; events 4..25 must come from the back end.
	// The live event is published only once the client has joined the
	// ring: a five-event ring would drop the seam (26) under a catch-up
	// still in flight, and the client would be cut as behind the buffer.
	c := ssetest.Dial(t, url, http.Header{"Last-Event-Id": {"3"}})
	if got := c.IDs(t, 27, 5*time.Second); !slices.Equal(got, seq(4, 30)) {
		t.Fatalf("got %v, want 4..30", got)
	}
	be.Publish(streamPath, 1)
	if got := c.IDs(t, 1, 5*time.Second); !slices.Equal(got, seq(31, 31)) {
		t.Fatalf("got %v after the catch-up, want 31", got)
	}
	if got := n.Relay().Metrics().Snapshot().CatchUps; got != 1 {
		t.Fatalf("CatchUps = %d, want 1", got)
	}
}

func TestResumeGapIsAnnounced(t *testing.T) {
	// A back end whose history is shorter than what the client asks for:
	// neither the ring nor upstream can fill the gap, and the client is told.
	be, n, url := oneBackend(t, backend.Config{History: 5}, func(c *Config) { c.Relay.RingEvents = 5 })
	live := ssetest.Dial(t, url, nil)
	publishStepwise(t, be, live, 30)

	c := ssetest.Dial(t, url, http.Header{"Last-Event-Id": {"3"}})
	ev := c.Next(t, 5*time.Second)
	if ev.Type != "ssemesh-gap" {
		t.Fatalf("first event %+v, want an ssemesh-gap event", ev)
	}
	if got := c.IDs(t, 5, 5*time.Second); !slices.Equal(got, seq(26, 30)) {
		t.Fatalf("after the gap got %v, want the buffered 26..30", got)
	}
	if g := n.Relay().Metrics().Gaps.Load(); g != 1 {
		t.Fatalf("gap counter %d, want 1", g)
	}
}

func TestUpstreamRefusalsReachClients(t *testing.T) {
	tests := []struct {
		status      int
		contentType string
		wantStatus  int
	}{
		{http.StatusInternalServerError, "", http.StatusInternalServerError},
		{http.StatusNotFound, "", http.StatusNotFound},
		{http.StatusUnauthorized, "", http.StatusUnauthorized},
		{http.StatusNoContent, "", http.StatusNoContent},
		{http.StatusOK, "text/plain", http.StatusBadGateway},
	}
	be, n, url := oneBackend(t, backend.Config{}, func(c *Config) {
		zero := 1
		c.Relay.ConnectRetries = zero
		c.Backends[0].QueryParams = []string{"case"}
	})
	for i, tc := range tests {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.contentType), func(t *testing.T) {
			path := fmt.Sprintf("%s?case=%d", streamPath, i)
			be.SetStatus(path, tc.status, tc.contentType)
			c, resp, err := ssetest.DialStatus(url+fmt.Sprintf("?case=%d", i), nil)
			if err != nil {
				t.Fatal(err)
			}
			if c != nil {
				c.Close()
				t.Fatalf("got 200, want %d", tc.wantStatus)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus == http.StatusNoContent {
				if got := resp.Header.Get(relay.ErrorHeader); got != relay.CodeStreamEnded {
					t.Fatalf("204 with %s %q, want %q", relay.ErrorHeader, got, relay.CodeStreamEnded)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q, want a JSON reason", ct)
			}
		})
	}
	ssetest.Eventually(t, "failed streams released", 5*time.Second, func() bool { return n.Relay().Streams() == 0 })
}

func TestEndOfStreamOnReconnectClosesClients(t *testing.T) {
	be, _, url := oneBackend(t, backend.Config{}, nil)
	c := ssetest.Dial(t, url, nil)
	be.Publish(streamPath, 3)
	c.IDs(t, 3, 5*time.Second)
	be.SetStatus(streamPath, http.StatusNoContent, "")
	be.Cut(streamPath)
	c.ExpectEnd(t, 5*time.Second)

	_, resp, err := ssetest.DialStatus(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("later request got %d, want 204", resp.StatusCode)
	}
}

func TestClientLimit(t *testing.T) {
	be, _, url := oneBackend(t, backend.Config{}, func(c *Config) { c.Limits.MaxClients = 2 })
	ssetest.Dial(t, url, nil)
	ssetest.Dial(t, url, nil)
	_, resp, err := ssetest.DialStatus(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third client got %d (Retry-After %q), want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if st := be.Stats(streamPath); st.Total != 1 {
		t.Fatalf("back end saw %d connections", st.Total)
	}
}

// publishStepwise publishes n events one at a time, each after the watcher
// received the previous one, so a tiny ring never overflows before the
// dispatcher ran (a burst larger than the ring would rightly cut a client).
func publishStepwise(t *testing.T, be *backend.Backend, watch *ssetest.Client, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		be.Publish(streamPath, 1)
		watch.Next(t, 5*time.Second)
	}
}

func TestRetryIsNotMultipliedAlongAChain(t *testing.T) {
	// The back end's retry: reaches a client through two nodes once before
	// the first event, whether the client opened the stream or joined it;
	// a client that joins later gets it in front of its live events.
	be, a, _ := oneBackend(t, backend.Config{Retry: 3 * time.Second}, nil)
	bcfg := testConfig(BackendSpec{Name: "chained", URI: "http://" + a.Addr() + streamPath})
	bcfg.NodeID = a.ID() + "-child"
	b := startNode(t, bcfg)
	url := "http://" + b.Addr() + streamPath
	retries := func(c *ssetest.Client, until string) int {
		n := 0
		for {
			ev := c.NextBlock(t, 5*time.Second)
			if ev.Retry >= 0 {
				if ev.Retry != 3000 {
					t.Fatalf("retry %d, want 3000", ev.Retry)
				}
				n++
			}
			if until == "" && n > 0 || ev.HasData && ev.ID == until {
				return n
			}
		}
	}
	// The stream is live on a (and has its retry) before b asks for it.
	direct := ssetest.Dial(t, "http://"+a.Addr()+streamPath, nil)
	if n := retries(direct, ""); n != 1 {
		t.Fatalf("direct client got retry %d times, want once", n)
	}
	first := ssetest.Dial(t, url, nil)
	ssetest.Eventually(t, "chain open", 5*time.Second, func() bool { return a.Relay().Clients() == 2 })
	be.Publish(streamPath, 1)
	if n := retries(first, "1"); n != 1 {
		t.Fatalf("first client got retry %d times before event 1, want once", n)
	}
	late := ssetest.Dial(t, url, nil)
	ssetest.Eventually(t, "late client attached", 5*time.Second, func() bool { return b.Relay().Clients() == 2 })
	be.Publish(streamPath, 1)
	if n := retries(late, "2"); n != 1 {
		t.Fatalf("late client got retry %d times before event 2, want once", n)
	}
}

// TestClientLimitHoldsInABurst: many requests arriving together never take
// the node past limits.max_clients, however their checks interleave.
func TestClientLimitHoldsInABurst(t *testing.T) {
	const limit, burst = 20, 200
	be, n, url := oneBackend(t, backend.Config{}, func(c *Config) {
		c.Limits.MaxClients = limit
		c.Limits.Admit = AdmitLimits{}
	})
	var mu sync.Mutex
	var admitted []*ssetest.Client
	refused := 0
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			c, resp, err := ssetest.DialStatus(url, nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Errorf("dial: %v", err)
			case c == nil:
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					refused++
				} else {
					t.Errorf("refusal %d, want 503", resp.StatusCode)
				}
			default:
				admitted = append(admitted, c)
			}
		}()
	}
	close(gate)
	wg.Wait()
	defer func() {
		for _, c := range admitted {
			c.Close()
		}
	}()
	if len(admitted) > limit || len(admitted)+refused != burst {
		t.Fatalf("admitted %d and refused %d of %d at once; want at most %d admitted", len(admitted), refused, burst, limit)
	}
	// No place was lost in the burst either: one at a time, the node fills
	// up to exactly the limit.
	for len(admitted) < limit {
		c, resp, err := ssetest.DialStatus(url, nil)
		if err != nil || c == nil {
			if resp != nil {
				resp.Body.Close()
			}
			t.Fatalf("client %d of %d refused after the burst (%v)", len(admitted)+1, limit, err)
		}
		admitted = append(admitted, c)
	}
	if c, resp, _ := ssetest.DialStatus(url, nil); c != nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("client over the limit admitted after the burst")
	} else {
		resp.Body.Close()
	}
	if got := n.Relay().Clients(); got != limit {
		t.Fatalf("relay holds %d clients, want %d", got, limit)
	}
	be.Publish(streamPath, 1)
	for _, c := range admitted {
		c.Next(t, 5*time.Second)
	}
}
