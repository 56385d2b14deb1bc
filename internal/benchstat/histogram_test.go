package benchstat

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

func TestBucketRoundTrip(t *testing.T) {
	values := []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 123456789, 1<<40 + 12345, math.MaxInt64, math.MaxUint64}
	prev := -1
	for _, v := range values {
		i := bucket(v)
		if i < 0 || i >= numBuckets {
			t.Fatalf("bucket(%d) = %d out of range", v, i)
		}
		if i < prev {
			t.Fatalf("bucket(%d) = %d is below the previous value's bucket %d", v, i, prev)
		}
		prev = i
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d,%d]", v, i, lo, hi)
		}
		if v >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/128+1e-12 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/128", i, lo, hi)
		}
	}
	// Adjacent buckets tile the value range without gaps.
	for i := 1; i < numBuckets; i++ {
		_, hiPrev := bucketRange(i - 1)
		lo, _ := bucketRange(i)
		if lo != hiPrev+1 {
			t.Fatalf("gap between bucket %d (hi %d) and %d (lo %d)", i-1, hiPrev, i, lo)
		}
	}
}

func TestQuantilesWithinOnePercent(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 100000)
	h := NewHistogram()
	for i := range vals {
		// Log-uniform from 1µs to 10s, like latencies.
		vals[i] = int64(math.Exp(rng.Float64()*math.Log(1e7)) * 1e3)
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := max(int(math.Ceil(q*float64(len(vals)))), 1)
		want := vals[rank-1]
		got := h.Quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.01 {
			t.Errorf("q%v = %d, exact %d (%.2f%% off)", q, got, want, rel*100)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Min() != vals[0] || h.Count() != uint64(len(vals)) {
		t.Fatalf("min/max/count = %d/%d/%d", h.Min(), h.Max(), h.Count())
	}
}

func TestEmptyAndNegative(t *testing.T) {
	h := NewHistogram()
	if h.Quantile(0.5) != 0 || h.Min() != 0 || h.Max() != 0 || h.Mean() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	h.Record(-5)
	if h.Min() != 0 || h.Count() != 1 {
		t.Fatalf("negative value: min %d count %d", h.Min(), h.Count())
	}
}

func TestMergeAndJSON(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for i := int64(1); i <= 1000; i++ {
		a.Record(i * 1000)
		b.Record(i * 1_000_000)
	}
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	decoded := NewHistogram()
	if err := json.Unmarshal(data, decoded); err != nil {
		t.Fatal(err)
	}
	if decoded.Count() != b.Count() || decoded.Max() != b.Max() || decoded.Quantile(0.5) != b.Quantile(0.5) {
		t.Fatalf("round trip changed the histogram: %d/%d/%d", decoded.Count(), decoded.Max(), decoded.Quantile(0.5))
	}
	a.Merge(decoded)
	if a.Count() != 2000 || a.Min() != 1000 || a.Max() != 1_000_000_000 {
		t.Fatalf("merged count/min/max = %d/%d/%d", a.Count(), a.Min(), a.Max())
	}
	// The median of the merge lies between the two sets.
	if m := a.Quantile(0.5); m < 990_000 || m > 1_010_000 {
		t.Fatalf("merged median %d, want ~1,000,000", m)
	}
	if err := json.Unmarshal([]byte(`{"count":2,"buckets":{"3":1}}`), NewHistogram()); err == nil {
		t.Fatal("inconsistent count accepted")
	}
	if err := json.Unmarshal([]byte(`{"count":1,"buckets":{"999999":1}}`), NewHistogram()); err == nil {
		t.Fatal("out-of-range bucket accepted")
	}
}

func TestConcurrentRecord(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10000 {
				h.Record(int64(g*10000 + i))
			}
		})
	}
	wg.Wait()
	if h.Count() != 80000 || h.Min() != 0 || h.Max() != 79999 {
		t.Fatalf("count/min/max = %d/%d/%d", h.Count(), h.Min(), h.Max())
	}
}
