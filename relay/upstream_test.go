package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// testConfig is DefaultConfig with timings short enough for tests and no
// connect retries.
func testConfig() Config {
	c := DefaultConfig()
	c.BackoffMin = time.Millisecond
	c.BackoffMax = 5 * time.Millisecond
	c.ConnectRetries = 0
	c.ConnectTimeout = 2 * time.Second
	c.ReadyTimeout = 5 * time.Second
	c.CatchUpTimeout = 2 * time.Second
	c.Linger = time.Minute
	c.Heartbeat = time.Minute
	c.IdleTimeout = time.Minute
	return c
}

// newTestRelay builds a relay that is closed when the test ends.
func newTestRelay(t *testing.T, cfg Config) *Relay {
	t.Helper()
	r, err := New(cfg, ssetest.Logger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestBackoffRange(t *testing.T) {
	tests := []struct {
		min, max time.Duration
		attempt  int
		ceiling  time.Duration // the d of [d/2, d]
	}{
		{250 * time.Millisecond, 30 * time.Second, 0, 250 * time.Millisecond},
		{250 * time.Millisecond, 30 * time.Second, 1, 500 * time.Millisecond},
		{250 * time.Millisecond, 30 * time.Second, 3, 2 * time.Second},
		{250 * time.Millisecond, 30 * time.Second, 6, 16 * time.Second},
		{250 * time.Millisecond, 30 * time.Second, 7, 30 * time.Second}, // 32s capped
		{250 * time.Millisecond, 30 * time.Second, 1 << 20, 30 * time.Second},
		{250 * time.Millisecond, 30 * time.Second, -3, 250 * time.Millisecond},
		{time.Second, time.Second, 5, time.Second},
		{5 * time.Second, time.Second, 0, time.Second}, // min above max: max wins
		{3 * time.Nanosecond, time.Hour, 2, 12 * time.Nanosecond},
		{time.Nanosecond, time.Nanosecond, 0, time.Nanosecond},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s_%s_%d", tc.min, tc.max, tc.attempt), func(t *testing.T) {
			lo, hi := tc.ceiling/2, tc.ceiling
			seenMin, seenMax := time.Duration(1<<62), time.Duration(-1)
			for i := 0; i < 500; i++ {
				d := backoffFor(tc.min, tc.max).Delay(tc.attempt)
				if d < lo || d > hi {
					t.Fatalf("backoff = %s, want within [%s, %s]", d, lo, hi)
				}
				seenMin, seenMax = min(seenMin, d), max(seenMax, d)
			}
			// Full jitter: with this many draws from a wide range, the
			// results are not all equal.
			if hi-lo >= time.Millisecond && seenMin == seenMax {
				t.Fatalf("backoff returned %s every time: no jitter", seenMin)
			}
		})
	}
}

func TestJitterBackoff(t *testing.T) {
	const min, max = 100 * time.Millisecond, 10 * time.Second
	resp := func(status int, retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: status, Header: h}
	}
	tests := []struct {
		name    string
		resp    *http.Response
		attempt int
		exact   time.Duration // >= 0: this exact delay
		ceiling time.Duration // exact < 0: backoff within [ceiling/2, ceiling]
	}{
		{"no response", nil, 0, -1, min},
		{"no response later attempt", nil, 2, -1, 4 * min},
		{"429 retry-after", resp(429, "3"), 0, 3 * time.Second, 0},
		{"503 retry-after", resp(503, "7"), 5, 7 * time.Second, 0},
		{"503 retry-after zero", resp(503, "0"), 3, 0, 0},
		{"429 retry-after equal to max", resp(429, "10"), 0, max, 0},
		{"429 retry-after above max", resp(429, "3600"), 0, max, 0},
		{"503 retry-after overflowing a duration", resp(503, "9223372037"), 0, max, 0},
		{"503 retry-after wrapping to a small duration", resp(503, "18446744074"), 0, max, 0},
		{"503 without retry-after", resp(503, ""), 1, -1, 2 * min},
		{"503 negative retry-after", resp(503, "-5"), 0, -1, min},
		{"503 http-date retry-after", resp(503, "Wed, 21 Oct 2015 07:28:00 GMT"), 0, -1, min},
		{"503 fractional retry-after", resp(503, "1.5"), 0, -1, min},
		{"500 retry-after ignored", resp(500, "3"), 0, -1, min},
		{"502 retry-after ignored", resp(502, "3"), 1, -1, 2 * min},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 50; i++ {
				d := jitterBackoff(min, max, tc.attempt, tc.resp)
				if tc.exact >= 0 {
					if d != tc.exact {
						t.Fatalf("jitterBackoff = %s, want %s", d, tc.exact)
					}
					continue
				}
				if d < tc.ceiling/2 || d > tc.ceiling {
					t.Fatalf("jitterBackoff = %s, want within [%s, %s]", d, tc.ceiling/2, tc.ceiling)
				}
			}
		})
	}
}

func TestCheckRetry(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	transportErr := errors.New("connection reset by peer")
	failFast := context.WithValue(context.Background(), failFastKey{}, true)
	tests := []struct {
		name    string
		ctx     context.Context
		status  int // 0: no response
		err     error
		retry   bool
		wantErr error
	}{
		{"cancelled with 503", cancelled, 503, nil, false, context.Canceled},
		{"cancelled with transport error", cancelled, 0, transportErr, false, context.Canceled},
		{"transport error", context.Background(), 0, transportErr, true, nil},
		{"200", context.Background(), 200, nil, false, nil},
		{"204", context.Background(), 204, nil, false, nil},
		{"304", context.Background(), 304, nil, false, nil},
		{"400", context.Background(), 400, nil, false, nil},
		{"401", context.Background(), 401, nil, false, nil},
		{"404", context.Background(), 404, nil, false, nil},
		{"429", context.Background(), 429, nil, true, nil},
		{"500", context.Background(), 500, nil, true, nil},
		{"501", context.Background(), 501, nil, false, nil},
		{"502", context.Background(), 502, nil, true, nil},
		{"503", context.Background(), 503, nil, true, nil},
		{"504", context.Background(), 504, nil, true, nil},
		{"508", context.Background(), 508, nil, true, nil},
		{"503 with alternatives", failFast, 503, nil, false, nil},
		{"transport error with alternatives", failFast, 0, transportErr, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			if tc.status != 0 {
				resp = &http.Response{StatusCode: tc.status, Header: http.Header{}}
			}
			retry, err := checkRetry(tc.ctx, resp, tc.err)
			if retry != tc.retry || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("checkRetry = %v, %v; want %v, %v", retry, err, tc.retry, tc.wantErr)
			}
		})
	}
}

func TestCodeFrom(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""}, {"loop", "loop"}, {"upstream_status", "upstream_status"},
		{"Loop", ""}, {"a-b", ""}, {"x y", ""}, {"<script>", ""}, {strings.Repeat("a", 41), ""}, {strings.Repeat("a", 40), strings.Repeat("a", 40)},
	}
	for _, tc := range tests {
		if got := codeFrom(tc.in); got != tc.want {
			t.Errorf("codeFrom(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"http://cs:8080/a?k=1", "http://cs:8080/b", true},
		{"http://CS:8080/a", "http://cs:8080/b", true},
		{"http://cs/a", "http://cs:80/b", true},
		{"https://cs/a", "https://cs:443/b", true},
		{"http://cs:8080/a", "http://cs:8081/a", false},
		{"http://cs:8080/a", "https://cs:8080/a", false},
		{"http://cs:8080/a", "http://evil:8080/a", false},
		{"http://cs/a", "http://cs.evil/a", false},
		{"http://cs/a", "http://user@evil/a", false},
	}
	for _, tc := range tests {
		a, _ := url.Parse(tc.a)
		b, _ := url.Parse(tc.b)
		if got := sameOrigin(a, b); got != tc.want {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestValidLastEventID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"", true}, {"42", true}, {"a b\tc", true}, {"\xff", true}, {strings.Repeat("x", MaxLastEventIDBytes), true},
		{strings.Repeat("x", MaxLastEventIDBytes+1), false}, {"a\rb", false}, {"a\nb", false}, {"a\x00b", false},
	}
	for _, tc := range tests {
		if got := ValidLastEventID(tc.id); got != tc.want {
			t.Errorf("ValidLastEventID(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestIsEventStream(t *testing.T) {
	tests := []struct {
		ct   string
		want bool
	}{
		{"text/event-stream", true},
		{"text/event-stream; charset=utf-8", true},
		{"Text/Event-Stream", true},
		{"text/event-stream ; charset=UTF-8", true},
		{"", false},
		{"text/plain", false},
		{"application/json", false},
		{"text/event-streams", false},
		{"text/event", false},
		{"event-stream", false},
	}
	for _, tc := range tests {
		if got := isEventStream(tc.ct); got != tc.want {
			t.Errorf("isEventStream(%q) = %v, want %v", tc.ct, got, tc.want)
		}
	}
}

func TestUnwrapURLKeepsTheNetworkError(t *testing.T) {
	addr := closedAddr(t)
	_, err := http.Get("http://" + addr + "/events")
	if err == nil {
		t.Fatal("GET to a closed port succeeded")
	}
	got := unwrapURL(err)
	var op *net.OpError
	if !errors.As(got, &op) || got != error(op) {
		t.Fatalf("unwrapURL(%v) = %T %v, want the *net.OpError itself", err, got, got)
	}
	if strings.Contains(got.Error(), "Get ") {
		t.Fatalf("unwrapURL kept the URL wrapper: %q", got)
	}
	if !strings.Contains(got.Error(), addr) {
		t.Fatalf("unwrapURL(%v) = %q, want the address in it", err, got)
	}

	plain := errors.New("plain")
	if got := unwrapURL(plain); got != plain {
		t.Fatalf("unwrapURL(plain) = %v, want it unchanged", got)
	}
	wrapped := fmt.Errorf("outer: %w", plain)
	if got := unwrapURL(wrapped); got != plain {
		t.Fatalf("unwrapURL(wrapped) = %v, want the innermost error", got)
	}
}

func TestUpstreamClientRetries(t *testing.T) {
	tests := []struct {
		name     string
		retries  int
		statuses []int
		header   http.Header
		hits     int
		final    int
	}{
		{"ok at once", 2, []int{200}, nil, 1, 200},
		{"503 then ok", 2, []int{503, 503, 200}, nil, 3, 200},
		{"500 until retries run out", 2, []int{500}, nil, 3, 500},
		{"no retries configured", 0, []int{503, 200}, nil, 1, 503},
		{"429 with retry-after", 2, []int{429, 200}, http.Header{"Retry-After": {"0"}}, 2, 200},
		{"404 not retried", 3, []int{404, 200}, nil, 1, 404},
		{"501 not retried", 3, []int{501, 200}, nil, 1, 501},
		{"204 not retried", 3, []int{204, 200}, nil, 1, 204},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Answers without a body and, like a bare WriteHeader, without
			// a Content-Type.
			steps := make([]ssetest.Response, len(tc.statuses))
			for i, status := range tc.statuses {
				h := http.Header{"Content-Type": nil}
				for k, vs := range tc.header {
					h[k] = vs
				}
				steps[i] = ssetest.Response{Status: status, Header: h}
			}
			srv := ssetest.Serve(t, ssetest.Steps(steps...))
			cfg := testConfig()
			cfg.ConnectRetries = tc.retries
			c := newUpstreamClient(cfg, ssetest.Logger(t), nil)
			defer c.HTTPClient.CloseIdleConnections()
			resp, err := c.Get(srv.URL)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			drainClose(resp)
			if resp.StatusCode != tc.final || srv.Hits() != tc.hits {
				t.Fatalf("final status %d after %d requests, want %d after %d", resp.StatusCode, srv.Hits(), tc.final, tc.hits)
			}
		})
	}
}

// TestUpstreamClientRetriesTransportErrors uses a listener that accepts and
// drops every connection at once, so each request fails in transport.
func TestUpstreamClientRetriesTransportErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			_ = conn.Close()
		}
	}()
	defer wg.Wait()
	defer ln.Close()

	cfg := testConfig()
	cfg.ConnectRetries = 2
	c := newUpstreamClient(cfg, ssetest.Logger(t), nil)
	resp, err := c.Get("http://" + ln.Addr().String() + "/")
	if err == nil {
		drainClose(resp)
		t.Fatalf("Get through a dropping listener answered %d", resp.StatusCode)
	}
	if got := accepts.Load(); got != 3 {
		t.Fatalf("%d connections for 1 try and 2 retries, want 3", got)
	}
}

func TestConnectClassifies(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		ctype   string
		ok      bool
		ended   bool
		code    string // ErrorHeader the upstream sends
		hold    bool   // the upstream writes a little and keeps the body open
		want    Error  // Status, Code, Upstream and a part of Reason
		counted string
	}{
		{name: "event stream", status: 200, ctype: "text/event-stream", ok: true},
		{name: "event stream with charset", status: 200, ctype: "text/event-stream; charset=utf-8", ok: true},
		{name: "204 ends the stream", status: 204, ended: true, want: Error{Status: 204, Code: CodeStreamEnded, Upstream: 204, Reason: "204 No Content"}, counted: "204"},
		{name: "404 mirrored", status: 404, want: Error{Status: 404, Code: CodeUpstreamStatus, Upstream: 404, Reason: "upstream answered 404 Not Found"}, counted: "404"},
		{name: "401 mirrored", status: 401, want: Error{Status: 401, Code: CodeUpstreamStatus, Upstream: 401, Reason: "401 Unauthorized"}, counted: "401"},
		{name: "503 mirrored", status: 503, want: Error{Status: 503, Code: CodeUpstreamStatus, Upstream: 503, Reason: "503 Service Unavailable"}, counted: "503"},
		{name: "a parent's own refusal keeps its code", status: 503, code: "shutting_down", want: Error{Status: 503, Code: "shutting_down", Upstream: 503, Reason: "503 Service Unavailable"}, counted: "503"},
		{name: "an unreadable code is not taken", status: 500, code: "Oops!", want: Error{Status: 500, Code: CodeUpstreamStatus, Upstream: 500, Reason: "500 Internal Server Error"}, counted: "500"},
		{name: "500 held open", status: 500, ctype: "text/event-stream", hold: true, want: Error{Status: 500, Code: CodeUpstreamStatus, Upstream: 500, Reason: "500"}, counted: "500"},
		{name: "200 text/plain held open", status: 200, ctype: "text/plain", hold: true, want: Error{Status: 502, Code: CodeUpstreamContentType, Upstream: 200, Reason: "text/plain"}, counted: "content_type"},
		{name: "200 without content type held open", status: 200, ctype: "-", hold: true, want: Error{Status: 502, Code: CodeUpstreamContentType, Upstream: 200, Reason: "not text/event-stream"}, counted: "content_type"},
		{name: "501 mirrored", status: 501, want: Error{Status: 501, Code: CodeUpstreamStatus, Upstream: 501, Reason: "501 Not Implemented"}, counted: "501"},
		{name: "304 is a bad gateway", status: 304, want: Error{Status: 502, Code: CodeUpstreamStatus, Upstream: 304, Reason: "304 Not Modified"}, counted: "304"},
		{name: "202 is a bad gateway", status: 202, want: Error{Status: 502, Code: CodeUpstreamStatus, Upstream: 202, Reason: "202 Accepted"}, counted: "202"},
		{name: "wrong content type", status: 200, ctype: "text/html", want: Error{Status: 502, Code: CodeUpstreamContentType, Upstream: 200, Reason: `Content-Type "text/html"`}, counted: "content_type"},
		{name: "no content type", status: 200, ctype: "-", want: Error{Status: 502, Code: CodeUpstreamContentType, Upstream: 200, Reason: "not text/event-stream"}, counted: "content_type"},
	}
	r := newTestRelay(t, testConfig())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				switch tc.ctype {
				case "":
				case "-":
					w.Header()["Content-Type"] = nil // no sniffing either
				default:
					w.Header().Set("Content-Type", tc.ctype)
				}
				if tc.code != "" {
					w.Header().Set(ErrorHeader, tc.code)
				}
				w.WriteHeader(tc.status)
				if tc.status == 200 {
					_, _ = io.WriteString(w, "data: x\n\n")
				}
				if tc.hold {
					// A refused answer whose body never ends must not
					// block the connect.
					_ = http.NewResponseController(w).Flush()
					<-req.Context().Done()
				}
			}))
			defer srv.Close()
			before := r.metrics.Snapshot().UpstreamErrors
			s := newStream(r, "k", nil, "", false)
			resp, refusal, ended := s.connect(context.Background(), Target{URL: srv.URL}, "", false)
			if tc.ok {
				if refusal != nil || resp == nil || ended {
					t.Fatalf("connect = %v, %v, %v; want a usable response", resp, refusal, ended)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(body) != "data: x\n\n" {
					t.Fatalf("body = %q, %v; want the stream untouched", body, err)
				}
			} else {
				if resp != nil {
					resp.Body.Close()
					t.Fatalf("connect returned a response for a refusal")
				}
				if refusal == nil || refusal.Status != tc.want.Status || refusal.Code != tc.want.Code || refusal.Upstream != tc.want.Upstream || !strings.Contains(refusal.Reason, tc.want.Reason) {
					t.Fatalf("refusal = %+v, want status %d code %s upstream %d reason containing %q", refusal, tc.want.Status, tc.want.Code, tc.want.Upstream, tc.want.Reason)
				}
				if ended != tc.ended {
					t.Fatalf("ended = %v, want %v", ended, tc.ended)
				}
			}
			after := r.metrics.Snapshot().UpstreamErrors
			for k, v := range after {
				want := before[k]
				if k == tc.counted {
					want++
				}
				if v != want {
					t.Fatalf("upstream error %q counted %d, want %d", k, v, want)
				}
			}
			if tc.counted != "" && after[tc.counted] == 0 {
				t.Fatalf("upstream error %q not counted", tc.counted)
			}
		})
	}
}

func TestConnectTransportFailures(t *testing.T) {
	r := newTestRelay(t, testConfig())
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		url     string
		status  int
		reason  string
		counted string
	}{
		{"refused", context.Background(), "http://" + closedAddr(t) + "/", 502, "upstream unreachable", "transport"},
		{"bad url", context.Background(), "http://[::1/", 502, "bad upstream URL", ""},
		{"cancelled", cancelled, "http://" + closedAddr(t) + "/", 503, "cancelled", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := r.metrics.Snapshot().UpstreamErrors["transport"]
			s := newStream(r, "k", nil, "", false)
			resp, refusal, ended := s.connect(tc.ctx, Target{URL: tc.url}, "", false)
			if resp != nil {
				resp.Body.Close()
				t.Fatal("connect returned a response")
			}
			if refusal == nil || refusal.Status != tc.status || refusal.Upstream != 0 || ended || !strings.Contains(refusal.Reason, tc.reason) {
				t.Fatalf("connect = %+v, ended %v; want status %d, reason containing %q", refusal, ended, tc.status, tc.reason)
			}
			want := before
			if tc.counted == "transport" {
				want++
			}
			if got := r.metrics.Snapshot().UpstreamErrors["transport"]; got != want {
				t.Fatalf("transport errors = %d, want %d", got, want)
			}
		})
	}
}

func TestConnectRequestHeaders(t *testing.T) {
	type seen struct {
		host   string
		header http.Header
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		got <- seen{host: req.Host, header: req.Header.Clone()}
		w.Header().Set("Content-Type", "text/event-stream")
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.UserAgent = "relay-test/1"
	r := newTestRelay(t, cfg)

	tests := []struct {
		name      string
		header    http.Header
		lastID    string
		hasLastID bool
		host      string            // "" : the server's own address
		want      map[string]string // header -> value
		absent    []string
	}{
		{
			name: "defaults",
			want: map[string]string{"Accept": "text/event-stream", "Cache-Control": "no-cache", "User-Agent": "relay-test/1"},
			// Last-Event-ID only when resuming.
			absent: []string{"Last-Event-Id"},
		},
		{
			name:   "resume",
			lastID: "42", hasLastID: true,
			want: map[string]string{"Last-Event-Id": "42"},
		},
		{
			name:   "resume from empty id",
			lastID: "", hasLastID: true,
			want: map[string]string{"Last-Event-Id": ""},
		},
		{
			name:   "target headers",
			header: http.Header{"Authorization": {"Bearer t"}, "X-Ssemesh-Via": {"a", "b"}},
			want:   map[string]string{"Authorization": "Bearer t", "X-Ssemesh-Via": "a"},
		},
		{
			name:   "target user agent wins",
			header: http.Header{"User-Agent": {"browser/9"}},
			want:   map[string]string{"User-Agent": "browser/9"},
		},
		{
			name:   "accept cannot be overridden",
			header: http.Header{"Accept": {"application/json"}},
			want:   map[string]string{"Accept": "text/event-stream"},
		},
		{
			name:   "host override",
			header: http.Header{"Host": {"backend.internal"}},
			host:   "backend.internal",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(r, "k", nil, "", false)
			resp, refusal, _ := s.connect(context.Background(), Target{URL: srv.URL + "/events?x=1", Header: tc.header}, tc.lastID, tc.hasLastID)
			if refusal != nil {
				t.Fatalf("connect refused: %+v", refusal)
			}
			drainClose(resp)
			req := <-got
			for k, v := range tc.want {
				vs, ok := req.header[k]
				if !ok || vs[0] != v {
					t.Errorf("header %s = %q (present %v), want %q", k, vs, ok, v)
				}
			}
			for _, k := range tc.absent {
				if _, ok := req.header[k]; ok {
					t.Errorf("header %s sent: %q", k, req.header[k])
				}
			}
			if vias := req.header["X-Ssemesh-Via"]; tc.header["X-Ssemesh-Via"] != nil && len(vias) != 2 {
				t.Errorf("X-Ssemesh-Via = %q, want both values", vias)
			}
			wantHost := tc.host
			if wantHost == "" {
				wantHost = strings.TrimPrefix(srv.URL, "http://")
			}
			if req.host != wantHost {
				t.Errorf("Host = %q, want %q", req.host, wantHost)
			}
		})
	}
}

func TestRetryFloorAppliesToBackEndsOnly(t *testing.T) {
	cfg := testConfig()
	cfg.BackoffMax = 30 * time.Second
	r := newTestRelay(t, cfg)
	s := &stream{fanout: fanout{r: r, retry: 5000}}
	backoffMax := r.cfg.BackoffMax
	tests := []struct {
		name   string
		target Target
		d      time.Duration
		want   time.Duration
	}{
		{"back end raises to its retry", Target{URL: "http://be/s"}, 100 * time.Millisecond, 5 * time.Second},
		{"back end above its retry kept", Target{URL: "http://be/s"}, 6 * time.Second, 6 * time.Second},
		{"parent node never waits for the back end's retry", Target{URL: "http://node/s", Parent: "relay-a"}, 100 * time.Millisecond, 100 * time.Millisecond},
	}
	if backoffMax < 5*time.Second {
		t.Fatalf("test config BackoffMax %s is below the retry under test", backoffMax)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.retryFloor(tc.target, tc.d); got != tc.want {
				t.Fatalf("retryFloor = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestRetargetEndsBackoff: a stream waiting out a backoff after its upstream
// closed reconnects at once when the node retargets it (its view changed),
// instead of keeping its subscribers waiting for the rest of the backoff.
func TestRetargetEndsBackoff(t *testing.T) {
	reqs := make(chan string, 4)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1))
		reqs <- fmt.Sprint(i)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = fmt.Fprintf(w, "id: %d\ndata: x\n\n", i)
		if i > 1 {
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		}
	}))
	defer srv.Close()

	cfg := testConfig()
	cfg.BackoffMin, cfg.BackoffMax = time.Hour, time.Hour
	r, err := New(cfg, ssetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	backoff := make(chan string, 4)
	r.onBackoff = func(key string) { backoff <- key }
	defer r.Close()

	target := func(*Attempt) (Target, error) { return Target{URL: srv.URL, Label: "up"}, nil }
	s, _, err := r.acquire("k", target, "", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.unref()
	await := func(what string, ch <-chan string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s within 5s", what)
		}
	}
	await("first request", reqs)
	await("backoff after the upstream closed", backoff)
	r.Retarget("k")
	await("reconnect after the retarget (the backoff is an hour)", reqs)
}
