package relay

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/sse"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// startTLSFront is startFront over TLS, with the listener wrapped by
// Listener as a node does: hijacked HTTP/1.1 subscribers are written with
// non-blocking writes of sealed records. It returns the URL and a client
// that trusts the server, speaking HTTP/1.1 only.
func startTLSFront(t *testing.T, r *Relay, b *feedBackend) (string, *http.Client) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if err := r.Serve(w, req, Request{Key: req.URL.Path, Target: b.target(req.URL.Path)}); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	srv.Listener = Listener(srv.Listener)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	return srv.URL, &http.Client{Transport: tr}
}

func TestTLSSubscribersUseTheFastPath(t *testing.T) {
	b := newFeedBackend(t, nil)
	r := newTestRelay(t, testConfig())
	url, hc := startTLSFront(t, r, b)
	const subs = 20
	conns := make([]*ssetest.Client, subs)
	for i := range conns {
		req, _ := http.NewRequest(http.MethodGet, url+"/s", nil)
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("subscriber %d: %v %v", i, err, resp)
		}
		if resp.TLS == nil || resp.ProtoMajor != 1 {
			t.Fatalf("subscriber %d is not HTTP/1.1 over TLS", i)
		}
		conns[i] = ssetest.Read(resp)
		t.Cleanup(conns[i].Close)
	}
	ssetest.Eventually(t, fmt.Sprintf("%d subscribers attached", subs), 5*time.Second, func() bool { return r.Clients() == subs })
	for id := 1; id <= 50; id++ {
		b.publish(id)
	}
	for _, c := range conns {
		for id := 1; id <= 50; id++ {
			expectIDs(t, c, id)
		}
	}
	// Every subscriber is on the fast path: the dispatcher writes sealed
	// records, and no subscriber holds a goroutine of its own.
	r.mu.Lock()
	s := r.streams["/s"]
	r.mu.Unlock()
	s.mu.Lock()
	tlsClients := 0
	for c := range s.all {
		if c.tlsw != nil && c.raw != nil {
			tlsClients++
		}
	}
	slow := len(s.slow)
	s.mu.Unlock()
	if tlsClients != subs || slow != 0 {
		t.Fatalf("%d of %d subscribers write through sealed records, %d on the slow path", tlsClients, subs, slow)
	}
}

func TestTLSSubscriberWithAFullSocketCatchesUp(t *testing.T) {
	// A subscriber that stops reading fills its socket: records it owes
	// wait, in order, and reach it when it reads again; the others are
	// not held up.
	cfg := testConfig()
	cfg.ClientLagBytes = 64 << 20
	cfg.WriteTimeout = 30 * time.Second
	b := newFeedBackend(t, nil)
	r := newTestRelay(t, cfg)
	url, hc := startTLSFront(t, r, b)

	resp, err := hc.Get(url + "/s")
	if err != nil {
		t.Fatal(err)
	}
	fast := ssetest.Read(resp)
	t.Cleanup(fast.Close)
	host := strings.TrimPrefix(url, "https://")
	raw, err := tls.Dial("tcp", host, hc.Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "GET /s HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	br := bufio.NewReaderSize(raw, 1<<10)
	stalled, err := http.ReadResponse(br, nil)
	if err != nil || stalled.StatusCode != http.StatusOK {
		t.Fatalf("stalled subscriber: %v %v", err, stalled)
	}
	ssetest.Eventually(t, "2 subscribers attached", 5*time.Second, func() bool { return r.Clients() == 2 })
	// Enough data to fill the stalled socket many times over.
	const events = 400
	big := strings.Repeat("x", 16<<10)
	for id := 1; id <= events; id++ {
		b.publishRaw(fmt.Sprintf("id: %d\ndata: %s\n\n", id, big))
	}
	for id := 1; id <= events; id++ {
		if ev := fast.NextBlock(t, eventWait); ev.ID != fmt.Sprint(id) {
			t.Fatalf("fast subscriber got id %s, want %d", ev.ID, id)
		}
	}
	if r.Metrics().SlowPath.Load() == 0 {
		t.Fatal("the stalled subscriber never left the fast path: the test proves nothing")
	}
	rd := sse.NewReader(stalled.Body, 1<<20)
	for id := 1; id <= events; id++ {
		ev, err := rd.Next()
		if err != nil {
			t.Fatalf("stalled subscriber, event %d: %v", id, err)
		}
		if ev.ID != fmt.Sprint(id) || ev.Data != big {
			t.Fatalf("stalled subscriber got id %s (%d bytes), want %d", ev.ID, len(ev.Data), id)
		}
	}
}

// publishRaw sends one raw block to every live connection.
func (b *feedBackend) publishRaw(block string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.history = append(b.history, block)
	for _, ch := range b.live {
		ch <- block
	}
}

var _ net.Listener = Listener(nil)

// wrapConn stands for a connection wrapper between TLS and the socket,
// such as a PROXY protocol reader.
type wrapConn struct{ net.Conn }

func (w wrapConn) Unwrap() net.Conn { return w.Conn }

func TestTLSSinkLooksThroughWrappers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			_, _ = c.Read(make([]byte, 1))
		}
	}()
	c, err := Listener(ln).Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cases := []struct {
		name string
		conn net.Conn
		fast bool
	}{
		{"capture directly", c, true},
		{"one wrapper", wrapConn{c}, true},
		{"two wrappers", wrapConn{wrapConn{c}}, true},
		{"a wrapper that hides the socket", struct{ net.Conn }{c}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := newTLSSink(tls.Server(tc.conn, &tls.Config{}))
			if (sink != nil) != tc.fast {
				t.Fatalf("fast path %v, want %v", sink != nil, tc.fast)
			}
			if sink != nil {
				sink.cap.mu.Lock()
				sink.cap.capturing = false
				sink.cap.mu.Unlock()
			}
		})
	}
}
