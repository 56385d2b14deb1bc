package relay

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/sse"
)

type streamState int

const (
	stateConnecting streamState = iota // no upstream answer yet
	stateLive                          // an upstream answered 200 at least once
	stateFailed                        // the first answer was a refusal; waiters get it
	stateEnded                         // the upstream said 204: the stream is over
	stateClosed                        // torn down (linger expired, relay closed)
)

// outcome is how a stream's first upstream attempt ended, for subscribers
// that wait before their response starts.
type outcome struct {
	err *Error // nil: live
}

// stream is one upstream subscription and its subscribers.
type stream struct {
	r      *Relay
	key    string
	target TargetFunc
	log    logrus.FieldLogger

	ctx    context.Context // upstream lifetime
	cancel context.CancelFunc

	kick     chan struct{} // 1-buffered: new events or joiners for the dispatcher
	drained  chan struct{} // closed when the dispatcher has closed every subscriber
	retarget chan struct{} // 1-buffered: the target changed, reconnect make-before-break

	mu         sync.Mutex
	state      streamState
	ready      chan struct{} // closed once the first outcome is known
	first      outcome
	ring       *ring
	lastID     string // lastEventId in force at the head
	hasLastID  bool
	origin     string // Last-Event-ID the stream was first opened upstream with
	originSet  bool
	retry      int64         // newest upstream retry value, -1 none; sent to every new subscriber
	retrySeq   uint64        // ring seq of the block that set retry
	wake       chan struct{} // closed and replaced on every change, for waiting writers
	refs       int           // subscribers attached or waiting
	idleGen    uint64        // counts the times refs fell to 0: the dispatcher lingers from each
	joiners    []*client
	all        map[*client]struct{}
	slow       map[*client]struct{} // subscribers off the fast path, for the lag check
	dispatched uint64
	drainBy    time.Time // non-zero: close every subscriber by then
	label      string    // upstream label, for reports
	parent     string    // Target.Parent of the connection delivering now
	lastErr    string
	reconnects uint64
	eventsIn   uint64
	// eventsAtLastID is eventsIn when the block that set lastID arrived: a
	// resumed upstream replays everything after that block.
	eventsAtLastID uint64
	opened         time.Time
	fetches        map[string]*fetchCall // history fetches running, by resume id
	// expiring is set when a subscriber's credentials ran out; the
	// dispatcher then looks for them among its subscribers.
	expiring atomic.Bool
}

func newStream(r *Relay, key string, target TargetFunc, lastEventID string, hasLastEventID bool) *stream {
	ctx, cancel := context.WithCancel(r.ctx)
	return &stream{
		r:         r,
		key:       key,
		target:    target,
		log:       r.log.WithField("stream", key),
		ctx:       ctx,
		cancel:    cancel,
		kick:      make(chan struct{}, 1),
		drained:   make(chan struct{}),
		retarget:  make(chan struct{}, 1),
		ready:     make(chan struct{}),
		ring:      newRing(r.cfg.RingEvents, r.cfg.RingBytes, r.cfg.RingAge),
		lastID:    lastEventID,
		hasLastID: hasLastEventID,
		origin:    lastEventID,
		originSet: hasLastEventID,
		retry:     -1,
		wake:      make(chan struct{}),
		all:       make(map[*client]struct{}),
		slow:      make(map[*client]struct{}),
		opened:    time.Now(),
		fetches:   make(map[string]*fetchCall),
	}
}

// finishedLocked is the one test of a stream that is over (failed, ended
// or closed): it takes no new subscribers and the relay replaces it. s.mu
// is held.
func (s *stream) finishedLocked() bool {
	return s.state == stateFailed || s.state == stateEnded || s.state == stateClosed
}

// isFinished is finishedLocked for callers that hold r.mu; the stream lock
// nests inside it.
func (s *stream) isFinished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finishedLocked()
}

// endReasonLocked says why a subscriber finished with no reason of its own
// ended: the stream's state tells drain, end and teardown from a client
// that left. s.mu is held.
func (s *stream) endReasonLocked() string {
	switch {
	case !s.drainBy.IsZero():
		return EndDrain
	case s.state == stateEnded:
		return EndUpstreamEnded
	case s.state == stateFailed:
		return EndUpstreamFailed
	case s.state == stateClosed:
		return EndClosed
	}
	return EndClientClosed
}

func (s *stream) ref() {
	s.mu.Lock()
	s.refs++
	s.mu.Unlock()
}

// unref drops a reference; the last one starts the dispatcher's linger
// timer. A stream that never went live does not linger: nobody has seen it
// work, and keeping it would let requests that leave at once fill the
// stream table with upstream connections nobody reads.
func (s *stream) unref() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs--
	if s.refs > 0 || s.finishedLocked() {
		return
	}
	if s.state != stateLive {
		s.teardownLocked(stateClosed, nil)
		return
	}
	s.idleGen++
	s.kickDispatcher()
}

// teardownLocked is the one way a stream ends, once, in state to (failed,
// ended or closed): subscribers still waiting for the first answer get e
// (a closing refusal when nil), the upstream is cancelled, attached
// subscribers are aborted and waiting writers woken, and the dispatcher is
// told: it finishes the subscribers, removes the stream from the relay's
// table and returns. s.mu is held.
func (s *stream) teardownLocked(to streamState, e *Error) {
	if s.finishedLocked() {
		return
	}
	if s.state == stateConnecting {
		if e == nil {
			e = &Error{Status: 503, Code: CodeStreamClosing, Reason: "stream closed before its upstream answered", RetryAfter: 1}
		}
		s.first = outcome{err: e}
		close(s.ready)
	}
	s.state = to
	s.cancel()
	s.wakeLocked()
	for c := range s.all {
		c.abort()
	}
	s.kickDispatcher()
}

// shutdown closes the stream at once (relay closing).
func (s *stream) shutdown(cause error) {
	s.mu.Lock()
	s.lastErr = cause.Error()
	s.teardownLocked(stateClosed, nil)
	s.mu.Unlock()
}

func (s *stream) wakeLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *stream) kickDispatcher() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// setLive records the first successful upstream answer.
func (s *stream) setLive(t Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.label = t.Label
	s.parent = t.Parent
	if s.state == stateConnecting {
		s.state = stateLive
		close(s.ready)
	}
}

// fail records a refusal. Before the stream was ever live it becomes the
// answer of every waiting subscriber; afterwards it is hidden and only noted.
func (s *stream) fail(e *Error, ended bool) (final bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = e.Reason
	switch {
	case ended:
		// 204: the back end says the stream is over. Live subscribers are
		// closed; later requests will ask upstream again and get 204 too.
		s.teardownLocked(stateEnded, e)
		return true
	case s.state == stateConnecting:
		s.teardownLocked(stateFailed, e)
		return true
	}
	return s.finishedLocked()
}

// publish adds one upstream block: encoded once, appended to the ring, and
// announced to the dispatcher and waiting writers.
func (s *stream) publish(ev sse.Event, now time.Time) {
	wire := sse.AppendEvent(make([]byte, 0, len(ev.Data)+len(ev.ID)+len(ev.Type)+32), ev)
	s.mu.Lock()
	if ev.Retry >= 0 {
		s.retry = ev.Retry
	}
	s.eventsIn++
	if ev.HasID {
		s.lastID, s.hasLastID = ev.ID, true
		s.eventsAtLastID = s.eventsIn
	}
	seq := s.ring.push(s.lastID, ev.HasID, wire, now)
	if ev.Retry >= 0 {
		s.retrySeq = seq
	}
	s.wakeLocked()
	s.mu.Unlock()
	s.r.metrics.EventsIn.Add(1)
	s.kickDispatcher()
}

// resumeID is the Last-Event-ID for the next upstream connection.
func (s *stream) resumeID() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID, s.hasLastID
}

func (s *stream) retargetSignal() {
	select {
	case s.retarget <- struct{}{}:
	default:
	}
}

// drain asks the dispatcher to close every subscriber by deadline.
func (s *stream) drain(deadline time.Time) {
	s.mu.Lock()
	s.drainBy = deadline
	s.wakeLocked()
	s.mu.Unlock()
	s.kickDispatcher()
}

// Info describes a stream for reports.
type Info struct {
	Key         string
	Upstream    string
	State       string
	Clients     int
	EventsIn    uint64
	Reconnects  uint64
	LastEventID string
	Buffered    int
	BufferBytes int64
	OldestAt    time.Time
	LastAt      time.Time // arrival of the newest event
	LastError   string
	Opened      time.Time
}

func (s *stream) info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, b, oldest := s.ring.span()
	var last time.Time
	if e, ok := s.ring.get(s.ring.head()); ok {
		last = e.at
	}
	return Info{
		LastAt:      last,
		Key:         s.key,
		Upstream:    s.label,
		State:       [...]string{"connecting", "live", "failed", "ended", "closed"}[s.state],
		Clients:     len(s.all),
		EventsIn:    s.eventsIn,
		Reconnects:  s.reconnects,
		LastEventID: s.lastID,
		Buffered:    n,
		BufferBytes: b,
		OldestAt:    oldest,
		LastError:   s.lastErr,
		Opened:      s.opened,
	}
}

// LiveParent reports the parent node (Target.Parent; "" for a back end) of
// the connection the stream is reading now, and false while the stream has
// no live connection. A requested switch that the new target refused leaves
// the stream where it was; this says where that is.
func (r *Relay) LiveParent(key string) (string, bool) {
	r.mu.Lock()
	s := r.streams[key]
	r.mu.Unlock()
	if s == nil {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateLive {
		return "", false
	}
	return s.parent, true
}

// StreamInfo describes every open stream.
func (r *Relay) StreamInfo() []Info {
	r.mu.Lock()
	streams := make([]*stream, 0, len(r.streams))
	for _, s := range r.streams {
		streams = append(streams, s)
	}
	r.mu.Unlock()
	out := make([]Info, 0, len(streams))
	for _, s := range streams {
		out = append(out, s.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
