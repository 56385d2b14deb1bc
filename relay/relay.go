// Package relay holds one upstream subscription per stream and fans every
// event out to all local subscribers.
//
// Each stream parses its upstream once (WHATWG rules), keeps recent events in
// a bounded ring, encodes every event once and writes the same bytes to every
// subscriber. Subscribers on hijacked TCP connections need no goroutine of
// their own: a per-stream dispatcher writes each batch with non-blocking
// writes, spread over a small pool of writers; a subscriber whose socket is
// full moves to a catch-up goroutine that reads from the ring with blocking,
// deadline-bound writes and rejoins the fast path once it reaches the head.
// A subscriber that falls too far behind is disconnected and may resume with
// Last-Event-ID.
package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
	"github.com/ssemesh/ssemesh/internal/ratelog"
)

// Target is where a stream's upstream lives at one moment.
type Target struct {
	URL    string      // absolute URL including the query
	Header http.Header // extra request headers (Host, Authorization, ancestry)
	// Label names the upstream for logs and reports without credentials.
	Label string
	// Parent is the mesh node serving the stream; "" for a back end.
	Parent string
	// Fallback says the TargetFunc has other upstreams to offer (other
	// parents, other back-end instances): a connect is then not retried
	// against this one.
	Fallback bool
	// Hide, when set, picks the refusals that are this upstream's own
	// failure rather than the stream's answer: those are not reported to
	// waiting subscribers; the stream asks the TargetFunc again instead.
	// A refusal Hide does not pick is the stream's end state and reaches
	// the subscribers as it is.
	Hide func(*Error) bool
	// Prepare, when set, completes each request to this upstream just
	// before it is sent, retries included: credentials that expire are
	// made afresh for every attempt.
	Prepare func(*http.Request)
	// TLS, when set, is how an https upstream is checked and how this
	// node proves itself to it. Targets that share a *tls.Config share
	// one connection pool; nil uses the system's roots.
	TLS *tls.Config
	// Version names what the requests are made of besides the URL
	// (headers, credentials): a retarget to a target with the same URL
	// but another version reconnects too.
	Version string
}

// Attempt is the outcome of a failed connection, handed to the next call of
// the TargetFunc so it can avoid what just failed.
type Attempt struct {
	Target Target
	Status int    // upstream HTTP status; 0 when no response arrived
	Code   string // the failure's code (Code* constants, or one a parent node sent)
	Reason string
}

// TargetFunc is asked for the upstream on every (re)connect, so the node can
// re-point a stream (another back-end instance, another parent). prev is the
// failed attempt that led to this call, nil otherwise.
type TargetFunc func(prev *Attempt) (Target, error)

// Relay owns every stream of a node.
type Relay struct {
	cfg     Config
	log     logrus.FieldLogger
	http    *retryablehttp.Client // for targets without their own TLS settings
	metrics *Metrics

	clientsMu  sync.Mutex
	tlsClients map[*tls.Config]*retryablehttp.Client

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	streams  map[string]*stream
	stopping bool

	jobs    chan func() // fan-out work for the writer pool
	workers int
	// shardMin is the fewest subscribers worth handing to a writer of the
	// pool: a dispatcher with fewer writes to all of them itself.
	shardMin int
	// onPoolJob, set by tests through tuning, is called when a writer of
	// the pool has run a fan-out job.
	onPoolJob func()

	clients  atomic.Int64
	children atomic.Int64 // subscribers that are mesh nodes
	catchUps atomic.Int64 // history fetches running, all streams

	// logs keeps per-subscriber and per-stream events (gaps, slow
	// consumers cut, refused streams) from flooding the log.
	logs *ratelog.Logger

	// onBackoff, set by tests before any stream starts, is called when a
	// stream's upstream loop begins a backoff wait.
	onBackoff func(key string)
}

// tuning holds the relay's internals that are not configuration: tests set
// them to reach code paths production sizes reach only under load.
type tuning struct {
	workers   int    // writers in the fan-out pool
	shardMin  int    // fewest subscribers handed to one writer
	onPoolJob func() // called after each job a writer of the pool ran
}

// defaultShardMin is the fewest subscribers worth handing to another
// writer: below it, the hand-off costs more than the writes.
const defaultShardMin = 256

func defaultTuning() tuning {
	return tuning{workers: runtime.GOMAXPROCS(0), shardMin: defaultShardMin}
}

// New builds a relay. Close must be called to release it.
func New(cfg Config, log logrus.FieldLogger) (*Relay, error) {
	return newRelay(cfg, log, defaultTuning())
}

func newRelay(cfg Config, log logrus.FieldLogger, tn tuning) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, cfgerr.Prefix("relay", err)
	}
	if log == nil {
		l := logrus.New()
		l.SetLevel(logrus.WarnLevel)
		log = l
	}
	log = log.WithField("component", "relay")
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{
		cfg:     cfg,
		log:     log,
		metrics: newMetrics(),
		ctx:     ctx,
		cancel:  cancel,
		streams: make(map[string]*stream),
		jobs:    make(chan func()),
		logs:    ratelog.New(10 * time.Second),
	}
	r.http = newUpstreamClient(cfg, log, nil)
	r.tlsClients = make(map[*tls.Config]*retryablehttp.Client)
	r.workers, r.shardMin, r.onPoolJob = max(tn.workers, 1), max(tn.shardMin, 1), tn.onPoolJob
	for i := 0; i < r.workers; i++ {
		r.goOwned(r.writer)
	}
	return r, nil
}

// Config returns the configuration in force.
func (r *Relay) Config() Config { return r.cfg }

// Metrics returns the relay's live counters.
func (r *Relay) Metrics() *Metrics { return r.metrics }

// Clients is the number of subscribers attached now.
func (r *Relay) Clients() int { return int(r.clients.Load()) }

// ChildClients is the number of attached subscribers that are mesh nodes.
func (r *Relay) ChildClients() int { return int(r.children.Load()) }

// Streams is the number of streams open now.
func (r *Relay) Streams() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.streams)
}

// writer runs fan-out jobs until the relay closes.
func (r *Relay) writer() {
	for {
		select {
		case job := <-r.jobs:
			job()
			if r.onPoolJob != nil {
				r.onPoolJob()
			}
		case <-r.ctx.Done():
			return
		}
	}
}

// goOwned starts a goroutine owned by the relay; it refuses once Close (or
// Drain) began so nothing outlives the wait in Close. Every goroutine of the
// relay starts here or in goLocked, except those a function starts and
// waits for itself before it returns.
func (r *Relay) goOwned(f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.goLocked(f)
}

// goLocked is goOwned for callers that hold r.mu.
func (r *Relay) goLocked(f func()) bool {
	if r.stopping {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
	return true
}

// acquire returns the stream for key, creating it (and its upstream) on first
// use, with one reference taken for the caller. early reports whether the
// caller arrived before the upstream answered: it is decided here, under the
// table lock, because a fast upstream can go live before the caller looks.
func (r *Relay) acquire(key string, target TargetFunc, lastEventID string, hasLastEventID bool) (s *stream, early bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopping {
		return nil, false, &Error{Status: http.StatusServiceUnavailable, Code: CodeShuttingDown, Reason: "node is shutting down", RetryAfter: 1}
	}
	s = r.streams[key]
	if s == nil || s.isFinished() {
		s = newStream(r, key, target, lastEventID, hasLastEventID)
		r.streams[key] = s
		r.goLocked(s.runUpstream)
		r.goLocked(s.runDispatcher)
		early = true
	} else {
		s.mu.Lock()
		early = s.state == stateConnecting
		s.mu.Unlock()
	}
	s.ref()
	return s, early, nil
}

// forget removes s from the table if it is still the registered stream.
// The stream's dispatcher calls it once the stream is over.
func (r *Relay) forget(s *stream) {
	r.mu.Lock()
	if r.streams[s.key] == s {
		delete(r.streams, s.key)
	}
	r.mu.Unlock()
}

// Retarget asks the stream key to reconnect to its (new) target, make-before-break:
// the new upstream is opened and resumed from the last event before the old
// one is closed. It is a no-op for unknown streams.
func (r *Relay) Retarget(key string) {
	r.mu.Lock()
	s := r.streams[key]
	r.mu.Unlock()
	if s != nil {
		s.retargetSignal()
	}
}

// End closes stream key for good: every subscriber is sent a retry hint
// and closed, then the upstream stops. A request for key after End opens a
// new stream. It is for a back end that was removed or moved by a reload.
func (r *Relay) End(key string) {
	r.mu.Lock()
	s := r.streams[key]
	if s != nil {
		delete(r.streams, key)
	}
	r.mu.Unlock()
	if s == nil {
		return
	}
	s.drain(time.Now())
	if !r.goOwned(func() {
		select {
		case <-s.drained:
		case <-r.ctx.Done():
		}
		s.shutdown(errors.New("ended: its back end was removed"))
	}) {
		s.shutdown(errors.New("ended: its back end was removed"))
	}
}

// Keys lists the open streams.
func (r *Relay) Keys() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]string, 0, len(r.streams))
	for k := range r.streams {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Drain closes every subscriber, spread evenly over period, each told with a
// jittered `retry:` hint to come back (elsewhere). New subscribers are
// refused from the start. It returns when all are closed or ctx ends.
func (r *Relay) Drain(ctx context.Context, period time.Duration) {
	r.mu.Lock()
	r.stopping = true
	streams := make([]*stream, 0, len(r.streams))
	for _, s := range r.streams {
		streams = append(streams, s)
	}
	r.mu.Unlock()
	deadline := time.Now().Add(period)
	for _, s := range streams {
		s.drain(deadline)
	}
	for _, s := range streams {
		select {
		case <-s.drained:
		case <-ctx.Done():
			return
		}
	}
}

// Close stops every stream and waits for all goroutines. Subscribers still
// attached are closed at once.
func (r *Relay) Close() {
	r.mu.Lock()
	r.stopping = true
	streams := make([]*stream, 0, len(r.streams))
	for _, s := range r.streams {
		streams = append(streams, s)
	}
	r.mu.Unlock()
	for _, s := range streams {
		s.shutdown(errors.New("relay closed"))
	}
	r.cancel()
	r.wg.Wait()
	r.http.HTTPClient.CloseIdleConnections()
	r.clientsMu.Lock()
	for _, c := range r.tlsClients {
		c.HTTPClient.CloseIdleConnections()
	}
	r.clientsMu.Unlock()
}

// clientFor is the HTTP client for a target's TLS settings.
func (r *Relay) clientFor(tc *tls.Config) *retryablehttp.Client {
	if tc == nil {
		return r.http
	}
	r.clientsMu.Lock()
	defer r.clientsMu.Unlock()
	c := r.tlsClients[tc]
	if c == nil {
		c = newUpstreamClient(r.cfg, r.log, tc)
		r.tlsClients[tc] = c
	}
	return c
}

// Error is a refusal that happens before a subscriber's response starts; the
// caller renders it with the status and the code.
type Error struct {
	Status int
	// Code is a stable, client-safe name of the refusal (Code* constants,
	// or the code a parent node answered with); Reason is the detail for
	// logs and the admin API, which may name addresses and must not reach
	// clients.
	Code       string
	Reason     string
	RetryAfter int // seconds; 0 = no Retry-After header
	// Upstream is the status the upstream answered, when the refusal mirrors it.
	Upstream int
}

// Codes of the refusals the relay makes. They are what a client is told,
// and what a node tells its child nodes in ErrorHeader, so a client at the
// end of a chain sees the code it would see at the first node.
const (
	CodeStreamEnded         = "stream_ended"          // upstream answered 204: the stream is over
	CodeUpstreamStatus      = "upstream_status"       // upstream answered an error status, mirrored
	CodeUpstreamContentType = "upstream_content_type" // upstream answered 200 but not text/event-stream
	CodeUpstreamRedirect    = "upstream_redirect"     // upstream redirected elsewhere (another origin, or too often)
	CodeUpstreamUnreachable = "upstream_unreachable"  // no response: connection refused, reset, timed out
	CodeUpstreamTimeout     = "upstream_timeout"      // no first answer within ready_timeout
	CodeNoUpstream          = "no_upstream"           // the node has nowhere to take the stream from
	CodeStreamClosing       = "stream_closing"        // the stream closed while the subscriber waited
	CodeShuttingDown        = "shutting_down"         // the node is draining

	// Codes that only name why a live upstream connection ended, for the
	// TargetFunc (Attempt.Code); a clean end has no code.
	CodeUpstreamIdle     = "upstream_idle"      // silent for longer than idle_timeout
	CodeUpstreamTooLarge = "upstream_too_large" // an event over max_event_bytes
	CodeUpstreamRead     = "upstream_read"      // the connection failed mid-stream
)

// ErrorHeader names the code of a refusal in the response, so a node
// reading from another node learns whether the refusal is the upstream
// node's own (it is full, draining, or would close a loop) or the stream's
// answer relayed from above.
const ErrorHeader = "X-Ssemesh-Error"

// HeartbeatHeader tells a child node, in milliseconds, how often its
// parent writes at least a comment line on the stream (Config.ChildHeartbeat).
// The child takes the parent silent for silentBeats of them as gone and
// reconnects, sooner than its idle_timeout.
const HeartbeatHeader = "X-Ssemesh-Heartbeat"

// silentBeats is how many announced heartbeats a child waits for.
const silentBeats = 3

// idleFor is how long the upstream of resp may stay silent: idle_timeout,
// or silentBeats of the heartbeat a parent node announced, if shorter.
func idleFor(cfg *Config, resp *http.Response, fromParent bool) time.Duration {
	idle := cfg.IdleTimeout
	if !fromParent {
		return idle
	}
	ms, err := strconv.ParseInt(resp.Header.Get(HeartbeatHeader), 10, 64)
	if err != nil || ms <= 0 {
		return idle
	}
	// At least a second: a parent cannot make its children spin.
	return min(idle, max(time.Second, silentBeats*time.Duration(ms)*time.Millisecond))
}

// childBeat is the heartbeat of child nodes.
func (c *Config) childBeat() time.Duration { return min(c.Heartbeat, c.ChildHeartbeat) }

func (e *Error) Error() string { return fmt.Sprintf("relay: %d: %s", e.Status, e.Reason) }

// Has reports whether a stream is open for key.
func (r *Relay) Has(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.streams[key]
	return ok
}
