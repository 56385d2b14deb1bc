package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// childConn is a sockConn for a child node's subscription: the relay reads
// it for the child's hang-up, so Read waits (on a channel, durably
// blocking in a bubble) until the connection is closed.
type childConn struct {
	*sockConn
	closed chan struct{}
}

func (c *childConn) Read([]byte) (int, error) {
	<-c.closed
	return 0, errChildClosed
}

func (c *childConn) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return c.sockConn.Close()
}

var errChildClosed = errors.New("child connection closed")

// TestChildHeartbeat: a subscriber that is another node is told the child
// heartbeat in the response head and gets a beat every ChildHeartbeat on
// an idle stream, and no more at the full heartbeat; other subscribers
// get theirs at the full heartbeat only.
func TestChildHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Heartbeat, cfg.ChildHeartbeat = 15*time.Second, 5*time.Second
		r := newTestRelay(t, cfg)
		offlineStream(t, r, "/s")
		conn, child := newSockPair(t)
		cc := &childConn{sockConn: conn, closed: make(chan struct{})}
		req := httptest.NewRequest(http.MethodGet, "http://relay.test/s", nil)
		if err := r.Serve(&hijackWriter{h: http.Header{}, conn: cc}, req, Request{Key: "/s", Child: true}); err != nil {
			t.Fatal(err)
		}
		plain := serveSock(t, r, Request{Key: "/s"})
		synctest.Wait()
		child.read(t)
		plain.read(t)
		if !bytes.Contains(child.got, []byte(HeartbeatHeader+": 5000\r\n")) {
			t.Fatalf("child's response head %q does not announce the 5000 ms heartbeat", child.got)
		}
		if bytes.Contains(plain.got, []byte(HeartbeatHeader)) {
			t.Fatalf("a client's response head %q announces the child heartbeat", plain.got)
		}
		check := func(at string, wantChild, wantPlain string) {
			t.Helper()
			synctest.Wait()
			child.read(t)
			plain.read(t)
			if got := child.body(t); got != wantChild {
				t.Fatalf("%s: child got %q, want %q", at, got, wantChild)
			}
			if got := plain.body(t); got != wantPlain {
				t.Fatalf("%s: client got %q, want %q", at, got, wantPlain)
			}
		}
		time.Sleep(5*time.Second - time.Millisecond)
		check("4.999 s", "", "")
		time.Sleep(time.Millisecond)
		check("5 s", ":\n", "")
		time.Sleep(5 * time.Second)
		check("10 s", ":\n:\n", "")
		time.Sleep(5 * time.Second)
		check("15 s", ":\n:\n:\n", ":\n")
	})
}

// TestChildHeartbeatOffTheFastPath: a child whose connection cannot be
// taken over beats on its own timer at the child heartbeat.
func TestChildHeartbeatOffTheFastPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Heartbeat, cfg.ChildHeartbeat = 15*time.Second, 5*time.Second
		r := newTestRelay(t, cfg)
		offlineStream(t, r, "/s")
		w := &flushWriter{h: http.Header{}}
		req := httptest.NewRequest(http.MethodGet, "http://relay.test/s", nil)
		ctx, cancel := context.WithCancel(req.Context())
		served := make(chan error, 1)
		go func() { served <- r.Serve(w, req.WithContext(ctx), Request{Key: "/s", Child: true}) }()
		time.Sleep(5*time.Second - time.Millisecond)
		synctest.Wait()
		if got := w.String(); got != "" {
			t.Fatalf("before 5 s the child got %q", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := w.String(); got != ":\n" {
			t.Fatalf("at 5 s the child got %q, want one beat", got)
		}
		if got := w.h.Get(HeartbeatHeader); got != "5000" {
			t.Fatalf("%s: %q, want 5000", HeartbeatHeader, got)
		}
		cancel()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
	})
}

func TestIdleFor(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTimeout = time.Minute
	tests := []struct {
		name       string
		header     string
		fromParent bool
		want       time.Duration
	}{
		{"a back end", "5000", false, time.Minute},
		{"a parent without the header", "", true, time.Minute},
		{"a parent beating every 5 s", "5000", true, 15 * time.Second},
		{"never under a second", "1", true, time.Second},
		{"never over idle_timeout", "3600000", true, time.Minute},
		{"not a number", "5s", true, time.Minute},
		{"negative", "-5000", true, time.Minute},
		{"zero", "0", true, time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{Header: http.Header{}}
			if tc.header != "" {
				resp.Header.Set(HeartbeatHeader, tc.header)
			}
			if got := idleFor(&cfg, resp, tc.fromParent); got != tc.want {
				t.Fatalf("idleFor = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestSilentParentIsLeftAfterItsBeats: a parent node that announced a
// 100 ms heartbeat and then goes silent (as across a partition) is left
// after three beats and asked again with Last-Event-ID, long before the
// relay's idle_timeout of a minute.
func TestSilentParentIsLeftAfterItsBeats(t *testing.T) {
	var n atomic.Int32
	reqs := make(chan string, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := n.Add(1)
		reqs <- r.Header.Get("Last-Event-ID")
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set(HeartbeatHeader, "100")
		_, _ = fmt.Fprintf(w, "id: %d\ndata: x\n\n", i)
		http.NewResponseController(w).Flush()
		<-r.Context().Done() // then silence
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.IdleTimeout = time.Minute
	r, err := New(cfg, ssetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	target := func(*Attempt) (Target, error) {
		return Target{URL: srv.URL, Label: "parent", Parent: "p"}, nil
	}
	s, _, err := r.acquire("k", target, "", false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.unref()
	next := func(what string) string {
		t.Helper()
		select {
		case id := <-reqs:
			return id
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s within 10 s (idle_timeout is a minute)", what)
			return ""
		}
	}
	next("first request")
	if id := next("request after three silent beats"); id != "1" {
		t.Fatalf("the reconnect resumed from %q, want 1", id)
	}
}
