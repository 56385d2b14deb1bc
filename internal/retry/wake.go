package retry

import (
	"context"
	"time"
)

// SleepWake is Sleep that also ends early when wake delivers: a signal that
// the rest of the wait is pointless (a reconnect loop told of a new place to
// connect to). The signal is consumed. It reports whether ctx is still live.
// A d of zero or less returns at once and leaves wake alone.
func SleepWake(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-wake:
		return ctx.Err() == nil
	}
}
