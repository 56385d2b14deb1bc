package ssetest

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// fakeT is a testing.TB whose failures are recorded instead of ending the
// real test, so the kit's own failures can be tested.
type fakeT struct {
	testing.TB
	mu       sync.Mutex
	logs     []string
	fatal    string
	failed   bool
	cleanups []func()
}

func (f *fakeT) Helper() {}

func (f *fakeT) Log(a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprint(a...))
}

func (f *fakeT) Logf(format string, a ...any) { f.Log(fmt.Sprintf(format, a...)) }

func (f *fakeT) Fatalf(format string, a ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, a...)
	f.failed = true
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeT) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeT) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

// run runs body as a test on its own goroutine, then its cleanups, and
// returns the message it failed with ("" when it passed).
func (f *fakeT) run(body func(t testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(f)
	}()
	<-done
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	return f.fatal
}

func (f *fakeT) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.logs, "\n")
}
