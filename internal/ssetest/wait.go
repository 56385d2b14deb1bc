package ssetest

import (
	"testing"
	"time"
)

// PollEvery is how often Eventually checks its condition.
const PollEvery = 5 * time.Millisecond

// Eventually checks cond every PollEvery until it holds, and fails the test
// after timeout. It returns how long cond took.
//
// It is for state in other goroutines or processes that announces nothing;
// where the code publishes a change, wait on it with Await instead.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	return EventuallyEvery(t, what, timeout, PollEvery, cond)
}

// EventuallyEvery is Eventually checking every `every`, for conditions that
// are costly to check (an external system, a process).
func EventuallyEvery(t testing.TB, what string, timeout, every time.Duration, cond func() bool) time.Duration {
	t.Helper()
	took, ok := Poll(timeout, every, cond)
	if !ok {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
	return took
}

// EventuallyErr is EventuallyEvery for a condition that can say why it does
// not hold yet: the failure reports the last error.
func EventuallyErr(t testing.TB, what string, timeout, every time.Duration, cond func() (bool, error)) {
	t.Helper()
	var last error
	_, ok := Poll(timeout, every, func() bool {
		ok, err := cond()
		last = err
		return ok
	})
	if !ok {
		t.Fatalf("%s not reached within %s (last error: %v)", what, timeout, last)
	}
}

// Poll checks cond every `every` until it holds or timeout passes, for
// checks whose failure is a finding rather than the end of the test. It
// reports how long it waited and whether cond held. cond is checked once
// more at the deadline.
func Poll(timeout, every time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return time.Since(start), false
		}
		time.Sleep(every)
	}
	return time.Since(start), true
}

// Await checks cond each time changed's channel fires until it holds, and
// fails the test after timeout with what and describe() (the state it last
// saw, when describe is not nil). changed is called before each wait and
// must return a channel that fires (is closed or receives) on the next
// change after the call, as a publish/subscribe signal does.
func Await(t testing.TB, what string, timeout time.Duration, changed func() <-chan struct{}, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			if describe != nil {
				t.Fatalf("%s not reached within %s; last state:\n%s", what, timeout, describe())
			}
			t.Fatalf("%s not reached within %s", what, timeout)
			return
		}
	}
}
