package ssetest

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/sirupsen/logrus"
)

// Logger is a logrus logger that writes each entry to t.Log, at warning
// level, so that a test's output shows warnings and errors only. Raise the
// level with SetLevel when a test needs more.
//
// t.Log panics once the test has ended: use BufferedLogger for code whose
// goroutines may log after that.
func Logger(t testing.TB) *logrus.Logger {
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	l.SetOutput(LogWriter{T: t})
	return l
}

// LogWriter writes to T.Log, one call per Write, without the trailing line
// end.
type LogWriter struct{ T testing.TB }

func (w LogWriter) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// BufferedLogMax is how much of a BufferedLogger's output (its end) a
// failed test shows.
const BufferedLogMax = 64 << 10

// BufferedLogger is a logrus logger at level whose output is kept in memory
// and shown (its last BufferedLogMax bytes) only when the test fails. It is
// safe to use after the test has ended, which t.Log is not.
func BufferedLogger(t testing.TB, level logrus.Level) *logrus.Logger {
	t.Helper()
	buf := &LockedBuffer{}
	l := logrus.New()
	l.SetOutput(buf)
	l.SetLevel(level)
	t.Cleanup(func() {
		if t.Failed() {
			s := buf.String()
			if len(s) > BufferedLogMax {
				s = s[len(s)-BufferedLogMax:]
			}
			t.Logf("log:\n%s", s)
		}
	})
	return l
}

// LockedBuffer collects log output from several goroutines; memberlist
// and other libraries may still log after a test ended, which t.Log would
// not allow.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
