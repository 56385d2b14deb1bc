package proxyproto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Peers dial from 127.0.0.1 (trusted in these tests) or 127.0.0.2 (not).
var (
	trustedIP   = netip.MustParseAddr("127.0.0.1")
	untrustedIP = netip.MustParseAddr("127.0.0.2")
)

type report struct {
	peer netip.Addr
	err  error
}

// harness is a Listener on loopback that trusts 127.0.0.1 and collects
// what it reports.
type harness struct {
	*Listener
	reports chan report
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{reports: make(chan report, 64)}
	cfg.Trusted = func(a netip.Addr) bool { return a == trustedIP }
	cfg.OnError = func(peer netip.Addr, err error) { h.reports <- report{peer, err} }
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	h.Listener = NewListener(ln, cfg)
	t.Cleanup(func() { h.Close() })
	return h
}

// dial connects from ip and returns the client's end and the accepted one.
func (h *harness) dial(t testing.TB, ip netip.Addr) (client, server net.Conn) {
	t.Helper()
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := h.Accept()
		ch <- accepted{c, err}
	}()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))}
	client, err := d.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-ch
	if a.err != nil {
		t.Fatal(a.err)
	}
	t.Cleanup(func() { client.Close(); a.c.Close() })
	// A test that loses bytes fails instead of hanging.
	for _, c := range []net.Conn{client, a.c} {
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return client, a.c
}

func (h *harness) nextReport(t testing.TB) report {
	t.Helper()
	select {
	case r := <-h.reports:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no error reported")
		return report{}
	}
}

func (h *harness) noReport(t testing.TB) {
	t.Helper()
	select {
	case r := <-h.reports:
		t.Fatalf("unexpected report: %v %v", r.peer, r.err)
	default:
	}
}

func write(t testing.TB, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func readN(t testing.TB, c net.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// waitClosed waits until the peer of c closed the connection.
func waitClosed(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open")
	}
}

func TestListenerHeaders(t *testing.T) {
	for _, tc := range validHeaders {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			client, server := h.dial(t, trustedIP)
			write(t, client, append(append([]byte{}, tc.in...), "hello"...))
			if got := string(readN(t, server, 5)); got != "hello" {
				t.Fatalf("read %q after the header, want hello", got)
			}
			wantR, wantL := client.LocalAddr().String(), client.RemoteAddr().String()
			if tc.src.IsValid() {
				wantR, wantL = tc.src.String(), tc.dst.String()
			}
			if _, ok := server.RemoteAddr().(*net.TCPAddr); !ok {
				t.Fatalf("RemoteAddr is a %T", server.RemoteAddr())
			}
			if got := server.RemoteAddr().String(); got != wantR {
				t.Fatalf("RemoteAddr %s, want %s", got, wantR)
			}
			if got := server.LocalAddr().String(); got != wantL {
				t.Fatalf("LocalAddr %s, want %s", got, wantL)
			}
			hdr, err := server.(*Conn).Header()
			if err != nil || hdr.Source != tc.src {
				t.Fatalf("Header: %+v, %v", hdr, err)
			}
			want := Stats{Proxied: 1}
			if !tc.src.IsValid() {
				want = Stats{Local: 1}
			}
			if st := h.Stats(); st != want {
				t.Fatalf("stats %+v, want %+v", st, want)
			}
			h.noReport(t)
		})
	}
}

// Bytes that arrive with the header, and after it, reach Read whole and
// in order, however small the reads.
func TestBytesAfterHeaderAreKept(t *testing.T) {
	h := newHarness(t, Config{})
	client, server := h.dial(t, trustedIP)
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(rand.IntN(256))
	}
	go func() {
		// One write: the header and the start of the payload share a
		// segment.
		_, _ = client.Write(append(v2TCP(src4, dst4, nil), payload...))
		_ = client.(*net.TCPConn).CloseWrite()
	}()
	var got bytes.Buffer
	small := make([]byte, 7)
	for got.Len() < 1000 {
		n, err := server.Read(small)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(small[:n])
	}
	if _, err := io.Copy(&got, server); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), payload) {
		t.Fatalf("read %d bytes, not the %d sent", got.Len(), len(payload))
	}
}

func TestHeaderOneByteAtATime(t *testing.T) {
	for _, in := range [][]byte{v1(src6, dst6), withCRC(v2TCP(src6, dst6, tlv(0x04, make([]byte, 1000))))} {
		h := newHarness(t, Config{})
		client, server := h.dial(t, trustedIP)
		go func() {
			for _, b := range append(in, "after"...) {
				if _, err := client.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
		if got := server.RemoteAddr().String(); got != src6.String() {
			t.Fatalf("RemoteAddr %s, want %s", got, src6)
		}
		if got := string(readN(t, server, 5)); got != "after" {
			t.Fatalf("read %q, want after", got)
		}
	}
}

func TestMalformedHeaderClosesAndReports(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"no header", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"v1 without crlf", []byte("PROXY TCP4 " + strings.Repeat("1", 200))},
		{"v1 bad port", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\nGET /")},
		{"v2 bad family", v2(cmdProxy, 0x41, make([]byte, 12), nil)},
		{"v2 too long", v2(cmdProxy, 0x11, make([]byte, DefaultMaxHeader), nil)},
		{"v2 length short of the addresses", v2(cmdProxy, 0x21, make([]byte, 12), nil)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{})
			client, server := h.dial(t, trustedIP)
			go func() { _, _ = client.Write(tc.in) }()
			if _, err := server.Read(make([]byte, 1)); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Read: %v, want ErrInvalid", err)
			}
			r := h.nextReport(t)
			if r.peer != trustedIP || !errors.Is(r.err, ErrInvalid) {
				t.Fatalf("reported %v %v", r.peer, r.err)
			}
			if got := server.RemoteAddr().String(); got != client.LocalAddr().String() {
				t.Fatalf("RemoteAddr %s after a bad header, want the real %s", got, client.LocalAddr())
			}
			waitClosed(t, client)
			if st := h.Stats(); st != (Stats{Failed: 1}) {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestUntrustedPassesThrough(t *testing.T) {
	h := newHarness(t, Config{})
	client, server := h.dial(t, untrustedIP)
	if _, ok := server.(*Conn); ok {
		t.Fatal("an untrusted connection was wrapped")
	}
	line := v1(src4, dst4)
	write(t, client, line)
	if got := readN(t, server, len(line)); !bytes.Equal(got, line) {
		t.Fatalf("read %q, want the PROXY line as sent", got)
	}
	if got := server.RemoteAddr().String(); got != client.LocalAddr().String() {
		t.Fatalf("RemoteAddr %s, want the real %s", got, client.LocalAddr())
	}
	if st := h.Stats(); st != (Stats{Untrusted: 1}) {
		t.Fatalf("stats %+v", st)
	}
}

func TestTrustNobodyByDefault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(ln, Config{})
	defer l.Close()
	go func() {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Conn); ok {
		t.Fatal("a listener without Trusted wrapped a connection")
	}
}

// A trusted peer that sends nothing holds up neither Accept nor the
// connections accepted after it.
func TestSilentPeerDoesNotBlockOthers(t *testing.T) {
	h := newHarness(t, Config{Timeout: time.Minute})
	silent, stalled := h.dial(t, trustedIP)
	done := make(chan net.Addr)
	go func() { done <- stalled.RemoteAddr() }()

	client, server := h.dial(t, trustedIP)
	write(t, client, append(v1(src4, dst4), 'x'))
	if got := server.RemoteAddr().String(); got != src4.String() {
		t.Fatalf("RemoteAddr %s, want %s", got, src4)
	}
	select {
	case <-done:
		t.Fatal("the silent connection's header was done before it sent one")
	default:
	}
	if st := h.Stats(); st.Pending != 1 || st.Proxied != 1 {
		t.Fatalf("stats %+v, want one proxied and one pending", st)
	}
	// Closed before a byte: a health check, neither failed nor reported.
	silent.Close()
	if got := (<-done).String(); got != silent.LocalAddr().String() {
		t.Fatalf("RemoteAddr %s of a connection without header, want the real %s", got, silent.LocalAddr())
	}
	if _, err := stalled.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("Read: %v, want io.EOF", err)
	}
	if st := h.Stats(); st.Pending != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
	h.noReport(t)
}

func TestHeaderTimeout(t *testing.T) {
	for _, sent := range []string{"", "PROXY TCP4 1.2"} {
		h := newHarness(t, Config{Timeout: 50 * time.Millisecond})
		client, server := h.dial(t, trustedIP)
		write(t, client, []byte(sent))
		if _, err := server.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("after %q: Read: %v, want a deadline error", sent, err)
		}
		if r := h.nextReport(t); !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Fatalf("reported %v", r.err)
		}
		waitClosed(t, client)
		if st := h.Stats(); st.Failed != 1 || st.Pending != 0 {
			t.Fatalf("stats %+v", st)
		}
	}
}

func TestClosedMidHeader(t *testing.T) {
	h := newHarness(t, Config{})
	client, server := h.dial(t, trustedIP)
	write(t, client, v1(src4, dst4)[:20])
	client.Close()
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Read: %v, want io.ErrUnexpectedEOF", err)
	}
	if r := h.nextReport(t); !errors.Is(r.err, io.ErrUnexpectedEOF) {
		t.Fatalf("reported %v", r.err)
	}
}

func TestMaxPending(t *testing.T) {
	h := newHarness(t, Config{MaxPending: 2})
	_, first := h.dial(t, trustedIP)
	h.dial(t, trustedIP)
	// Untrusted connections take no slot.
	h.dial(t, untrustedIP)
	if st := h.Stats(); st.Pending != 2 {
		t.Fatalf("pending %d, want 2", st.Pending)
	}

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := h.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	shed, err := net.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer shed.Close()
	waitClosed(t, shed)
	if r := h.nextReport(t); r.err != ErrTooManyPending || r.peer != trustedIP {
		t.Fatalf("reported %v %v, want ErrTooManyPending", r.peer, r.err)
	}

	// Closing a waiting connection frees its slot; Accept, still running,
	// hands out the next one.
	first.Close()
	client, err := net.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	write(t, client, v1(src4, dst4))
	server := <-accepted
	defer server.Close()
	if got := server.RemoteAddr().String(); got != src4.String() {
		t.Fatalf("RemoteAddr %s, want %s", got, src4)
	}
	if st := h.Stats(); st.Shed != 1 || st.Pending != 1 {
		t.Fatalf("stats %+v, want one shed and one pending", st)
	}
}

// The caller's read deadline is kept through the header, and applies on
// its own after it.
func TestReadDeadlineSurvivesHeader(t *testing.T) {
	h := newHarness(t, Config{Timeout: time.Minute})
	client, server := h.dial(t, trustedIP)
	if err := server.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	write(t, client, v2TCP(src4, dst4, nil))
	errc := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v, want the caller's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the caller's read deadline was lost with the header's")
	}
	if got := server.RemoteAddr().String(); got != src4.String() {
		t.Fatalf("RemoteAddr %s", got)
	}
}

// The header's deadline ends with the header: a connection that idles
// longer than Timeout afterwards is not cut.
func TestHeaderDeadlineEndsWithHeader(t *testing.T) {
	h := newHarness(t, Config{Timeout: 100 * time.Millisecond})
	client, server := h.dial(t, trustedIP)
	write(t, client, v1(src4, dst4))
	if _, err := server.(*Conn).Header(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		got <- err
	}()
	// The subject is time itself: the byte comes after the header's
	// deadline has passed.
	<-time.After(300 * time.Millisecond)
	write(t, client, []byte("x"))
	if err := <-got; err != nil {
		t.Fatalf("Read after the header's deadline: %v", err)
	}
}

// Writes through the raw socket reach the peer while Read waits, and the
// bytes read past the header still come first.
func TestSyscallConn(t *testing.T) {
	h := newHarness(t, Config{})
	client, server := h.dial(t, trustedIP)
	write(t, client, append(v1(src4, dst4), "early "...))
	got := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(server)
		if err != nil {
			t.Error(err)
		}
		got <- string(b)
	}()
	raw, err := server.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	if err := raw.Write(func(fd uintptr) bool {
		_, werr = syscall.Write(int(fd), []byte("ping"))
		return werr != syscall.EAGAIN
	}); err != nil || werr != nil {
		t.Fatalf("raw write: %v %v", err, werr)
	}
	if b := readN(t, client, 4); string(b) != "ping" {
		t.Fatalf("peer read %q, want ping", b)
	}
	write(t, client, []byte("pong"))
	client.(*net.TCPConn).CloseWrite()
	if s := <-got; s != "early pong" {
		t.Fatalf("Read %q, want %q", s, "early pong")
	}
}

func TestCloseWriteAndUnwrap(t *testing.T) {
	h := newHarness(t, Config{})
	client, server := h.dial(t, trustedIP)
	write(t, client, v1(src4, dst4))
	pc := server.(*Conn)
	if _, ok := pc.Unwrap().(*net.TCPConn); !ok {
		t.Fatalf("Unwrap is a %T", pc.Unwrap())
	}
	if _, err := pc.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := pc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(client)
	if err != nil || string(b) != "bye" {
		t.Fatalf("peer read %q, %v", b, err)
	}
}

func TestCloseBeforeHeaderFreesSlot(t *testing.T) {
	h := newHarness(t, Config{})
	_, server := h.dial(t, trustedIP)
	server.Close()
	server.Close()
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if st := h.Stats(); st != (Stats{}) {
		t.Fatalf("stats %+v, want none", st)
	}
	h.noReport(t)
}

func TestHTTPServer(t *testing.T) {
	h := newHarness(t, Config{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.RemoteAddr)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(h) }()
	t.Cleanup(func() { _ = srv.Close() })

	for _, header := range [][]byte{v1(src4, dst4), v2TCP(src6, dst6, nil)} {
		tr := &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					_, err = c.Write(header)
				}
				return c, err
			},
		}
		resp, err := (&http.Client{Transport: tr}).Get("http://" + h.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want, _, _ := parse(header, DefaultMaxHeader); string(body) != want.Source.String() {
			t.Fatalf("r.RemoteAddr %q, want %s", body, want.Source)
		}
	}

	// From an untrusted peer the PROXY line is the request line: 400.
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(untrustedIP, 0))}
	c, err := d.Dial("tcp", h.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	write(t, c, append(v1(src4, dst4), "GET / HTTP/1.1\r\nHost: x\r\n\r\n"...))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("spoofed PROXY line from an untrusted peer: %s, want 400", resp.Status)
	}
}

func TestTrustPrefixes(t *testing.T) {
	trusted := TrustPrefixes(netip.MustParsePrefix("10.1.2.3/8"), netip.MustParsePrefix("2001:db8::/32"))
	for _, tc := range []struct {
		a    string
		want bool
	}{
		{"10.200.0.1", true},
		{"::ffff:10.0.0.1", true},
		{"11.0.0.1", false},
		{"2001:db8:5::1", true},
		{"2001:db9::1", false},
	} {
		if got := trusted(netip.MustParseAddr(tc.a)); got != tc.want {
			t.Errorf("%s trusted: %v, want %v", tc.a, got, tc.want)
		}
	}
	if TrustPrefixes()(netip.MustParseAddr("10.0.0.1")) {
		t.Error("no prefixes trusts an address")
	}
}

func TestValidate(t *testing.T) {
	bad := []Config{{Timeout: -1}, {MaxHeader: 100}, {MaxHeader: maxV2 + 1}, {MaxPending: -1}}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	for _, c := range []Config{{}, {Timeout: time.Second, MaxHeader: MinMaxHeader, MaxPending: 1}, {MaxHeader: maxV2}} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v refused: %v", c, err)
		}
	}
}

func BenchmarkAccept(b *testing.B) {
	for _, tc := range []struct {
		name   string
		header []byte
	}{
		{"v1", v1(src4, dst4)},
		{"v2", v2TCP(src4, dst4, nil)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b, Config{})
			msg := append(append([]byte{}, tc.header...), 'x')
			buf := make([]byte, 1)
			b.ReportAllocs()
			for b.Loop() {
				client, err := net.Dial("tcp", h.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := client.Write(msg); err != nil {
					b.Fatal(err)
				}
				server, err := h.Accept()
				if err != nil {
					b.Fatal(err)
				}
				if _, err := server.Read(buf); err != nil {
					b.Fatal(err)
				}
				if p := server.RemoteAddr().(*net.TCPAddr).Port; p != 4242 {
					b.Fatalf("port %d from the header, want 4242", p)
				}
				server.Close()
				client.Close()
			}
		})
	}
}
