// Package benchstat holds the measurement types of ssemesh's load tool: a
// mergeable log-linear histogram for latencies.
package benchstat

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
)

// subBits sets the precision: values are bucketed by their top subBits bits,
// so each power of two is split into 2^(subBits-1) buckets and a bucket is at
// most 1/128 (0.8%) of its values wide.
const (
	subBits    = 8
	subCount   = 1 << subBits // values below this are exact
	halfCount  = subCount / 2 // buckets per power of two above that
	maxShift   = 64 - subBits // largest shift of a uint64 value
	numBuckets = subCount + maxShift*halfCount
)

// Histogram counts non-negative int64 values (e.g. nanoseconds) in
// log-linear buckets of ~1% relative width. Record is safe for concurrent
// use; Merge, quantiles and JSON encoding must not run concurrently with
// Record on the same histogram. Its JSON form is sparse and can be merged
// across processes.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // wraps only after ~584 years of summed nanoseconds
	min    atomic.Int64  // valid when n > 0
	max    atomic.Int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxInt64)
	return h
}

// bucket returns the index of the bucket holding v (v >= 0).
func bucket(v uint64) int {
	if v < subCount {
		return int(v)
	}
	shift := bits.Len64(v) - subBits // >= 1
	top := v >> shift                // in [halfCount*... , subCount)
	return subCount + (shift-1)*halfCount + int(top) - halfCount
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i)
	}
	shift := (i-subCount)/halfCount + 1
	top := uint64((i-subCount)%halfCount + halfCount)
	lo = top << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one value; negative values count as 0 (clock adjustments can
// make a measured delay slightly negative).
func (h *Histogram) Record(v int64) {
	v = max(v, 0)
	h.counts[bucket(uint64(v))].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for cur := h.min.Load(); v < cur && !h.min.CompareAndSwap(cur, v); cur = h.min.Load() {
	}
	for cur := h.max.Load(); v > cur && !h.max.CompareAndSwap(cur, v); cur = h.max.Load() {
	}
}

// Count returns the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Min returns the smallest recorded value, or 0 when empty.
func (h *Histogram) Min() int64 {
	if h.n.Load() == 0 {
		return 0
	}
	return h.min.Load()
}

// Max returns the largest recorded value (exact), or 0 when empty.
func (h *Histogram) Max() int64 { return h.max.Load() }

// Mean returns the exact mean, or 0 when empty.
func (h *Histogram) Mean() float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return float64(h.sum.Load()) / float64(n)
}

// Quantile returns a value within ~1% of the q-quantile (0 <= q <= 1): the
// midpoint of the bucket holding it, clamped to the exact min and max.
func (h *Histogram) Quantile(q float64) int64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(n)))
	rank = max(rank, 1)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, hi := bucketRange(i)
			mid := int64(lo + (hi-lo)/2)
			return min(max(mid, h.Min()), h.Max())
		}
	}
	return h.Max()
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n.Load() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	if m := o.min.Load(); m < h.min.Load() {
		h.min.Store(m)
	}
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}

// histogramJSON is the wire form: bucket index -> count, only non-empty ones.
type histogramJSON struct {
	Count   uint64            `json:"count"`
	Sum     uint64            `json:"sum"`
	Min     int64             `json:"min"`
	Max     int64             `json:"max"`
	Buckets map[string]uint64 `json:"buckets"`
}

// MarshalJSON encodes the histogram sparsely.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	out := histogramJSON{Count: h.n.Load(), Sum: h.sum.Load(), Min: h.Min(), Max: h.Max(), Buckets: map[string]uint64{}}
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			out.Buckets[fmt.Sprint(i)] = c
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON replaces h's content with the encoded histogram.
func (h *Histogram) UnmarshalJSON(data []byte) error {
	var in histogramJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return fmt.Errorf("benchstat: decoding histogram: %w", err)
	}
	var total uint64
	var counts [numBuckets]uint64
	for k, c := range in.Buckets {
		var i int
		if _, err := fmt.Sscan(k, &i); err != nil || i < 0 || i >= numBuckets {
			return fmt.Errorf("benchstat: decoding histogram: bad bucket %q", k)
		}
		counts[i] = c
		total += c
	}
	if total != in.Count {
		return fmt.Errorf("benchstat: decoding histogram: buckets hold %d values, count says %d", total, in.Count)
	}
	for i := range h.counts {
		h.counts[i].Store(counts[i])
	}
	h.n.Store(in.Count)
	h.sum.Store(in.Sum)
	if in.Count == 0 {
		h.min.Store(math.MaxInt64)
		h.max.Store(0)
	} else {
		h.min.Store(in.Min)
		h.max.Store(in.Max)
	}
	return nil
}
