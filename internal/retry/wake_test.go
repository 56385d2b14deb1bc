package retry

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestSleepWake(t *testing.T) {
	tests := []struct {
		name     string
		d        time.Duration
		cancelAt time.Duration // 0: never
		wakeAt   time.Duration // 0: never
		woken    bool          // a signal is pending before the call
		want     bool
		took     time.Duration
		consumed bool // the pending signal was taken
	}{
		{name: "full wait", d: time.Second, want: true, took: time.Second},
		{name: "woken midway", d: time.Hour, wakeAt: 300 * ms, want: true, took: 300 * ms},
		{name: "signal pending", d: time.Hour, woken: true, want: true, consumed: true},
		{name: "cancelled midway", d: time.Hour, cancelAt: 200 * ms, wakeAt: 300 * ms, want: false, took: 200 * ms},
		{name: "zero wait leaves the signal", d: 0, woken: true, want: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				wake := make(chan struct{}, 1)
				if tc.woken {
					wake <- struct{}{}
				}
				if tc.cancelAt > 0 {
					time.AfterFunc(tc.cancelAt, cancel)
				}
				if tc.wakeAt > 0 {
					time.AfterFunc(tc.wakeAt, func() {
						select {
						case wake <- struct{}{}:
						default:
						}
					})
				}
				start := time.Now()
				if got := SleepWake(ctx, tc.d, wake); got != tc.want {
					t.Fatalf("SleepWake(%s) = %v, want %v", tc.d, got, tc.want)
				}
				if took := time.Since(start); took != tc.took {
					t.Fatalf("SleepWake(%s) took %s, want %s", tc.d, took, tc.took)
				}
				if tc.woken && (len(wake) == 0) != tc.consumed {
					t.Fatalf("signal consumed = %v, want %v", len(wake) == 0, tc.consumed)
				}
			})
		})
	}
}
