// Package retry holds the pieces every reconnect loop of a node shares: a
// jittered exponential backoff, a sleep that ends with its context, and a
// count of consecutive failures that says which of them to log (the first
// and every Nth), so that a long outage writes a few lines, not thousands.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields exponentially growing waits: the wait of attempt n (from 0)
// has the ceiling Min·2ⁿ, capped at Max, and lies in
// [ceiling·(1-Jitter), ceiling]. Jitter spreads the retries of many nodes
// that failed together (one Consul outage, one back-end restart), so they do
// not return in lockstep. A Max below Min counts as Min.
//
// The zero value waits 0 every time. A Backoff is not safe for concurrent
// use; each loop keeps its own.
type Backoff struct {
	Min, Max time.Duration
	// Jitter is the fraction of each wait that is random, from 0 (none)
	// to 1 (anything from 0 up to the ceiling); 0.5 gives [d/2, d].
	Jitter float64

	attempt int
}

// HalfJitter is the Jitter of every loop in ssemesh: waits in [d/2, d].
const HalfJitter = 0.5

// Next returns the wait before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	d := b.Delay(b.attempt)
	b.attempt++
	return d
}

// Reset starts over from Min: the next wait is that of attempt 0.
func (b *Backoff) Reset() { b.attempt = 0 }

// Delay returns a jittered wait for attempt n without changing b, for
// callers that keep the attempt count themselves (a retrying HTTP client
// asks with its own).
func (b Backoff) Delay(n int) time.Duration {
	d := b.ceiling(n)
	j := time.Duration(float64(d) * min(max(b.Jitter, 0), 1))
	if j <= 0 {
		return d
	}
	return d - rand.N(j+1)
}

// ceiling returns the wait of attempt n before jitter: Min·2ⁿ capped at Max.
func (b Backoff) ceiling(n int) time.Duration {
	lo, hi := max(b.Min, 0), max(b.Max, b.Min, 0)
	if lo == 0 {
		return 0
	}
	d := lo
	for i := 0; i < n && d < hi; i++ {
		if d > hi/2 {
			return hi
		}
		d *= 2
	}
	return min(d, hi)
}

// Sleep waits d, or less when ctx ends first; it reports whether ctx is
// still live. A d of zero or less returns at once.
func Sleep(ctx context.Context, d time.Duration) bool {
	return SleepWake(ctx, d, nil) // a nil channel never delivers
}

// defaultLogEvery is the spacing of Failures when Every is 0.
const defaultLogEvery = 10

// Failures counts the consecutive failures of one loop and says which to
// log: the first of a run and every Every-th after it. Reset ends the run,
// so the recovery can be logged once with the count.
//
// The zero value logs the first and every tenth. It is not safe for
// concurrent use.
type Failures struct {
	// Every is the spacing of logged failures after the first; 0 means
	// 10, 1 logs all.
	Every int

	n int
}

// Add counts one failure. It returns the count of the run so far and
// whether this failure is one to log.
func (f *Failures) Add() (n int, log bool) {
	f.n++
	every := f.Every
	if every <= 0 {
		every = defaultLogEvery
	}
	return f.n, f.n == 1 || f.n%every == 0
}

// Reset ends the run and returns how many failures it had (0: none, so
// there is no recovery to report).
func (f *Failures) Reset() int {
	n := f.n
	f.n = 0
	return n
}
