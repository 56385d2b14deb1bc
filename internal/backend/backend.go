// Package backend is a synthetic server-sent-events back end for ssemesh's
// demo, tests and benchmarks.
//
// It imitates an Escenic change-log feed: unnamed events with increasing
// integer ids whose data is a change-log entry URL. Every distinct path and
// query is its own stream with its own id sequence starting at 1, so a test
// can use as many independent streams as it likes on one listener. Streams
// keep a bounded history and honour Last-Event-ID, and a test can cut
// connections or make a stream answer with an error status to exercise a
// client's reconnect logic.
//
// In the "bench" format the data is a small JSON object carrying the sequence
// number and the send time, which lets a load generator measure loss,
// duplicates and end-to-end latency.
package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Payload formats.
const (
	FormatChangelog = "changelog"
	FormatBench     = "bench"
)

// StatsPath is the reserved path that answers with the JSON stats of every
// stream (or of one, with ?stream=KEY) instead of being a stream itself.
const StatsPath = "/_backend/stats"

// Config tunes a Backend. The zero value is usable: events are only emitted
// on Publish, in the change-log format.
type Config struct {
	// Rate is the number of events per second emitted on every known stream
	// by Run; 0 emits only on Publish.
	Rate float64
	// PayloadSize pads each event's data to at least this many bytes.
	PayloadSize int
	// Format is FormatChangelog (default) or FormatBench.
	Format string
	// History is the number of events kept per stream for Last-Event-ID
	// resumption (default 10000). A connection that falls further behind
	// than this is closed so that it resumes instead of silently skipping.
	History int
	// Retry, if > 0, is sent as the retry: field when a connection opens.
	Retry time.Duration
	// Heartbeat, if > 0, sends a comment line after this much silence.
	Heartbeat time.Duration
	// MaxStreams bounds the number of distinct streams (default 1024);
	// requests for further streams are answered 503.
	MaxStreams int
	// WriteTimeout bounds each write to a connection (default 10s), so a
	// client that stops reading cannot pin a handler forever.
	WriteTimeout time.Duration
	// CutPartial makes Cut write an unterminated event, with an id line of
	// a far future id, before closing, as a network cut in the middle of an
	// event would. A WHATWG-compliant client discards the event and does not
	// adopt its id, so it still resumes from the last dispatched event.
	CutPartial bool
}

const (
	defaultHistory      = 10000
	defaultMaxStreams   = 1024
	defaultWriteTimeout = 10 * time.Second
	// maxRecordedIDs bounds StreamStats.LastEventIDs per stream.
	maxRecordedIDs = 4096
	// tickEvery is the Run ticker period for high rates: events due since
	// the last tick are emitted in one batch rather than one tick per event.
	tickEvery = 10 * time.Millisecond
)

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Rate < 0:
		return fmt.Errorf("backend: rate %v is negative", c.Rate)
	case c.PayloadSize < 0:
		return fmt.Errorf("backend: payload size %d is negative", c.PayloadSize)
	case c.Format != "" && c.Format != FormatChangelog && c.Format != FormatBench:
		return fmt.Errorf("backend: unknown format %q (want %q or %q)", c.Format, FormatChangelog, FormatBench)
	case c.History < 0:
		return fmt.Errorf("backend: history %d is negative", c.History)
	case c.MaxStreams < 0:
		return fmt.Errorf("backend: max streams %d is negative", c.MaxStreams)
	case c.Retry < 0 || c.Heartbeat < 0 || c.WriteTimeout < 0:
		return errors.New("backend: durations must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Format == "" {
		c.Format = FormatChangelog
	}
	if c.History == 0 {
		c.History = defaultHistory
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = defaultMaxStreams
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = defaultWriteTimeout
	}
	return c
}

// StreamStats describes one stream.
type StreamStats struct {
	// Open is the number of connections open now.
	Open int `json:"open"`
	// Total is the number of connections ever accepted (streaming ones only,
	// not those answered by SetStatus).
	Total int `json:"total"`
	// LastEventIDs holds the Last-Event-ID header of each accepted
	// connection in arrival order ("" when absent); only the most recent
	// 4096 are kept.
	LastEventIDs []string `json:"last_event_ids"`
	// LastID is the id of the newest event published on the stream.
	LastID int64 `json:"last_id"`
}

// Backend is an http.Handler serving synthetic SSE streams. It is safe for
// concurrent use.
type Backend struct {
	cfg  Config
	log  logrus.FieldLogger
	done chan struct{} // closed by Close: every handler returns

	mu      sync.Mutex
	closed  bool
	streams map[string]*stream
}

// New returns a Backend. cfg must be valid (see Config.Validate); an invalid
// value is a programming error and panics, as a misconfigured fixture should
// fail the test at once.
func New(cfg Config, log logrus.FieldLogger) *Backend {
	if err := cfg.Validate(); err != nil {
		panic(err)
	}
	if log == nil {
		l := logrus.New()
		l.SetLevel(logrus.WarnLevel)
		log = l
	}
	return &Backend{
		cfg:     cfg.withDefaults(),
		log:     log.WithField("component", "backend"),
		done:    make(chan struct{}),
		streams: make(map[string]*stream),
	}
}

// StreamKey returns the key of the stream a request addresses: its path plus
// "?query" when there is one.
func StreamKey(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return r.URL.Path
	}
	return r.URL.Path + "?" + r.URL.RawQuery
}

// lookup returns the stream for key, creating it when create is set. It
// returns nil when the stream does not exist (and create is false), when the
// stream limit is reached or when the Backend is closed.
func (b *Backend) lookup(key string, create bool) *stream {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.streams[key]; ok {
		return s
	}
	if !create || b.closed || len(b.streams) >= b.cfg.MaxStreams {
		return nil
	}
	s := newStream(key, b.cfg)
	b.streams[key] = s
	return s
}

func (b *Backend) allStreams() []*stream {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*stream, 0, len(b.streams))
	for _, s := range b.streams {
		out = append(out, s)
	}
	return out
}

// Publish emits n events on a stream now, creating the stream if needed, and
// returns the id of the last one (0 if nothing was published).
func (b *Backend) Publish(stream string, n int) int64 {
	s := b.lookup(stream, true)
	if s == nil || n <= 0 {
		return 0
	}
	return s.publish(n, time.Now())
}

// Cut abruptly closes every open connection of a stream, mid-flow, and
// returns how many it closed. The handlers finish asynchronously: Stats may
// report them open for a moment longer.
func (b *Backend) Cut(stream string) int {
	s := b.lookup(stream, false)
	if s == nil {
		return 0
	}
	return s.cut()
}

// Stats returns a snapshot of a stream's counters (zero for an unknown one).
func (b *Backend) Stats(stream string) StreamStats {
	s := b.lookup(stream, false)
	if s == nil {
		return StreamStats{LastEventIDs: []string{}}
	}
	return s.stats()
}

// SetStatus makes the next connections to a stream receive status with the
// given content type (e.g. 204, 404, 500, or 200 text/plain) instead of the
// event stream, until it is cleared with status 0. Open connections are not
// affected.
func (b *Backend) SetStatus(stream string, status int, contentType string) {
	if s := b.lookup(stream, true); s != nil {
		s.setStatus(status, contentType)
	}
}

// Run emits Config.Rate events per second on every known stream until ctx
// ends. It returns at once when Rate is 0.
func (b *Backend) Run(ctx context.Context) {
	if b.cfg.Rate <= 0 {
		return
	}
	period := time.Duration(float64(time.Second) / b.cfg.Rate)
	period = max(period, tickEvery)
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	// Each stream keeps its own schedule from its first tick, so a stream
	// created later does not receive a burst for time it did not exist, and
	// a late tick catches up instead of slowing the rate down.
	type schedule struct {
		start time.Time
		sent  int64
	}
	sched := make(map[*stream]*schedule)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.done:
			return
		case now := <-ticker.C:
			for _, s := range b.allStreams() {
				sc, ok := sched[s]
				if !ok {
					// One event on the first tick, then the rate.
					sc = &schedule{start: now.Add(-time.Duration(float64(time.Second) / b.cfg.Rate))}
					sched[s] = sc
				}
				due := int64(now.Sub(sc.start).Seconds() * b.cfg.Rate)
				if n := due - sc.sent; n > 0 {
					s.publish(int(n), now)
					sc.sent = due
				}
			}
		}
	}
}

// Close ends every open connection gracefully and makes further requests
// fail with 503. It is idempotent.
func (b *Backend) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.done)
	}
}

func (b *Backend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// ServeHTTP serves the stream addressed by the request's path and query, or
// the stats at StatsPath.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == StatsPath {
		b.serveStats(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "backend: only GET is supported", http.StatusMethodNotAllowed)
		return
	}
	if b.isClosed() {
		http.Error(w, "backend: shutting down", http.StatusServiceUnavailable)
		return
	}
	key := StreamKey(r)
	s := b.lookup(key, true)
	if s == nil {
		http.Error(w, "backend: stream limit reached", http.StatusServiceUnavailable)
		return
	}
	if status, ctype := s.forcedStatus(); status != 0 {
		writeForced(w, status, ctype)
		return
	}
	b.stream(w, r, s)
}

func writeForced(w http.ResponseWriter, status int, ctype string) {
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	w.WriteHeader(status)
	// Statuses that forbid a body (1xx, 204, 304) are refused by the server
	// anyway; the others get a line so a human can tell what happened.
	if status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified {
		_, _ = fmt.Fprintf(w, "backend: forced status %d\n", status)
	}
}

func (b *Backend) serveStats(w http.ResponseWriter, r *http.Request) {
	var body any
	if key := r.URL.Query().Get("stream"); key != "" {
		body = b.Stats(key)
	} else {
		all := make(map[string]StreamStats)
		for _, s := range b.allStreams() {
			all[s.key] = s.stats()
		}
		body = all
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(body); err != nil {
		b.log.WithError(err).Debug("backend: writing stats")
	}
}

// StreamKeys returns the keys of all known streams, sorted.
func (b *Backend) StreamKeys() []string {
	var keys []string
	for _, s := range b.allStreams() {
		keys = append(keys, s.key)
	}
	sort.Strings(keys)
	return keys
}

// parseLastEventID returns the numeric Last-Event-ID and whether one was
// given. Ids this back end never issued (non-numeric) are treated as absent:
// the connection starts live.
func parseLastEventID(v string) (int64, bool) {
	if v == "" {
		return 0, false
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id < 0 {
		return 0, false
	}
	return id, true
}
