package clientauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/sirupsen/logrus"
)

// jwksTiming paces the JWKS fetches.
type jwksTiming struct {
	refresh  time.Duration // between fetches while they succeed: picks up revocations
	retryMin time.Duration // first retry after a failure, doubling per failure...
	retryMax time.Duration // ...up to this
	minGap   time.Duration // least time between the starts of fetches asked for by unknown key ids
	fetch    time.Duration // bound on one fetch
}

var defaultJWKSTiming = jwksTiming{
	refresh:  15 * time.Minute,
	retryMin: time.Second,
	retryMax: time.Minute,
	minGap:   10 * time.Second,
	fetch:    10 * time.Second,
}

// maxJWKSBytes bounds a JWKS document: a real one is a few kilobytes.
const maxJWKSBytes = 1 << 20

// errUnknownKey marks a token whose key is not in the JWKS, even after a
// refresh was tried: 401 while the JWKS is healthy, 503 while it is not
// (the key may be one we failed to fetch).
var errUnknownKey = errors.New("no key in the JWKS for the token")

// jwksSource keeps the keys of a JWKS URL. keyfunc/v3 picks the key for a
// token (by kid, alg and use, from a jwkset memory storage) and jwkset
// fetches and parses the set, but the refresh loop is ours rather than
// keyfunc's default one, because we need three things it does not give: a
// goroutine Close can wait for, the outcome of every fetch (for Healthy:
// its error handler is never told of a success), and merging: when a new
// key appears, every check that names it waits for one fetch, where
// keyfunc's rate limiter refuses all but the first with "key not found".
type jwksSource struct {
	url    string
	shown  string // url without a password, for logs
	client *http.Client
	keys   *jwkset.MemoryJWKSet // replaced whole by each good fetch
	kf     keyfunc.Keyfunc
	timing jwksTiming
	now    func() time.Time
	stats  *counters
	health *health
	kick   chan struct{} // 1-buffered, sent with pending set: fetch now
	fails  int           // consecutive failures; only run touches it

	mu        sync.Mutex
	closed    bool
	pending   chan struct{} // closes when the fetch asked for, not yet started, ends
	running   chan struct{} // closes when the fetch in progress ends
	lastStart time.Time
	ended     uint64 // fetches ended so far
}

func newJWKSSource(rawURL string, log logrus.FieldLogger, st *counters, o options) (*jwksSource, error) {
	shown := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		shown = u.Redacted()
	}
	keys := jwkset.NewMemoryStorage()
	kf, err := keyfunc.New(keyfunc.Options{
		Storage: keys,
		// A key marked for encryption never verifies a signature; most
		// sets leave "use" out.
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	tr, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("jwks: http.DefaultTransport is not an *http.Transport")
	}
	s := &jwksSource{
		url:    rawURL,
		shown:  shown,
		client: &http.Client{Transport: capBody{tr.Clone(), maxJWKSBytes}},
		keys:   keys,
		kf:     kf,
		timing: o.jwks,
		now:    o.now,
		stats:  st,
		health: newHealth("jwks", false, log.WithField("jwks_url", shown), o.now),
		kick:   make(chan struct{}, 1),
		// The first fetch is asked for at once: checks that come before it
		// ends wait for it instead of failing.
		pending: make(chan struct{}),
	}
	s.kick <- struct{}{}
	return s, nil
}

// run fetches when asked (kick) and on a timer: every refresh while
// fetches succeed, with a growing, jittered delay while they fail. It
// returns when ctx ends, releasing any check waiting for a fetch.
func (s *jwksSource) run(ctx context.Context) {
	t := time.NewTimer(s.timing.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.closed = true
			if s.pending != nil {
				close(s.pending)
				s.pending = nil
			}
			s.mu.Unlock()
			return
		case <-s.kick:
		case <-t.C:
		}
		t.Reset(s.fetchNow(ctx))
	}
}

// fetchNow runs one fetch, records it, wakes its waiters and returns the
// delay until the next timed fetch.
func (s *jwksSource) fetchNow(ctx context.Context) time.Duration {
	s.mu.Lock()
	done := s.pending
	if done == nil {
		done = make(chan struct{})
	}
	select { // this fetch answers the kick that came with pending
	case <-s.kick:
	default:
	}
	s.pending, s.running, s.lastStart = nil, done, s.now()
	s.mu.Unlock()

	err := s.fetch(ctx)
	s.stats.jwksFetches.Add(1)
	switch {
	case err == nil:
		s.fails = 0
		s.health.ok()
	case ctx.Err() != nil: // closing: not the JWKS's fault
	default:
		s.fails++
		s.stats.jwksFailures.Add(1)
		s.health.fail(err)
	}
	// Health is recorded before the waiters wake, so they read this
	// fetch's outcome.
	s.mu.Lock()
	s.running = nil
	s.ended++
	s.mu.Unlock()
	close(done)

	if s.fails == 0 {
		return s.timing.refresh
	}
	d := s.timing.retryMin << min(s.fails-1, 20)
	if d <= 0 || d > s.timing.retryMax {
		d = s.timing.retryMax
	}
	return d - d/10 + rand.N(d/5+1) // ±10%: nodes restarted together do not fetch in step
}

// fetch replaces the keys with the JWKS's current set; on any error,
// including a set without one usable key, the keys stay as they were.
func (s *jwksSource) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timing.fetch)
	defer cancel()
	got := jwkset.NewMemoryStorage()
	// Without RefreshInterval, NewStorageFromHTTP fetches once into got
	// and starts no goroutine.
	_, err := jwkset.NewStorageFromHTTP(s.url, jwkset.HTTPClientStorageOptions{
		Client:      s.client,
		Ctx:         ctx,
		HTTPTimeout: s.timing.fetch,
		Storage:     got,
	})
	if err != nil {
		return fmt.Errorf("jwks: fetch %s: %w", s.shown, err)
	}
	all, err := got.KeyReadAll(ctx)
	if err != nil {
		return fmt.Errorf("jwks: read fetched keys: %w", err)
	}
	if len(all) == 0 {
		return fmt.Errorf("jwks: %s holds no usable key", s.shown)
	}
	if err := s.keys.KeyReplaceAll(ctx, all); err != nil {
		return fmt.Errorf("jwks: store keys: %w", err)
	}
	return nil
}

// generation counts the fetches ended; a lookup notes it first, so that a
// fetch ending between the lookup and refreshFor is not missed.
func (s *jwksSource) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// refreshFor is called after a lookup made at generation gen found no key.
// It reports at once whether a fetch has ended since; else it waits for a
// fetch that may bring the key: the one already asked for or running, else
// a new one unless one started less than minGap ago. It reports whether a
// fetch ended, so that a second lookup may find the key.
func (s *jwksSource) refreshFor(ctx context.Context, gen uint64) bool {
	s.mu.Lock()
	var ch chan struct{}
	switch {
	case s.ended != gen:
		s.mu.Unlock()
		return true
	case s.closed:
	case s.pending != nil:
		ch = s.pending
	case s.running != nil:
		ch = s.running
	case s.now().Sub(s.lastStart) >= s.timing.minGap:
		s.pending = make(chan struct{})
		ch = s.pending
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// keyfunc finds the verification key for t, fetching the set again when
// it lacks one.
func (s *jwksSource) keyfunc(ctx context.Context, t *jwt.Token) (any, error) {
	kf := s.kf.KeyfuncCtx(ctx)
	gen := s.generation()
	key, err := kf(t)
	if !missing(key, err) {
		return key, err
	}
	if s.refreshFor(ctx, gen) {
		if key, err = kf(t); !missing(key, err) {
			return key, err
		}
	}
	if err == nil {
		return nil, fmt.Errorf("%w: alg %v", errUnknownKey, t.Header["alg"])
	}
	return nil, fmt.Errorf("%w: %w", errUnknownKey, err)
}

// missing reports whether keyfunc found no key at all (as opposed to a key
// that does not fit, which no refresh will change).
func missing(key any, err error) bool {
	if err != nil {
		return errors.Is(err, jwkset.ErrKeyNotFound)
	}
	ks, ok := key.(jwt.VerificationKeySet)
	return ok && len(ks.Keys) == 0
}

// capBody cuts response bodies at max bytes, so a broken or hostile JWKS
// URL cannot make a node read without end; the JSON decoder then fails.
type capBody struct {
	rt  http.RoundTripper
	max int64
}

func (c capBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, c.max), resp.Body}
	return resp, nil
}
