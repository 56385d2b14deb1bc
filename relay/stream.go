package relay

import (
	"context"
	"sort"
	"time"
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

// stream is one upstream subscription and its subscribers, in two halves
// joined by one seam. The upstream half (upstream.go) connects, reads,
// reconnects and switches targets; the fan-out half (fanout.go,
// dispatch.go) holds the ring, the subscribers and the dispatcher. The
// upstream half hands every block to the fan-out half through publish, and
// moves the stream's state through goLiveLocked and teardownLocked; it
// reads the resume point (lastID) and the upstream's retry value back from
// the fan-out half under mu. One lock, the fan-out half's mu, guards the
// mutable fields of both halves.
type stream struct {
	key    string
	opened time.Time
	fanout
	upstream
}

func newStream(r *Relay, key string, target TargetFunc, lastEventID string, hasLastEventID bool) *stream {
	ctx, cancel := context.WithCancel(r.ctx)
	return &stream{
		key:    key,
		opened: time.Now(),
		fanout: fanout{
			r:         r,
			log:       r.log.WithField("stream", key),
			stop:      cancel,
			kick:      make(chan struct{}, 1),
			drained:   make(chan struct{}),
			ready:     make(chan struct{}),
			ring:      newRing(r.cfg.RingEvents, r.cfg.RingBytes, r.cfg.RingAge),
			lastID:    lastEventID,
			hasLastID: hasLastEventID,
			retry:     -1,
			wake:      make(chan struct{}),
			all:       make(map[*client]struct{}),
			slow:      make(map[*client]struct{}),
		},
		upstream: upstream{
			target:    target,
			ctx:       ctx,
			retarget:  make(chan struct{}, 1),
			origin:    lastEventID,
			originSet: hasLastEventID,
			fetches:   make(map[string]*fetchCall),
		},
	}
}

// shutdown closes the stream at once (relay closing).
func (s *stream) shutdown(cause error) {
	s.mu.Lock()
	s.lastErr = cause.Error()
	s.fanout.teardownLocked(stateClosed, nil)
	s.mu.Unlock()
}

// setLive records the connection delivering now, and that the stream is
// live.
func (s *stream) setLive(t Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.label = t.Label
	s.parent = t.Parent
	s.fanout.goLiveLocked()
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
		s.fanout.teardownLocked(stateEnded, e)
		return true
	case s.state == stateConnecting:
		s.fanout.teardownLocked(stateFailed, e)
		return true
	}
	return s.finishedLocked()
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
