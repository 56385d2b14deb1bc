package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssemesh/ssemesh/internal/sse"
)

// These tests attach subscribers through Serve inside a synctest bubble, so
// that heartbeats, drain and history fetches run on the bubble's clock.

// sockConn is the relay's end of a subscriber's connection in a bubble.
//
// A loopback TCP connection cannot be used there: a goroutine waiting on
// one waits in the network poller, which is not durably blocking, so
// synctest.Wait would not return while one is parked. A sockConn is one
// end of a Unix socket pair whose descriptors are non-blocking and unknown
// to the poller. The relay writes it as it writes a hijacked TCP
// connection, with write(2) through a syscall.RawConn; the test reads the
// other end (sockSubscriber) with non-blocking reads only after
// synctest.Wait. Nothing ever waits on either descriptor.
type sockConn struct {
	mu sync.Mutex
	fd int // -1 once closed
}

var _ syscall.Conn = (*sockConn)(nil)

// Read finds nothing: a subscriber sends nothing after its request.
func (c *sockConn) Read([]byte) (int, error) { return 0, io.EOF }

// Write is the blocking write of the slow path. The test's socket buffer
// never fills, so a write that would wait is reported as a timeout at once.
func (c *sockConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return 0, net.ErrClosed
	}
	n := 0
	for n < len(b) {
		m, err := syscall.Write(c.fd, b[n:])
		if m > 0 {
			n += m
			continue
		}
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return n, os.ErrDeadlineExceeded
		}
		return n, err
	}
	return n, nil
}

func (c *sockConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return net.ErrClosed
	}
	err := syscall.Close(c.fd)
	c.fd = -1
	return err
}

func (c *sockConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "relay", Net: "unix"} }
func (c *sockConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "subscriber", Net: "unix"} }
func (c *sockConn) SetDeadline(time.Time) error      { return nil }
func (c *sockConn) SetReadDeadline(time.Time) error  { return nil }
func (c *sockConn) SetWriteDeadline(time.Time) error { return nil }

func (c *sockConn) SyscallConn() (syscall.RawConn, error) { return rawSock{c}, nil }

// rawSock hands the descriptor to the relay's non-blocking writes. Unlike
// a poller-backed RawConn it never waits for the socket to become
// writable: the relay's write function makes one attempt and returns true.
type rawSock struct{ c *sockConn }

func (r rawSock) Control(f func(fd uintptr)) error {
	return r.do(func(fd uintptr) bool { f(fd); return true })
}
func (r rawSock) Read(f func(fd uintptr) bool) error  { return r.do(f) }
func (r rawSock) Write(f func(fd uintptr) bool) error { return r.do(f) }

func (r rawSock) do(f func(fd uintptr) bool) error {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	if r.c.fd < 0 {
		return net.ErrClosed
	}
	f(uintptr(r.c.fd))
	return nil
}

// sockSubscriber is the test's end of a sockConn.
type sockSubscriber struct {
	fd   int
	got  []byte // everything read so far, response head included
	done bool   // the relay closed its end
}

// newSockPair returns the relay's end and the subscriber's end of a new
// socket pair, both closed when the test ends.
func newSockPair(t *testing.T) (*sockConn, *sockSubscriber) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	for _, fd := range fds {
		syscall.CloseOnExec(fd)
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatalf("socketpair: %v", err)
		}
	}
	c, sub := &sockConn{fd: fds[0]}, &sockSubscriber{fd: fds[1]}
	t.Cleanup(func() {
		_ = c.Close()
		_ = syscall.Close(sub.fd)
	})
	return c, sub
}

// read takes whatever the relay wrote so far, without waiting.
func (s *sockSubscriber) read(t *testing.T) {
	t.Helper()
	var buf [4096]byte
	for !s.done {
		n, err := syscall.Read(s.fd, buf[:])
		switch {
		case n > 0:
			s.got = append(s.got, buf[:n]...)
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return
		case err != nil:
			t.Fatalf("reading the subscriber's socket: %v", err)
		default:
			s.done = true
		}
	}
}

// body is what the subscriber received after the response head.
func (s *sockSubscriber) body(t *testing.T) string {
	t.Helper()
	head, body, ok := bytes.Cut(s.got, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("subscriber got %q: no complete response head", s.got)
	}
	if !bytes.HasPrefix(head, []byte("HTTP/1.1 200 OK\r\n")) {
		t.Fatalf("subscriber got head %q, want 200", head)
	}
	return string(body)
}

// hijackWriter is an HTTP/1.1 response that the relay takes over.
type hijackWriter struct {
	h    http.Header
	conn net.Conn
}

func (w *hijackWriter) Header() http.Header { return w.h }
func (w *hijackWriter) Write([]byte) (int, error) {
	return 0, errors.New("hijackWriter: written before the hijack")
}
func (w *hijackWriter) WriteHeader(int) {}
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, nil, nil
}

// serveSock attaches a subscriber on the fast path: Serve hijacks a
// sockConn and hands it to the stream's dispatcher before it returns.
func serveSock(t *testing.T, r *Relay, sr Request) *sockSubscriber {
	t.Helper()
	conn, sub := newSockPair(t)
	req := httptest.NewRequest(http.MethodGet, "http://relay.test"+sr.Key, nil)
	if err := r.Serve(&hijackWriter{h: http.Header{}, conn: conn}, req, sr); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	return sub
}

// flushWriter is a response that cannot be hijacked (as over HTTP/2): its
// subscriber keeps its handler goroutine, on the slow path, for good.
type flushWriter struct {
	mu     sync.Mutex
	h      http.Header
	status int
	body   bytes.Buffer
}

func (w *flushWriter) Header() http.Header { return w.h }
func (w *flushWriter) WriteHeader(status int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status = status
}
func (w *flushWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(b)
}
func (w *flushWriter) Flush() {}

func (w *flushWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.String()
}

// wire is an event as subscribers receive it.
func wire(ev sse.Event) string { return string(sse.AppendEvent(nil, ev)) }

// TestHeartbeatOnTheDispatchersTicker: a fast-path subscriber on an idle
// stream gets a heartbeat from the dispatcher every Heartbeat, counted from
// the dispatcher's start, and only one per tick. An event between two
// ticks goes out at once and leaves the ticker's pace alone.
func TestHeartbeatOnTheDispatchersTicker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Heartbeat = 15 * time.Second
		hb := cfg.Heartbeat
		r := newTestRelay(t, cfg)
		start := time.Now()
		s := offlineStream(t, r, "/s") // the ticker starts now
		sub := serveSock(t, r, Request{Key: "/s"})
		synctest.Wait()
		s.mu.Lock()
		slow := len(s.slow)
		s.mu.Unlock()
		if slow != 0 {
			t.Fatal("the subscriber is not on the dispatcher's fast path")
		}
		want := ""
		expect := func(add string) {
			t.Helper()
			want += add
			synctest.Wait()
			sub.read(t)
			if got := sub.body(t); got != want {
				t.Fatalf("at %s: subscriber got %q, want %q", time.Since(start), got, want)
			}
		}
		expect("")
		time.Sleep(hb - time.Millisecond)
		expect("")
		time.Sleep(time.Millisecond)
		expect(":\n")
		time.Sleep(hb - time.Millisecond)
		expect("")
		time.Sleep(time.Millisecond)
		expect(":\n")

		// 2.5 beats: an event goes out at once, with no beat of its own.
		time.Sleep(hb / 2)
		s.publish(event("1"), time.Now())
		expect(wire(event("1")))
		// The next beat keeps the ticker's pace: at 3 beats, not 3.5.
		time.Sleep(hb/2 - time.Millisecond)
		expect("")
		time.Sleep(time.Millisecond)
		expect(":\n")
		time.Sleep(hb / 2)
		expect("")
	})
}

// TestHeartbeatOnTheSubscribersTimer: a subscriber that cannot be hijacked
// has its own heartbeat timer, started when it subscribed and restarted by
// every write of events, and never gets the dispatcher's beats on top.
func TestHeartbeatOnTheSubscribersTimer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.Heartbeat = 15 * time.Second
		hb := cfg.Heartbeat
		r := newTestRelay(t, cfg)
		s := offlineStream(t, r, "/s") // the dispatcher ticks at whole beats from now
		// Subscribe between two ticks of the dispatcher, so its beats and
		// the subscriber's own fall at different instants.
		time.Sleep(hb / 3)
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		w := &flushWriter{h: http.Header{}}
		req := httptest.NewRequest(http.MethodGet, "http://relay.test/s", nil).WithContext(ctx)
		served := make(chan error, 1)
		go func() { served <- r.Serve(w, req, Request{Key: "/s"}) }()

		want := ""
		expect := func(add string) {
			t.Helper()
			want += add
			synctest.Wait()
			if got := w.String(); got != want {
				t.Fatalf("at %s after subscribing: subscriber got %q, want %q", time.Since(start), got, want)
			}
		}
		expect("")
		time.Sleep(hb - time.Millisecond) // past the dispatcher's first tick
		expect("")
		time.Sleep(time.Millisecond)
		expect(":\n")
		time.Sleep(hb - time.Millisecond)
		expect("")
		time.Sleep(time.Millisecond)
		expect(":\n")

		// Half a beat later an event is written, and the wait starts over
		// from it: no beat one beat after the last one.
		time.Sleep(hb / 2)
		s.publish(event("1"), time.Now())
		expect(wire(event("1")))
		time.Sleep(hb / 2)
		expect("")
		time.Sleep(hb/2 - time.Millisecond)
		expect("")
		time.Sleep(time.Millisecond)
		expect(":\n")
		w.mu.Lock()
		status := w.status
		w.mu.Unlock()
		if status != http.StatusOK {
			t.Fatalf("status %d, want 200", status)
		}

		cancel()
		if err := <-served; err != nil {
			t.Fatalf("Serve: %v", err)
		}
	})
}

// TestDrainSpreadsClosesOverThePeriod: Drain closes the fast-path
// subscribers on the dispatcher's drain ticks (every 50ms), at an even
// pace: by the tick at elapsed e, n·e/period of them (rounded down), none
// between ticks, all of them at the period. So subscriber k is closed on
// the first tick at or after k·period/n, never before; n does not divide
// the period into whole ticks, so that rounding is checked too. Each is
// sent a jittered retry hint, then closed; Drain returns once all are.
func TestDrainSpreadsClosesOverThePeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n      = 7
			period = 800 * time.Millisecond
			tick   = 50 * time.Millisecond // the dispatcher's drain ticker
		)
		cfg := testConfig()
		cfg.DrainRetry = 2 * time.Second
		r := newTestRelay(t, cfg)
		offlineStream(t, r, "/s")
		var mu sync.Mutex
		ends := make([]End, n)
		subs := make([]*sockSubscriber, n)
		for i := range subs {
			subs[i] = serveSock(t, r, Request{Key: "/s", Ended: func(e End) {
				mu.Lock()
				defer mu.Unlock()
				ends[i] = e
			}})
		}
		synctest.Wait()

		start := time.Now()
		returned := make(chan time.Duration, 1)
		go func() {
			r.Drain(context.Background(), period)
			returned <- time.Since(start)
		}()
		closed := func() int {
			k := 0
			for _, sub := range subs {
				sub.read(t)
				if sub.done {
					k++
				}
			}
			return k
		}
		took := time.Duration(-1)
		for el := time.Duration(0); el <= period+2*tick; el += tick / 2 {
			synctest.Wait()
			want := n
			if last := el / tick * tick; last < period {
				want = n * int(last) / int(period)
			}
			got := closed()
			if got != want {
				t.Fatalf("%s into a %s drain: %d of %d subscribers closed, want %d", el, period, got, n, want)
			}
			if el == period/2 && got != n/2 {
				t.Fatalf("half way through the drain %d of %d closed, want %d", got, n, n/2)
			}
			select {
			case took = <-returned:
				if got < n {
					t.Fatalf("Drain returned after %s with %d of %d subscribers open", took, n-got, n)
				}
			default:
			}
			if took >= 0 {
				break
			}
			time.Sleep(tick / 2)
		}
		// The last ones are closed on the tick at the period; Drain sees
		// every subscriber gone on the tick after it (it waits for the
		// clock to be past the period, not at it).
		if took < 0 {
			t.Fatalf("Drain did not return within %s", period+2*tick)
		}
		if took < period || took > period+tick {
			t.Fatalf("Drain returned after %s, want within one drain tick after %s", took, period)
		}

		for i, sub := range subs {
			body := sub.body(t)
			ms, ok := strings.CutPrefix(body, "retry: ")
			ms, ok2 := strings.CutSuffix(ms, "\n\n")
			v, err := strconv.Atoi(ms)
			if !ok || !ok2 || err != nil || v < 1000 || v > 3000 {
				t.Errorf("subscriber %d got %q, want only a retry hint of 1000..3000 ms", i, body)
			}
			mu.Lock()
			e := ends[i]
			mu.Unlock()
			if e.Reason != EndDrain {
				t.Errorf("subscriber %d ended with %q, want %q", i, e.Reason, EndDrain)
			}
		}
		if c := r.Clients(); c != 0 {
			t.Fatalf("%d clients attached after Drain", c)
		}
	})
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestFetchMeetsARingThatLags: a history fetch reads its own connection,
// and the stream's upstream the ring; either may be ahead. Here the
// replay delivers everything it has before the ring gets the events it
// should meet: the fetch must find the seam when the ring catches up,
// not wait for the replay to send more until catch_up_timeout.
func TestFetchMeetsARingThatLags(t *testing.T) {
	tests := []struct {
		name   string
		from   string   // the subscriber's Last-Event-ID
		replay []string // ids the replay sends
		ring   []string // ids the ring gets after the replay was read
		prefix []string // ids to send from the replay
		seq    uint64   // where to continue in the ring
		gap    string   // reason fragment; "" for none
	}{
		// Two subscribers open a stream from consecutive ids: the stream
		// from 18 has not read its answer (19) yet when the one from 19
		// asks for its history and gets the next live event.
		{name: "ring reaches the resume point", from: "19", replay: []string{"20"}, ring: []string{"19", "20"}, seq: 2},
		// The ring starts later than the resume point, and lags the replay.
		{name: "ring reaches the replay", from: "5", replay: []string{"6", "7", "8"}, ring: []string{"7", "8"}, prefix: []string{"6"}, seq: 1},
		// A replay that starts with an event the ring holds, and nothing
		// older, did not replay from the id: a gap, as when the ring was
		// first.
		{name: "replay skipped", from: "5", replay: []string{"7"}, ring: []string{"7"}, gap: "does not hold events after that id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newTestRelay(t, testConfig())
				body, replay := io.Pipe()
				t.Cleanup(func() { replay.Close() })
				asked := make(chan string, 1)
				r.http.HTTPClient = &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
					asked <- req.Header.Get("Last-Event-ID")
					return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: body, Request: req}, nil
				})}
				s := newStream(r, "/s", func(*Attempt) (Target, error) {
					return Target{URL: "http://upstream.test/s", Label: "upstream"}, nil
				}, "", false)
				type result struct {
					prefix [][]byte
					seq    uint64
					gap    string
				}
				fetched := make(chan result, 1)
				go func() {
					prefix, seq, gap := s.fetchSince(s.ctx, tc.from)
					fetched <- result{prefix, seq, gap}
				}()
				for _, id := range tc.replay {
					// A pipe's write returns once the fetch has read it.
					fmt.Fprintf(replay, "id: %s\ndata: x\n\n", id)
				}
				if id := <-asked; id != tc.from {
					t.Fatalf("asked upstream from %q, want %q", id, tc.from)
				}
				synctest.Wait()
				select {
				case res := <-fetched:
					t.Fatalf("the fetch ended before the ring had the events: %+v", res)
				default:
				}
				for _, id := range tc.ring {
					s.publish(event(id), time.Now())
				}
				synctest.Wait()
				var res result
				select {
				case res = <-fetched:
				default:
					t.Fatal("the ring caught up with the replay and the fetch kept waiting")
				}
				if tc.gap != "" {
					if !strings.Contains(res.gap, tc.gap) {
						t.Fatalf("gap %q, want %q", res.gap, tc.gap)
					}
					return
				}
				if res.gap != "" || res.seq != tc.seq {
					t.Fatalf("fetch continues at %d with gap %q, want %d and no gap", res.seq, res.gap, tc.seq)
				}
				var want []string
				for _, id := range tc.prefix {
					want = append(want, fmt.Sprintf("id: %s\ndata: x\n\n", id))
				}
				var got []string
				for _, b := range res.prefix {
					got = append(got, string(b))
				}
				if strings.Join(got, "|") != strings.Join(want, "|") {
					t.Fatalf("prefix %q, want %q", got, want)
				}
			})
		})
	}
}

// TestDrainSpreadsSubscribersOffTheFastPath: subscribers that cannot be
// taken over (HTTP/2, wrapped writers) keep their own goroutine; a drain
// closes each at a moment of its own in the period, not all at the start.
// Until its moment a subscriber still gets every event; each ends with the
// retry hint, and Drain returns once all are closed.
func TestDrainSpreadsSubscribersOffTheFastPath(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const (
			n      = 40
			period = time.Second
		)
		cfg := testConfig()
		cfg.DrainRetry = 2 * time.Second
		r := newTestRelay(t, cfg)
		s := offlineStream(t, r, "/s")
		writers := make([]*flushWriter, n)
		served := make(chan error, n)
		for i := range writers {
			writers[i] = &flushWriter{h: http.Header{}}
			req := httptest.NewRequest(http.MethodGet, "http://relay.test/s", nil)
			go func() { served <- r.Serve(writers[i], req, Request{Key: "/s"}) }()
		}
		synctest.Wait()
		if c := r.Clients(); c != n {
			t.Fatalf("%d subscribers attached, want %d", c, n)
		}

		returned := make(chan struct{})
		go func() {
			r.Drain(context.Background(), period)
			close(returned)
		}()
		closedAt := func() int {
			synctest.Wait()
			return n - r.Clients()
		}
		if k := closedAt(); k != 0 {
			t.Fatalf("%d of %d closed as the drain started, want none", k, n)
		}
		time.Sleep(period / 4)
		s.publish(event("1"), time.Now())
		open := r.Clients()
		synctest.Wait()
		got1 := 0
		for _, w := range writers {
			if strings.Contains(w.String(), wire(event("1"))) {
				got1++
			}
		}
		if got1 < open {
			t.Fatalf("%d subscribers still open a quarter into the drain, %d got the event published then", open, got1)
		}
		time.Sleep(period / 4)
		// Each moment is drawn evenly from the period: half way, about
		// half are closed (outside 5..35 of 40 has odds below 1 in 10^6).
		if k := closedAt(); k < 5 || k > 35 {
			t.Fatalf("half way through the drain %d of %d closed, want them spread over the period", k, n)
		}
		select {
		case <-returned:
			t.Fatal("Drain returned half way through with subscribers open")
		default:
		}
		time.Sleep(period / 2)
		if k := closedAt(); k != n {
			t.Fatalf("at the end of the drain %d of %d closed, want all", k, n)
		}
		time.Sleep(100 * time.Millisecond) // the dispatcher's next drain tick
		synctest.Wait()
		select {
		case <-returned:
		default:
			t.Fatal("Drain did not return after every subscriber closed")
		}
		for i, w := range writers {
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
			body := strings.TrimPrefix(w.String(), wire(event("1")))
			ms, ok := strings.CutPrefix(body, "retry: ")
			ms, ok2 := strings.CutSuffix(ms, "\n\n")
			if v, err := strconv.Atoi(ms); !ok || !ok2 || err != nil || v < 1000 || v > 3000 {
				t.Errorf("subscriber %d got %q, want its events and a retry hint of 1000..3000 ms", i, w.String())
			}
		}
	})
}
