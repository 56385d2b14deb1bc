package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/benchstat"
)

func TestHomeURLSpreadsEvenly(t *testing.T) {
	tests := []struct{ total, urls, procs int }{
		{6000, 3, 2}, {10, 3, 3}, {95000, 5, 24}, {7, 1, 2}, {51000, 3, 13},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d clients, %d URLs, %d procs", tc.total, tc.urls, tc.procs), func(t *testing.T) {
			perURL := make([]int, tc.urls)
			for id := range tc.procs {
				s := workerSpec{First: id, Stride: tc.procs, Total: tc.total}
				for i := range s.clientIDs() {
					perURL[homeURL(i, tc.urls)]++
				}
			}
			lo, hi := slices.Min(perURL), slices.Max(perURL)
			if hi-lo > 1 || lo+hi < 1 {
				t.Fatalf("clients per URL %v", perURL)
			}
		})
	}
}

func TestFailoverURL(t *testing.T) {
	tests := []struct {
		name      string
		cur, urls int
		mode      string
		draw      int // what intn returns
		want      int
	}{
		{"one URL stays", 0, 1, failoverRandom, 0, 0},
		{"random below cur", 2, 4, failoverRandom, 1, 1},
		{"random skips cur", 2, 4, failoverRandom, 2, 3},
		{"random last", 0, 4, failoverRandom, 2, 3},
		{"random from the last", 3, 4, failoverRandom, 2, 2},
		{"next", 1, 3, failoverNext, 0, 2},
		{"next wraps", 2, 3, failoverNext, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := failoverURL(tc.cur, tc.urls, tc.mode, func(n int) int {
				if n != tc.urls-1 {
					t.Fatalf("intn(%d), want intn(%d)", n, tc.urls-1)
				}
				return tc.draw
			})
			if got != tc.want {
				t.Fatalf("failoverURL = %d, want %d", got, tc.want)
			}
		})
	}
	// Every draw gives another URL, and all others are reachable.
	for cur := range 5 {
		seen := map[int]bool{}
		for d := range 4 {
			u := failoverURL(cur, 5, failoverRandom, func(int) int { return d })
			if u == cur || seen[u] {
				t.Fatalf("cur %d draw %d gave %d (seen %v)", cur, d, u, seen)
			}
			seen[u] = true
		}
	}
	if got := churnURL(3, func(n int) int { return n - 1 }); got != 2 {
		t.Fatalf("churnURL = %d", got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"5", 5 * time.Second, true},
		{" 0 ", 0, true},
		{"120", 2 * time.Minute, true},
		{"Tue, 01 Dec 2026 12:00:30 GMT", 30 * time.Second, true},
		{"Tue, 01 Dec 2026 11:00:00 GMT", 0, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	}
	for _, tc := range tests {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRetryField(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   time.Duration
		has    bool
	}{
		{"set", "retry: 1500\n\ndata: a\n\n", 1500 * time.Millisecond, true},
		{"zero", "retry: 0\n\n", 0, true},
		{"last wins", "retry: 100\n\nretry: 2000\n\n", 2 * time.Second, true},
		{"not digits ignored", "retry: 1.5\n\nretry: -1\n\nretry: 12a\n\nretry:\n\n", 0, false},
		{"none", "data: a\n\n", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p sseParser
			_ = p.read(strings.NewReader(tc.stream), func([]byte) {})
			if p.retry != tc.want || p.hasRetry != tc.has {
				t.Fatalf("retry %v (set %v), want %v (%v)", p.retry, p.hasRetry, tc.want, tc.has)
			}
		})
	}
	// The value outlives the session that sent it, as the client carries
	// its parser to the next one.
	var p sseParser
	_ = p.read(strings.NewReader("retry: 700\nid: 3\ndata: a\n\n"), func([]byte) {})
	_ = p.read(strings.NewReader("id: 4\ndata: b\n\n"), func([]byte) {})
	if p.retry != 700*time.Millisecond || !p.hasRetry || p.lastEventID != "4" {
		t.Fatalf("after two sessions: %+v", p)
	}
}

func TestReconnectDelay(t *testing.T) {
	p := delayPolicy{Retry: 500 * time.Millisecond, Jitter: 0.5}
	tests := []struct {
		name        string
		policy      delayPolicy
		retryAfter  time.Duration
		serverRetry time.Duration
		hasRetry    bool
		failures    int
		rnd         float64
		want        time.Duration
	}{
		{"default, low end", p, 0, 0, false, 0, 0, 250 * time.Millisecond},
		{"default, middle", p, 0, 0, false, 0, 0.5, 500 * time.Millisecond},
		{"default, high end", p, 0, 0, false, 0, 0.999, 749500 * time.Microsecond},
		{"server's retry: wins", p, 0, 2 * time.Second, true, 0, 0.5, 2 * time.Second},
		{"server's retry: 0", p, 0, 0, true, 0, 0.5, 0},
		{"doubling per failure", p, 0, 0, false, 2, 0.5, 2 * time.Second},
		{"doubling bounded", p, 0, 0, false, 10, 0.5, 4 * time.Second},
		{"Retry-After is a floor", p, 5 * time.Second, time.Second, true, 3, 0, 5 * time.Second},
		{"Retry-After plus jitter", p, 5 * time.Second, 0, false, 0, 0.5, 6250 * time.Millisecond},
		{"no jitter", delayPolicy{Retry: time.Second}, 0, 0, false, 1, 0.9, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.policy.delay(tc.retryAfter, tc.serverRetry, tc.hasRetry, tc.failures, func() float64 { return tc.rnd })
			if got != tc.want {
				t.Fatalf("delay = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRefusal(t *testing.T) {
	resp := func(status int, ctype, retryAfter, body string) *http.Response {
		h := http.Header{"Content-Type": {ctype}}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body))}
	}
	tests := []struct {
		name       string
		resp       *http.Response
		ctype      string
		reason     string
		retryAfter time.Duration
	}{
		{"node at its limit", resp(503, "application/json", "5", `{"status":503,"error":"max_clients","message":"the node is at its client limit","retry_after":5}`),
			"application/json", "http status 503 max_clients", 5 * time.Second},
		{"per-address limit", resp(429, "application/json", "1", `{"status":429,"error":"ip_connections"}`),
			"application/json", "http status 429 ip_connections", time.Second},
		{"draining", resp(503, "application/json", "", `{"error":"shutting_down"}`),
			"application/json", "http status 503 shutting_down", 0},
		{"not JSON", resp(404, "text/plain", "", "not found"), "text/plain", "http status 404", 0},
		{"bad JSON", resp(502, "application/json", "", "{"), "application/json", "http status 502", 0},
		{"control characters dropped", resp(503, "application/json", "", `{"error":"a\nb\u0007c"}`), "application/json", "http status 503 abc", 0},
		{"Retry-After ignored but on 503 and 429", resp(500, "application/json", "9", `{"error":"internal"}`),
			"application/json", "http status 500 internal", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fmt.Errorf("session: %w", refusal(tc.resp, tc.ctype))
			if got := classify(err); got != tc.reason {
				t.Fatalf("classify = %q, want %q", got, tc.reason)
			}
			if got := retryAfterOf(err); got != tc.retryAfter {
				t.Fatalf("retryAfterOf = %v, want %v", got, tc.retryAfter)
			}
		})
	}
	if retryAfterOf(io.EOF) != 0 {
		t.Fatal("Retry-After of a dropped stream")
	}
}

func TestParseChurn(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"5%/min", 20 * time.Minute, false},
		{"5%/m", 20 * time.Minute, false},
		{"10%/10m", 100 * time.Minute, false},
		{"50%/s", 2 * time.Second, false},
		{"100%/h", time.Hour, false},
		{" 25 % / 30s ", 0, true}, // the % must follow the number
		{"", 0, false},
		{"0", 0, false},
		{"0%/min", 0, false},
		{"5/min", 0, true},
		{"5%", 0, true},
		{"120%/min", 0, true},
		{"x%/min", 0, true},
		{"5%/fortnight", 0, true},
		{"5%/-1m", 0, true},
	}
	for _, tc := range tests {
		got, err := parseChurn(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseChurn(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseNamedURL(t *testing.T) {
	tests := []struct {
		in, name, url string
		err           bool
	}{
		{"leaf-0=http://127.0.0.1:8200/bench", "leaf-0", "http://127.0.0.1:8200/bench", false},
		{"http://127.0.0.1:8200/bench", "127.0.0.1:8200", "http://127.0.0.1:8200/bench", false},
		{"http://127.0.0.1:8200/x?a=b", "127.0.0.1:8200", "http://127.0.0.1:8200/x?a=b", false},
		{"a.b_c=https://127.0.0.2/s", "a.b_c", "https://127.0.0.2/s", false},
		{"leaf=http://10.0.0.1/x", "", "", true},
		{"leaf=", "", "", true},
	}
	for _, tc := range tests {
		n, err := parseNamedURL(tc.in)
		if (err != nil) != tc.err || (!tc.err && (n.Name != tc.name || n.URL != tc.url)) {
			t.Errorf("parseNamedURL(%q) = %+v, %v", tc.in, n, err)
		}
	}
}

func TestLoadFlagsSeveralURLs(t *testing.T) {
	c, err := parseLoadFlags([]string{"--url", "a=http://127.0.0.1:1/s", "--urls", "b=http://127.0.0.1:2/s,http://127.0.0.1:3/s",
		"--churn", "6%/min", "--node-pids", "7,root=/run/root.pid", "--storm-at", "2s", "--storm-cmd", "true", "--duration", "5s"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, u := range c.urls {
		names = append(names, u.Name)
	}
	if fmt.Sprint(names) != "[a b 127.0.0.1:3]" || c.churnEvery != 1000*time.Second {
		t.Fatalf("urls %v churn %v", names, c.churnEvery)
	}
	if fmt.Sprint(c.nodes) != "[{a 7 } {root 0 /run/root.pid}]" {
		t.Fatalf("nodes %v", c.nodes)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--url", "http://127.0.0.1:1/s", "--url", "http://127.0.0.1:1/s"}, "given twice"},
		{[]string{"--url", "a=http://127.0.0.1:1/s", "--url", "a=http://127.0.0.1:2/s"}, `name "a" given twice`},
		{[]string{"--urls", "http://127.0.0.1:1/s,https://127.0.0.1:2/s"}, "scheme of the first"},
		{[]string{"--urls", "http://127.0.0.1:1/s,http://192.168.1.1/s"}, "outside 127.0.0.0/8"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--failover", "sticky"}, "--failover"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--retry-jitter", "2"}, "--retry-jitter"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--churn", "5/min"}, "--churn"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--storm-at", "3s"}, "go together"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--storm-at", "30s", "--storm-cmd", "true"}, "inside the window"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--backend-stats", "http://10.1.1.1/x"}, "--backend-stats"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--node-pids", "a=0"}, "--node-pids"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--node-pids", "a=1,a=2"}, "given twice"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--sample-every", "1ms"}, "--sample-every"},
		{[]string{"--url", "http://127.0.0.1:1/s", "--clients", "60000", "--procs", "4", "--sources", "127.0.0.2,127.0.0.3"}, "per address"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var errOut bytes.Buffer
			code := run(context.Background(), append([]string{"load"}, tc.args...), io.Discard, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tc.want)
			}
		})
	}
}

// benchEvent is a bench payload sent at sent.
func benchEvent(seq int64, sent time.Time) []byte {
	return fmt.Appendf(nil, `{"seq":%d,"t":%d,"pad":"x"}`, seq, sent.UnixNano())
}

// TestLossAcrossFailover feeds events through two URLs to clients that
// fail over between them, and checks the accounting per client across
// sessions, per URL (cohort and latency) and in total, also after merging
// the results of two workers.
func TestLossAcrossFailover(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	t1 := t0.Add(time.Minute)
	newW := func() *worker {
		w := &worker{spec: workerSpec{T0: t0, T1: t1}, t0: t0.UnixNano(), t1: t1.UnixNano(),
			live: make([]urlLive, 2), res: newWorkerResult()}
		for i := range w.live {
			w.live[i].latency = benchstat.NewHistogram()
			w.res.URLs = append(w.res.URLs, newURLResult())
		}
		return w
	}
	// session: which URL, which seqs.
	type session struct {
		url      int
		from, to int64
	}
	feed := func(w *worker, home int, sessions ...session) {
		cl := &simClient{home: home, last: -1}
		w.res.URLs[home].Clients++
		for _, s := range sessions {
			cl.st.connected = true
			w.recordSession(s.url, cl.last)
			cl.last = s.url
			for seq := s.from; seq <= s.to; seq++ {
				w.onEvent(&cl.st, s.url, benchEvent(seq, t0.Add(time.Duration(seq)*time.Second)), false)
			}
		}
		w.finishClient(cl, "refused")
	}
	run := func() *workerResult {
		w := newW()
		// Client of URL 0 fails over to 1, which replays two events it had.
		feed(w, 0, session{0, 1, 5}, session{1, 4, 10})
		// Client of URL 1 fails over to 0, which resumes two events late.
		feed(w, 1, session{1, 1, 3}, session{0, 6, 10})
		// A client of URL 0 that never connected.
		feed(w, 0)
		// Outside the window: not counted.
		cl := &simClient{home: 1}
		w.onEvent(&cl.st, 1, benchEvent(99, t1), false)
		if cl.st.distinct != 0 || cl.st.dups != 0 {
			t.Fatalf("out-of-window event counted: %+v", cl.st)
		}
		w.res.URLs[0].Latency, w.res.URLs[1].Latency = w.live[0].latency, w.live[1].latency
		w.res.sumURLs()
		return w.res
	}
	urls := []namedURL{{Name: "a"}, {Name: "b"}}
	check := func(t *testing.T, res *workerResult, k int64) {
		t.Helper()
		rep := &Report{}
		rep.fill(res, false)
		rep.fillURLs(urls, res)
		if rep.SeqFirst != 1 || rep.SeqLast != 10 || rep.EventsPerClient != 10 {
			t.Fatalf("seq %d..%d, %d per client", rep.SeqFirst, rep.SeqLast, rep.EventsPerClient)
		}
		if rep.Connected != int(2*k) || rep.Failed != int(k) || rep.Expected != 20*k || rep.Delivered != 18*k || rep.Lost != 2*k || rep.Duplicated != 2*k {
			t.Fatalf("total: connected %d failed %d expected %d delivered %d lost %d dup %d",
				rep.Connected, rep.Failed, rep.Expected, rep.Delivered, rep.Lost, rep.Duplicated)
		}
		a, b := rep.URLs[0], rep.URLs[1]
		if a.Clients != int(2*k) || a.Connected != int(k) || a.Failed != int(k) || a.Expected != 10*k || a.Delivered != 10*k || a.Lost != 0 || a.Duplicated != 2*k {
			t.Fatalf("URL a: %+v", a)
		}
		if b.Clients != int(k) || b.Expected != 10*k || b.Delivered != 8*k || b.Lost != 2*k || b.Duplicated != 0 {
			t.Fatalf("URL b: %+v", b)
		}
		// First receipts through each URL: a carried 5 + 5, b 5 + 3.
		if a.Latency.Count != uint64(10*k) || b.Latency.Count != uint64(8*k) || rep.Latency.Count != uint64(rep.Delivered) {
			t.Fatalf("latency samples a %d b %d total %d", a.Latency.Count, b.Latency.Count, rep.Latency.Count)
		}
		if a.Sessions != int(2*k) || a.Failovers != int(k) || b.Sessions != int(2*k) || b.Failovers != int(k) || rep.Reconnects != int(2*k) {
			t.Fatalf("sessions a %d/%d b %d/%d reconnects %d", a.Sessions, a.Failovers, b.Sessions, b.Failovers, rep.Reconnects)
		}
	}
	t.Run("one worker", func(t *testing.T) { check(t, run(), 1) })
	t.Run("two workers merged", func(t *testing.T) {
		m := newWorkerResult()
		m.merge(run())
		m.merge(run())
		check(t, m, 2)
	})
}

func TestTimelineMerge(t *testing.T) {
	start := time.Unix(100, 0)
	a := &timeline{Start: start, Every: time.Second, URLs: []urlSeries{{Connected: []int64{1, 2, 3}, Serving: []int64{0, 1, 2}, Sessions: []int64{1, 2, 3}, Refused: []int64{0, 0, 1}}}}
	b := &timeline{Start: start, Every: time.Second, URLs: []urlSeries{{Connected: []int64{1, 1}, Serving: []int64{1, 1}, Sessions: []int64{1, 1}, Refused: []int64{0, 2}}}}
	var m timeline
	m.merge(a)
	m.merge(b)
	if m.samples() != 2 || fmt.Sprint(m.URLs[0].Connected) != "[2 3]" || fmt.Sprint(m.URLs[0].Refused) != "[0 2]" {
		t.Fatalf("merged %+v", m)
	}
	if fmt.Sprint(a.URLs[0].Connected) != "[1 2 3]" {
		t.Fatal("merge changed its source")
	}
	k0, k1, ok := a.span(start.Add(500*time.Millisecond), start.Add(2*time.Second))
	if !ok || k0 != 1 || k1 != 2 {
		t.Fatalf("span = %d, %d, %v", k0, k1, ok)
	}
}

func TestStormAnalysis(t *testing.T) {
	start := time.Unix(1000, 0)
	const every = 250 * time.Millisecond
	// The clients of URL a (100) are cut after sample 3 and come back on
	// b over the next samples.
	tl := &timeline{Start: start, Every: every, URLs: []urlSeries{
		{
			Connected: []int64{100, 100, 100, 100, 0, 0, 0, 0, 0, 0, 0, 0},
			Serving:   []int64{100, 100, 100, 100, 0, 0, 0, 0, 0, 0, 0, 0},
			Sessions:  []int64{100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100},
			Refused:   []int64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		},
		{
			Connected: []int64{100, 100, 100, 100, 100, 170, 199, 200, 200, 200, 200, 200},
			Serving:   []int64{100, 100, 100, 100, 100, 150, 197, 199, 200, 200, 200, 200},
			Sessions:  []int64{100, 100, 100, 100, 100, 170, 199, 200, 200, 200, 200, 200},
			Refused:   []int64{0, 0, 0, 0, 0, 4, 6, 6, 6, 6, 6, 6},
		},
	}}
	s := &StormReport{At: start.Add(3*every + 100*time.Millisecond)}
	s.analyse(tl, []namedURL{{Name: "a"}, {Name: "b"}}, start.Add(11*every))
	f := func(p *float64) string {
		if p == nil {
			return "nil"
		}
		return fmt.Sprintf("%.2f", *p)
	}
	// Since the storm: sample k is (k-3)*250ms - 100ms after it.
	if s.Serving.Baseline != 200 || s.Serving.Low != 100 || f(s.Serving.Recovered99) != "0.90" || f(s.Serving.Recovered100) != "1.15" {
		t.Fatalf("serving %+v: 99%% %s, 100%% %s", s.Serving, f(s.Serving.Recovered99), f(s.Serving.Recovered100))
	}
	if s.Connected.Low != 100 || f(s.Connected.Recovered99) != "0.65" || f(s.Connected.Recovered100) != "0.90" {
		t.Fatalf("connected %+v: 99%% %s, 100%% %s", s.Connected, f(s.Connected.Recovered99), f(s.Connected.Recovered100))
	}
	// 100 sessions over samples 4..7 (1 s from the last sample before);
	// the most in one sample: 70.
	if s.Sessions != 100 || s.SpanSeconds != 1 || s.AvgPerS != 100 || s.PeakPerS != 100 || s.PeakSamplePerS != 280 {
		t.Fatalf("sessions %d over %vs: avg %v peak %v, per sample %v", s.Sessions, s.SpanSeconds, s.AvgPerS, s.PeakPerS, s.PeakSamplePerS)
	}
	b := s.URLs[1]
	if s.URLs[0].ConnectedAfter != 0 || b.ConnectedBefore != 100 || b.ConnectedAfter != 200 || b.Sessions != 100 || b.Refused != 6 || b.RefusedPeakPerS != 6 {
		t.Fatalf("per URL %+v", s.URLs)
	}

	t.Run("not recovered, never below", func(t *testing.T) {
		count := []int64{10, 10, 5, 5}
		since := func(k int) float64 { return float64(k) }
		if r := recovery(count, 0, 3, since); r.Recovered99 != nil || r.Recovered100 != nil || r.Low != 5 {
			t.Fatalf("%+v", r)
		}
		if r := recovery([]int64{10, 10, 11}, 0, 2, since); f(r.Recovered100) != "0.00" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("no sample before the storm", func(t *testing.T) {
		s := &StormReport{At: start.Add(-time.Second)}
		s.analyse(tl, []namedURL{{Name: "a"}, {Name: "b"}}, start.Add(11*every))
		if s.SampleSeconds == 0 || s.URLs != nil {
			t.Fatalf("%+v", s)
		}
	})
}

func TestNodeCost(t *testing.T) {
	t0 := time.Unix(500, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	pt := func(s, pid int, rss int64, cpu float64) procPoint {
		return procPoint{at: at(s), pid: pid, procSample: procSample{RSSKB: rss, CPUSeconds: cpu}}
	}
	pts := []procPoint{
		pt(-1, 10, 100, 1.0), pt(0, 10, 110, 1.5), pt(1, 10, 120, 2.0),
		{at: at(2)}, // not running: restarted
		pt(3, 11, 50, 0.1), pt(4, 11, 60, 0.6), pt(5, 11, 70, 5),
	}
	c := costOf("leaf-0", pts, t0, at(4))
	want := NodeCost{Name: "leaf-0", PIDs: []int{10, 11}, RSSFirstKB: 100, RSSStartKB: 110, RSSEndKB: 60, RSSMaxKB: 120, CPUSeconds: 1, CPUPercent: 25, DownSamples: 1}
	if fmt.Sprint(c) != fmt.Sprint(want) {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

func TestBackendConns(t *testing.T) {
	tests := []struct {
		body        string
		open, total int
		err         bool
	}{
		{`{"open":1,"total":3,"streams":1}`, 1, 3, false},
		{`{"/a":{"open":1,"total":2,"last_event_ids":[""],"last_id":5},"/b?x=1":{"open":0,"total":1,"last_id":2}}`, 1, 3, false},
		{`{}`, 0, 0, false},
		{`{"/a":{"last_id":5}}`, 0, 0, true},
		{`[1]`, 0, 0, true},
	}
	for _, tc := range tests {
		open, total, err := parseConnCounts([]byte(tc.body))
		if open != tc.open || total != tc.total || (err != nil) != tc.err {
			t.Errorf("parseConnCounts(%s) = %d, %d, %v", tc.body, open, total, err)
		}
	}
	t0 := time.Unix(0, 0)
	pts := []connPoint{
		{at: t0.Add(-time.Second), open: 1, total: 5},
		{at: t0, open: 1, total: 5},
		{at: t0.Add(time.Second), err: errors.New("timeout")},
		{at: t0.Add(2 * time.Second), open: 2, total: 6},
		{at: t0.Add(3 * time.Second), open: 1, total: 6},
	}
	b := summariseConns("u", pts, t0)
	if b.Samples != 4 || b.Errors != 1 || b.OpenMin != 1 || b.OpenMax != 2 || b.NewConnections != 1 ||
		fmt.Sprint(b.Changes) != "[{2 2} {3 1}]" || b.LastError != "timeout" {
		t.Fatalf("%+v", b)
	}
}

func TestInstants(t *testing.T) {
	s := time.Unix(10, 0)
	sc := schedule{Start: s, T0: s.Add(1500 * time.Millisecond), T1: s.Add(2 * time.Second), End: s.Add(2500 * time.Millisecond)}
	got := instants(sc)
	var rel []string
	for _, at := range got {
		rel = append(rel, at.Sub(s).String())
	}
	if fmt.Sprint(rel) != "[0s 1s 1.5s 2s]" {
		t.Fatalf("instants %v", rel)
	}
}

// TestStormLatency checks that only sessions established before the storm
// count in its latency, and only for events sent in its span; and that the
// workers' histograms merge.
func TestStormLatency(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	t1 := t0.Add(time.Minute)
	from, to := t0.Add(10*time.Second), t0.Add(20*time.Second)
	newW := func() *worker {
		w := &worker{spec: workerSpec{T0: t0, T1: t1, StormFrom: from, StormTo: to}, t0: t0.UnixNano(), t1: t1.UnixNano(),
			stormFrom: from.UnixNano(), stormTo: to.UnixNano(), stormLat: benchstat.NewHistogram(),
			live: make([]urlLive, 1), res: newWorkerResult()}
		w.live[0].latency = benchstat.NewHistogram()
		w.res.URLs = append(w.res.URLs, newURLResult())
		return w
	}
	w := newW()
	calm, moved := &simClient{}, &simClient{}
	for seq := int64(1); seq <= 30; seq++ {
		ev := benchEvent(seq, t0.Add(time.Duration(seq)*time.Second))
		w.onEvent(&calm.st, 0, ev, true)
		w.onEvent(&moved.st, 0, ev, false)
	}
	// Seqs 10..19 were sent in [from, to).
	if n := w.stormLat.Count(); n != 10 {
		t.Fatalf("storm latency samples %d, want 10", n)
	}
	m := newWorkerResult()
	m.merge(&workerResult{StormLatency: w.stormLat})
	m.merge(&workerResult{StormLatency: w.stormLat})
	m.merge(&workerResult{})
	if n := m.StormLatency.Count(); n != 20 {
		t.Fatalf("merged storm latency samples %d, want 20", n)
	}
}

// TestNodeClients checks the RSS per client of a node named like a URL.
func TestNodeClients(t *testing.T) {
	r := &Report{
		URLs:  []URLReport{{Name: "leaf-0", ConnectedAtStart: 1000}, {Name: "leaf-1"}},
		Nodes: []NodeCost{{Name: "leaf-0", RSSFirstKB: 10_000, RSSStartKB: 11_500}, {Name: "leaf-1", RSSFirstKB: 1, RSSStartKB: 2}, {Name: "root-0", RSSFirstKB: 1, RSSStartKB: 2}},
	}
	r.nodeClients()
	if n := r.Nodes[0]; n.Clients != 1000 || n.RSSPerClientKB != 1.5 {
		t.Fatalf("leaf-0: %+v", n)
	}
	if n := r.Nodes[1]; n.Clients != 0 || n.RSSPerClientKB != 0 {
		t.Fatalf("leaf-1 without clients: %+v", n)
	}
	if n := r.Nodes[2]; n.Clients != 0 {
		t.Fatalf("root-0: %+v", n)
	}
}
