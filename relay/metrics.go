package relay

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Disconnect reasons for slow or failed subscribers.
const (
	ReasonWriteTimeout = "write_timeout" // a blocking write missed its deadline
	ReasonLag          = "lag"           // fell more than ClientLagBytes behind
	ReasonBehindRing   = "behind_buffer" // the ring dropped events it had not sent yet
	ReasonWriteError   = "write_error"   // the connection failed (usually the client left)
	ReasonExpired      = "expired"       // its credentials expired (Request.Expires)
)

// Metrics are the relay's counters, cheap enough for the fan-out path
// (atomics, touched once per batch and writer, not per event and client).
type Metrics struct {
	ClientsTotal     atomic.Uint64 // subscribers ever attached
	EventsIn         atomic.Uint64 // upstream blocks received, all streams
	Deliveries       atomic.Uint64 // blocks written to subscribers
	UpstreamConnects atomic.Uint64 // successful upstream connections (200)
	Reparents        atomic.Uint64 // make-before-break switches to a new target
	Gaps             atomic.Uint64 // subscribers told of an unfillable gap
	CatchUps         atomic.Uint64 // upstream requests for history older than the ring
	SlowPath         atomic.Uint64 // moves of a subscriber whose socket was full to the catch-up path

	mu          sync.Mutex
	disconnects map[string]uint64
	upErrors    map[string]uint64
	refused     map[string]uint64
	catchUpNo   map[string]uint64
	latency     *Histogram
}

func newMetrics() *Metrics {
	return &Metrics{
		disconnects: make(map[string]uint64),
		upErrors:    make(map[string]uint64),
		refused:     make(map[string]uint64),
		latency:     NewHistogram(),

		catchUpNo: make(map[string]uint64),
	}
}

func (m *Metrics) disconnect(reason string) {
	m.mu.Lock()
	m.disconnects[reason]++
	m.mu.Unlock()
}

func (m *Metrics) upstreamError(kind string) {
	m.mu.Lock()
	m.upErrors[kind]++
	m.mu.Unlock()
}

// Refused counts a subscriber refused before its stream started, by reason.
func (m *Metrics) Refused(reason string) {
	m.mu.Lock()
	m.refused[reason]++
	m.mu.Unlock()
}

// catchUpRefused counts a history fetch not made, by the budget that
// refused it (stream, node, client).
func (m *Metrics) catchUpRefused(scope string) {
	m.mu.Lock()
	m.catchUpNo[scope]++
	m.mu.Unlock()
}

// observe records one write's delay from event arrival, weighted by the
// number of subscribers it served.
func (m *Metrics) observe(d time.Duration, n uint64) {
	m.latency.Observe(d, n)
}

// Snapshot is a copy of the counters.
type Snapshot struct {
	ClientsTotal, EventsIn, Deliveries, UpstreamConnects, Reparents, Gaps, CatchUps, SlowPath uint64
	Disconnects                                                                               map[string]uint64
	UpstreamErrors                                                                            map[string]uint64
	Refused                                                                                   map[string]uint64
	CatchUpRefused                                                                            map[string]uint64
	Latency                                                                                   HistogramSnapshot
}

// Snapshot copies the counters.
func (m *Metrics) Snapshot() Snapshot {
	s := Snapshot{
		ClientsTotal:     m.ClientsTotal.Load(),
		EventsIn:         m.EventsIn.Load(),
		Deliveries:       m.Deliveries.Load(),
		UpstreamConnects: m.UpstreamConnects.Load(),
		Reparents:        m.Reparents.Load(),
		Gaps:             m.Gaps.Load(),
		CatchUps:         m.CatchUps.Load(),
		SlowPath:         m.SlowPath.Load(),
		Latency:          m.latency.Snapshot(),
	}
	m.mu.Lock()
	s.Disconnects = copyMap(m.disconnects)
	s.UpstreamErrors = copyMap(m.upErrors)
	s.Refused = copyMap(m.refused)
	s.CatchUpRefused = copyMap(m.catchUpNo)
	m.mu.Unlock()
	return s
}

func copyMap(in map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// LatencyBuckets are the upper bounds (seconds) of the delivery latency
// histogram: from event arrival at this node to the write to a subscriber.
var LatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Histogram is a fixed-bucket, weighted latency histogram; Observe is one
// atomic add per bucket hit.
type Histogram struct {
	counts []atomic.Uint64 // len(LatencyBuckets)+1, last is +Inf
	sumNs  atomic.Uint64
}

// NewHistogram makes an empty histogram over LatencyBuckets.
func NewHistogram() *Histogram {
	return &Histogram{counts: make([]atomic.Uint64, len(LatencyBuckets)+1)}
}

// Observe adds n observations of d.
func (h *Histogram) Observe(d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	sec := d.Seconds()
	i := sort.SearchFloat64s(LatencyBuckets, sec)
	h.counts[i].Add(n)
	h.sumNs.Add(uint64(d.Nanoseconds()) * n)
}

// HistogramSnapshot is a histogram's state: non-cumulative counts per bucket.
type HistogramSnapshot struct {
	Counts     []uint64 // per bucket of LatencyBuckets, then +Inf
	SumSeconds float64
}

// Snapshot copies the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.SumSeconds = float64(h.sumNs.Load()) / 1e9
	return s
}
