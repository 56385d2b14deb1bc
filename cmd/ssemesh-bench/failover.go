package main

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// How a client that lost its stream picks the URL of its next attempt.
const (
	// failoverRandom picks uniformly among the other URLs, as a load
	// balancer in front of several nodes spreads the returning clients.
	failoverRandom = "random"
	// failoverNext takes the URL after the current one in the list.
	failoverNext = "next"
)

// namedURL is one load target as given on the command line: "NAME=URL",
// or a bare URL named by its host:port.
type namedURL struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// urlLabel matches the "NAME=" prefix of a named target.
var urlLabel = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9_.-]*)=(.+)$`)

// parseNamedURL splits "NAME=URL" and validates the URL as a load target.
func parseNamedURL(s string) (namedURL, error) {
	s = strings.TrimSpace(s)
	var n namedURL
	if m := urlLabel.FindStringSubmatch(s); m != nil && !strings.Contains(m[1], "://") {
		n.Name, n.URL = m[1], m[2]
	} else {
		n.URL = s
	}
	u, _, err := parseTarget(n.URL)
	if err != nil {
		return n, err
	}
	if n.Name == "" {
		n.Name = u.Host
	}
	return n, nil
}

// homeURL is the URL client i is sent to first: clients are dealt out to
// the URLs in turn, so each gets an even share whatever the number of
// worker processes.
func homeURL(i, urls int) int {
	if urls <= 1 {
		return 0
	}
	return i % urls
}

// failoverURL picks the URL of the attempt after one on cur failed or its
// stream ended: never cur itself when there is another. intn(n) returns a
// random integer in [0, n).
func failoverURL(cur, urls int, mode string, intn func(int) int) int {
	if urls <= 1 {
		return 0
	}
	if mode == failoverNext {
		return (cur + 1) % urls
	}
	k := intn(urls - 1)
	if k >= cur {
		k++
	}
	return k
}

// churnURL picks the URL a client goes to when it reconnects of its own
// accord (a page reload): any of them, as the load balancer decides.
func churnURL(urls int, intn func(int) int) int {
	if urls <= 1 {
		return 0
	}
	return intn(urls)
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an
// HTTP-date (RFC 9110). ok is false for an absent or malformed value; a
// date in the past is a zero delay.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// parseRetryField reads the value of an SSE retry: field, the reconnection
// time in milliseconds; WHATWG ignores a value that is not all ASCII
// digits.
func parseRetryField(v []byte) (time.Duration, bool) {
	if len(v) == 0 || len(v) > 12 {
		return 0, false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	ms, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// maxBackoffDoublings bounds the growth of the wait over consecutive failed
// attempts: at most 8 times the reconnection time.
const maxBackoffDoublings = 3

// delayPolicy is how long a client waits before its next attempt.
type delayPolicy struct {
	// Retry is the reconnection time while the server has sent no retry:
	// field.
	Retry time.Duration
	// Jitter spreads a wait over [1-Jitter, 1+Jitter] times its base.
	Jitter float64
}

// delay is the wait before the next attempt. A refusal's Retry-After
// (retryAfter > 0) is honoured: the wait is never shorter, and up to
// Jitter longer. Otherwise the base is the stream's retry: value (when
// serverRetry is set) or p.Retry, spread by ±Jitter and doubled for each
// consecutive attempt that got no stream (failures), up to 8 times. rnd
// returns a random float64 in [0, 1).
func (p delayPolicy) delay(retryAfter time.Duration, serverRetry time.Duration, hasServerRetry bool, failures int, rnd func() float64) time.Duration {
	if retryAfter > 0 {
		return retryAfter + time.Duration(float64(retryAfter)*p.Jitter*rnd())
	}
	base := p.Retry
	if hasServerRetry {
		base = serverRetry
	}
	base <<= min(max(failures, 0), maxBackoffDoublings)
	f := 1 - p.Jitter + 2*p.Jitter*rnd()
	return time.Duration(float64(base) * f)
}

// retryAfterOf is the Retry-After of a 503 or 429 refusal, 0 otherwise.
func retryAfterOf(err error) time.Duration {
	var se statusError
	if errors.As(err, &se) && (se.code == http.StatusServiceUnavailable || se.code == http.StatusTooManyRequests) {
		return se.retryAfter
	}
	return 0
}

// parseChurn reads a churn rate such as "5%/min": the share of clients
// that reconnect of their own accord per period. The period is a Go
// duration ("10m", "30s") or a unit alone: s, m or min, h. It returns the
// mean time between two reconnects of one client (each client reconnects
// at random, as a Poisson process); "" and "0" are no churn.
func parseChurn(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return 0, nil
	}
	pct, per, ok := strings.Cut(s, "/")
	pctStr, isPct := strings.CutSuffix(strings.TrimSpace(pct), "%")
	if !ok || !isPct {
		return 0, fmt.Errorf("churn %q: want PERCENT%%/PERIOD, e.g. 5%%/min", s)
	}
	p, err := strconv.ParseFloat(pctStr, 64)
	if err != nil || p < 0 || p > 100 || math.IsNaN(p) {
		return 0, fmt.Errorf("churn %q: the percentage must be a number from 0 to 100", s)
	}
	per = strings.TrimSpace(per)
	var period time.Duration
	switch per {
	case "s", "sec":
		period = time.Second
	case "m", "min":
		period = time.Minute
	case "h", "hour":
		period = time.Hour
	default:
		if period, err = time.ParseDuration(per); err != nil || period <= 0 {
			return 0, fmt.Errorf("churn %q: period %q is not a positive duration", s, per)
		}
	}
	if p == 0 {
		return 0, nil
	}
	return time.Duration(float64(period) * 100 / p), nil
}
