package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/sse"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

func TestRetryHint(t *testing.T) {
	tests := []struct {
		base   time.Duration
		lo, hi int64 // bounds in ms
	}{
		{0, 0, 0},
		{999 * time.Microsecond, 0, 0}, // below a millisecond: no delay
		{time.Millisecond, 0, 1},
		{3 * time.Millisecond, 1, 4},
		{100 * time.Millisecond, 50, 150},
		{2 * time.Second, 1000, 3000},
		{2*time.Second + 999*time.Microsecond, 1000, 3000},
		{time.Minute, 30000, 90000},
	}
	for _, tc := range tests {
		t.Run(tc.base.String(), func(t *testing.T) {
			base := tc.base.Milliseconds()
			var below, above bool // seen in the lowest and highest quarter
			for i := 0; i < 2000; i++ {
				b := retryHint(tc.base)
				if !bytes.HasPrefix(b, []byte("retry: ")) || !bytes.HasSuffix(b, []byte("\n\n")) {
					t.Fatalf("retryHint(%s) = %q, want one retry block", tc.base, b)
				}
				ms, err := strconv.ParseInt(string(b[len("retry: "):len(b)-2]), 10, 64)
				if err != nil {
					t.Fatalf("retryHint(%s) = %q: %v", tc.base, b, err)
				}
				if ms < tc.lo || ms > tc.hi {
					t.Fatalf("retryHint(%s) = %d ms, want within [%d, %d]", tc.base, ms, tc.lo, tc.hi)
				}
				below = below || ms < base*3/4
				above = above || ms > base*5/4
				// A browser reads exactly this retry value from it.
				var got []sse.Event
				if err := sse.NewParser(0).Feed(b, func(e sse.Event) { got = append(got, e) }); err != nil {
					t.Fatal(err)
				}
				if len(got) != 1 || got[0] != (sse.Event{Retry: ms}) {
					t.Fatalf("retryHint(%s) = %q parses as %+v", tc.base, b, got)
				}
			}
			if base >= 100 && !(below && above) {
				t.Fatalf("retryHint(%s) never strayed far below (%v) or above (%v) the base: no jitter", tc.base, below, above)
			}
		})
	}
}

func TestReasonFor(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"deadline", os.ErrDeadlineExceeded, ReasonWriteTimeout},
		{"wrapped deadline", &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}, ReasonWriteTimeout},
		{"reset", &net.OpError{Op: "write", Net: "tcp", Err: syscall.ECONNRESET}, ReasonWriteError},
		{"broken pipe", syscall.EPIPE, ReasonWriteError},
		{"closed", net.ErrClosed, ReasonWriteError},
		{"gone", errClientGone, ReasonWriteError},
	}
	for _, tc := range tests {
		if got := reasonFor(tc.err); got != tc.want {
			t.Errorf("reasonFor(%s) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestReasonForRealWriteErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	tests := []struct {
		name    string
		prepare func(net.Conn) error
		want    string
	}{
		{"deadline passed", func(c net.Conn) error { return c.SetWriteDeadline(time.Now().Add(-time.Second)) }, ReasonWriteTimeout},
		{"connection closed", func(c net.Conn) error { return c.Close() }, ReasonWriteError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			peer := <-accepted
			defer peer.Close()
			if err := tc.prepare(conn); err != nil {
				t.Fatal(err)
			}
			_, err = conn.Write([]byte("data: x\n\n"))
			if err == nil {
				t.Fatal("write succeeded")
			}
			if got := reasonFor(err); got != tc.want {
				t.Fatalf("reasonFor(%v) = %q, want %q", err, got, tc.want)
			}
		})
	}
}

func TestCompactKeepsFastPathClients(t *testing.T) {
	mk := func(gone, slow bool) *client {
		c := &client{slow: slow}
		c.gone.Store(gone)
		return c
	}
	tests := []struct {
		name  string
		flags [][2]bool // gone, slow
		keep  []int
	}{
		{"none", nil, nil},
		{"all live", [][2]bool{{false, false}, {false, false}}, []int{0, 1}},
		{"gone dropped", [][2]bool{{true, false}, {false, false}, {true, false}}, []int{1}},
		{"slow dropped", [][2]bool{{false, true}, {false, false}}, []int{1}},
		{"all dropped", [][2]bool{{true, false}, {false, true}, {true, true}}, nil},
		{"order kept", [][2]bool{{false, false}, {true, false}, {false, false}, {false, true}, {false, false}}, []int{0, 2, 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := make([]*client, len(tc.flags))
			for i, f := range tc.flags {
				in[i] = mk(f[0], f[1])
			}
			orig := append([]*client(nil), in...)
			out := compact(in)
			if len(out) != len(tc.keep) {
				t.Fatalf("compact kept %d clients, want %d", len(out), len(tc.keep))
			}
			for i, k := range tc.keep {
				if out[i] != orig[k] {
					t.Fatalf("compact()[%d] is not client %d", i, k)
				}
			}
			// The tail of the backing array is cleared so dropped clients
			// can be collected.
			for i := len(out); i < len(in); i++ {
				if in[i] != nil {
					t.Fatalf("slot %d still holds a dropped client", i)
				}
			}
		})
	}
}

func TestBuildHead(t *testing.T) {
	extra := http.Header{}
	extra.Set("Access-Control-Allow-Origin", "https://app.example")
	extra.Set("Content-Type", "text/plain")
	extra.Set("Content-Length", "12")
	extra.Set("Transfer-Encoding", "chunked")
	head := buildHead(extra)
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 OK\r\n")) || !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		t.Fatalf("head = %q, want a complete HTTP/1.1 200 head", head)
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(head), strings.NewReader("data: x\n\n"))), nil)
	if err != nil {
		t.Fatalf("ReadResponse: %v", err)
	}
	defer resp.Body.Close()
	want := map[string]string{
		"Content-Type":                "text/event-stream",
		"Cache-Control":               "no-cache",
		"X-Accel-Buffering":           "no",
		"Access-Control-Allow-Origin": "https://app.example",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if _, err := http.ParseTime(resp.Header.Get("Date")); err != nil {
		t.Errorf("Date = %q: %v", resp.Header.Get("Date"), err)
	}
	if !resp.Close || resp.ContentLength != -1 || len(resp.TransferEncoding) != 0 {
		t.Errorf("close %v, length %d, encoding %v: want a body delimited by the connection's close", resp.Close, resp.ContentLength, resp.TransferEncoding)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "data: x\n\n" {
		t.Errorf("body = %q, want the stream bytes unframed", body)
	}
	if extra.Get("Content-Type") != "text/plain" || extra.Get("Content-Length") != "12" {
		t.Error("buildHead changed the caller's header")
	}
}

// feedBackend is an SSE back end on a loopback socket. A request without
// Last-Event-ID gets every block published from then on; one with
// Last-Event-ID is answered by resume (404 when nil).
type feedBackend struct {
	srv     *httptest.Server
	conns   atomic.Int32
	resumes chan string // Last-Event-ID of every request that carried one
	resume  func(w http.ResponseWriter, lastID string, history []string)
	// resumeLive keeps a resumed connection open for live blocks after
	// the replay, as a real back end does.
	resumeLive bool

	mu      sync.Mutex
	history []string // every block published, in order
	live    []chan string
}

func newFeedBackend(t *testing.T, resume func(w http.ResponseWriter, lastID string, history []string)) *feedBackend {
	b := &feedBackend{resumes: make(chan string, 16), resume: resume}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *feedBackend) serve(w http.ResponseWriter, r *http.Request) {
	b.conns.Add(1)
	if _, ok := r.Header["Last-Event-Id"]; ok {
		lastID := r.Header.Get("Last-Event-ID")
		b.resumes <- lastID
		if b.resume == nil {
			http.NotFound(w, r)
			return
		}
		b.mu.Lock()
		history := append([]string(nil), b.history...)
		var ch chan string
		if b.resumeLive {
			ch = make(chan string, 64)
			b.live = append(b.live, ch)
		}
		b.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		b.resume(w, lastID, history)
		w.(http.Flusher).Flush()
		if ch == nil {
			<-r.Context().Done()
			return
		}
		b.stream(w, r, ch)
		return
	}
	ch := make(chan string, 64)
	b.mu.Lock()
	b.live = append(b.live, ch)
	b.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	b.stream(w, r, ch)
}

// stream writes live blocks until the client leaves.
func (b *feedBackend) stream(w http.ResponseWriter, r *http.Request, ch chan string) {
	for {
		select {
		case block := <-ch:
			_, _ = io.WriteString(w, block)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		}
	}
}

// publish sends block "id: <id>\ndata: event <id>" to every live connection.
func (b *feedBackend) publish(ids ...int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, id := range ids {
		block := fmt.Sprintf("id: %d\ndata: event %d\n\n", id, id)
		b.history = append(b.history, block)
		for _, ch := range b.live {
			ch <- block
		}
	}
}

// target points every stream at the back end's path of the same name.
func (b *feedBackend) target(key string) TargetFunc {
	return func(*Attempt) (Target, error) {
		return Target{URL: b.srv.URL + key, Label: "backend"}, nil
	}
}

// startFront serves r on a loopback socket the way a node does: the request
// path is the stream key, a refusal is rendered with its status.
func startFront(t *testing.T, r *Relay, b *feedBackend) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, has := req.Header["Last-Event-Id"]
		err := r.Serve(w, req, Request{
			Key:            req.URL.Path,
			Target:         b.target(req.URL.Path),
			LastEventID:    req.Header.Get("Last-Event-ID"),
			HasLastEventID: has,
		})
		var e *Error
		if errors.As(err, &e) {
			w.Header().Set("X-Upstream-Status", strconv.Itoa(e.Upstream))
			if e.RetryAfter > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
			}
			w.WriteHeader(e.Status)
			_, _ = io.WriteString(w, e.Reason)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

const eventWait = 5 * time.Second

// subscribe opens url with an optional Last-Event-ID and expects a stream:
// a 200 answer that is not text/event-stream fails the test too.
func subscribe(t *testing.T, url string, lastID *string) *ssetest.Client {
	t.Helper()
	c := ssetest.Dial(t, url, lastIDHeader(lastID))
	if ct := c.Resp.Header.Get("Content-Type"); !isEventStream(ct) {
		t.Fatalf("GET %s: 200 with Content-Type %q, not an event stream", url, ct)
	}
	return c
}

// lastIDHeader is a request header with Last-Event-ID set, when id is not
// nil.
func lastIDHeader(id *string) http.Header {
	if id == nil {
		return nil
	}
	return http.Header{"Last-Event-Id": {*id}}
}

func idp(s string) *string { return &s }

// expectIDs reads blocks and checks they are the back end's events ids.
func expectIDs(t *testing.T, c *ssetest.Client, ids ...int) {
	t.Helper()
	for _, id := range ids {
		ev := c.NextBlock(t, eventWait)
		want := sse.Event{ID: strconv.Itoa(id), HasID: true, Data: fmt.Sprintf("event %d", id), HasData: true, Retry: -1}
		if ev != want {
			t.Fatalf("got %+v, want %+v", ev, want)
		}
	}
}

// expectEnd waits for the relay to close the stream, cleanly and with no
// block before the end.
func expectEnd(t *testing.T, c *ssetest.Client) {
	t.Helper()
	if got := c.ExpectEnd(t, eventWait); len(got) > 0 {
		t.Fatalf("got %+v, want the end of the stream", got[0])
	}
	if err := c.Err(); err != nil {
		t.Fatalf("stream ended with %v, want a clean close", err)
	}
}

func TestServeSharesOneUpstreamAndResumesFromRing(t *testing.T) {
	b := newFeedBackend(t, nil)
	r := newTestRelay(t, testConfig())
	url := startFront(t, r, b) + "/news"

	first := subscribe(t, url, nil)
	b.publish(1, 2, 3, 4, 5)
	expectIDs(t, first, 1, 2, 3, 4, 5)

	tests := []struct {
		name   string
		lastID *string
		replay []int
	}{
		{"no last event id: live only", nil, nil},
		{"id in the ring: the rest replayed", idp("2"), []int{3, 4, 5}},
		{"oldest id", idp("1"), []int{2, 3, 4, 5}},
		{"head id: nothing to replay", idp("5"), nil},
	}
	subs := make([]*ssetest.Client, len(tests))
	for i, tc := range tests {
		subs[i] = subscribe(t, url, tc.lastID)
		expectIDs(t, subs[i], tc.replay...)
	}
	b.publish(6)
	expectIDs(t, first, 6)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { expectIDs(t, subs[i], 6) })
	}

	if got := b.conns.Load(); got != 1 {
		t.Errorf("back end saw %d connections, want 1 shared by every subscriber", got)
	}
	select {
	case id := <-b.resumes:
		t.Errorf("back end was asked to resume from %q; the ring held everything", id)
	default:
	}
	m := r.Metrics().Snapshot()
	if m.ClientsTotal != 5 || m.EventsIn != 6 || m.UpstreamConnects != 1 || m.Gaps != 0 {
		t.Errorf("metrics: clients %d events %d connects %d gaps %d; want 5, 6, 1, 0", m.ClientsTotal, m.EventsIn, m.UpstreamConnects, m.Gaps)
	}
	if r.Clients() != 5 || r.Streams() != 1 || !r.Has("/news") {
		t.Errorf("relay reports %d clients, %d streams, has /news %v", r.Clients(), r.Streams(), r.Has("/news"))
	}
	infos := r.StreamInfo()
	if len(infos) != 1 {
		t.Fatalf("StreamInfo = %+v, want one stream", infos)
	}
	info := infos[0]
	if info.Key != "/news" || info.State != "live" || info.Upstream != "backend" || info.Clients != 5 ||
		info.EventsIn != 6 || info.LastEventID != "6" || info.Buffered != 6 || info.LastAt.Before(info.OldestAt) {
		t.Errorf("StreamInfo = %+v", info)
	}
}

func TestServeMirrorsUpstreamRefusal(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		ctype    string
		want     int
		upstream int
	}{
		{"not found", 404, "", 404, 404},
		{"forbidden", 403, "", 403, 403},
		{"unavailable", 503, "", 503, 503},
		{"ended", 204, "", 204, 204},
		{"not an event stream", 200, "application/json", 502, 200},
		{"redirect status without location", 302, "", 502, 302},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				hits.Add(1)
				if tc.ctype != "" {
					w.Header().Set("Content-Type", tc.ctype)
				}
				w.WriteHeader(tc.status)
			}))
			defer be.Close()
			r := newTestRelay(t, testConfig())
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				err := r.Serve(w, req, Request{Key: "/s", Target: func(*Attempt) (Target, error) { return Target{URL: be.URL}, nil }})
				var e *Error
				if !errors.As(err, &e) {
					t.Errorf("Serve = %v, want a refusal", err)
					return
				}
				w.Header().Set("X-Upstream-Status", strconv.Itoa(e.Upstream))
				w.WriteHeader(e.Status)
			}))
			defer front.Close()
			for i := 1; i <= 2; i++ {
				resp, err := http.Get(front.URL + "/s")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.want || resp.Header.Get("X-Upstream-Status") != strconv.Itoa(tc.upstream) {
					t.Fatalf("request %d: %d (upstream %s), want %d (upstream %d)", i, resp.StatusCode, resp.Header.Get("X-Upstream-Status"), tc.want, tc.upstream)
				}
				// A refused stream is not reused: the next subscriber asks
				// upstream again.
				if got := hits.Load(); got != int32(i) {
					t.Fatalf("back end saw %d requests after %d subscribers", got, i)
				}
			}
			if got := r.Metrics().Snapshot().Disconnects; len(got) != 0 {
				t.Fatalf("refusals counted as disconnects: %v", got)
			}
		})
	}
}

// TestServeBeyondTheRing covers a subscriber whose Last-Event-ID the ring
// has evicted: the missing history comes from upstream when it can resume,
// otherwise the subscriber is told of the gap and gets what the ring holds.
func TestServeBeyondTheRing(t *testing.T) {
	replayAfter := func(w http.ResponseWriter, lastID string, history []string) {
		found := false
		for _, block := range history {
			if found {
				_, _ = io.WriteString(w, block)
			}
			found = found || strings.HasPrefix(block, "id: "+lastID+"\n")
		}
	}
	tests := []struct {
		name     string
		resume   func(http.ResponseWriter, string, []string)
		gapEvent string
		gap      string // reason fragment of the gap event; "" for none
		gaps     uint64 // gaps counted
		ids      []int
	}{
		{name: "upstream replays the missing events", resume: replayAfter, gapEvent: "ssemesh-gap", ids: []int{2, 3, 4, 5, 6}},
		{name: "upstream cannot resume", gapEvent: "ssemesh-gap", gap: "upstream could not resume", gaps: 1, ids: []int{4, 5, 6}},
		{name: "upstream cannot resume, gap event disabled", gaps: 1, ids: []int{4, 5, 6}},
		{name: "upstream replays nothing older", resume: func(w http.ResponseWriter, _ string, history []string) {
			_, _ = io.WriteString(w, history[len(history)-1])
		}, gapEvent: "ssemesh-gap", gap: "does not hold events after that id", gaps: 1, ids: []int{4, 5, 6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newFeedBackend(t, tc.resume)
			cfg := testConfig()
			cfg.RingEvents = 3
			cfg.GapEvent = tc.gapEvent
			r := newTestRelay(t, cfg)
			url := startFront(t, r, b) + "/s"
			first := subscribe(t, url, nil)
			// One at a time: a burst larger than the ring would leave
			// this subscriber behind it.
			for id := 1; id <= 6; id++ {
				b.publish(id)
				expectIDs(t, first, id)
			}
			// The ring now holds 4..6.

			late := subscribe(t, url, idp("1"))
			if tc.gap != "" {
				ev := late.NextBlock(t, eventWait)
				var data map[string]string
				if ev.Type != tc.gapEvent || json.Unmarshal([]byte(ev.Data), &data) != nil ||
					data["lastEventId"] != "1" || !strings.Contains(data["reason"], tc.gap) {
					t.Fatalf("first event %+v, want a %s event for id 1 with reason %q", ev, tc.gapEvent, tc.gap)
				}
				if ev.HasID {
					t.Fatalf("gap event %+v carries an id: it would move the client's lastEventId", ev)
				}
			}
			expectIDs(t, late, tc.ids...)
			b.publish(7)
			expectIDs(t, late, 7)
			expectIDs(t, first, 7)

			select {
			case id := <-b.resumes:
				if id != "1" {
					t.Fatalf("back end asked to resume from %q, want 1", id)
				}
			default:
				t.Fatal("back end was never asked for the history")
			}
			if got := r.Metrics().Snapshot().Gaps; got != tc.gaps {
				t.Fatalf("Gaps = %d, want %d", got, tc.gaps)
			}
		})
	}
}

func TestResumeFromOriginAfterRingEviction(t *testing.T) {
	// The stream was opened upstream from Last-Event-ID "0". A subscriber
	// resuming from that same id after the ring dropped the stream's first
	// events must get them through upstream catch-up, not be positioned
	// before the ring and cut.
	// "0" is before every event: the back end replays its whole history.
	b := newFeedBackend(t, func(w http.ResponseWriter, lastID string, history []string) {
		for _, block := range history {
			_, _ = io.WriteString(w, block)
		}
	})
	b.resumeLive = true
	cfg := testConfig()
	cfg.RingEvents = 3
	r := newTestRelay(t, cfg)
	url := startFront(t, r, b) + "/s"
	first := subscribe(t, url, idp("0"))
	for id := 1; id <= 6; id++ {
		b.publish(id)
		expectIDs(t, first, id)
	}
	// The ring holds 4..6; 1..3 come from the back end's replay.
	late := subscribe(t, url, idp("0"))
	expectIDs(t, late, 1, 2, 3, 4, 5, 6)
	b.publish(7)
	expectIDs(t, late, 7)
	if n := r.Metrics().Snapshot().Disconnects[ReasonBehindRing]; n != 0 {
		t.Fatalf("%d subscribers cut as %s", n, ReasonBehindRing)
	}
}

func TestDrainSendsJitteredRetryHint(t *testing.T) {
	b := newFeedBackend(t, nil)
	cfg := testConfig()
	cfg.DrainRetry = 2 * time.Second
	r := newTestRelay(t, cfg)
	front := startFront(t, r, b)

	var subs []*ssetest.Client
	for _, key := range []string{"/a", "/a", "/a", "/b", "/b"} {
		subs = append(subs, subscribe(t, front+key, nil))
	}
	b.publish(1)
	for _, c := range subs {
		expectIDs(t, c, 1)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.Drain(ctx, 0)
	if ctx.Err() != nil {
		t.Fatal("Drain did not finish")
	}
	for i, c := range subs {
		ev := c.NextBlock(t, eventWait)
		if ev.HasData || ev.HasID || ev.Retry < 1000 || ev.Retry > 3000 {
			t.Fatalf("subscriber %d got %+v, want only a retry hint within 1000..3000 ms", i, ev)
		}
		expectEnd(t, c)
	}
	if r.Clients() != 0 {
		t.Fatalf("%d clients attached after Drain", r.Clients())
	}

	resp, err := http.Get(front + "/c")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("a new subscriber during drain got %s (Retry-After %q), want 503 with Retry-After 1", resp.Status, resp.Header.Get("Retry-After"))
	}
}

func TestEarlySubscribersFromConsecutiveIDs(t *testing.T) {
	// Two children open one stream a moment apart, from consecutive ids:
	// the first opens it from 18, the second arrives while it connects,
	// from 19. Neither may be sent an event it named.
	b := &feedBackend{resumes: make(chan string, 16), resumeLive: true}
	b.resume = func(w http.ResponseWriter, lastID string, history []string) {
		found := false
		for _, block := range history {
			if found {
				_, _ = io.WriteString(w, block)
			}
			found = found || strings.HasPrefix(block, "id: "+lastID+"\n")
		}
	}
	gate := make(chan struct{})
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-gate
		b.serve(w, r)
	}))
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	})
	b.publish(17, 18, 19) // history only: nobody is connected yet

	r := newTestRelay(t, testConfig())
	url := startFront(t, r, b) + "/s"
	type result struct {
		c   *ssetest.Client
		err error
	}
	open := func(id string) chan result {
		ch := make(chan result, 1)
		go func() {
			c, resp, err := ssetest.DialStatus(url, lastIDHeader(idp(id)))
			switch {
			case err != nil:
				err = fmt.Errorf("GET %s: %w", url, err)
			case c == nil:
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
			case !isEventStream(resp.Header.Get("Content-Type")):
				c.Close()
				c, err = nil, fmt.Errorf("GET %s: 200 with Content-Type %q, not an event stream", url, resp.Header.Get("Content-Type"))
			}
			if c != nil {
				t.Cleanup(c.Close)
			}
			ch <- result{c, err}
		}()
		return ch
	}
	opened := open("18")
	waiting := func(n int) bool {
		r.mu.Lock()
		s := r.streams["/s"]
		r.mu.Unlock()
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.refs == n
	}
	for !waiting(1) {
		runtime.Gosched()
	}
	second := open("19")
	for !waiting(2) {
		runtime.Gosched()
	}
	close(gate)
	r1, r2 := <-opened, <-second
	if r1.err != nil || r2.err != nil {
		t.Fatalf("subscribing: %v, %v", r1.err, r2.err)
	}
	first, late := r1.c, r2.c
	b.publish(20)
	expectIDs(t, first, 19, 20)
	expectIDs(t, late, 20)
}

func TestRingAgeEnforcedOnAQuietStream(t *testing.T) {
	// Entries older than RingAge leave the buffer on the heartbeat tick
	// even when no new event arrives to push them out.
	b := newFeedBackend(t, nil)
	cfg := testConfig()
	cfg.RingAge = 500 * time.Millisecond
	cfg.Heartbeat = 20 * time.Millisecond
	r := newTestRelay(t, cfg)
	url := startFront(t, r, b) + "/s"
	c := subscribe(t, url, nil)
	b.publish(1, 2, 3)
	expectIDs(t, c, 1, 2, 3)
	buffered := func() int {
		infos := r.StreamInfo()
		if len(infos) != 1 {
			t.Fatalf("StreamInfo = %+v, want one stream", infos)
		}
		return infos[0].Buffered
	}
	if n := buffered(); n != 3 {
		t.Fatalf("buffered %d right after publishing, want 3", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for buffered() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("buffer still holds %d entries long after ring_age", buffered())
		}
		<-time.After(10 * time.Millisecond) // polling interval
	}
}
