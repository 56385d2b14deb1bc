package ssetest

import (
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestWaits(t *testing.T) {
	// after is a condition that holds from its n-th check on.
	after := func(n int32) func() bool {
		var calls atomic.Int32
		return func() bool { return calls.Add(1) >= n }
	}
	never := func() bool { return false }
	tests := []struct {
		name string
		wait func(t testing.TB)
		fail string // "" when the wait must pass
	}{
		{"eventually at once", func(t testing.TB) { Eventually(t, "x", time.Second, after(1)) }, ""},
		{"eventually after checks", func(t testing.TB) { Eventually(t, "x", time.Second, after(5)) }, ""},
		{"eventually times out", func(t testing.TB) { Eventually(t, "the thing", 30*time.Millisecond, never) }, "timed out after 30ms waiting for the thing"},
		{"every times out", func(t testing.TB) { EventuallyEvery(t, "slow", 30*time.Millisecond, 10*time.Millisecond, never) }, "timed out after 30ms waiting for slow"},
		{"err passes", func(t testing.TB) {
			ok := after(3)
			EventuallyErr(t, "x", time.Second, time.Millisecond, func() (bool, error) { return ok(), nil })
		}, ""},
		{"err reports the last error", func(t testing.TB) {
			EventuallyErr(t, "consul", 20*time.Millisecond, time.Millisecond, func() (bool, error) { return false, errors.New("no leader") })
		}, "consul not reached within 20ms (last error: no leader)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeT{}
			if got := f.run(tc.wait); got != tc.fail {
				t.Fatalf("failure %q, want %q", got, tc.fail)
			}
		})
	}
}

func TestPoll(t *testing.T) {
	took, ok := Poll(50*time.Millisecond, time.Millisecond, func() bool { return false })
	if ok || took < 50*time.Millisecond {
		t.Fatalf("Poll of a false condition = %s, %v; want false after the whole 50ms", took, ok)
	}
	start := time.Now()
	took, ok = Poll(time.Minute, time.Millisecond, func() bool { return time.Since(start) > 20*time.Millisecond })
	if !ok || took < 20*time.Millisecond || took > 10*time.Second {
		t.Fatalf("Poll = %s, %v; want true after about 20ms", took, ok)
	}
}

// TestAwait drives Await with a 1-buffered signal, the way a publisher
// coalesces changes, from another goroutine.
func TestAwait(t *testing.T) {
	tests := []struct {
		name     string
		target   int64 // the value awaited
		sets     int64 // how many changes are published
		describe bool
		fail     string
	}{
		{"already true", 0, 0, false, ""},
		{"after changes", 20, 20, false, ""},
		{"never reached", 50, 3, true, "fifty not reached within 100ms; last state:\nvalue 3"},
		{"never reached without a description", 50, 3, false, "fifty not reached within 100ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v atomic.Int64
			changed := make(chan struct{}, 1)
			go func() {
				for i := int64(1); i <= tc.sets; i++ {
					v.Store(i)
					select {
					case changed <- struct{}{}:
					default:
					}
					time.Sleep(time.Millisecond)
				}
			}()
			var describe func() string
			if tc.describe {
				describe = func() string { return "value " + itoa(v.Load()) }
			}
			f := &fakeT{}
			got := f.run(func(t testing.TB) {
				Await(t, "fifty", 100*time.Millisecond, func() <-chan struct{} { return changed }, func() bool { return v.Load() == tc.target }, describe)
			})
			if got != tc.fail {
				t.Fatalf("failure %q, want %q", got, tc.fail)
			}
		})
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
