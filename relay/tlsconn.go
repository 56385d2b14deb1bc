package relay

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"
	"time"
)

// Subscribers on hijacked HTTP/1.1 connections are written with non-blocking
// write(2) calls on their sockets, from a few writer goroutines, with no
// goroutine per subscriber. A TLS connection cannot be written that way
// through crypto/tls: a write that times out leaves its record half sent,
// and tls.Conn then fails every later write. So the socket under a TLS
// connection is a captureConn: once the relay owns the connection, what
// crypto/tls writes to it (complete, encrypted records) is kept in memory,
// and the relay sends those bytes with the same non-blocking writes as
// plain text. crypto/tls never sees a short write, and a subscriber whose
// socket is full keeps its records, in order, for its slow path.

// Listener wraps a listener so that TLS connections accepted from it (by a
// TLS listener stacked on top, as http.Server.ServeTLS does) can be
// written without blocking once the relay takes them over. Plain
// connections pass through unchanged.
func Listener(ln net.Listener) net.Listener { return captureListener{ln} }

type captureListener struct{ net.Listener }

func (l captureListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &captureConn{TCPConn: tc}, nil
	}
	return c, nil
}

// captureConn is a TCP connection that, once capturing, keeps what is
// written to it instead of sending it. Until then (the TLS handshake, the
// HTTP request) it is the TCP connection itself.
type captureConn struct {
	*net.TCPConn

	mu        sync.Mutex // held by Write and by the owner's flushes
	capturing bool
	out       []byte // records written but not sent yet
}

// Write sends, or, once capturing, keeps b. It never fails while
// capturing: the records are sent by the relay.
func (c *captureConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if !c.capturing {
		c.mu.Unlock()
		return c.TCPConn.Write(b)
	}
	c.out = append(c.out, b...)
	c.mu.Unlock()
	return len(b), nil
}

// tlsSink is a subscriber's TLS connection: plain text written to tls is
// encrypted into the captureConn, and flushed from there to the socket.
type tlsSink struct {
	tls *tls.Conn
	cap *captureConn
}

// newTLSSink takes over a hijacked connection when it is TLS over a
// captureConn; it returns nil otherwise.
func newTLSSink(conn net.Conn) *tlsSink {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil
	}
	// Wrappers between TLS and the socket (a PROXY protocol reader) are
	// looked through: the capture is what makes the fast path possible.
	var cc *captureConn
	for c := tc.NetConn(); c != nil && cc == nil; {
		if cc, ok = c.(*captureConn); ok {
			break
		}
		u, can := c.(interface{ Unwrap() net.Conn })
		if !can {
			return nil
		}
		c = u.Unwrap()
	}
	if cc == nil {
		return nil
	}
	cc.mu.Lock()
	cc.capturing = true
	cc.mu.Unlock()
	return &tlsSink{tls: tc, cap: cc}
}

// rawConn is the socket under the TLS connection, for non-blocking writes.
func (t *tlsSink) rawConn() (syscall.RawConn, error) { return t.cap.SyscallConn() }

// seal encrypts b into the connection's pending records.
func (t *tlsSink) seal(b []byte) error {
	_, err := t.tls.Write(b)
	return err
}

// owed reports records not on the socket yet.
func (t *tlsSink) owed() bool {
	t.cap.mu.Lock()
	defer t.cap.mu.Unlock()
	return len(t.cap.out) > 0
}

// flush writes pending records with write, which takes what the socket
// accepts now (tryFlush) or waits for it (flushBlocking), and keeps the rest.
func (t *tlsSink) flush(write func([]byte) (int, error)) error {
	t.cap.mu.Lock()
	defer t.cap.mu.Unlock()
	if len(t.cap.out) == 0 {
		return nil
	}
	n, err := write(t.cap.out)
	rest := copy(t.cap.out, t.cap.out[n:])
	t.cap.out = t.cap.out[:rest]
	if rest == 0 && cap(t.cap.out) > 64<<10 {
		// A subscriber that was behind once should not keep a large
		// buffer for the rest of its life.
		t.cap.out = nil
	}
	return err
}

// flushBlocking sends every pending record, waiting at most until deadline.
func (t *tlsSink) flushBlocking(deadline time.Time) error {
	if err := t.cap.TCPConn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	return t.flush(func(b []byte) (int, error) { return t.cap.TCPConn.Write(b) })
}
