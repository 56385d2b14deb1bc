// Package ratelog keeps a flood of one kind of event from flooding the log:
// a node refusing ten thousand requests a second logs about it once every
// few seconds, with the count of what it did not write.
package ratelog

import (
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// maxKeys bounds the keys remembered; callers use a fixed set of kinds
// (refusal codes, disconnect reasons), so this is a safety net only.
const maxKeys = 1024

// Logger writes at most one line per key and interval.
type Logger struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*slot
}

type slot struct {
	at         time.Time // when the last line for the key was written
	suppressed int       // lines not written since
}

// New returns a Logger that writes a key's line at most once per every.
func New(every time.Duration) *Logger {
	return &Logger{every: every, now: time.Now, keys: make(map[string]*slot)}
}

// Log writes msg at level through l, unless a line of the same key was
// written less than the interval ago: then it only counts it, and the next
// line written for the key carries the count as the "suppressed" field.
// It reports whether the line was written.
func (r *Logger) Log(key string, l logrus.FieldLogger, level logrus.Level, msg string) bool {
	now := r.now()
	r.mu.Lock()
	s := r.keys[key]
	if s != nil && now.Sub(s.at) < r.every {
		s.suppressed++
		r.mu.Unlock()
		return false
	}
	if s == nil {
		if len(r.keys) >= maxKeys {
			clear(r.keys)
		}
		s = &slot{}
		r.keys[key] = s
	}
	n := s.suppressed
	s.at, s.suppressed = now, 0
	r.mu.Unlock()
	e := l.WithFields(logrus.Fields{})
	if n > 0 {
		e = l.WithField("suppressed", n)
	}
	e.Log(level, msg)
	return true
}
