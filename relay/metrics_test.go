package relay

import (
	"math"
	"sort"
	"sync"
	"testing"
	"time"
)

func TestLatencyBucketsAscending(t *testing.T) {
	if !sort.Float64sAreSorted(LatencyBuckets) {
		t.Fatalf("LatencyBuckets not ascending: %v", LatencyBuckets)
	}
	for i := 1; i < len(LatencyBuckets); i++ {
		if LatencyBuckets[i] == LatencyBuckets[i-1] {
			t.Fatalf("LatencyBuckets repeats %v", LatencyBuckets[i])
		}
	}
	if got := len(NewHistogram().Snapshot().Counts); got != len(LatencyBuckets)+1 {
		t.Fatalf("snapshot has %d buckets, want %d (one per bound and +Inf)", got, len(LatencyBuckets)+1)
	}
}

func TestHistogramBuckets(t *testing.T) {
	inf := len(LatencyBuckets)
	tests := []struct {
		d      time.Duration
		bucket int
	}{
		{0, 0},
		{time.Nanosecond, 0},
		{500 * time.Microsecond, 0}, // on a bound: counted as <= that bound
		{500*time.Microsecond + time.Nanosecond, 1},
		{time.Millisecond, 1},
		{2 * time.Millisecond, 2},
		{2500 * time.Microsecond, 2},
		{7 * time.Millisecond, 4},
		{100 * time.Millisecond, 7},
		{101 * time.Millisecond, 8},
		{time.Second, 10},
		{3 * time.Second, 12},
		{5 * time.Second, 12},
		{5*time.Second + time.Nanosecond, inf},
		{time.Hour, inf},
	}
	for _, tc := range tests {
		h := NewHistogram()
		h.Observe(tc.d, 1)
		s := h.Snapshot()
		for i, c := range s.Counts {
			want := uint64(0)
			if i == tc.bucket {
				want = 1
			}
			if c != want {
				t.Errorf("Observe(%s): bucket %d has %d, want %d (expected bucket %d)", tc.d, i, c, want, tc.bucket)
			}
		}
		if tc.bucket < inf && tc.d.Seconds() > LatencyBuckets[tc.bucket] {
			t.Errorf("case %s: bucket %d bound %v is below the value", tc.d, tc.bucket, LatencyBuckets[tc.bucket])
		}
	}
}

func TestHistogramWeightsAndSum(t *testing.T) {
	h := NewHistogram()
	h.Observe(2*time.Millisecond, 3)  // bucket 2 (<= 2.5ms)
	h.Observe(2*time.Millisecond, 0)  // no subscribers served: ignored
	h.Observe(40*time.Millisecond, 5) // bucket 6 (<= 50ms)
	h.Observe(10*time.Second, 1)      // +Inf
	s := h.Snapshot()
	want := make([]uint64, len(LatencyBuckets)+1)
	want[2], want[6], want[len(LatencyBuckets)] = 3, 5, 1
	for i := range want {
		if s.Counts[i] != want[i] {
			t.Fatalf("counts = %v, want %v", s.Counts, want)
		}
	}
	wantSum := 3*0.002 + 5*0.040 + 10.0
	if math.Abs(s.SumSeconds-wantSum) > 1e-9 {
		t.Fatalf("SumSeconds = %v, want %v", s.SumSeconds, wantSum)
	}
}

func TestHistogramSnapshotIsACopy(t *testing.T) {
	h := NewHistogram()
	h.Observe(time.Millisecond, 1)
	s := h.Snapshot()
	s.Counts[1] = 99
	if got := h.Snapshot().Counts[1]; got != 1 {
		t.Fatalf("changing a snapshot changed the histogram: bucket 1 = %d", got)
	}
	h.Observe(time.Millisecond, 1)
	if s.Counts[1] != 99 {
		t.Fatal("observing changed an earlier snapshot")
	}
}

func TestHistogramConcurrentObserve(t *testing.T) {
	h := NewHistogram()
	const goroutines, each = 8, 1000
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				h.Observe(time.Duration(i)*time.Millisecond, 2)
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, c := range h.Snapshot().Counts {
		total += c
	}
	if total != goroutines*each*2 {
		t.Fatalf("histogram holds %d observations, want %d", total, goroutines*each*2)
	}
	// Sum of i ms for i < each, twice per goroutine.
	wantSum := float64(goroutines*2) * float64(each*(each-1)/2) / 1000
	if got := h.Snapshot().SumSeconds; math.Abs(got-wantSum) > 1e-6 {
		t.Fatalf("SumSeconds = %v, want %v", got, wantSum)
	}
}

func TestMetricsSnapshot(t *testing.T) {
	m := newMetrics()
	empty := m.Snapshot()
	if empty.Disconnects == nil || empty.UpstreamErrors == nil || empty.Refused == nil {
		t.Fatal("an empty snapshot has nil maps")
	}
	if len(empty.Latency.Counts) != len(LatencyBuckets)+1 {
		t.Fatalf("empty snapshot latency has %d buckets", len(empty.Latency.Counts))
	}

	m.ClientsTotal.Add(1)
	m.EventsIn.Add(2)
	m.Deliveries.Add(3)
	m.UpstreamConnects.Add(4)
	m.Reparents.Add(5)
	m.Gaps.Add(6)
	m.SlowPath.Add(7)
	m.disconnect(ReasonLag)
	m.disconnect(ReasonLag)
	m.disconnect(ReasonWriteTimeout)
	m.upstreamError("transport")
	m.upstreamError("503")
	m.upstreamError("503")
	m.Refused("max_clients")
	m.observe(3*time.Millisecond, 4)

	s := m.Snapshot()
	counters := []struct {
		name      string
		got, want uint64
	}{
		{"ClientsTotal", s.ClientsTotal, 1},
		{"EventsIn", s.EventsIn, 2},
		{"Deliveries", s.Deliveries, 3},
		{"UpstreamConnects", s.UpstreamConnects, 4},
		{"Reparents", s.Reparents, 5},
		{"Gaps", s.Gaps, 6},
		{"SlowPath", s.SlowPath, 7},
		{"Disconnects[lag]", s.Disconnects[ReasonLag], 2},
		{"Disconnects[write_timeout]", s.Disconnects[ReasonWriteTimeout], 1},
		{"Disconnects[write_error]", s.Disconnects[ReasonWriteError], 0},
		{"UpstreamErrors[transport]", s.UpstreamErrors["transport"], 1},
		{"UpstreamErrors[503]", s.UpstreamErrors["503"], 2},
		{"Refused[max_clients]", s.Refused["max_clients"], 1},
		{"Latency[<=5ms]", s.Latency.Counts[3], 4},
	}
	for _, c := range counters {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if len(s.Disconnects) != 2 || len(s.UpstreamErrors) != 2 || len(s.Refused) != 1 {
		t.Errorf("snapshot maps hold unexpected keys: %v %v %v", s.Disconnects, s.UpstreamErrors, s.Refused)
	}

	// The snapshot is detached from the live counters in both directions.
	s.Disconnects[ReasonLag] = 100
	s.UpstreamErrors["new"] = 1
	s.Refused["max_clients"] = 100
	m.disconnect(ReasonWriteError)
	again := m.Snapshot()
	if again.Disconnects[ReasonLag] != 2 || again.UpstreamErrors["new"] != 0 || again.Refused["max_clients"] != 1 {
		t.Fatalf("changing a snapshot changed the metrics: %+v", again)
	}
	if _, ok := s.Disconnects[ReasonWriteError]; ok {
		t.Fatal("a later disconnect showed up in an earlier snapshot")
	}
	if again.Disconnects[ReasonWriteError] != 1 {
		t.Fatalf("Disconnects[write_error] = %d, want 1", again.Disconnects[ReasonWriteError])
	}
}

func TestMetricsConcurrentUpdates(t *testing.T) {
	m := newMetrics()
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				m.disconnect(ReasonLag)
				m.upstreamError("idle")
				m.Refused("max_streams")
				m.EventsIn.Add(1)
				_ = m.Snapshot()
			}
		}()
	}
	wg.Wait()
	s := m.Snapshot()
	const want = goroutines * each
	if s.Disconnects[ReasonLag] != want || s.UpstreamErrors["idle"] != want || s.Refused["max_streams"] != want || s.EventsIn != want {
		t.Fatalf("after %d updates each: %+v", want, s)
	}
}
