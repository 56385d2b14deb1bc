package main

import (
	"sync/atomic"
	"time"

	"github.com/ssemesh/ssemesh/internal/benchstat"
)

// urlResult is what one worker saw of one URL; it merges across workers.
//
// Two views meet here. The cohort fields count the clients first sent to
// the URL (their home), wherever they later failed over to: loss is a
// property of a client across all its sessions. The others count what
// happened on the URL itself, whichever client it was.
type urlResult struct {
	// The cohort.
	Clients     int            `json:"clients"`
	Connected   int            `json:"connected"` // connected at least once, anywhere
	Failed      int            `json:"failed"`    // never connected
	Late        int            `json:"late"`      // first connected after T0
	FailReasons map[string]int `json:"fail_reasons"`
	Distinct    int64          `json:"distinct"` // in-window seqs, first receipts
	Dups        int64          `json:"dups"`
	Unparsed    int64          `json:"unparsed"`

	// The URL itself. Sessions counts those established (past the
	// response headers); Reconnects those that were not a client's
	// first, Failovers those whose client's previous session was on
	// another URL. Churns are sessions here that the client ended to
	// reconnect of its own accord. Drops are sessions here that ended
	// early, Refusals attempts answered without a stream (by status and
	// error code), Errors attempts that got no answer; each by reason.
	Sessions   int            `json:"sessions"`
	Reconnects int            `json:"reconnects"`
	Failovers  int            `json:"failovers"`
	Churns     int            `json:"churns"`
	Drops      map[string]int `json:"drops"`
	Refusals   map[string]int `json:"refusals"`
	Errors     map[string]int `json:"errors"`
	// Clients with a session open on the URL at T0 and at T1.
	ConnectedT0 int `json:"connected_t0"`
	ConnectedT1 int `json:"connected_t1"`
	// Latency of the first receipts that came through this URL.
	Latency *benchstat.Histogram `json:"latency"`
}

func newURLResult() *urlResult {
	return &urlResult{
		FailReasons: map[string]int{}, Drops: map[string]int{}, Refusals: map[string]int{}, Errors: map[string]int{},
		Latency: benchstat.NewHistogram(),
	}
}

func addCounts(dst *map[string]int, src map[string]int) {
	if len(src) == 0 {
		return
	}
	if *dst == nil {
		*dst = map[string]int{}
	}
	for k, v := range src {
		(*dst)[k] += v
	}
}

// merge adds o into r.
func (r *urlResult) merge(o *urlResult) {
	r.Clients += o.Clients
	r.Connected += o.Connected
	r.Failed += o.Failed
	r.Late += o.Late
	addCounts(&r.FailReasons, o.FailReasons)
	r.Distinct += o.Distinct
	r.Dups += o.Dups
	r.Unparsed += o.Unparsed
	r.Sessions += o.Sessions
	r.Reconnects += o.Reconnects
	r.Failovers += o.Failovers
	r.Churns += o.Churns
	addCounts(&r.Drops, o.Drops)
	addCounts(&r.Refusals, o.Refusals)
	addCounts(&r.Errors, o.Errors)
	r.ConnectedT0 += o.ConnectedT0
	r.ConnectedT1 += o.ConnectedT1
	if r.Latency == nil {
		r.Latency = benchstat.NewHistogram()
	}
	r.Latency.Merge(o.Latency)
}

// mergeURLs merges per-URL results index by index.
func mergeURLs(dst []*urlResult, src []*urlResult) []*urlResult {
	for len(dst) < len(src) {
		dst = append(dst, newURLResult())
	}
	for i, o := range src {
		if o != nil {
			dst[i].merge(o)
		}
	}
	return dst
}

// urlLive is the state of one URL that the clients of a worker update as
// they go and the timeline samples.
type urlLive struct {
	connected atomic.Int64 // sessions open now
	serving   atomic.Int64 // ... that have received an event
	sessions  atomic.Int64 // established, ever
	refused   atomic.Int64 // attempts answered without a stream, ever
	latency   *benchstat.Histogram
}

// timeline holds, for every URL, a sample of its live state every Every
// from Start: sample k is taken at Start + k*Every. All workers of a run
// sample at the same instants, so their timelines add up index by index.
type timeline struct {
	Start time.Time     `json:"start"`
	Every time.Duration `json:"every"`
	URLs  []urlSeries   `json:"urls"`
}

// urlSeries is one URL's samples: two gauges (sessions open; open and
// receiving) and two running totals (sessions established; refusals).
type urlSeries struct {
	Connected []int64 `json:"connected"`
	Serving   []int64 `json:"serving"`
	Sessions  []int64 `json:"sessions"`
	Refused   []int64 `json:"refused"`
}

func (s *urlSeries) add(l *urlLive) {
	s.Connected = append(s.Connected, l.connected.Load())
	s.Serving = append(s.Serving, l.serving.Load())
	s.Sessions = append(s.Sessions, l.sessions.Load())
	s.Refused = append(s.Refused, l.refused.Load())
}

func (s *urlSeries) len() int { return len(s.Connected) }

// addSeries sums b into a, index by index, over the length both have.
func addSeries(a, b []int64) []int64 {
	if a == nil {
		return append([]int64(nil), b...)
	}
	n := min(len(a), len(b))
	a = a[:n]
	for i := range n {
		a[i] += b[i]
	}
	return a
}

// merge adds o into t; a sample only one of them took is dropped.
func (t *timeline) merge(o *timeline) {
	if o == nil {
		return
	}
	if t.Every == 0 {
		t.Start, t.Every = o.Start, o.Every
	}
	for len(t.URLs) < len(o.URLs) {
		t.URLs = append(t.URLs, urlSeries{})
	}
	for i, s := range o.URLs {
		d := &t.URLs[i]
		d.Connected = addSeries(d.Connected, s.Connected)
		d.Serving = addSeries(d.Serving, s.Serving)
		d.Sessions = addSeries(d.Sessions, s.Sessions)
		d.Refused = addSeries(d.Refused, s.Refused)
	}
}

// samples is the number of samples every URL has.
func (t *timeline) samples() int {
	if t == nil || len(t.URLs) == 0 {
		return 0
	}
	n := t.URLs[0].len()
	for _, s := range t.URLs[1:] {
		n = min(n, s.len())
	}
	return n
}

// span returns the first sample at or after from and the last at or
// before to; ok is false when there are not two such samples.
func (t *timeline) span(from, to time.Time) (k0, k1 int, ok bool) {
	n := t.samples()
	k0, k1 = -1, -1
	for k := range n {
		at := t.at(k)
		if k0 < 0 && !at.Before(from) {
			k0 = k
		}
		if !at.After(to) {
			k1 = k
		}
	}
	return k0, k1, k0 >= 0 && k1 > k0
}

// at is the time of sample k.
func (t *timeline) at(k int) time.Time { return t.Start.Add(time.Duration(k) * t.Every) }

// total sums one series over all URLs, sample by sample.
func (t *timeline) total(series func(*urlSeries) []int64) []int64 {
	out := make([]int64, t.samples())
	for i := range t.URLs {
		s := series(&t.URLs[i])
		for k := range out {
			out[k] += s[k]
		}
	}
	return out
}

// sumCounts returns the sum of several reason -> count maps.
func sumCounts(ms ...map[string]int) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		addCounts(&out, m)
	}
	return out
}
