package retry

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

const ms = time.Millisecond

func TestBackoffCeiling(t *testing.T) {
	tests := []struct {
		name     string
		min, max time.Duration
		n        int
		want     time.Duration
	}{
		{"first", 100 * ms, time.Second, 0, 100 * ms},
		{"second", 100 * ms, time.Second, 1, 200 * ms},
		{"third", 100 * ms, time.Second, 3, 800 * ms},
		{"capped", 100 * ms, time.Second, 4, time.Second},
		{"far past the cap", 100 * ms, time.Second, 1000, time.Second},
		{"huge attempt, huge max", time.Nanosecond, math.MaxInt64, math.MaxInt, math.MaxInt64},
		{"max below min counts as min", 300 * ms, 100 * ms, 5, 300 * ms},
		{"min equals max", time.Second, time.Second, 7, time.Second},
		{"zero min never waits", 0, time.Second, 5, 0},
		{"negative min never waits", -time.Second, time.Second, 2, 0},
		{"zero value", 0, 0, 3, 0},
		{"negative attempt is the first", 100 * ms, time.Second, -1, 100 * ms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := Backoff{Min: tc.min, Max: tc.max}
			if got := b.ceiling(tc.n); got != tc.want {
				t.Fatalf("ceiling(%d) = %s, want %s", tc.n, got, tc.want)
			}
			// Without jitter the wait is the ceiling itself.
			if got := b.Delay(tc.n); got != tc.want {
				t.Fatalf("Delay(%d) without jitter = %s, want %s", tc.n, got, tc.want)
			}
		})
	}
}

func TestDelayJitterBounds(t *testing.T) {
	tests := []struct {
		name   string
		jitter float64
		lo     float64 // fraction of the ceiling
	}{
		{"half", HalfJitter, 0.5},
		{"quarter", 0.25, 0.75},
		{"full", 1, 0},
		{"above one counts as full", 3, 0},
		{"negative counts as none", -1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := Backoff{Min: 100 * ms, Max: time.Second, Jitter: tc.jitter}
			for n := range 8 {
				ceil := b.ceiling(n)
				lo := time.Duration(float64(ceil) * tc.lo)
				seen := map[time.Duration]bool{}
				for range 200 {
					d := b.Delay(n)
					if d < lo || d > ceil {
						t.Fatalf("Delay(%d) = %s outside [%s, %s]", n, d, lo, ceil)
					}
					seen[d] = true
				}
				if tc.lo < 1 && len(seen) < 2 {
					t.Fatalf("Delay(%d) with jitter %v never varied: %v", n, tc.jitter, seen)
				}
			}
		})
	}
}

func TestNextAndReset(t *testing.T) {
	b := Backoff{Min: 10 * ms, Max: 50 * ms}
	want := []time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms}
	for i, w := range want {
		if got := b.Next(); got != w {
			t.Fatalf("Next #%d = %s, want %s", i, got, w)
		}
	}
	b.Reset()
	if got := b.Next(); got != 10*ms {
		t.Fatalf("Next after Reset = %s, want 10ms", got)
	}

	jb := Backoff{Min: 10 * ms, Max: 50 * ms, Jitter: HalfJitter}
	for i := range 10 {
		ceil := jb.ceiling(i)
		if d := jb.Next(); d < ceil/2 || d > ceil {
			t.Fatalf("jittered Next #%d = %s outside [%s, %s]", i, d, ceil/2, ceil)
		}
	}
}

func TestSleep(t *testing.T) {
	tests := []struct {
		name     string
		d        time.Duration
		cancelAt time.Duration // 0: never
		dead     bool          // ctx ended before the call
		want     bool
		took     time.Duration
	}{
		{name: "full wait", d: time.Second, want: true, took: time.Second},
		{name: "cancelled midway", d: time.Second, cancelAt: 300 * ms, want: false, took: 300 * ms},
		{name: "cancel after the wait", d: 100 * ms, cancelAt: time.Second, want: true, took: 100 * ms},
		{name: "zero wait", d: 0, want: true},
		{name: "negative wait", d: -time.Second, want: true},
		{name: "zero wait on a dead context", d: 0, dead: true, want: false},
		{name: "wait on a dead context", d: time.Hour, dead: true, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if tc.dead {
					cancel()
				}
				if tc.cancelAt > 0 {
					time.AfterFunc(tc.cancelAt, cancel)
				}
				start := time.Now()
				if got := Sleep(ctx, tc.d); got != tc.want {
					t.Fatalf("Sleep(%s) = %v, want %v", tc.d, got, tc.want)
				}
				if took := time.Since(start); took != tc.took {
					t.Fatalf("Sleep(%s) took %s, want %s", tc.d, took, tc.took)
				}
			})
		})
	}
}

// TestBackoffLoopTiming runs a loop the way mesh and relay do, on the
// bubble's clock: the attempts are spaced exactly by the ceilings.
func TestBackoffLoopTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 1400*ms)
		defer cancel()
		b := Backoff{Min: 100 * ms, Max: 400 * ms}
		start := time.Now()
		var at []time.Duration
		for Sleep(ctx, b.Next()) {
			at = append(at, time.Since(start))
		}
		// The fifth wait (to 1.5s) is cut by the deadline.
		want := []time.Duration{100 * ms, 300 * ms, 700 * ms, 1100 * ms}
		if len(at) != len(want) {
			t.Fatalf("attempts at %v, want %v", at, want)
		}
		for i := range at {
			if at[i] != want[i] {
				t.Fatalf("attempt %d at %s, want %s (all: %v)", i, at[i], want[i], at)
			}
		}
		if took := time.Since(start); took != 1400*ms {
			t.Fatalf("loop ended after %s, want the 1.4s deadline", took)
		}
	})
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name   string
		every  int
		n      int
		logged []int
	}{
		{"default spacing", 0, 35, []int{1, 10, 20, 30}},
		{"every third", 3, 10, []int{1, 3, 6, 9}},
		{"every one", 1, 4, []int{1, 2, 3, 4}},
		{"negative is default", -5, 12, []int{1, 10}},
		{"single failure", 0, 1, []int{1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := Failures{Every: tc.every}
			var logged []int
			for i := 1; i <= tc.n; i++ {
				n, log := f.Add()
				if n != i {
					t.Fatalf("Add #%d returned count %d", i, n)
				}
				if log {
					logged = append(logged, n)
				}
			}
			if !equal(logged, tc.logged) {
				t.Fatalf("logged %v, want %v", logged, tc.logged)
			}
			if got := f.Reset(); got != tc.n {
				t.Fatalf("Reset() = %d, want %d", got, tc.n)
			}
			if got := f.Reset(); got != 0 {
				t.Fatalf("second Reset() = %d, want 0 (no recovery to report)", got)
			}
			// A new run logs its first failure again.
			if n, log := f.Add(); n != 1 || !log {
				t.Fatalf("first failure of a new run: count %d, log %v", n, log)
			}
		})
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
