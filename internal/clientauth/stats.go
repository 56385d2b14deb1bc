package clientauth

import (
	"sync/atomic"
	"time"
)

// LatencyBounds are the upper bounds, in seconds, of the Check latency
// histogram's buckets: from a cache hit to a check that ran into Timeout.
var LatencyBounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Stats counts what an Auth did since New. The node exports it as metrics;
// every counter only grows.
type Stats struct {
	// Allowed counts admitted checks.
	Allowed uint64
	// Refused counts refused checks by Reason; every reason is present.
	Refused map[string]uint64
	// AuthRequests counts requests sent to the auth server (delegate).
	AuthRequests uint64
	// CacheHits counts checks answered from the verdict cache (delegate).
	CacheHits uint64
	// Merged counts checks that waited for another check's request to the
	// auth server instead of making their own (delegate).
	Merged uint64
	// JWKSFetches counts fetches of the JWKS, JWKSFailures the failed ones.
	JWKSFetches  uint64
	JWKSFailures uint64
	// Latency is the time Check took.
	Latency Histogram
}

// Histogram is a snapshot of fixed buckets.
type Histogram struct {
	// Bounds are the buckets' upper bounds in seconds, ascending
	// (LatencyBounds).
	Bounds []float64
	// Counts[i] counts observations in (Bounds[i-1], Bounds[i]];
	// Counts[len(Bounds)] those above the last bound.
	Counts []uint64
	// Count is the number of observations, the sum of Counts.
	Count uint64
	// Sum is the sum of the observations in seconds.
	Sum float64
}

// Cumulative returns, for each bound, the observations at or below it: the
// form prometheus.MustNewConstHistogram takes (with Count and Sum).
func (h Histogram) Cumulative() map[float64]uint64 {
	m := make(map[float64]uint64, len(h.Bounds))
	var n uint64
	for i, b := range h.Bounds {
		n += h.Counts[i]
		m[b] = n
	}
	return m
}

// counters is the live form of Stats: plain atomics, so that a check never
// waits for a reader.
type counters struct {
	allowed      atomic.Uint64
	refused      [len(reasons)]atomic.Uint64
	authRequests atomic.Uint64
	cacheHits    atomic.Uint64
	merged       atomic.Uint64
	jwksFetches  atomic.Uint64
	jwksFailures atomic.Uint64
	buckets      []atomic.Uint64 // len(LatencyBounds)+1
	sumNanos     atomic.Uint64
}

func newCounters() *counters {
	return &counters{buckets: make([]atomic.Uint64, len(LatencyBounds)+1)}
}

func (c *counters) observe(d Decision, took time.Duration) {
	if d.Allow {
		c.allowed.Add(1)
	} else {
		c.refused[reasonIndex(d.Reason)].Add(1)
	}
	s := took.Seconds()
	i := 0
	for i < len(LatencyBounds) && s > LatencyBounds[i] {
		i++
	}
	c.buckets[i].Add(1)
	c.sumNanos.Add(uint64(max(took, 0)))
}

// reasonIndex maps a refusal reason to its counter; a reason not in the
// list (a bug) counts as auth_unavailable rather than being lost.
func reasonIndex(r string) int {
	for i, x := range reasons {
		if x == r {
			return i
		}
	}
	return reasonIndex(ReasonAuthUnavailable)
}

// snapshot reads the counters. Under concurrent checks the fields may be a
// few observations apart, but Count is always the sum of Counts.
func (c *counters) snapshot() Stats {
	s := Stats{
		Allowed:      c.allowed.Load(),
		Refused:      make(map[string]uint64, len(reasons)),
		AuthRequests: c.authRequests.Load(),
		CacheHits:    c.cacheHits.Load(),
		Merged:       c.merged.Load(),
		JWKSFetches:  c.jwksFetches.Load(),
		JWKSFailures: c.jwksFailures.Load(),
		Latency: Histogram{
			Bounds: append([]float64(nil), LatencyBounds...),
			Counts: make([]uint64, len(c.buckets)),
			Sum:    time.Duration(c.sumNanos.Load()).Seconds(),
		},
	}
	for i, r := range reasons {
		s.Refused[r] = c.refused[i].Load()
	}
	for i := range c.buckets {
		n := c.buckets[i].Load()
		s.Latency.Counts[i] = n
		s.Latency.Count += n
	}
	return s
}
