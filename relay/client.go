package relay

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// client is one subscriber. On the fast path it is owned by its stream's
// dispatcher (and the writer running its shard); on the slow path by its
// catch-up goroutine. It is never in both at once, so next and pending need
// no lock.
type client struct {
	s     *stream
	child bool   // another mesh node
	done  func() // Request.Done, called once at finish

	conn net.Conn        // hijacked connection; nil when served through rw
	raw  syscall.RawConn // the socket's descriptor, for non-blocking writes
	tlsw *tlsSink        // conn is TLS: writes are sealed, then sent through raw
	rw   *rwSink         // non-hijackable responses (HTTP/2, wrapped writers)

	next    uint64 // seq of the next ring entry this client needs
	pending []byte // bytes of an interrupted write still owed, before next
	slow    bool   // set by the fast path when the client moved to catch-up

	pos       atomic.Uint64 // next as last written, readable by the dispatcher's lag check
	killed    atomic.Value  // string: why the client was aborted by someone else
	gone      atomic.Bool
	closeOnce sync.Once

	// expiry fires at Request.Expires; expired tells the client's owner
	// (the dispatcher or its catch-up goroutine) to close it with a retry
	// hint.
	expiry  *time.Timer
	expired atomic.Bool

	// What the client was sent, for Request.Ended: ring entries (events
	// and other blocks) and body bytes. Atomic because a child's hang-up
	// watcher can finish the client while its owner writes.
	events atomic.Uint64
	bytes  atomic.Int64
	ended  func(End) // Request.Ended
}

// rwSink writes through an http.ResponseWriter when the connection cannot
// be hijacked; such a client keeps its handler goroutine.
type rwSink struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	ctx context.Context
}

var errClientGone = errors.New("client gone")

// tryWrite writes as much of b as the socket takes right now, never
// waiting, and returns how much of b the client took. A TLS client takes all
// of b (sealed into records) and may owe some of those records to its
// socket: see owes.
func (c *client) tryWrite(b []byte) (int, error) {
	if c.tlsw != nil {
		if err := c.tlsw.seal(b); err != nil {
			return 0, err
		}
		c.bytes.Add(int64(len(b)))
		return len(b), c.tlsw.flush(c.rawWrite)
	}
	n, err := c.rawWrite(b)
	c.bytes.Add(int64(n))
	return n, err
}

// owes reports bytes the client took that are not on its socket yet (TLS
// records the socket did not accept): it needs the slow path.
func (c *client) owes() bool { return c.tlsw != nil && c.tlsw.owed() }

// rawWrite writes as much of b to the socket as it takes right now.
func (c *client) rawWrite(b []byte) (int, error) {
	op := writeOps.Get().(*writeOp)
	op.b, op.n, op.err = b, 0, nil
	err := c.raw.Write(op.fn)
	n, werr := op.n, op.err
	op.b, op.err = nil, nil
	writeOps.Put(op)
	if err != nil {
		return n, err
	}
	return n, werr
}

// writeOp is one non-blocking write: its arguments, its results, and the
// function RawConn.Write calls with the descriptor, bound to them once.
// A closure made per write would escape to the heap: three allocations for
// every subscriber and every event, the bulk of the garbage at fan-out.
type writeOp struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

var writeOps = sync.Pool{New: func() any {
	op := &writeOp{}
	op.fn = op.write
	return op
}}

func (op *writeOp) write(fd uintptr) bool {
	for len(op.b) > 0 {
		m, e := syscall.Write(int(fd), op.b)
		if m > 0 {
			op.n += m
			op.b = op.b[m:]
			continue
		}
		if e == syscall.EINTR {
			continue
		}
		if e != syscall.EAGAIN {
			op.err = e
			if e == nil {
				op.err = errClientGone
			}
		}
		break
	}
	return true // one attempt: never park this writer on a full socket
}

// writeBlocking writes all of bufs, waiting at most WriteTimeout.
func (c *client) writeBlocking(bufs [][]byte) error {
	timeout := c.s.r.cfg.WriteTimeout
	if c.rw != nil {
		_ = c.rw.rc.SetWriteDeadline(time.Now().Add(timeout))
		for _, b := range bufs {
			n, err := c.rw.w.Write(b)
			c.bytes.Add(int64(n))
			if err != nil {
				return err
			}
		}
		return c.rw.rc.Flush()
	}
	if c.tlsw != nil {
		for _, b := range bufs {
			if len(b) == 0 {
				continue
			}
			if err := c.tlsw.seal(b); err != nil {
				return err
			}
			c.bytes.Add(int64(len(b)))
		}
		return c.tlsw.flushBlocking(time.Now().Add(timeout))
	}
	if err := c.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	var n int64
	var err error
	if c.raw != nil {
		n, err = writeBuffers(c.raw, bufs)
	} else {
		// A connection without a descriptor of its own (TLS not from
		// Listener, a wrapped conn).
		nb := net.Buffers(bufs)
		n, err = nb.WriteTo(c.conn)
	}
	c.bytes.Add(n)
	return err
}

// abort unblocks whatever write the client is in; its owner then finishes it.
// Safe from any goroutine.
func (c *client) abort() {
	c.gone.Store(true)
	if c.conn != nil {
		_ = c.conn.SetDeadline(time.Unix(1, 0))
	}
}

// kill aborts the client for reason; its owner finishes it with that reason.
func (c *client) kill(reason string) {
	c.killed.CompareAndSwap(nil, reason)
	c.abort()
}

// expire marks the client's credentials as run out and wakes its owner.
func (c *client) expire() {
	c.expired.Store(true)
	s := c.s
	s.expiring.Store(true)
	s.mu.Lock()
	s.wakeLocked()
	s.mu.Unlock()
	s.kickDispatcher()
}

// closeExpired closes an expired client, with a retry hint so it comes back
// (with fresh credentials) soon. The caller owns the client.
func (c *client) closeExpired(write func([]byte)) {
	write(retryHint(c.s.r.cfg.DrainRetry))
	c.finish(ReasonExpired)
}

// finish closes the client once, accounting for why.
func (c *client) finish(reason string) {
	if k, ok := c.killed.Load().(string); ok {
		reason = k
	}
	c.closeOnce.Do(func() {
		c.gone.Store(true)
		if c.expiry != nil {
			c.expiry.Stop()
		}
		if c.conn != nil {
			_ = c.conn.Close()
		}
		s := c.s
		s.mu.Lock()
		delete(s.all, c)
		delete(s.slow, c)
		why := reason
		if why == "" {
			why = s.endReasonLocked()
		}
		s.mu.Unlock()
		s.unref()
		s.r.clients.Add(-1)
		if c.child {
			s.r.children.Add(-1)
		}
		if c.done != nil {
			c.done()
		}
		if c.ended != nil {
			c.ended(End{Events: c.events.Load(), Bytes: max(c.bytes.Load(), 0), Reason: why})
		}
		if reason != "" {
			s.r.metrics.disconnect(reason)
			if reason != ReasonWriteError {
				s.r.logs.Log("disconnect:"+reason, s.log.WithField("client", c.remoteAddr()).WithField("reason", reason), logrus.InfoLevel, "slow subscriber disconnected")
			}
		}
	})
}

// watchHangup finishes a child node's subscription as soon as the child
// closes its end. Writes find a departed client only when there is something
// to write, and a node handing its children over before it leaves waits for
// exactly that; on an idle stream it would wait a whole heartbeat. Child
// connections are few, so each gets a reader; a child sends nothing after
// its request, so anything read is discarded.
func (c *client) watchHangup() {
	var b [256]byte
	for {
		if _, err := c.conn.Read(b[:]); err != nil {
			break
		}
	}
	c.finish("")
}

// reasonFor classifies a failed blocking write.
func reasonFor(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ReasonWriteTimeout
	}
	return ReasonWriteError
}

// retryHint is a `retry:` block with ±50% jitter around base, so that clients
// closed together do not come back together.
func retryHint(base time.Duration) []byte {
	ms := base.Milliseconds()
	if ms > 0 {
		ms = ms/2 + rand.Int64N(ms+1)
	}
	return []byte("retry: " + strconv.FormatInt(ms, 10) + "\n\n")
}

// remoteAddr is the client's address, for a log line. It is not kept in
// the client: tens of thousands of copies of it would be read only when
// one of them is cut.
func (c *client) remoteAddr() string {
	if c.conn != nil {
		return c.conn.RemoteAddr().String()
	}
	return ""
}

// heartbeat is a comment line: traffic for proxies, nothing for EventSource.
var heartbeat = []byte(":\n")

// drainSlot is a moment drawn evenly from [now, by): when a client off the
// fast path is closed by a drain that must end by then.
func drainSlot(now, by time.Time) time.Time {
	if !by.After(now) {
		return now
	}
	return now.Add(rand.N(by.Sub(now)))
}

// catchUp serves a client that is not on the fast path: the initial replay,
// a client whose socket filled up, and every non-hijacked client for its whole
// life. It writes from the ring with deadline-bound writes until the client
// reaches the head, then hands a hijacked client back to the dispatcher.
func (c *client) catchUp() {
	s := c.s
	cfg := &s.r.cfg
	// Only subscribers that never reach the fast path need their own
	// heartbeat; the dispatcher beats for the others.
	var hb *time.Timer
	var hbC <-chan time.Time
	var done <-chan struct{}
	every := cfg.Heartbeat
	if c.child {
		every = cfg.childBeat()
	}
	if c.raw == nil {
		hb = time.NewTimer(every)
		defer hb.Stop()
		hbC = hb.C
	}
	if c.rw != nil {
		done = c.rw.ctx.Done()
	}
	// A client off the fast path for good (HTTP/2, a wrapped writer) is
	// closed at a moment of its own in the drain period, drawn when the
	// drain starts, as the dispatcher spreads its clients over the period:
	// all of them at the start would reconnect elsewhere at once. Until
	// then it is served as before.
	var drainAt time.Time
	var drainC <-chan time.Time
	var bufs [][]byte
	for {
		if len(c.pending) > 0 || c.owes() {
			if err := c.writeBlocking([][]byte{c.pending}); err != nil {
				c.finish(reasonFor(err))
				return
			}
			c.pending = nil
		}
		s.mu.Lock()
		if c.gone.Load() || s.finishedLocked() {
			s.mu.Unlock()
			c.finish("")
			return
		}
		if !s.drainBy.IsZero() {
			if c.raw == nil && drainAt.IsZero() {
				drainAt = drainSlot(time.Now(), s.drainBy)
				t := time.NewTimer(time.Until(drainAt))
				defer t.Stop()
				drainC = t.C
			}
			if c.raw != nil || !time.Now().Before(drainAt) {
				s.mu.Unlock()
				_ = c.writeBlocking([][]byte{retryHint(cfg.DrainRetry)})
				c.finish("")
				return
			}
		}
		if c.expired.Load() {
			s.mu.Unlock()
			c.closeExpired(func(b []byte) { _ = c.writeBlocking([][]byte{b}) })
			return
		}
		head := s.ring.head()
		if c.next > head {
			if c.raw != nil {
				// Caught up: rejoin the fast path. The dispatcher skips what
				// this client already has, so no event is sent twice.
				if err := c.conn.SetWriteDeadline(time.Time{}); err != nil {
					s.mu.Unlock()
					c.finish(ReasonWriteError)
					return
				}
				delete(s.slow, c)
				s.joiners = append(s.joiners, c)
				s.mu.Unlock()
				s.kickDispatcher()
				return
			}
			wake := s.wake
			s.mu.Unlock()
			select {
			case <-wake:
			case <-done:
				c.finish("")
				return
			case <-hbC:
				c.pending = heartbeat
				hb.Reset(every)
			case <-drainC:
			}
			continue
		}
		if c.next < s.ring.first {
			s.mu.Unlock()
			c.finish(ReasonBehindRing)
			return
		}
		if lag := s.ring.bytesFrom(c.next); lag > cfg.ClientLagBytes {
			s.mu.Unlock()
			c.finish(ReasonLag)
			return
		}
		bufs = bufs[:0]
		size := 0
		from := c.next
		for seq := c.next; seq <= head && size < 256<<10; seq++ {
			e, _ := s.ring.get(seq)
			bufs = append(bufs, e.wire)
			size += len(e.wire)
			c.next = seq + 1
		}
		s.mu.Unlock()
		if err := c.writeBlocking(bufs); err != nil {
			c.finish(reasonFor(err))
			return
		}
		c.pos.Store(c.next)
		s.r.metrics.Deliveries.Add(c.next - from)
		c.events.Add(c.next - from)
		if hb != nil {
			hb.Reset(every)
		}
	}
}
