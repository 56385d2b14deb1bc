package node

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/sse"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// scriptEnd is the event appended to every script: both readers stop when it
// arrives, so no test waits for "nothing more came".
const scriptEnd = "__end__"

// transparencyCase is an upstream given as raw writes, each flushed on its
// own, and what a browser dispatches for it.
type transparencyCase struct {
	name   string
	chunks []string
	// closeAfter ends the first connection right after the chunks, so an
	// unterminated last block meets EOF; the end event then comes on the
	// next connection.
	closeAfter bool
	want       []sse.Message // before the end event
	wantRetry  string        // final reconnection time; "" for never set
	wantLast   string        // final lastEventId
}

func msg(typ, data, lastID string) sse.Message {
	return sse.Message{Type: typ, Data: data, LastEventID: lastID}
}

// bytewise splits s into one-byte writes.
func bytewise(s string) []string {
	out := make([]string, len(s))
	for i := range s {
		out[i] = s[i : i+1]
	}
	return out
}

func transparencyCases() []transparencyCase {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	longID := strings.Repeat("id-", 20000)           // 60 KB
	var many strings.Builder
	var manyWant []sse.Message
	for i := 1; i <= 200; i++ {
		fmt.Fprintf(&many, "id: %d\ndata: event %d\n\n", i, i)
		manyWant = append(manyWant, msg("message", fmt.Sprintf("event %d", i), strconv.Itoa(i)))
	}
	return []transparencyCase{
		{
			name:     "LF",
			chunks:   []string{"data: a\n\n", "id: 1\ndata: b\n\n"},
			want:     []sse.Message{msg("message", "a", ""), msg("message", "b", "1")},
			wantLast: "1",
		},
		{
			name:     "CR",
			chunks:   []string{"data: a\r\rid: 1\rdata: b\r\r"},
			want:     []sse.Message{msg("message", "a", ""), msg("message", "b", "1")},
			wantLast: "1",
		},
		{
			name:     "CRLF",
			chunks:   []string{"data: a\r\n\r\nid: 1\r\ndata: b\r\n\r\n"},
			want:     []sse.Message{msg("message", "a", ""), msg("message", "b", "1")},
			wantLast: "1",
		},
		{
			name:   "mixed line ends",
			chunks: []string{"data: a\r\ndata: b\rdata: c\n\r\n", "data: d\r\n\n"},
			want:   []sse.Message{msg("message", "a\nb\nc", ""), msg("message", "d", "")},
		},
		{
			// Were the LF after a chunk-final CR a line end of its own, the
			// first block would dispatch early as "a".
			name:   "CRLF split across chunks",
			chunks: []string{"data: a\r", "\ndata: b\r", "\n\r", "\n"},
			want:   []sse.Message{msg("message", "a\nb", "")},
		},
		{
			name:   "leading BOM",
			chunks: []string{"\xEF\xBB\xBFdata: a\n\n"},
			want:   []sse.Message{msg("message", "a", "")},
		},
		{
			name:   "leading BOM split across chunks",
			chunks: []string{"\xEF", "\xBB", "\xBFdata: a\n\n"},
			want:   []sse.Message{msg("message", "a", "")},
		},
		{
			name:   "second BOM at start is content",
			chunks: []string{"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"},
			want:   []sse.Message{msg("message", "b", "")},
		},
		{
			name:   "BOM later in the stream",
			chunks: []string{"data: a\n\n\xEF\xBB\xBFdata: b\n\n", "data: \xEF\xBB\xBFc\n\n"},
			want:   []sse.Message{msg("message", "a", ""), msg("message", "\uFEFFc", "")},
		},
		{
			name:   "comments only",
			chunks: []string{": hello\n\n", ":\n\n", ":: x\r\n\r\n", ": data: nope\n\n"},
		},
		{
			name:   "comment between data lines",
			chunks: []string{"data: a\n: note\ndata: b\n\n"},
			want:   []sse.Message{msg("message", "a\nb", "")},
		},
		{
			name:   "data without colon",
			chunks: []string{"data\n\n", "data\ndata\n\n"},
			want:   []sse.Message{msg("message", "", ""), msg("message", "\n", "")},
		},
		{
			name:   "no space, two spaces, empty value",
			chunks: []string{"data:a\n\n", "data:  b\n\n", "data: \n\n", "data:\n\n", "data:\t c\n\n"},
			want: []sse.Message{
				msg("message", "a", ""), msg("message", " b", ""), msg("message", "", ""),
				msg("message", "", ""), msg("message", "\t c", ""),
			},
		},
		{
			name:   "multi-line data",
			chunks: []string{"data: one\ndata: two\ndata: three\n\n"},
			want:   []sse.Message{msg("message", "one\ntwo\nthree", "")},
		},
		{
			name:   "empty data lines",
			chunks: []string{"data:\ndata: x\ndata:\n\n", "data\ndata\ndata\n\n"},
			want:   []sse.Message{msg("message", "\nx\n", ""), msg("message", "\n\n", "")},
		},
		{
			name:   "event types and reset after dispatch",
			chunks: []string{"event: add\ndata: 1\n\n", "data: 2\n\n", "event: upd\nevent: del\ndata: 3\n\n", "event:\ndata: 4\n\n", "event: x y\ndata: 5\n\n"},
			want: []sse.Message{
				msg("add", "1", ""), msg("message", "2", ""), msg("del", "3", ""),
				msg("message", "4", ""), msg("x y", "5", ""),
			},
		},
		{
			name:   "event-only block",
			chunks: []string{"event: ghost\n\n", "data: a\n\n"},
			want:   []sse.Message{msg("message", "a", "")},
		},
		{
			name:     "id containing NUL is ignored",
			chunks:   []string{"id: good\ndata: a\n\n", "id: b\x00ad\ndata: b\n\n", "id: \x00\n\n"},
			want:     []sse.Message{msg("message", "a", "good"), msg("message", "b", "good")},
			wantLast: "good",
		},
		{
			name:   "empty id resets lastEventId",
			chunks: []string{"id: 7\ndata: a\n\n", "id\ndata: b\n\n", "id: 8\ndata: c\n\nid:\ndata: d\n\n"},
			want: []sse.Message{
				msg("message", "a", "7"), msg("message", "b", ""), msg("message", "c", "8"), msg("message", "d", ""),
			},
		},
		{
			name:     "id-only block",
			chunks:   []string{"id: 1\ndata: a\n\n", "id: 2\n\n", "data: b\n\n"},
			want:     []sse.Message{msg("message", "a", "1"), msg("message", "b", "2")},
			wantLast: "2",
		},
		{
			name:     "empty id-only block",
			chunks:   []string{"id: 1\ndata: a\n\n", "id\n\n", "data: b\n\n", "id: 3\n\n"},
			want:     []sse.Message{msg("message", "a", "1"), msg("message", "b", "")},
			wantLast: "3",
		},
		{
			name:      "retry",
			chunks:    []string{"retry: 1500\ndata: a\n\n"},
			want:      []sse.Message{msg("message", "a", "")},
			wantRetry: "1500",
		},
		{
			name: "retry with non-digits is ignored",
			chunks: []string{
				"retry: 2000\n\n", "retry: 15x\ndata: a\n\n",
				"retry: -1\n\nretry: 1 0\n\nretry:  300\n\nretry:\n\nretry: 1.5\n\nretry: 99999999999999999999\n\n",
			},
			want:      []sse.Message{msg("message", "a", "")},
			wantRetry: "2000",
		},
		{
			name:      "retry-only block",
			chunks:    []string{"data: a\n\n", "retry: 0\n\n", "data: b\n\n"},
			want:      []sse.Message{msg("message", "a", ""), msg("message", "b", "")},
			wantRetry: "0",
		},
		{
			name:   "unknown fields",
			chunks: []string{"foo: bar\ndata: a\nData: b\nDATA: c\nevent : x\nid : 9\nretry : 5\n\n", "bogus\n\n"},
			want:   []sse.Message{msg("message", "a", "")},
		},
		{
			name:       "unterminated last event is dropped",
			chunks:     []string{"id: 1\ndata: a\n\n", "data: partial\ndata: more"},
			closeAfter: true,
			want:       []sse.Message{msg("message", "a", "1")},
			wantLast:   "1",
		},
		{
			name:   "1 MiB data line",
			chunks: []string{"data: " + big[:100003], big[100003:700001], big[700001:] + "\n\n"},
			want:   []sse.Message{msg("message", big, "")},
		},
		{
			name:   "multibyte UTF-8 split across writes",
			chunks: []string{"data: caf\xC3", "\xA9 \xF0\x9F", "\x98", "\x80 ok\n\n"},
			want:   []sse.Message{msg("message", "café 😀 ok", "")},
		},
		{
			name:     "invalid UTF-8",
			chunks:   []string{"data: \xff\xfe bad \xC3\n\n", "id: \xC0\xAF\ndata: x\n\n", "event: \xfftype\ndata: y\n\n"},
			want:     []sse.Message{msg("message", "\xff\xfe bad \xC3", ""), msg("message", "x", "\xC0\xAF"), msg("\xfftype", "y", "\xC0\xAF")},
			wantLast: "\xC0\xAF",
		},
		{
			name:   "field name split across chunks",
			chunks: []string{"da", "ta: a\n", "\n", "ev", "ent: t\nd", "ata: b\n\n", "i", "d", ": 5\n\n"},
			want:   []sse.Message{msg("message", "a", ""), msg("t", "b", "")},
			// The id-only block at the end still moves lastEventId.
			wantLast: "5",
		},
		{
			name:     "many events in one chunk",
			chunks:   []string{many.String()},
			want:     manyWant,
			wantLast: "200",
		},
		{
			name:     "one event byte by byte",
			chunks:   bytewise("id: 42\r\nevent: tick\r\nretry: 700\r\ndata: one\r\ndata: two\r\n\r\n"),
			want:     []sse.Message{msg("tick", "one\ntwo", "42")},
			wantLast: "42", wantRetry: "700",
		},
		{
			name:   "blank lines between events",
			chunks: []string{"\n\n\ndata: a\n\n\n\n\r\n\r\rdata: b\n\n\n", "\r\n\r\n"},
			want:   []sse.Message{msg("message", "a", ""), msg("message", "b", "")},
		},
		{
			name:     "very long id",
			chunks:   []string{"id: " + longID + "\ndata: a\n\n", "data: b\n\n"},
			want:     []sse.Message{msg("message", "a", longID), msg("message", "b", longID)},
			wantLast: longID,
		},
		{
			name:   "colon inside data",
			chunks: []string{"data: a: b:c\n\n", "data::\n\n", "data:: x\n\n", "data:http://x.test:80/\n\n"},
			want:   []sse.Message{msg("message", "a: b:c", ""), msg("message", ":", ""), msg("message", ": x", ""), msg("message", "http://x.test:80/", "")},
		},
	}
}

// scriptUpstream plays each case's chunks at /d/<i> (read directly) and
// /n/<i> (read through the node). The first connection of each path waits
// for its reader to be attached before it writes, because a subscriber
// joins a live stream at its head; later connections need no gate. The
// stream is held open after the script: an upstream EOF would make the
// node reconnect.
type scriptUpstream struct {
	*ssetest.Upstream
	gates ssetest.Gates
}

func newScriptUpstream(t *testing.T, cases []transparencyCase) *scriptUpstream {
	u := &scriptUpstream{}
	end := "data: " + scriptEnd + "\n\n"
	u.Upstream = ssetest.Serve(t, func(r ssetest.Request) ssetest.Response {
		// Paths are /d/<case> and /n/<case>.
		_, num, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		idx, err := strconv.Atoi(num)
		if err != nil || idx < 0 || idx >= len(cases) {
			return ssetest.Response{Handler: http.NotFound}
		}
		tc := cases[idx]
		switch {
		case r.PathN == 0 && tc.closeAfter:
			return ssetest.Response{Gate: u.gates.Get(r.URL.Path), Body: tc.chunks}
		case r.PathN == 0:
			return ssetest.Response{Gate: u.gates.Get(r.URL.Path), Body: append(slices.Clone(tc.chunks), end), Hold: true}
		case r.PathN == 1 && tc.closeAfter:
			return ssetest.Response{Body: []string{end}, Hold: true}
		}
		return ssetest.Response{Hold: true}
	})
	return u
}

// open lets the first connection of path write its script.
func (u *scriptUpstream) open(path string) { u.gates.Open(path) }

// clientView is what an EventSource observes on a stream.
type clientView struct {
	msgs   []sse.Message
	retry  int64
	lastID string
}

// observe reads url like a browser would until the end event arrives,
// reconnecting with Last-Event-ID when the server closes the stream, at
// most maxConns connections in all. After the first connection is
// attached, openGate lets the upstream write.
func observe(t *testing.T, url string, maxConns int, openGate func()) clientView {
	t.Helper()
	obs := sse.Observer{Retry: -1}
	var v clientView
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	for conn := 0; conn < maxConns; conn++ {
		h := http.Header{}
		if obs.LastEventID != "" {
			h.Set("Last-Event-ID", obs.LastEventID)
		}
		c := ssetest.Dial(t, url, h)
		if conn == 0 {
			openGate()
		}
	read:
		for {
			select {
			case ev, ok := <-c.Events():
				if !ok {
					break read
				}
				m, dispatched := obs.Apply(ev)
				if !dispatched {
					continue
				}
				v.msgs = append(v.msgs, m)
				if m.Data == scriptEnd {
					c.Close()
					v.retry, v.lastID = obs.Retry, obs.LastEventID
					return v
				}
			case <-deadline.C:
				t.Fatalf("%s: no end event within 15s (connection %d, %d messages so far)", url, conn+1, len(v.msgs))
			}
		}
		c.Close()
		if c.Err() != nil {
			t.Fatalf("%s: connection %d failed: %v", url, conn+1, c.Err())
		}
	}
	t.Fatalf("%s: stream ended %d times without the end event (%d messages)", url, maxConns, len(v.msgs))
	return v
}

// clip shortens long values in failure messages.
func clip(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q...(%d bytes)", s[:80], len(s))
	}
	return fmt.Sprintf("%q", s)
}

func fmtMsg(m sse.Message) string {
	return fmt.Sprintf("{type %s data %s lastEventId %s}", clip(m.Type), clip(m.Data), clip(m.LastEventID))
}

// diffMessages describes the first difference between two message lists.
func diffMessages(got, want []sse.Message) string {
	for i := 0; i < len(got) && i < len(want); i++ {
		if got[i] != want[i] {
			return fmt.Sprintf("message %d: got %s, want %s", i, fmtMsg(got[i]), fmtMsg(want[i]))
		}
	}
	if len(got) != len(want) {
		return fmt.Sprintf("got %d messages, want %d", len(got), len(want))
	}
	return ""
}

func TestTransparency(t *testing.T) {
	cases := transparencyCases()
	up := newScriptUpstream(t, cases)
	upAddr := up.Addr()
	cfg := testConfig(BackendSpec{Name: "script", URI: "http://" + upAddr + "/n/", Mount: "/n", Prefix: true})
	n := startNode(t, cfg)
	playTransparency(t, cases, up, upAddr, n.Addr())
}

// playTransparency plays every case direct from the upstream (/d/<case>)
// and through entry, the client listener of a node or of the last node of
// a chain whose upstream path is /n/<case>, and compares what a browser
// would observe.
func playTransparency(t *testing.T, cases []transparencyCase, up *scriptUpstream, upAddr, entry string) {
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			maxConns := 1
			if tc.closeAfter {
				maxConns = 2
			}
			directPath, nodePath := fmt.Sprintf("/d/%d", i), fmt.Sprintf("/n/%d", i)
			direct := observe(t, "http://"+upAddr+directPath, maxConns, func() { up.open(directPath) })
			through := observe(t, "http://"+entry+nodePath, 1, func() { up.open(nodePath) })

			// The table pins the direct view, so a parser bug shared by both
			// sides cannot make them agree on something wrong.
			wantRetry := int64(-1)
			if tc.wantRetry != "" {
				wantRetry, _ = strconv.ParseInt(tc.wantRetry, 10, 64)
			}
			want := append(slices.Clone(tc.want), msg("message", scriptEnd, tc.wantLast))
			if d := diffMessages(direct.msgs, want); d != "" {
				t.Fatalf("direct view differs from the table: %s", d)
			}
			if direct.retry != wantRetry || direct.lastID != tc.wantLast {
				t.Fatalf("direct final state: retry %d lastEventId %s, want %d %s", direct.retry, clip(direct.lastID), wantRetry, clip(tc.wantLast))
			}

			if d := diffMessages(through.msgs, direct.msgs); d != "" {
				t.Fatalf("through the node vs direct: %s", d)
			}
			if through.retry != direct.retry {
				t.Errorf("through the node retry is %d, direct %d", through.retry, direct.retry)
			}
			if through.lastID != direct.lastID {
				t.Errorf("through the node lastEventId is %s, direct %s", clip(through.lastID), clip(direct.lastID))
			}
			// One upstream connection per script, two when it ends in EOF:
			// anything more is a reconnect the stream did not ask for.
			if got := up.PathHits(nodePath); got != maxConns {
				t.Errorf("node opened %d upstream connections, want %d", got, maxConns)
			}
			if tc.closeAfter {
				// The node resumes like a browser: from the last id it
				// passed on, not from the discarded partial block.
				want := []string{"<none>", tc.wantLast}
				if got := up.LastEventIDs(nodePath); !slices.Equal(got, want) {
					t.Errorf("node sent Last-Event-ID %q upstream, want %q", got, want)
				}
			}
		})
	}
}

// logRecorder keeps the entries a logger wrote at warning level and above.
type logRecorder struct {
	mu      sync.Mutex
	entries []logrus.Entry
}

func (h *logRecorder) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h *logRecorder) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries = append(h.entries, *e)
	return nil
}

// find returns the first entry at level whose message contains substr.
func (h *logRecorder) find(level logrus.Level, substr string) (logrus.Entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.entries {
		if e.Level == level && strings.Contains(e.Message, substr) {
			return e, true
		}
	}
	return logrus.Entry{}, false
}

func TestOversizeUpstreamEventIsDroppedWhole(t *testing.T) {
	const path = "/big/sse"
	oversize := "id: 3\nevent: huge\ndata: " + strings.Repeat("x", 10<<10) + "\n\n"
	attached := make(chan struct{})
	var mu sync.Mutex
	var resumeIDs []string
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conn := len(resumeIDs)
		resumeIDs = append(resumeIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		var script []string
		switch conn {
		case 0:
			if rc.Flush() != nil {
				return
			}
			select {
			case <-attached:
			case <-r.Context().Done():
				return
			}
			// The oversize event is split so that its start reaches the
			// node before the limit is known to be exceeded.
			script = []string{"id: 1\ndata: one\n\n", "id: 2\ndata: two\n\n", oversize[:2000], oversize[2000:]}
		case 1:
			script = []string{"id: 4\ndata: four\n\n", "id: 5\nevent: done\ndata: five\n\n"}
		}
		for _, c := range script {
			if _, err := w.Write([]byte(c)); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		<-r.Context().Done()
	})
	upAddr := serve(t, up)

	rec := &logRecorder{}
	l := ssetest.Logger(t)
	l.AddHook(rec)
	cfg := testConfig(BackendSpec{Name: "big", URI: "http://" + upAddr + path})
	cfg.Relay.MaxEventBytes = 4096
	n, err := New(cfg, l)
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

	c := ssetest.Dial(t, "http://"+n.Addr()+path, nil)
	close(attached)

	obs := sse.Observer{Retry: -1}
	var got []sse.Message
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for len(got) == 0 || got[len(got)-1].Data != "five" {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("client stream ended (err %v) after %v: the upstream reconnect must be invisible", c.Err(), got)
			}
			if m, ok := obs.Apply(ev); ok {
				got = append(got, m)
			}
		case <-timer.C:
			t.Fatalf("no event \"five\" within 10s; got %v", got)
		}
	}
	want := []sse.Message{msg("message", "one", "1"), msg("message", "two", "2"), msg("message", "four", "4"), msg("done", "five", "5")}
	if d := diffMessages(got, want); d != "" {
		t.Fatalf("client saw a cut or extra event: %s", d)
	}

	mu.Lock()
	ids := slices.Clone(resumeIDs)
	mu.Unlock()
	// The oversize block's id never took effect: the node resumes after 2.
	if !slices.Equal(ids, []string{"", "2"}) {
		t.Errorf("upstream connections sent Last-Event-ID %q, want [\"\" \"2\"]", ids)
	}
	if _, ok := rec.find(logrus.ErrorLevel, "too large"); !ok {
		t.Errorf("no error logged about the oversize event")
	}
	if got := n.Relay().Metrics().Snapshot().UpstreamErrors["too_large"]; got != 1 {
		t.Errorf("too_large upstream errors = %d, want 1", got)
	}
}

// TestFirstSubscriberSeesEventsSentAtConnect covers a back end that writes
// at once when a stream is opened (a snapshot, a welcome event): the client
// whose request opened the stream must receive it, as it would directly.
func TestFirstSubscriberSeesEventsSentAtConnect(t *testing.T) {
	const path = "/hello/sse"
	up := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("id: 1\ndata: snapshot\n\n"))
		if http.NewResponseController(w).Flush() != nil {
			return
		}
		<-r.Context().Done()
	})
	upAddr := serve(t, up)
	n := startNode(t, testConfig(BackendSpec{Name: "hello", URI: "http://" + upAddr + path}))
	c := ssetest.Dial(t, "http://"+n.Addr()+path, nil)
	if ev := c.Next(t, 5*time.Second); ev.Data != "snapshot" || ev.ID != "1" {
		t.Fatalf("first event %+v, want the snapshot with id 1", ev)
	}
}
