package clientauth

import (
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/ratelog"
)

// failLogEvery spaces the log lines of a dependency that keeps failing.
const failLogEvery = 30 * time.Second

// health follows the outcome of the last exchange with a dependency (the
// auth server, the JWKS URL) for Healthy, and logs its failures: the first
// of a run at once, then at most one line per failLogEvery, and the
// recovery.
type health struct {
	what string // "auth server", "jwks"
	log  logrus.FieldLogger
	rlog *ratelog.Logger
	now  func() time.Time

	mu       sync.Mutex
	known    bool // an exchange has finished
	failures int  // consecutive failed exchanges
	since    time.Time
	lastErr  error
}

// newHealth starts known (healthy) for a dependency asked only on demand,
// and unknown (unhealthy until the first success) for one that must be
// fetched before checks can pass.
func newHealth(what string, known bool, log logrus.FieldLogger, now func() time.Time) *health {
	return &health{what: what, known: known, log: log, rlog: ratelog.New(failLogEvery), now: now}
}

func (h *health) ok() {
	h.mu.Lock()
	n, since := h.failures, h.since
	h.known, h.failures, h.lastErr = true, 0, nil
	h.mu.Unlock()
	if n > 0 {
		h.log.WithFields(logrus.Fields{"failures": n, "since": since}).Infof("%s reachable again", h.what)
	}
}

func (h *health) fail(err error) {
	h.mu.Lock()
	h.known = true
	if h.failures == 0 {
		h.since = h.now()
	}
	h.failures++
	h.lastErr = err
	n := h.failures
	h.mu.Unlock()
	l := h.log.WithError(err).WithField("failures", n)
	if n == 1 {
		l.Warnf("%s failing", h.what)
		return
	}
	h.rlog.Log(h.what, l, logrus.WarnLevel, h.what+" still failing")
}

// report is Healthy's answer for this dependency.
func (h *health) report() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case !h.known:
		return false, h.what + ": no answer yet"
	case h.failures > 0:
		return false, fmt.Sprintf("%s: %d consecutive failures since %s, last: %v",
			h.what, h.failures, h.since.UTC().Format(time.RFC3339), h.lastErr)
	default:
		return true, h.what + ": ok"
	}
}

// failing reports whether the last exchange failed or none has finished.
func (h *health) failing() bool {
	ok, _ := h.report()
	return !ok
}
