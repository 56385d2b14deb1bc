package node

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/sse"
)

// testLogger keeps test output readable: warnings and errors only, unless
// the run is verbose about a failure.
func testLogger(t testing.TB) logrus.FieldLogger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(testWriter{t})
	return l
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

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

// gates holds one channel per key, made on first use: an upstream handler
// waits on its key's channel, and the test closes it to let it go on.
type gates struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (g *gates) get(key string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]chan struct{}{}
	}
	c, ok := g.m[key]
	if !ok {
		c = make(chan struct{})
		g.m[key] = c
	}
	return c
}

func (g *gates) open(key string) { close(g.get(key)) }

// startBackend runs a synthetic back end that emits only on Publish.
func startBackend(t testing.TB, cfg backend.Config) (*backend.Backend, string) {
	t.Helper()
	be := backend.New(cfg, testLogger(t))
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
	n, err := New(cfg, testLogger(t))
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

// waitFor polls cond until it holds or the deadline passes. It is for
// conditions in other processes or goroutines that publish no event.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sseClient is a real HTTP client reading one stream over its own
// connection; blocks arrive on a channel as the parser emits them.
type sseClient struct {
	resp   *http.Response
	events chan sse.Event
	done   chan struct{}
	err    error
	cancel context.CancelFunc
	gate   chan struct{} // non-nil: reading starts when it is closed
}

var streamClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0, DisableCompression: true}}

// dial opens a stream and fails the test unless it answers 200.
func dial(t testing.TB, url string, header http.Header) *sseClient {
	t.Helper()
	c, resp, err := dialStatus(url, header)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if c == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	t.Cleanup(c.Close)
	return c
}

// dialStatus opens a stream; for a non-200 answer it returns the response
// (body unread) and a nil client.
func dialStatus(url string, header http.Header) (*sseClient, *http.Response, error) {
	return dialGated(url, header, nil)
}

// dialGated is dialStatus with a reader that waits for gate to close.
func dialGated(url string, header http.Header, gate chan struct{}) (*sseClient, *http.Response, error) {
	return dialWith(streamClient, url, header, gate)
}

// dialWith is dialGated through hc (another source address, say).
func dialWith(hc *http.Client, url string, header http.Header, gate chan struct{}) (*sseClient, *http.Response, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		return nil, resp, nil
	}
	c := &sseClient{resp: resp, events: make(chan sse.Event, 4096), done: make(chan struct{}), cancel: cancel, gate: gate}
	go c.read()
	return c, resp, nil
}

func (c *sseClient) read() {
	defer close(c.done)
	defer close(c.events)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-c.resp.Request.Context().Done():
			return
		}
	}
	r := sse.NewReader(bufio.NewReaderSize(c.resp.Body, 64<<10), sse.DefaultMaxEventBytes)
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.err = err
			}
			return
		}
		c.events <- ev
	}
}

// Close disconnects the client and waits for its reader.
func (c *sseClient) Close() {
	c.cancel()
	c.resp.Body.Close()
	<-c.done
}

// next returns the next block with data (retry-only and id-only blocks are
// skipped) or fails after d.
func (c *sseClient) next(t testing.TB, d time.Duration) sse.Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("stream ended (err %v) while waiting for an event", c.err)
			}
			if ev.HasData {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no event within %s", d)
		}
	}
}

// ids reads n data events and returns their ids.
func (c *sseClient) ids(t testing.TB, n int, d time.Duration) []string {
	t.Helper()
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, c.next(t, d).ID)
	}
	return out
}

// expectEnd waits for the server to close the stream.
func (c *sseClient) expectEnd(t testing.TB, d time.Duration) []sse.Event {
	t.Helper()
	var got []sse.Event
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-timer.C:
			t.Fatalf("stream still open after %s", d)
		}
	}
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

// tryIDs is ids for goroutines other than the test's: it reports instead
// of failing.
func (c *sseClient) tryIDs(n int, d time.Duration) ([]string, error) {
	out := make([]string, 0, n)
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return out, errors.New("stream ended early")
			}
			if ev.HasData {
				out = append(out, ev.ID)
			}
		case <-timer.C:
			return out, errors.New("timed out")
		}
	}
	return out, nil
}

// nextBlock returns the next block of any kind (retry-only and id-only
// blocks included) or fails after d.
func (c *sseClient) nextBlock(t testing.TB, d time.Duration) sse.Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatalf("stream ended (err %v) while waiting for a block", c.err)
		}
		return ev
	case <-timer.C:
		t.Fatalf("no block within %s", d)
	}
	return sse.Event{}
}
