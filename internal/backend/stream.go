package backend

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// changelogBase is the prefix of every change-log entry URL, as an Escenic
// content store would announce it.
const changelogBase = "http://cs.example/webservice/escenic/changelog/entry/"

// maxBatch bounds how many events one connection copies out of the history
// per lock acquisition, so a replay of a long history does not hold the lock.
const maxBatch = 256

// stream is one id sequence with its history and its open connections.
type stream struct {
	key string
	cfg Config
	pad string // PayloadSize filler, built once

	mu          sync.Mutex
	lastID      int64
	history     [][]byte // ring indexed by slot(id); frames are immutable
	notify      chan struct{}
	conns       map[*conn]struct{}
	total       int
	lastEventID []string
	status      int
	contentType string
}

// conn is one open streaming connection.
type conn struct {
	cut chan struct{} // closed by stream.cut
}

func newStream(key string, cfg Config) *stream {
	return &stream{
		key:    key,
		cfg:    cfg,
		pad:    strings.Repeat("x", cfg.PayloadSize),
		notify: make(chan struct{}),
		conns:  make(map[*conn]struct{}),
	}
}

// oldestLocked returns the id of the oldest event still in the history.
func (s *stream) oldestLocked() int64 {
	return max(1, s.lastID-int64(s.cfg.History)+1)
}

func (s *stream) publish(n int, now time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := now.UnixNano()
	for range n {
		s.lastID++
		f := s.frame(s.lastID, t)
		idx := s.slot(s.lastID)
		if idx < len(s.history) {
			s.history[idx] = f
		} else {
			// The ring grows to its bound on first use only, so quiet
			// streams stay small.
			s.history = append(s.history, f)
		}
	}
	close(s.notify)
	s.notify = make(chan struct{})
	return s.lastID
}

// slot returns the ring index of id. Ids start at 1, so slot 0 holds id 1
// and the ring grows by appending until it is full.
func (s *stream) slot(id int64) int {
	return int((id - 1) % int64(s.cfg.History))
}

// frame encodes one event.
func (s *stream) frame(id int64, unixNanos int64) []byte {
	var buf bytes.Buffer
	buf.Grow(32 + len(s.pad))
	buf.WriteString("id: ")
	buf.WriteString(strconv.FormatInt(id, 10))
	buf.WriteString("\ndata: ")
	start := buf.Len()
	switch s.cfg.Format {
	case FormatBench:
		buf.WriteString(`{"seq":`)
		buf.WriteString(strconv.FormatInt(id, 10))
		buf.WriteString(`,"t":`)
		buf.WriteString(strconv.FormatInt(unixNanos, 10))
		const padField = `,"pad":""}`
		if fill := s.cfg.PayloadSize - (buf.Len() - start) - len(padField); fill > 0 {
			buf.WriteString(`,"pad":"`)
			buf.WriteString(s.pad[:fill])
			buf.WriteString(`"}`)
		} else {
			buf.WriteByte('}')
		}
	default:
		buf.WriteString(changelogBase)
		buf.WriteString(strconv.FormatInt(id, 10))
		const padQuery = "?pad="
		if fill := s.cfg.PayloadSize - (buf.Len() - start) - len(padQuery); fill > 0 {
			buf.WriteString(padQuery)
			buf.WriteString(s.pad[:fill])
		}
	}
	buf.WriteString("\n\n")
	return buf.Bytes()
}

// attach registers a connection and returns it with the id after which it
// must be served. Without a usable Last-Event-ID it starts live; with one
// older than the history it starts at the oldest event kept.
func (s *stream) attach(lastEventIDHeader string) (*conn, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &conn{cut: make(chan struct{})}
	s.conns[c] = struct{}{}
	s.total++
	s.lastEventID = append(s.lastEventID, lastEventIDHeader)
	if over := len(s.lastEventID) - maxRecordedIDs; over > 0 {
		s.lastEventID = append(s.lastEventID[:0], s.lastEventID[over:]...)
	}
	cursor := s.lastID
	if id, ok := parseLastEventID(lastEventIDHeader); ok && id < s.lastID {
		cursor = max(id, s.oldestLocked()-1)
	}
	return c, cursor
}

func (s *stream) detach(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// since returns the frames after cursor (at most maxBatch), the new cursor,
// the channel closed on the next publish, and behind=true when events after
// cursor have already left the history.
func (s *stream) since(cursor int64) (frames [][]byte, next int64, notify <-chan struct{}, behind bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cursor < s.oldestLocked()-1 {
		return nil, cursor, s.notify, true
	}
	for id := cursor + 1; id <= s.lastID && len(frames) < maxBatch; id++ {
		frames = append(frames, s.history[s.slot(id)])
		next = id
	}
	if len(frames) == 0 {
		next = cursor
	}
	return frames, next, s.notify, false
}

func (s *stream) cut() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		select {
		case <-c.cut:
		default:
			close(c.cut)
			n++
		}
	}
	return n
}

func (s *stream) stats() StreamStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StreamStats{
		Open:         len(s.conns),
		Total:        s.total,
		LastEventIDs: append([]string{}, s.lastEventID...),
		LastID:       s.lastID,
	}
}

func (s *stream) setStatus(status int, contentType string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.contentType = status, contentType
}

func (s *stream) forcedStatus() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, s.contentType
}

// stream serves one connection until the client leaves, the stream is cut,
// the Backend is closed or the client falls out of the history.
func (b *Backend) stream(w http.ResponseWriter, r *http.Request, s *stream) {
	lastEventID := r.Header.Get("Last-Event-ID")
	c, cursor := s.attach(lastEventID)
	defer s.detach(c)
	log := b.log.WithField("stream", s.key)
	rc := http.NewResponseController(w)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Reverse proxies such as nginx would otherwise buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	if b.cfg.Retry > 0 {
		buf.WriteString("retry: " + strconv.FormatInt(b.cfg.Retry.Milliseconds(), 10) + "\n\n")
	}
	// write sends buf and flushes it, so the client sees the headers and
	// every event at once rather than when a server buffer fills.
	write := func() bool {
		_ = rc.SetWriteDeadline(time.Now().Add(b.cfg.WriteTimeout))
		if buf.Len() > 0 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				log.WithError(err).Debug("backend: write failed")
				return false
			}
			buf.Reset()
		}
		if err := rc.Flush(); err != nil {
			log.WithError(err).Debug("backend: flush failed")
			return false
		}
		return true
	}
	if !write() {
		return
	}

	var heartbeat <-chan time.Time
	var hbTimer *time.Timer
	if b.cfg.Heartbeat > 0 {
		hbTimer = time.NewTimer(b.cfg.Heartbeat)
		defer hbTimer.Stop()
		heartbeat = hbTimer.C
	}
	resetHeartbeat := func() {
		if hbTimer != nil {
			hbTimer.Reset(b.cfg.Heartbeat)
		}
	}

	for {
		select {
		case <-c.cut:
			b.abort(w, rc)
		default:
		}
		frames, next, notify, behind := s.since(cursor)
		if behind {
			log.WithField("cursor", cursor).Info("backend: connection fell behind the history, closing it")
			return
		}
		if len(frames) > 0 {
			for _, f := range frames {
				buf.Write(f)
			}
			cursor = next
			if !write() {
				return
			}
			resetHeartbeat()
			continue
		}
		select {
		case <-notify:
		case <-heartbeat:
			buf.WriteString(": heartbeat\n\n")
			if !write() {
				return
			}
			resetHeartbeat()
		case <-c.cut:
			b.abort(w, rc)
		case <-r.Context().Done():
			return
		case <-b.done:
			return
		}
	}
}

// abort ends the connection without terminating the HTTP response properly,
// so the client sees a broken stream, as after a network failure.
func (b *Backend) abort(w http.ResponseWriter, rc *http.ResponseController) {
	if b.cfg.CutPartial {
		_ = rc.SetWriteDeadline(time.Now().Add(b.cfg.WriteTimeout))
		_, _ = w.Write([]byte("id: 999999999\ndata: truncated by Cut"))
		_ = rc.Flush()
	}
	// net/http closes the connection for this sentinel without logging.
	panic(http.ErrAbortHandler)
}
