package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/sse"
)

// Request says which stream a subscriber wants and from where.
type Request struct {
	Key            string     // stream identity: the upstream URL (path and query included)
	Target         TargetFunc // where to connect when the stream opens or reconnects
	LastEventID    string     // the subscriber's resume point
	HasLastEventID bool
	// Child marks a subscriber that is another mesh node, so shutdown can
	// wait for children to re-parent before it closes the rest.
	Child bool
	// AllowCatchUp, when set, is asked before this subscriber's resume
	// point makes a history request upstream; false answers it with a gap
	// instead. It lets the caller bound the upstream work one client can
	// cause.
	AllowCatchUp func() bool
	// Done, when set, is called exactly once when the relay is finished
	// with the subscriber, however that ends: refused, gone before its
	// stream answered, or closed after streaming.
	Done func()
	// Expires, when set, is when the subscriber's credentials run out: it
	// is closed then, with a retry hint, so it comes back with new ones.
	Expires time.Time
	// Ended, when set, is called once when a subscriber that was answered
	// 200 is finished, with what it was sent and why it ended (an access
	// log line). Refusals are returned by Serve instead.
	Ended func(End)
}

// End describes a finished subscription.
type End struct {
	Events uint64 // ring entries written: events, and comment or retry blocks the upstream sent
	Bytes  int64  // body bytes written to the connection
	// Reason is why it ended: a disconnect reason (ReasonLag, ...), or
	// EndClientClosed, EndDrain, EndUpstreamEnded, EndUpstreamFailed,
	// EndClosed.
	Reason string
}

// Why a subscription ended, besides the disconnect reasons.
const (
	EndClientClosed   = "client_closed"   // the client went away
	EndDrain          = "drain"           // the node drained (shutdown or hand-off), with a retry hint
	EndUpstreamEnded  = "upstream_ended"  // the back end ended the stream (204)
	EndUpstreamFailed = "upstream_failed" // the stream failed for good upstream
	EndClosed         = "closed"          // the stream was torn down (removed, relay closed)
)

// Serve attaches the subscriber to its stream and streams to it. Headers the
// caller set on w (CORS, say) are sent along. A refusal before the response
// starts is returned as *Error for the caller to render; once streaming
// began Serve returns nil. For hijackable HTTP/1.x connections Serve returns
// as soon as the subscriber is on the fast path: its connection is owned by
// the relay from then on.
func (r *Relay) Serve(w http.ResponseWriter, req *http.Request, sr Request) error {
	attached := false
	defer func() {
		if !attached && sr.Done != nil {
			sr.Done()
		}
	}()
	// A subscriber that arrives before the upstream answered is owed
	// everything from the stream's start: back ends often send a snapshot
	// or welcome event the moment they connect.
	s, early, err := r.acquire(sr.Key, sr.Target, sr.LastEventID, sr.HasLastEventID)
	if err != nil {
		return err
	}
	ready := time.NewTimer(r.cfg.ReadyTimeout)
	defer ready.Stop()
	select {
	case <-s.ready:
	case <-req.Context().Done():
		s.unref()
		return nil
	case <-ready.C:
		s.unref()
		return &Error{Status: http.StatusGatewayTimeout, Code: CodeUpstreamTimeout, Reason: fmt.Sprintf("upstream did not answer within %s", r.cfg.ReadyTimeout), RetryAfter: 1}
	}

	s.mu.Lock()
	if s.first.err != nil {
		e := *s.first.err
		s.mu.Unlock()
		s.unref()
		return &e
	}
	if s.state != stateLive {
		s.mu.Unlock()
		s.unref()
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeStreamClosing, Reason: "stream is closing", RetryAfter: 1}
	}
	c := &client{s: s, next: s.ring.head() + 1, child: sr.Child, done: sr.Done, ended: sr.Ended}
	attached = true
	if early {
		c.next = s.ring.first
	}
	catchUp := false
	if sr.HasLastEventID {
		upToDate := s.hasLastID && s.lastID == sr.LastEventID
		seq, inRing := s.ring.after(sr.LastEventID)
		switch {
		case upToDate && !early:
			// Live from the head.
		case inRing:
			// Also for an early subscriber: starting at the ring's first
			// entry would send it the event it named again (two children
			// opening one stream a moment apart, from consecutive ids).
			c.next = seq
		case s.originSet && s.origin == sr.LastEventID && s.ring.first == 1:
			// The stream was opened upstream from this very id and the ring
			// still holds everything received since: that is exactly what
			// the subscriber misses. Once the ring has dropped its start,
			// the subscriber goes through upstream catch-up instead.
			c.next = 1
		case upToDate:
			c.next = s.ring.head() + 1
		default:
			catchUp = true
		}
	}
	retry := s.retry
	// A subscriber that will be sent the ring entry carrying the retry
	// value does not need it again in front: each hop of a chain would
	// otherwise add one more copy. A catch-up subscriber's start is not
	// known yet, so it gets the value in front.
	if !catchUp && s.retrySeq >= s.ring.first && c.next <= s.retrySeq {
		retry = -1
	}
	c.pos.Store(c.next)
	s.all[c] = struct{}{}
	s.slow[c] = struct{}{}
	if !sr.Expires.IsZero() {
		c.expiry = time.AfterFunc(time.Until(sr.Expires), c.expire)
	}
	s.mu.Unlock()
	r.clients.Add(1)
	if c.child {
		r.children.Add(1)
	}
	r.metrics.ClientsTotal.Add(1)

	if c.child {
		w.Header().Set(HeartbeatHeader, strconv.FormatInt(r.cfg.childBeat().Milliseconds(), 10))
	}
	head := buildHead(w.Header())
	if hj, ok := w.(http.Hijacker); ok && req.ProtoMajor == 1 {
		conn, _, err := hj.Hijack()
		if err != nil {
			c.finish(ReasonWriteError)
			return nil
		}
		c.conn = conn
		if ts := newTLSSink(conn); ts != nil {
			// TLS over a socket the relay may write without blocking
			// (Listener): sealed records go out like plain text.
			if raw, err := ts.rawConn(); err == nil {
				c.tlsw, c.raw = ts, raw
			}
		} else if sc, ok := conn.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				c.raw = raw
			}
		}
		c.pending = head
		// Bytes count the body, as on the other path: not the head.
		c.bytes.Store(-int64(len(head)))
		if c.child && !r.goOwned(c.watchHangup) {
			c.finish("")
			return nil
		}
	} else {
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		w.WriteHeader(http.StatusOK)
		c.rw = &rwSink{w: w, rc: http.NewResponseController(w), ctx: req.Context()}
		if err := c.rw.rc.Flush(); err != nil {
			c.finish(ReasonWriteError)
			return nil
		}
	}
	if retry >= 0 {
		c.pending = sse.AppendEvent(c.pending, sse.Event{Retry: retry})
	}
	if catchUp {
		if len(c.pending) > 0 {
			if err := c.writeBlocking([][]byte{c.pending}); err != nil {
				c.finish(reasonFor(err))
				return nil
			}
			c.pending = nil
		}
		c.resume(req.Context(), sr.LastEventID, sr.AllowCatchUp)
	}
	c.catchUp()
	return nil
}

// buildHead renders the response head for a hijacked connection. The body
// is delimited by the connection's close, the HTTP/1.1 way for endless
// streams, so no chunk framing is needed on the fast path.
func buildHead(extra http.Header) []byte {
	h := extra.Clone()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	var b bytes.Buffer
	b.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// resume fills the history a subscriber asked for that the ring no longer
// holds, by asking upstream from its Last-Event-ID until upstream's replay
// reaches an event the ring holds. When that cannot be done the subscriber
// gets a gap event and everything the ring holds.
func (c *client) resume(ctx context.Context, lastEventID string, allow func() bool) {
	s := c.s
	prefix, seq, gap := s.sharedFetch(ctx, lastEventID, allow)
	if gap != "" {
		s.r.metrics.Gaps.Add(1)
		s.r.logs.Log("gap", s.log.WithField("last_event_id", lastEventID).WithField("reason", gap), logrus.WarnLevel, "subscriber resumes with a gap")
		s.mu.Lock()
		c.next = s.ring.first
		c.pos.Store(c.next)
		s.mu.Unlock()
		if s.r.cfg.GapEvent != "" {
			data, _ := json.Marshal(map[string]string{"lastEventId": lastEventID, "reason": gap})
			c.pending = sse.AppendEvent(nil, sse.Event{Type: s.r.cfg.GapEvent, Data: string(data), HasData: true, Retry: -1})
		}
		return
	}
	c.next = seq
	c.pos.Store(seq)
	if len(prefix) > 0 {
		// The fetch is shared; writing consumes the slice of buffers, so
		// each subscriber writes from its own copy of it.
		if err := c.writeBlocking(slices.Clone(prefix)); err != nil {
			c.abort()
			return
		}
		s.r.metrics.Deliveries.Add(uint64(len(prefix)))
		c.events.Add(uint64(len(prefix)))
	}
}

// fetchCall is one history fetch, shared by every subscriber of the stream
// that resumes from the same id while it runs.
type fetchCall struct {
	done   chan struct{}
	prefix [][]byte
	seq    uint64
	gap    string
}

// sharedFetch is fetchSince with a budget: subscribers resuming from the
// same id share one upstream request; a stream runs at most
// CatchUpPerStream of them at once and the relay CatchUpMax, and allow (the
// caller's own limit, when set) is asked before a new one starts. Over any
// of these the subscriber gets a gap: the history it asked for is not worth
// one more request upstream while so many run.
func (s *stream) sharedFetch(ctx context.Context, lastEventID string, allow func() bool) ([][]byte, uint64, string) {
	cfg := &s.r.cfg
	s.mu.Lock()
	if call := s.fetches[lastEventID]; call != nil {
		s.mu.Unlock()
		select {
		case <-call.done:
			return call.prefix, call.seq, call.gap
		case <-ctx.Done():
			return nil, 0, "subscriber left"
		}
	}
	if len(s.fetches) >= cfg.CatchUpPerStream {
		s.mu.Unlock()
		s.r.metrics.catchUpRefused("stream")
		return nil, 0, "too many history fetches on this stream"
	}
	if allow != nil && !allow() {
		s.mu.Unlock()
		s.r.metrics.catchUpRefused("client")
		return nil, 0, "too many history fetches from this client"
	}
	if s.r.catchUps.Add(1) > int64(cfg.CatchUpMax) {
		s.r.catchUps.Add(-1)
		s.mu.Unlock()
		s.r.metrics.catchUpRefused("node")
		return nil, 0, "too many history fetches on this node"
	}
	call := &fetchCall{done: make(chan struct{})}
	s.fetches[lastEventID] = call
	s.mu.Unlock()

	// The fetch outlives the subscriber that started it: others may be
	// waiting for it. It is bounded by CatchUpTimeout and the stream.
	call.prefix, call.seq, call.gap = s.fetchSince(s.ctx, lastEventID)
	s.r.catchUps.Add(-1)
	s.mu.Lock()
	delete(s.fetches, lastEventID)
	s.mu.Unlock()
	close(call.done)
	return call.prefix, call.seq, call.gap
}

// fetchSince asks upstream for the events after lastEventID and collects
// them until they meet the ring (the seam). It returns the events before
// the seam, the seq to continue from, or a reason for a gap.
//
// The replay and the stream's own upstream are two connections, read at
// their own pace: the replay may bring events the ring has not been given
// yet, and then it is the ring that reaches the replay. A young stream
// still reading its first answer, or a replay from a faster upstream,
// does that; the replay has then nothing more to send until the next live
// event. So the seam is looked for both when the replay delivers and
// whenever the ring grows.
func (s *stream) fetchSince(ctx context.Context, lastEventID string) ([][]byte, uint64, string) {
	cfg := &s.r.cfg
	// The stream's own upstream may have delivered the id meanwhile (a new
	// stream still receiving its replay): then the ring answers after all.
	s.mu.Lock()
	seq, ok := s.ring.after(lastEventID)
	s.mu.Unlock()
	if ok {
		return nil, seq, ""
	}
	t, err := s.target(nil)
	if err != nil {
		return nil, 0, fmt.Sprintf("no upstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.CatchUpTimeout)
	defer cancel()
	s.r.metrics.CatchUps.Add(1)
	resp, refusal, _ := s.connect(ctx, t, lastEventID, true)
	if refusal != nil {
		return nil, 0, "upstream could not resume: " + refusal.Reason
	}
	// The replay is read by a goroutine of its own, so that this one can
	// watch the ring at the same time; it is waited for before returning.
	chunks := make(chan replayChunk)
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		readReplay(ctx, resp.Body, cfg.MaxEventBytes, chunks)
	}()
	defer func() {
		cancel()
		_ = resp.Body.Close()
		<-reading
	}()

	sr := seamSearch{lastEventID: lastEventID, limit: cfg.ClientLagBytes}
	timedOut := fmt.Sprintf("upstream replay did not reach the buffered events within %s", cfg.CatchUpTimeout)
	var chunk replayChunk
	for {
		s.mu.Lock()
		found := sr.locate(s.ring, chunk.events)
		wake := s.wake
		s.mu.Unlock()
		switch {
		case found && sr.seam == 0:
			return nil, 0, "upstream does not hold events after that id"
		case found:
			return sr.prefix, sr.seam, ""
		case sr.size > sr.limit:
			return nil, 0, "history to replay exceeds client_lag_bytes"
		case errors.Is(chunk.err, errReplayTooLarge):
			return nil, 0, "upstream replay has an oversized event"
		case chunk.err != nil && ctx.Err() != nil:
			return nil, 0, timedOut
		case chunk.err == io.EOF:
			return nil, 0, "upstream replay ended before reaching the buffered events"
		case chunk.err != nil:
			return nil, 0, fmt.Sprintf("upstream replay failed: %v", chunk.err)
		}
		chunk = replayChunk{}
		select {
		case chunk = <-chunks:
		case <-wake:
		case <-ctx.Done():
			return nil, 0, timedOut
		}
	}
}

// replayChunk is what one read of a replay brought: its complete blocks,
// and the error that ended the replay, if it did.
type replayChunk struct {
	events []sse.Event
	err    error
}

var errReplayTooLarge = errors.New("replay event exceeds max_event_bytes")

// readReplay parses a history replay and hands its blocks over read by
// read, until the replay ends or ctx does.
func readReplay(ctx context.Context, body io.Reader, maxEventBytes int, out chan<- replayChunk) {
	p := sse.NewParser(maxEventBytes)
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		var c replayChunk
		if n > 0 {
			if perr := p.Feed(buf[:n], func(ev sse.Event) { c.events = append(c.events, ev) }); perr != nil {
				err = errReplayTooLarge
			}
		}
		c.err = err
		if len(c.events) == 0 && err == nil {
			continue
		}
		select {
		case out <- c:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// seamSearch is where a history replay meets the ring: the first event
// of the replay that the ring holds, or the subscriber's own id once the
// ring holds it. Both sides grow while it looks: the replay with the
// blocks it delivers, the ring with the stream's own events.
type seamSearch struct {
	lastEventID string
	limit       int64 // bytes the prefix may hold

	prefix [][]byte       // replayed blocks before the seam, encoded
	size   int64          // bytes in prefix
	at     map[string]int // index in prefix of the first block with each id
	seen   uint64         // ring entries up to this seq were compared with prefix

	seam uint64 // where the subscriber continues in the ring; 0: the replay skipped
}

// locate adds the replay's new blocks and reports whether the seam is
// found, in seam and prefix. The stream's lock is held.
func (sr *seamSearch) locate(r *ring, events []sse.Event) bool {
	if seq, ok := r.after(sr.lastEventID); ok {
		sr.prefix, sr.seam = nil, seq
		return true
	}
	// Ring entries that arrived since the last look, against the replay
	// so far: the earliest replayed block the ring now holds is the seam.
	best, bestID := -1, ""
	for seq := max(sr.seen+1, r.first); seq <= r.head(); seq++ {
		if e, _ := r.get(seq); e.hasID {
			if i, ok := sr.at[e.id]; ok && (best < 0 || i < best) {
				best, bestID = i, e.id
			}
		}
	}
	sr.seen = r.head()
	if best >= 0 {
		return sr.cut(r, best, bestID)
	}
	for _, ev := range events {
		if ev.HasID {
			if _, ok := r.byID[ev.ID]; ok {
				return sr.cut(r, len(sr.prefix), ev.ID)
			}
			if sr.at == nil {
				sr.at = make(map[string]int)
			}
			if _, dup := sr.at[ev.ID]; !dup {
				sr.at[ev.ID] = len(sr.prefix)
			}
		}
		w := sse.AppendEvent(nil, ev)
		sr.size += int64(len(w))
		sr.prefix = append(sr.prefix, w)
		if sr.size > sr.limit {
			return false
		}
	}
	return false
}

// cut ends the search at the replayed block i, whose id the ring holds.
func (sr *seamSearch) cut(r *ring, i int, id string) bool {
	seq := r.byID[id]
	adjacent := r.hasBeforeID && r.beforeID == sr.lastEventID
	if i == 0 && (seq > r.first || !adjacent) {
		// Upstream went straight to events the ring holds without
		// anything older: it did not replay from lastEventID (unless that
		// id sits right before the ring, which the ring already answered).
		sr.prefix, sr.seam = nil, 0
		return true
	}
	sr.prefix, sr.seam = sr.prefix[:i], seq
	return true
}
