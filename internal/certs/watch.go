package certs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// DefaultInterval is how often a Watcher polls when given no interval. A
// renewed certificate is usually written well before the old one expires,
// so seconds of delay cost nothing, and an unchanged file costs a read and
// a hash.
const DefaultInterval = 10 * time.Second

// Watcher re-reads a node's TLS files: every interval in Run, and at once in
// ReloadAll (SIGHUP, the admin reload endpoint). It polls rather than using
// inotify because certificate tools replace files by renaming over them,
// Kubernetes swaps a symlinked directory, and network filesystems send no
// events; polling sees all three the same way.
type Watcher struct {
	every time.Duration
	log   logrus.FieldLogger

	mu      sync.Mutex // guards entries; held for a whole pass so passes do not interleave
	entries []*entry
}

type entry struct {
	r Reloadable
	// warned is the text of the last refusal logged at Warn, "" when the
	// entry is fine: a bad file left in place is logged once, not at every
	// poll, and again when the error changes.
	warned string
}

// NewWatcher returns a Watcher that polls every interval (DefaultInterval
// when every is not positive).
func NewWatcher(every time.Duration, log logrus.FieldLogger) *Watcher {
	if every <= 0 {
		every = DefaultInterval
	}
	return &Watcher{every: every, log: orDiscard(log)}
}

// Add watches r. It may be called while Run is running.
func (w *Watcher) Add(r Reloadable) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.entries = append(w.entries, &entry{r: r})
}

// Run polls until ctx ends, then returns. The caller owns the goroutine it
// runs on and waits for it on shutdown; call Run once per Watcher.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = w.pass() // refusals are logged by pass; nobody is waiting for the error
		}
	}
}

// ReloadAll re-reads every file now and returns the refusals joined (nil
// when every file is in use at its current content). The refusals are also
// logged, as in Run.
func (w *Watcher) ReloadAll() error { return w.pass() }

// pass reloads every entry once and logs what changed: a new version at
// Info, a refusal at Warn once per error text, and the end of a refusal at
// Info.
func (w *Watcher) pass() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, e := range w.entries {
		changed, err := e.r.Reload()
		switch {
		case err != nil:
			errs = append(errs, err)
			if msg := err.Error(); msg != e.warned {
				e.warned = msg
				w.log.WithFields(fieldsOf(e.r)).WithError(err).Warn("certs: refused a new version of a TLS file; keeping the one in use")
			}
		case changed:
			e.warned = ""
			w.log.WithFields(fieldsOf(e.r)).Info("certs: reloaded a changed TLS file")
		case e.warned != "":
			e.warned = ""
			w.log.WithFields(fieldsOf(e.r)).Info("certs: TLS file is back to the version in use")
		}
	}
	return errors.Join(errs...)
}

// fieldsOf describes r for a log line: the files and the certificate in use
// for this package's types, the String of others.
func fieldsOf(r Reloadable) logrus.Fields {
	switch v := r.(type) {
	case interface{ logFields() logrus.Fields }:
		return v.logFields()
	case fmt.Stringer:
		return logrus.Fields{"file": v.String()}
	default:
		return logrus.Fields{"file": fmt.Sprintf("%T", r)}
	}
}
