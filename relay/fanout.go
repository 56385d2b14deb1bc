package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/sse"
)

// fanout is the fan-out half of a stream: the state its subscribers see,
// the ring, the subscribers and the dispatcher's progress. Its mutable
// fields are guarded by mu, which also guards the upstream half's.
type fanout struct {
	r    *Relay
	log  logrus.FieldLogger
	stop context.CancelFunc // ends the upstream half

	kick    chan struct{} // 1-buffered: new events or joiners for the dispatcher
	drained chan struct{} // closed when the dispatcher has closed every subscriber

	mu         sync.Mutex
	state      streamState
	ready      chan struct{} // closed once the first outcome is known
	first      outcome
	ring       *ring
	lastID     string // lastEventId in force at the head: the upstream's resume point
	hasLastID  bool
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
	eventsIn   uint64
	// eventsAtLastID is eventsIn when the block that set lastID arrived: a
	// resumed upstream replays everything after that block.
	eventsAtLastID uint64
	// expiring is set when a subscriber's credentials ran out; the
	// dispatcher then looks for them among its subscribers.
	expiring atomic.Bool
}

// finishedLocked is the one test of a stream that is over (failed, ended
// or closed): it takes no new subscribers and the relay replaces it. s.mu
// is held.
func (s *fanout) finishedLocked() bool {
	return s.state == stateFailed || s.state == stateEnded || s.state == stateClosed
}

// isFinished is finishedLocked for callers that hold r.mu; the stream lock
// nests inside it.
func (s *fanout) isFinished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finishedLocked()
}

// endReasonLocked says why a subscriber finished with no reason of its own
// ended: the stream's state tells drain, end and teardown from a client
// that left. s.mu is held.
func (s *fanout) endReasonLocked() string {
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

func (s *fanout) ref() {
	s.mu.Lock()
	s.refs++
	s.mu.Unlock()
}

// unref drops a reference; the last one starts the dispatcher's linger
// timer. A stream that never went live does not linger: nobody has seen it
// work, and keeping it would let requests that leave at once fill the
// stream table with upstream connections nobody reads.
func (s *fanout) unref() {
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
func (s *fanout) teardownLocked(to streamState, e *Error) {
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
	s.stop()
	s.wakeLocked()
	for c := range s.all {
		c.abort()
	}
	s.kickDispatcher()
}

func (s *fanout) wakeLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *fanout) kickDispatcher() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// goLiveLocked records the first successful upstream answer: waiting
// subscribers start. s.mu is held.
func (s *fanout) goLiveLocked() {
	if s.state == stateConnecting {
		s.state = stateLive
		close(s.ready)
	}
}

// publish adds one upstream block: encoded once, appended to the ring, and
// announced to the dispatcher and waiting writers.
func (s *fanout) publish(ev sse.Event, now time.Time) {
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

// drain asks the dispatcher to close every subscriber by deadline.
func (s *fanout) drain(deadline time.Time) {
	s.mu.Lock()
	s.drainBy = deadline
	s.wakeLocked()
	s.mu.Unlock()
	s.kickDispatcher()
}
