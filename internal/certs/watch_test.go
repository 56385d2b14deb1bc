package certs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/ssemesh/ssemesh/internal/certs/certstest"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// pollEvery is the Watcher interval in tests: short, so a change is seen
// within milliseconds; tests wait for what the poll does, never for time.
const pollEvery = 5 * time.Millisecond

// runWatcher runs w until the test ends and checks that Run returns then.
func runWatcher(t *testing.T, w *Watcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(ioTimeout):
			t.Error("Run did not return after its context ended")
		}
	})
}

func TestWatcherRunPicksUpChanges(t *testing.T) {
	caA, caB := certstest.NewCA(t, "ca-a"), certstest.NewCA(t, "ca-b")
	certFile, keyFile := serverPair(t, caA)
	pair, err := LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	certstest.WriteFileAtomic(t, caFile, caA.CertPEM())
	cas, err := LoadCA(caFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	log, hook := newLog()
	w := NewWatcher(pollEvery, log)
	w.Add(pair)
	w.Add(cas)
	runWatcher(t, w)

	newCert, newKey := serverPair(t, caA)
	want := certstest.ReadCert(t, newCert).SerialNumber
	certstest.CopyPair(t, newCert, newKey, certFile, keyFile)
	ssetest.EventuallyEvery(t, "the watcher to load the rotated pair", ioTimeout, 2*time.Millisecond, func() bool {
		return pair.Certificate().Leaf.SerialNumber.Cmp(want) == 0
	})
	certstest.WriteFileAtomic(t, caFile, caB.CertPEM())
	ssetest.EventuallyEvery(t, "the watcher to load the rotated CA file", ioTimeout, 2*time.Millisecond, func() bool {
		return cas.Pool().Equal(caB.Pool())
	})

	// Each reload was logged at Info with the file it was about; a
	// watcher that happened to look between the certificate and the key
	// being replaced may also have warned about the mismatch.
	ssetest.EventuallyEvery(t, "both reloads to be logged", ioTimeout, 2*time.Millisecond, func() bool {
		var sawPair, sawCA bool
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.InfoLevel && e.Message == "certs: reloaded a changed TLS file" {
				sawPair = sawPair || e.Data["cert_file"] == certFile
				sawCA = sawCA || e.Data["ca_file"] == caFile
			}
		}
		return sawPair && sawCA
	})
}

// countingReloadable counts the reloads of a Reloadable, so a test can wait
// for the watcher to have polled a number of times.
type countingReloadable struct {
	Reloadable
	calls atomic.Int64
}

// String keeps the wrapped file's name in the watcher's log lines.
func (c *countingReloadable) String() string { return fmt.Sprint(c.Reloadable) }

func (c *countingReloadable) Reload() (bool, error) {
	defer c.calls.Add(1)
	return c.Reloadable.Reload()
}

// TestWatcherRunWarnsOncePerBadFile leaves a bad file in place over many
// polls: one Warn, the old certificate kept; then a fix is picked up.
func TestWatcherRunWarnsOncePerBadFile(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	certFile, keyFile := serverPair(t, ca)
	oldSerial := certstest.ReadCert(t, certFile).SerialNumber
	pair, err := LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	log, hook := newLog()
	w := NewWatcher(pollEvery, log)
	counted := &countingReloadable{Reloadable: pair}
	w.Add(counted)
	runWatcher(t, w)

	certstest.WriteFileAtomic(t, keyFile, []byte("garbage"))
	warns := func() int {
		n := 0
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel {
				n++
			}
		}
		return n
	}
	ssetest.EventuallyEvery(t, "a warning about the bad key", ioTimeout, 2*time.Millisecond, func() bool { return warns() > 0 })
	seen := counted.calls.Load()
	ssetest.EventuallyEvery(t, "ten more polls", ioTimeout, 2*time.Millisecond, func() bool { return counted.calls.Load() >= seen+10 })
	if n := warns(); n != 1 {
		t.Fatalf("%d warnings over ten polls of one bad file, want 1", n)
	}
	if e := hook.LastEntry(); e.Data["file"] != certFile || !errorContains(e.Data[logrus.ErrorKey], keyFile) {
		t.Errorf("warning %v does not name the key file %s", e.Data, keyFile)
	}
	if got := pair.Certificate().Leaf.SerialNumber; got.Cmp(oldSerial) != 0 {
		t.Fatalf("serial %x while the key is bad, want the old %x", got, oldSerial)
	}

	newCert, newKey := serverPair(t, ca)
	want := certstest.ReadCert(t, newCert).SerialNumber
	certstest.CopyPair(t, newCert, newKey, certFile, keyFile)
	ssetest.EventuallyEvery(t, "the fixed pair to be loaded", ioTimeout, 2*time.Millisecond, func() bool {
		return pair.Certificate().Leaf.SerialNumber.Cmp(want) == 0
	})
}

func errorContains(v any, part string) bool {
	err, ok := v.(error)
	return ok && err != nil && strings.Contains(err.Error(), part)
}

// scripted is a Reloadable whose reloads return the results given, then
// "unchanged".
type scripted struct {
	results []scriptedResult
}

type scriptedResult struct {
	changed bool
	err     error
}

func (s *scripted) Reload() (bool, error) {
	if len(s.results) == 0 {
		return false, nil
	}
	r := s.results[0]
	s.results = s.results[1:]
	return r.changed, r.err
}

func (s *scripted) String() string { return "scripted.pem" }

func TestWatcherLogsEachRefusalOnce(t *testing.T) {
	errA, errB := errors.New("bad A"), errors.New("bad B")
	steps := []struct {
		name    string
		result  scriptedResult
		wantLog logrus.Level // 0 (panic level): nothing logged
	}{
		{"unchanged", scriptedResult{}, 0},
		{"changed", scriptedResult{changed: true}, logrus.InfoLevel},
		{"refused", scriptedResult{err: errA}, logrus.WarnLevel},
		{"refused again, same error", scriptedResult{err: errA}, 0},
		{"and again", scriptedResult{err: errA}, 0},
		{"refused with another error", scriptedResult{err: errB}, logrus.WarnLevel},
		{"back to the version in use", scriptedResult{}, logrus.InfoLevel},
		{"unchanged after that", scriptedResult{}, 0},
		{"the first error again", scriptedResult{err: errA}, logrus.WarnLevel},
		{"a good new version", scriptedResult{changed: true}, logrus.InfoLevel},
		{"refused after a change", scriptedResult{err: errA}, logrus.WarnLevel},
	}
	s := &scripted{}
	for _, st := range steps {
		s.results = append(s.results, st.result)
	}
	l, hook := logtest.NewNullLogger()
	w := NewWatcher(time.Hour, l)
	w.Add(s)
	for _, st := range steps {
		hook.Reset()
		err := w.ReloadAll()
		if !errors.Is(err, st.result.err) || (err == nil) != (st.result.err == nil) {
			t.Errorf("%s: ReloadAll = %v, want %v", st.name, err, st.result.err)
		}
		entries := hook.AllEntries()
		switch {
		case st.wantLog == 0 && len(entries) != 0:
			t.Errorf("%s: logged %q, want nothing", st.name, entries[0].Message)
		case st.wantLog != 0 && (len(entries) != 1 || entries[0].Level != st.wantLog):
			t.Errorf("%s: logged %d entries (%v), want one at %v", st.name, len(entries), levels(entries), st.wantLog)
		case st.wantLog != 0 && entries[0].Data["file"] != "scripted.pem":
			t.Errorf("%s: entry %v does not name the file", st.name, entries[0].Data)
		}
	}
}

func levels(entries []*logrus.Entry) []logrus.Level {
	out := make([]logrus.Level, len(entries))
	for i, e := range entries {
		out[i] = e.Level
	}
	return out
}

// TestWatcherReloadAllJoinsErrors: a SIGHUP with one bad pair and one bad
// CA file among good files returns both errors, loads the good change and
// keeps the old versions of the bad ones.
func TestWatcherReloadAllJoinsErrors(t *testing.T) {
	caA, caB := certstest.NewCA(t, "ca-a"), certstest.NewCA(t, "ca-b")
	certFile, keyFile := serverPair(t, caA)
	oldSerial := certstest.ReadCert(t, certFile).SerialNumber
	pair, err := LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	badCA, goodCA := loadCA(t, caA.CertPEM()), loadCA(t, caA.CertPEM())
	w := NewWatcher(time.Hour, nil)
	w.Add(pair)
	w.Add(badCA)
	w.Add(goodCA)

	if err := w.ReloadAll(); err != nil {
		t.Fatalf("ReloadAll of unchanged files: %v", err)
	}
	_, otherKey := serverPair(t, caA)
	certstest.CopyFile(t, otherKey, keyFile)
	certstest.WriteFileAtomic(t, badCA.String(), []byte("no certificate here"))
	certstest.WriteFileAtomic(t, goodCA.String(), caB.CertPEM())

	err = w.ReloadAll()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != 2 {
		t.Fatalf("ReloadAll = %v, want the two refusals joined", err)
	}
	wantErr(t, err, certFile, keyFile, "does not match", badCA.String(), "no PEM certificate")
	if got := pair.Certificate().Leaf.SerialNumber; got.Cmp(oldSerial) != 0 {
		t.Errorf("serial %x after a refused reload, want the old %x", got, oldSerial)
	}
	if !badCA.Pool().Equal(caA.Pool()) {
		t.Error("the refused CA file's pool changed")
	}
	if !goodCA.Pool().Equal(caB.Pool()) {
		t.Error("the good CA file was not reloaded next to the bad ones")
	}
}

func TestWatcherRunReturnsWhenContextEnds(t *testing.T) {
	w := NewWatcher(pollEvery, nil)
	counted := &countingReloadable{Reloadable: &scripted{}}
	w.Add(counted)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	ssetest.EventuallyEvery(t, "Run to poll", ioTimeout, 2*time.Millisecond, func() bool { return counted.calls.Load() > 0 })
	cancel()
	select {
	case <-done:
	case <-time.After(ioTimeout):
		t.Fatal("Run did not return after its context ended")
	}
}

func TestNewWatcherDefaultInterval(t *testing.T) {
	for _, every := range []time.Duration{0, -time.Second} {
		if got := NewWatcher(every, nil).every; got != DefaultInterval {
			t.Errorf("NewWatcher(%v) polls every %v, want %v", every, got, DefaultInterval)
		}
	}
}
