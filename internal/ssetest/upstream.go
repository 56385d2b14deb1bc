package ssetest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/ssemesh/ssemesh/internal/sse"
)

// Request is what a scripted upstream was asked: the request and its place
// in the upstream's history.
type Request struct {
	*http.Request
	// N counts the upstream's requests from 0; PathN counts those to the
	// same path.
	N, PathN int
}

// LastEventID is the request's Last-Event-ID header and whether it was
// sent at all (an empty one is a reset, not an absence).
func (r Request) LastEventID() (string, bool) {
	vs, ok := r.Header["Last-Event-Id"]
	if !ok || len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// Response is one answer of a scripted upstream, played in this order:
// wait for HeaderGate, write Header and Status, flush, wait for Gate, write
// and flush each of Body, then end the response, or with Hold keep it open
// until the client goes or the upstream closes.
type Response struct {
	// Status is the status code; 0 is 200.
	Status int
	// Header is copied onto the response. A 200 answer without a
	// Content-Type gets text/event-stream and Cache-Control no-cache;
	// a Content-Type key with a nil value sends none (and stops Go from
	// sniffing one).
	Header http.Header
	// HeaderGate, when not nil, holds the answer before its headers until
	// it is closed: the request is pending, as at a slow back end.
	HeaderGate <-chan struct{}
	// Gate, when not nil, holds the body, after the headers are flushed,
	// until it is closed.
	Gate <-chan struct{}
	// Body is written chunk by chunk, each flushed on its own, so a test
	// controls where the bytes are split.
	Body []string
	// Hold keeps the response open after Body: an upstream EOF would make
	// a relay reconnect.
	Hold bool
	// Handler, when not nil, answers instead of everything above but
	// HeaderGate: for answers the fields cannot describe.
	Handler http.HandlerFunc
}

// Script chooses the answer to each request.
type Script func(Request) Response

// Steps is a script answering the n-th request with rs[n]; the last one
// repeats.
func Steps(rs ...Response) Script {
	return func(r Request) Response { return rs[min(r.N, len(rs)-1)] }
}

// Always is a script answering every request with r.
func Always(r Response) Script { return func(Request) Response { return r } }

// Events encodes blocks in their canonical wire form, one Body chunk each.
func Events(evs ...sse.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(sse.AppendEvent(nil, e))
	}
	return out
}

// Data is the block "id: <id>\ndata: <data>\n\n", or without its id line
// when id is empty.
func Data(id, data string) string {
	e := sse.Event{Data: data, HasData: true, Retry: -1}
	if id != "" {
		e.ID, e.HasID = id, true
	}
	return string(sse.AppendEvent(nil, e))
}

// Upstream is an HTTP test server playing a Script, and the record of what
// it was asked.
type Upstream struct {
	*httptest.Server
	script Script

	mu     sync.Mutex
	reqs   []Request
	byPath map[string]int
}

// Serve starts an upstream on a loopback port, closed when the test ends
// (a held response ends then, too).
func Serve(t testing.TB, script Script) *Upstream {
	t.Helper()
	u := NewUpstream(script)
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// NewUpstream is an upstream not yet started, for a test that configures
// its server (TLS, say) before u.Start or u.StartTLS, and closes it.
func NewUpstream(script Script) *Upstream {
	u := &Upstream{script: script, byPath: map[string]int{}}
	u.Server = httptest.NewUnstartedServer(u)
	return u
}

// Close stops the upstream and ends its responses, held ones included
// (httptest.Server.Close alone would wait for them), and waits for its
// handlers.
func (u *Upstream) Close() {
	_ = u.Listener.Close()
	u.CloseClientConnections()
	u.Server.Close()
}

// Addr is the upstream's host:port.
func (u *Upstream) Addr() string { return u.Listener.Addr().String() }

// Requests is what the upstream was asked, in order.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Request(nil), u.reqs...)
}

// Hits is how many requests the upstream has had.
func (u *Upstream) Hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// PathHits is how many requests the upstream has had for path.
func (u *Upstream) PathHits(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byPath[path]
}

// LastEventIDs is the Last-Event-ID each request for path sent, in order,
// "<none>" where it sent none.
func (u *Upstream) LastEventIDs(path string) []string {
	var out []string
	for _, r := range u.Requests() {
		if r.URL.Path != path {
			continue
		}
		id, ok := r.LastEventID()
		if !ok {
			id = "<none>"
		}
		out = append(out, id)
	}
	return out
}

// ServeHTTP plays the script's answer to r.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	req := Request{Request: r, N: len(u.reqs), PathN: u.byPath[r.URL.Path]}
	u.reqs = append(u.reqs, req)
	u.byPath[r.URL.Path]++
	u.mu.Unlock()
	Play(w, r, u.script(req))
}

// Play writes resp as the answer to r; Upstream uses it, and a test's own
// handler can for some of its answers.
func Play(w http.ResponseWriter, r *http.Request, resp Response) {
	if !wait(r, resp.HeaderGate) {
		return
	}
	if resp.Handler != nil {
		resp.Handler(w, r)
		return
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	if _, set := resp.Header["Content-Type"]; !set && status == http.StatusOK {
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
	}
	w.WriteHeader(status)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil || !wait(r, resp.Gate) {
		return
	}
	for _, chunk := range resp.Body {
		if _, err := io.WriteString(w, chunk); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
	if resp.Hold {
		<-r.Context().Done()
	}
}

// wait waits for gate (nil: no wait) and reports false if the client went
// first.
func wait(r *http.Request, gate <-chan struct{}) bool {
	if gate == nil {
		return true
	}
	select {
	case <-gate:
		return true
	case <-r.Context().Done():
		return false
	}
}

// Gates holds one channel per key, made on first use: a script waits on a
// key's channel and the test opens it to let the answer go on.
type Gates struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

// Get is key's channel.
func (g *Gates) Get(key string) <-chan struct{} { return g.ch(key) }

// Open closes key's channel; it may be called once per key.
func (g *Gates) Open(key string) { close(g.ch(key)) }

func (g *Gates) ch(key string) chan struct{} {
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
