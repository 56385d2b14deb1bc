package backend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// event is one parsed SSE event or comment as seen by the test client.
type event struct {
	id, data, comment string
	retry             string
}

// client is a minimal SSE reader for the tests: it parses the response in
// its own goroutine and hands events over a channel, which closes with the
// read error stored in err.
type client struct {
	resp   *http.Response
	events chan event
	done   chan struct{}
	err    error
}

func newTestBackend(t *testing.T, cfg Config) (*Backend, *httptest.Server) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	b := New(cfg, log)
	srv := httptest.NewServer(b) // listens on 127.0.0.1
	t.Cleanup(func() {
		b.Close()
		srv.Close()
	})
	return b, srv
}

func connect(t *testing.T, url, lastEventID string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	c := &client{resp: resp, events: make(chan event, 100000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer close(c.events)
		sc := bufio.NewScanner(resp.Body)
		var ev event
		var dataLines []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				ev.data = strings.Join(dataLines, "\n")
				c.events <- ev
				ev, dataLines = event{}, nil
			case strings.HasPrefix(line, ":"):
				c.events <- event{comment: strings.TrimSpace(line[1:])}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "data: "):
				dataLines = append(dataLines, line[6:])
			case strings.HasPrefix(line, "retry: "):
				ev.retry = line[7:]
			}
		}
		c.err = sc.Err()
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-c.done
	})
	return c
}

// next returns the next event that carries data, skipping comments and
// retry-only blocks.
func (c *client) next(t *testing.T) event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("stream ended early: %v", c.err)
			}
			if ev.data != "" {
				return ev
			}
		case <-timeout:
			t.Fatal("no event within 5s")
		}
	}
}

func (c *client) expectIDs(t *testing.T, ids ...int64) {
	t.Helper()
	for _, want := range ids {
		ev := c.next(t)
		if ev.id != strconv.FormatInt(want, 10) {
			t.Fatalf("got event id %q, want %d", ev.id, want)
		}
	}
}

func TestStreamsAreIndependentAndStartAtOne(t *testing.T) {
	b, srv := newTestBackend(t, Config{})
	a := connect(t, srv.URL+"/feed/a", "")
	q := connect(t, srv.URL+"/feed/a?x=1", "")
	if ct := a.resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	ssetest.Eventually(t, "both connections open", 5*time.Second, func() bool {
		return b.Stats("/feed/a").Open == 1 && b.Stats("/feed/a?x=1").Open == 1
	})
	b.Publish("/feed/a", 3)
	b.Publish("/feed/a?x=1", 1)
	a.expectIDs(t, 1, 2, 3)
	ev := q.next(t)
	if ev.id != "1" || ev.data != changelogBase+"1" {
		t.Fatalf("query stream got %+v, want id 1 with change-log URL", ev)
	}
	if got := b.StreamKeys(); len(got) != 2 || got[0] != "/feed/a" || got[1] != "/feed/a?x=1" {
		t.Fatalf("StreamKeys = %v", got)
	}
}

func TestLastEventIDResume(t *testing.T) {
	tests := []struct {
		name    string
		history int
		publish int
		lastID  string
		want    []int64 // replayed ids, then one live event
	}{
		{"replays after id", 0, 5, "2", []int64{3, 4, 5, 6}},
		{"id at head starts live", 0, 5, "5", []int64{6}},
		{"id in the future starts live", 0, 5, "99", []int64{6}},
		{"non-numeric id starts live", 0, 5, "abc", []int64{6}},
		{"zero replays everything", 0, 3, "0", []int64{1, 2, 3, 4}},
		{"id older than history starts at oldest", 3, 10, "1", []int64{8, 9, 10, 11}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, srv := newTestBackend(t, Config{History: tc.history})
			b.Publish("/s", tc.publish)
			c := connect(t, srv.URL+"/s", tc.lastID)
			ssetest.Eventually(t, "connection open", 5*time.Second, func() bool { return b.Stats("/s").Open == 1 })
			b.Publish("/s", 1)
			c.expectIDs(t, tc.want...)
			if got := b.Stats("/s").LastEventIDs; len(got) != 1 || got[0] != tc.lastID {
				t.Fatalf("LastEventIDs = %q, want [%q]", got, tc.lastID)
			}
		})
	}
}

func TestCutAndResume(t *testing.T) {
	for _, partial := range []bool{false, true} {
		t.Run("partial="+strconv.FormatBool(partial), func(t *testing.T) {
			b, srv := newTestBackend(t, Config{CutPartial: partial})
			c1 := connect(t, srv.URL+"/s", "")
			c2 := connect(t, srv.URL+"/s", "")
			ssetest.Eventually(t, "two connections", 5*time.Second, func() bool { return b.Stats("/s").Open == 2 })
			b.Publish("/s", 4)
			c1.expectIDs(t, 1, 2, 3, 4)
			c2.expectIDs(t, 1, 2, 3, 4)
			if n := b.Cut("/s"); n != 2 {
				t.Fatalf("Cut = %d, want 2", n)
			}
			for _, c := range []*client{c1, c2} {
				select {
				case <-c.done:
				case <-time.After(5 * time.Second):
					t.Fatal("connection not closed by Cut")
				}
				// A cut is not a clean end of the chunked body.
				if !errors.Is(c.err, io.ErrUnexpectedEOF) {
					t.Fatalf("read error = %v, want unexpected EOF", c.err)
				}
			}
			ssetest.Eventually(t, "handlers finished", 5*time.Second, func() bool { return b.Stats("/s").Open == 0 })
			b.Publish("/s", 2)
			c3 := connect(t, srv.URL+"/s", "4")
			c3.expectIDs(t, 5, 6)
			st := b.Stats("/s")
			if st.Total != 3 || st.LastID != 6 || strings.Join(st.LastEventIDs, ",") != ",,4" {
				t.Fatalf("Stats = %+v", st)
			}
			if b.Cut("/unknown") != 0 {
				t.Fatal("Cut of an unknown stream closed something")
			}
		})
	}
}

func TestSetStatus(t *testing.T) {
	tests := []struct {
		status   int
		ctype    string
		wantBody bool
	}{
		{http.StatusNoContent, "", false},
		{http.StatusNotFound, "text/plain", true},
		{http.StatusInternalServerError, "", true},
		{http.StatusOK, "text/plain", true},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			b, srv := newTestBackend(t, Config{})
			b.SetStatus("/s", tc.status, tc.ctype)
			resp, err := http.Get(srv.URL + "/s")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype {
				t.Fatalf("Content-Type = %q, want %q", resp.Header.Get("Content-Type"), tc.ctype)
			}
			if (len(body) > 0) != tc.wantBody {
				t.Fatalf("body = %q, want body: %v", body, tc.wantBody)
			}
			if st := b.Stats("/s"); st.Total != 0 {
				t.Fatalf("forced answer counted as stream connection: %+v", st)
			}
			b.SetStatus("/s", 0, "")
			c := connect(t, srv.URL+"/s", "")
			if c.resp.StatusCode != http.StatusOK || c.resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("after clearing: %d %q", c.resp.StatusCode, c.resp.Header.Get("Content-Type"))
			}
		})
	}
}

func TestBenchFormatPayloadAndRate(t *testing.T) {
	const size = 200
	b, srv := newTestBackend(t, Config{Rate: 200, PayloadSize: size, Format: FormatBench})
	c := connect(t, srv.URL+"/bench", "")
	ssetest.Eventually(t, "connection open", 5*time.Second, func() bool { return b.Stats("/bench").Open == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { b.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	start := time.Now()
	var first int64
	for i := range 40 {
		ev := c.next(t)
		if len(ev.data) != size {
			t.Fatalf("data length %d, want %d: %q", len(ev.data), size, ev.data)
		}
		var p struct {
			Seq int64  `json:"seq"`
			T   int64  `json:"t"`
			Pad string `json:"pad"`
		}
		if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
			t.Fatalf("bench payload %q: %v", ev.data, err)
		}
		if strconv.FormatInt(p.Seq, 10) != ev.id {
			t.Fatalf("seq %d differs from id %q", p.Seq, ev.id)
		}
		if i == 0 {
			first = p.Seq
		} else if p.Seq != first+int64(i) {
			t.Fatalf("seq %d at position %d, want %d", p.Seq, i, first+int64(i))
		}
		if sent := time.Unix(0, p.T); sent.Before(start.Add(-time.Second)) || sent.After(time.Now()) {
			t.Fatalf("send time %v outside the test run", sent)
		}
	}
	// 40 events at 200/s take ~200ms; a rate far too low or unthrottled
	// bursts would show.
	if el := time.Since(start); el < 100*time.Millisecond || el > 3*time.Second {
		t.Fatalf("40 events at 200/s took %v", el)
	}
}

func TestChangelogPadding(t *testing.T) {
	b, srv := newTestBackend(t, Config{PayloadSize: 120})
	c := connect(t, srv.URL+"/c", "")
	ssetest.Eventually(t, "connection open", 5*time.Second, func() bool { return b.Stats("/c").Open == 1 })
	b.Publish("/c", 1)
	ev := c.next(t)
	if len(ev.data) != 120 || !strings.HasPrefix(ev.data, changelogBase+"1?pad=") {
		t.Fatalf("data = %q (%d bytes)", ev.data, len(ev.data))
	}
}

func TestRetryAndHeartbeat(t *testing.T) {
	_, srv := newTestBackend(t, Config{Retry: 1500 * time.Millisecond, Heartbeat: 30 * time.Millisecond})
	c := connect(t, srv.URL+"/s", "")
	var sawRetry, beats int
	timeout := time.After(5 * time.Second)
	for beats < 2 {
		select {
		case ev := <-c.events:
			if ev.retry == "1500" {
				sawRetry++
			}
			if ev.comment == "heartbeat" {
				beats++
			}
		case <-timeout:
			t.Fatalf("retry seen %d times, %d heartbeats", sawRetry, beats)
		}
	}
	if sawRetry != 1 {
		t.Fatalf("retry field seen %d times, want once", sawRetry)
	}
}

func TestStatsEndpointAndClose(t *testing.T) {
	b, srv := newTestBackend(t, Config{})
	c := connect(t, srv.URL+"/s?a=b", "7")
	ssetest.Eventually(t, "connection open", 5*time.Second, func() bool { return b.Stats("/s?a=b").Open == 1 })
	b.Publish("/s?a=b", 2)

	var all map[string]StreamStats
	getJSON(t, srv.URL+StatsPath, &all)
	if st := all["/s?a=b"]; st.Open != 1 || st.Total != 1 || st.LastID != 2 || len(st.LastEventIDs) != 1 || st.LastEventIDs[0] != "7" {
		t.Fatalf("stats = %+v", all)
	}
	var one StreamStats
	getJSON(t, srv.URL+StatsPath+"?stream=%2Fs%3Fa%3Db", &one)
	if one.LastID != 2 {
		t.Fatalf("single stream stats = %+v", one)
	}

	b.Close()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the open stream")
	}
	if c.err != nil {
		t.Fatalf("Close should end the stream cleanly, got %v", c.err)
	}
	resp, err := http.Get(srv.URL + "/s")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("after Close: status %d, want 503", resp.StatusCode)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func TestStreamLimit(t *testing.T) {
	_, srv := newTestBackend(t, Config{MaxStreams: 1})
	connect(t, srv.URL+"/one", "")
	resp, err := http.Get(srv.URL + "/two")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second stream: status %d, want 503", resp.StatusCode)
	}
}

// TestHighRateFanOut checks that a burst of 20,000 events reaches several
// connections complete and in order.
func TestHighRateFanOut(t *testing.T) {
	const n = 20000
	// The history holds the whole burst: the test reader may lag behind the
	// publisher, and a connection that falls out of the history is closed.
	b, srv := newTestBackend(t, Config{Format: FormatBench, PayloadSize: 100, History: n})
	clients := make([]*client, 3)
	for i := range clients {
		clients[i] = connect(t, srv.URL+"/hot", "")
	}
	ssetest.Eventually(t, "connections open", 5*time.Second, func() bool { return b.Stats("/hot").Open == len(clients) })
	start := time.Now()
	for range n / 100 {
		b.Publish("/hot", 100)
	}
	for _, c := range clients {
		c.expectIDs(t, seq(1, n)...)
	}
	t.Logf("%d events to %d connections in %v", n, len(clients), time.Since(start))
}

func seq(from, to int64) []int64 {
	out := make([]int64, 0, to-from+1)
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{Rate: -1},
		{PayloadSize: -1},
		{Format: "xml"},
		{History: -1},
		{MaxStreams: -1},
		{Heartbeat: -time.Second},
	}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("Validate(%+v) = nil, want error", c)
		}
	}
	if err := (Config{Format: FormatBench, Rate: 10}).Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}
