package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// firstRead is the buffer a header is first read into: any v1 line and
// the v2 headers balancers send fit, with room for the bytes that follow
// in the same segment. A longer v2 header grows it up to MaxHeader.
const firstRead = 512

// Listener hands out the connections of an inner listener, wrapping those
// from trusted peers in a *Conn that reads their PROXY header. It is safe
// for concurrent use.
type Listener struct {
	inner net.Listener
	cfg   Config
	now   func() time.Time

	pending atomic.Int64 // trusted connections whose header is awaited

	proxied, local, untrusted, failed, shed atomic.Uint64 // see Stats
}

// NewListener wraps inner, a TCP listener (or one that hands out
// connections with *net.TCPAddr remote addresses); cfg must be valid.
func NewListener(inner net.Listener, cfg Config) *Listener {
	return &Listener{inner: inner, cfg: cfg.withDefaults(), now: time.Now}
}

// Stats counts connections by outcome, since the listener was made.
type Stats struct {
	Proxied   uint64 // the header gave the client's address
	Local     uint64 // the header kept the real addresses (v2 LOCAL, v1 UNKNOWN, UNSPEC)
	Untrusted uint64 // from an untrusted peer, handed on as they are
	Failed    uint64 // closed for a missing, malformed or late header
	Shed      uint64 // closed at Accept: MaxPending headers were awaited
	Pending   int    // trusted connections whose header is awaited now
}

// Stats returns the counts so far.
func (l *Listener) Stats() Stats {
	return Stats{
		Proxied:   l.proxied.Load(),
		Local:     l.local.Load(),
		Untrusted: l.untrusted.Load(),
		Failed:    l.failed.Load(),
		Shed:      l.shed.Load(),
		Pending:   int(l.pending.Load()),
	}
}

// Accept returns the next connection without reading from it: a *Conn
// when its peer is trusted, the inner listener's connection otherwise.
// A trusted connection over MaxPending is closed and reported, and Accept
// goes on to the next one.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			return nil, err
		}
		peer := peerAddr(c)
		if !peer.IsValid() || l.cfg.Trusted == nil || !l.cfg.Trusted(peer) {
			l.untrusted.Add(1)
			return c, nil
		}
		if l.pending.Add(1) > int64(l.cfg.MaxPending) {
			l.pending.Add(-1)
			l.shed.Add(1)
			_ = c.Close()
			l.report(peer, ErrTooManyPending)
			continue
		}
		pc := &Conn{conn: c, l: l, peer: peer, deadline: l.now().Add(l.cfg.Timeout)}
		pc.held.Store(true)
		return pc, nil
	}
}

// Close closes the inner listener.
func (l *Listener) Close() error { return l.inner.Close() }

// Addr is the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

func (l *Listener) report(peer netip.Addr, err error) {
	if l.cfg.OnError != nil {
		l.cfg.OnError(peer, err)
	}
}

// peerAddr is c's TCP peer, IPv4 peers of a dual-stack socket as IPv4; it
// is invalid for other kinds of connection.
func peerAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Conn is a connection from a trusted peer. Its header is read by the
// first Read, RemoteAddr, LocalAddr or Header call; until then those
// calls wait for it. A connection whose header is missing, malformed or
// late is closed, and its Read returns the error.
//
// Everything else goes straight to the connection underneath: writes
// (before the header too), deadlines, CloseWrite, and SyscallConn, whose
// raw connection is the socket itself. Reads through that raw connection
// bypass the header and the bytes read past it; Read serves those bytes
// first, then reads the socket directly.
type Conn struct {
	conn     net.Conn
	l        *Listener
	peer     netip.Addr
	deadline time.Time   // when the header must be complete
	held     atomic.Bool // holds one of the listener's MaxPending

	once         sync.Once
	err          error    // set once: the header could not be read
	hdr          Header   // set once
	raddr, laddr net.Addr // set once: what the header says, or the real ones

	dmu      sync.Mutex
	rd       time.Time // the read deadline the caller set
	inHeader bool      // reading the header: the read deadline is also capped at deadline

	rmu  sync.Mutex
	rest []byte // read past the header, not returned by Read yet
}

// Header waits for the header and returns it, or the reason the
// connection was closed.
func (c *Conn) Header() (Header, error) {
	c.once.Do(c.readHeader)
	return c.hdr, c.err
}

// Read returns the bytes read past the header first, then reads the
// connection.
func (c *Conn) Read(b []byte) (int, error) {
	if _, err := c.Header(); err != nil {
		return 0, err
	}
	c.rmu.Lock()
	if len(c.rest) > 0 {
		n := copy(b, c.rest)
		c.rest = c.rest[n:]
		if len(c.rest) == 0 {
			c.rest = nil // a long-lived connection keeps no buffer
		}
		c.rmu.Unlock()
		return n, nil
	}
	c.rmu.Unlock()
	return c.conn.Read(b)
}

// RemoteAddr is the client's address from the header, as a *net.TCPAddr,
// or the real one when the header gives none or could not be read.
func (c *Conn) RemoteAddr() net.Addr {
	c.once.Do(c.readHeader)
	return c.raddr
}

// LocalAddr is the address the client connected to from the header, or
// the real one when the header gives none or could not be read.
func (c *Conn) LocalAddr() net.Addr {
	c.once.Do(c.readHeader)
	return c.laddr
}

// Write writes to the connection.
func (c *Conn) Write(b []byte) (int, error) { return c.conn.Write(b) }

// Close closes the connection.
func (c *Conn) Close() error {
	c.release()
	return c.conn.Close()
}

// SetDeadline sets both deadlines; see SetReadDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.conn.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline. While the header is read, the
// earlier of t and the header's own deadline applies, and t alone after.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.rd = t
	if c.inHeader {
		t = earlier(t, c.deadline)
	}
	return c.conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// CloseWrite shuts down the writing side, when the connection underneath
// can.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("proxyproto: close write on %T: %w", c.conn, errors.ErrUnsupported)
}

// CloseRead shuts down the reading side, when the connection underneath
// can.
func (c *Conn) CloseRead() error {
	if cr, ok := c.conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("proxyproto: close read on %T: %w", c.conn, errors.ErrUnsupported)
}

// SyscallConn returns the raw socket of the connection underneath, for
// non-blocking writes.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, fmt.Errorf("proxyproto: raw connection of %T: %w", c.conn, errors.ErrUnsupported)
}

// Unwrap returns the connection underneath.
func (c *Conn) Unwrap() net.Conn { return c.conn }

// release gives back the connection's MaxPending slot, once.
func (c *Conn) release() {
	if c.held.CompareAndSwap(true, false) {
		c.l.pending.Add(-1)
	}
}

// readHeader runs once, in the goroutine of the first call that needs the
// header.
func (c *Conn) readHeader() {
	defer c.release()
	c.raddr, c.laddr = c.conn.RemoteAddr(), c.conn.LocalAddr()
	c.setInHeader(true)
	h, rest, err := c.readFrom()
	if err == nil {
		c.setInHeader(false)
		c.hdr, c.rest = h, rest
		if h.Source.IsValid() {
			c.raddr, c.laddr = net.TCPAddrFromAddrPort(h.Source), net.TCPAddrFromAddrPort(h.Destination)
			c.l.proxied.Add(1)
		} else {
			c.l.local.Add(1)
		}
		return
	}
	_ = c.conn.Close()
	switch {
	case err == io.EOF:
		// Closed before sending a byte: a balancer's TCP health check.
		c.err = io.EOF
	case errors.Is(err, net.ErrClosed):
		// Closed by the caller while waiting.
		c.err = err
	default:
		c.err = fmt.Errorf("proxyproto: header from %s: %w", c.raddr, err)
		c.l.failed.Add(1)
		c.l.report(c.peer, c.err)
	}
}

// readFrom reads until parse has a header, and returns it with the bytes
// read past it. A peer that closes before its first byte is io.EOF.
func (c *Conn) readFrom() (Header, []byte, error) {
	limit := c.l.cfg.MaxHeader
	buf := make([]byte, min(firstRead, limit))
	n := 0
	for {
		m, rerr := c.conn.Read(buf[n:])
		n += m
		h, hn, perr := parse(buf[:n], limit)
		switch {
		case perr == nil:
			if hn == n {
				return h, nil, nil
			}
			return h, buf[hn:n], nil
		case !errors.Is(perr, errShort):
			return Header{}, nil, perr
		case rerr == io.EOF && n == 0:
			return Header{}, nil, io.EOF
		case rerr == io.EOF:
			return Header{}, nil, fmt.Errorf("closed after %d bytes of a header: %w", n, io.ErrUnexpectedEOF)
		case rerr != nil:
			return Header{}, nil, rerr
		case n == len(buf):
			if len(buf) >= limit {
				// parse refuses a header longer than limit first.
				return Header{}, nil, invalid("header longer than %d bytes", limit)
			}
			grown := make([]byte, min(2*len(buf), limit))
			copy(grown, buf)
			buf = grown
		}
	}
}

// setInHeader starts or ends the header's read deadline. Ending it puts
// back the caller's own.
func (c *Conn) setInHeader(on bool) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.inHeader = on
	t := c.rd
	if on {
		t = earlier(t, c.deadline)
	}
	_ = c.conn.SetReadDeadline(t)
}

// earlier is the earlier of two deadlines, the zero time being none.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
