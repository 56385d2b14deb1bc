// Package certs keeps a node's TLS files current without a restart: the
// listeners' certificate and key, the CA bundles that check clients, peers
// and upstreams, and a client certificate for upstreams.
//
// Each file is loaded once at start, where a bad file is an error, and then
// re-read when it changes (a Watcher polls) or on demand (SIGHUP, the admin
// reload endpoint). A new version that does not parse, whose key does not
// match its certificate, whose certificate is outside its validity period,
// or a CA file without a certificate, is refused and the version in use is
// kept: a botched renewal must not take a node off the network.
//
// Reloading never touches an established connection: a TLS connection keeps
// the certificate it was set up with. The tls.Config builders read the
// current version at each handshake, so new connections get new
// certificates and a rotated CA applies to the next handshake.
package certs

import (
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Reloadable is a TLS file that can be re-read. Reload reports whether a new
// version was loaded; on error the version in use is kept.
type Reloadable interface {
	Reload() (changed bool, err error)
}

// namedFile is one file a reloader reads, with what it is for error messages.
type namedFile struct {
	what string // "certificate", "key", "CA file"
	path string
}

// digest identifies the content of a reloader's files.
type digest [sha256.Size]byte

// version is one loaded version of a reloader's files.
type version[T any] struct {
	val *T
	sum digest
}

// refusal remembers the last refused content, so a bad file left in place
// costs no parse on every poll.
type refusal[T any] struct {
	sum digest
	err error
	// cand is set when the content parsed but was refused for its validity
	// period: that changes with the clock, not the file, so it is checked
	// again at each reload (a certificate issued a little in the future
	// becomes usable without touching the file).
	cand *T
}

// reloader is what Pair and CAFile share: read files, skip them when their
// content is unchanged, parse and check a new version, publish it for
// lock-free readers or refuse it and keep the old one.
type reloader[T any] struct {
	files []namedFile
	parse func(data [][]byte) (*T, error)   // errors name the files
	check func(val *T, now time.Time) error // the validity period; errors name the files
	now   func() time.Time

	mu      sync.Mutex // serialises reloads: a poll and a SIGHUP must not interleave
	cur     atomic.Pointer[version[T]]
	refused *refusal[T] // guarded by mu
}

// load reads the files for the first time; there is no old version to keep,
// so any problem is an error.
func (r *reloader[T]) load() error {
	_, err := r.reload()
	return err
}

// current is the version in use; it is never nil after a successful load.
func (r *reloader[T]) current() *T { return r.cur.Load().val }

func (r *reloader[T]) reload() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, sum, err := r.read()
	if err != nil {
		return false, err
	}
	if cur := r.cur.Load(); cur != nil && cur.sum == sum {
		r.refused = nil
		return false, nil
	}
	var val *T
	if ref := r.refused; ref != nil && ref.sum == sum {
		if ref.cand == nil {
			return false, ref.err
		}
		val = ref.cand
	} else {
		val, err = r.parse(data)
		if err != nil {
			r.refused = &refusal[T]{sum: sum, err: err}
			return false, err
		}
	}
	if err := r.check(val, r.now()); err != nil {
		r.refused = &refusal[T]{sum: sum, err: err, cand: val}
		return false, err
	}
	r.refused = nil
	r.cur.Store(&version[T]{val: val, sum: sum})
	return true, nil
}

// read returns the files' contents and a digest over all of them. Hashing is
// what makes an unchanged file cheap: size and mtime would be cheaper still,
// but an in-place rewrite within the filesystem's mtime granularity would
// go unseen, and the files are a few kilobytes.
func (r *reloader[T]) read() ([][]byte, digest, error) {
	h := sha256.New()
	data := make([][]byte, len(r.files))
	for i, f := range r.files {
		b, err := os.ReadFile(f.path)
		if err != nil {
			// The *PathError names the file.
			return nil, digest{}, fmt.Errorf("certs: read %s: %w", f.what, err)
		}
		data[i] = b
		s := sha256.Sum256(b) // a digest per file, so the boundary between files counts
		h.Write(s[:])
	}
	var sum digest
	h.Sum(sum[:0])
	return data, sum, nil
}

// checkPeriod refuses a certificate outside its validity period at now.
func checkPeriod(what, path string, notBefore, notAfter, now time.Time) error {
	switch {
	case now.Before(notBefore):
		return fmt.Errorf("certs: %s %s is not valid before %s", what, path, notBefore.UTC().Format(time.RFC3339))
	case now.After(notAfter):
		return fmt.Errorf("certs: %s %s expired at %s", what, path, notAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
