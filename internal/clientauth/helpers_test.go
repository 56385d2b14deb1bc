package clientauth

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeClock is the clock for expiry: tests move it instead of sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testJWKSTiming keeps the background loop out of the way: after the first
// fetch, only fetches asked for by unknown key ids happen during a test.
var testJWKSTiming = jwksTiming{
	refresh:  time.Hour,
	retryMin: time.Hour,
	retryMax: time.Hour,
	minGap:   10 * time.Second,
	fetch:    5 * time.Second,
}

func testLogger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// newTestAuth builds an Auth on clk with o's hooks, closed at the end of
// the test.
func newTestAuth(t *testing.T, cfg Config, clk *fakeClock, o options) *Auth {
	t.Helper()
	o.now = clk.Now
	if o.jwks == (jwksTiming{}) {
		o.jwks = testJWKSTiming
	}
	a, err := newAuth(cfg, testLogger(), o)
	if err != nil {
		t.Fatalf("newAuth: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

// recv waits for one value from ch; a test that stalls fails rather than
// hangs.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func dur(d time.Duration) *time.Duration { return &d }

func check(a *Auth, r Request) Decision { return a.Check(context.Background(), r) }

// wantDecision compares the fields a test cares about.
func wantDecision(t *testing.T, got Decision, allow bool, status int, reason string) {
	t.Helper()
	if got.Allow != allow || (!allow && (got.Status != status || got.Reason != reason)) {
		t.Fatalf("decision = {Allow:%v Status:%d Reason:%q Detail:%q}, want {Allow:%v Status:%d Reason:%q}",
			got.Allow, got.Status, got.Reason, got.Detail, allow, status, reason)
	}
	if allow && (got.Status != 0 || got.Reason != "") {
		t.Fatalf("allowed decision carries Status %d Reason %q", got.Status, got.Reason)
	}
}

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}
