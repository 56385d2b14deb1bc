package clientauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// drainLimit is how much of an auth server's body is read so that its
// connection can be reused; a longer body costs a new connection instead.
const drainLimit = 4 << 10

// delegate asks an auth server about each new credential and stream.
type delegate struct {
	url     string
	forward []string // canonical names
	timeout time.Duration
	client  *http.Client
	sem     chan struct{} // one token per request in flight
	cache   *verdictCache // nil: no cache
	base    context.Context
	now     func() time.Time
	stats   *counters
	health  *health
	opts    options

	mu      sync.Mutex
	flights map[cacheKey]*flight
}

// flight is one request to the auth server, shared by every check of the
// same key that arrives while it runs. dec is written before done closes.
type flight struct {
	done chan struct{}
	dec  Decision
}

func newDelegate(base context.Context, cfg DelegateConfig, log logrus.FieldLogger, st *counters, o options) (*delegate, error) {
	tr, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("delegate: http.DefaultTransport is not an *http.Transport")
	}
	tr = tr.Clone()
	// Keep one idle connection per possible request in flight, so a busy
	// node does not open and close connections to the auth server.
	tr.MaxIdleConnsPerHost = cfg.MaxConcurrent
	shown := cfg.URL // for logs: without a password
	if u, err := url.Parse(cfg.URL); err == nil {
		shown = u.Redacted()
	}
	d := &delegate{
		url:     cfg.URL,
		forward: cfg.Forward,
		timeout: cfg.Timeout,
		client: &http.Client{
			Transport: tr,
			// A redirect is not a verdict: the auth server's answer is its
			// first response, and a 3xx is "unexpected status" (503).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		base:    base,
		now:     o.now,
		stats:   st,
		health:  newHealth("auth server", true, log.WithField("auth_url", shown), o.now),
		opts:    o,
		flights: make(map[cacheKey]*flight),
	}
	if *cfg.Cache > 0 {
		d.cache = newVerdictCache(*cfg.Cache, maxCacheEntries)
	}
	return d, nil
}

func (d *delegate) healthy() (bool, string) { return d.health.report() }

func (d *delegate) closeIdle() { d.client.CloseIdleConnections() }

func (d *delegate) check(ctx context.Context, r Request) Decision {
	fwd := make(http.Header, len(d.forward))
	for _, name := range d.forward {
		if vs := r.Header.Values(name); len(vs) > 0 {
			fwd[name] = append([]string(nil), vs...)
		}
	}
	uri := r.uri()
	key := makeKey(fwd, d.forward, uri)
	if d.cache != nil {
		if dec, ok := d.cache.get(key, d.now()); ok {
			d.stats.cacheHits.Add(1)
			dec.Detail = "cached: " + dec.Detail
			return dec
		}
	}

	d.mu.Lock()
	if f, ok := d.flights[key]; ok {
		d.mu.Unlock()
		d.stats.merged.Add(1)
		if d.opts.joined != nil {
			d.opts.joined()
		}
		select {
		case <-f.done:
			return f.dec.clone()
		case <-ctx.Done():
			return refuse(http.StatusServiceUnavailable, ReasonTimeout,
				fmt.Sprintf("gave up waiting for the auth server: %v", ctx.Err()))
		}
	}
	f := &flight{done: make(chan struct{})}
	d.flights[key] = f
	d.mu.Unlock()

	// The request does not use ctx: other checks wait for its verdict, so
	// this client going away must not cancel it. Timeout bounds it.
	f.dec = d.ask(fwd, uri, r.ClientAddr)
	if d.cache != nil && f.dec.Status != http.StatusServiceUnavailable {
		// Into the cache before leaving the flight map, so a check arriving
		// in between finds one or the other and makes no second request.
		d.cache.put(key, f.dec, d.now())
	}
	d.mu.Lock()
	delete(d.flights, key)
	d.mu.Unlock()
	close(f.done)
	return f.dec.clone()
}

// ask makes one request to the auth server, within one Timeout for the
// slot and the request together.
func (d *delegate) ask(fwd http.Header, uri, clientAddr string) Decision {
	ctx, cancel := context.WithTimeout(d.base, d.timeout)
	defer cancel()
	if dec, ok := d.acquire(ctx); !ok {
		return dec
	}
	defer func() { <-d.sem }()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url, nil)
	if err != nil {
		return d.unavailable(fmt.Errorf("delegate: build request: %w", err))
	}
	req.Header = fwd.Clone()
	req.Header.Set("X-Original-URI", uri)
	if clientAddr != "" {
		req.Header.Set("X-Forwarded-For", clientAddr)
	}
	d.stats.authRequests.Add(1)
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			d.health.fail(fmt.Errorf("delegate: no answer within %v", d.timeout))
			return refuse(http.StatusServiceUnavailable, ReasonTimeout,
				fmt.Sprintf("auth server did not answer within %v", d.timeout))
		}
		return d.unavailable(fmt.Errorf("delegate: %w", err))
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
		_ = resp.Body.Close()
	}()

	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		d.health.ok()
		return allow(time.Time{}, fmt.Sprintf("auth server answered %d", s))
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		d.health.ok()
		dec := refuse(s, ReasonDenied, fmt.Sprintf("auth server answered %d", s))
		if vs := resp.Header.Values("WWW-Authenticate"); len(vs) > 0 {
			dec.Header = http.Header{"Www-Authenticate": append([]string(nil), vs...)}
		}
		return dec
	default:
		return d.unavailable(fmt.Errorf("delegate: auth server answered %d", s))
	}
}

// acquire takes a request slot, waiting at most until ctx ends.
func (d *delegate) acquire(ctx context.Context) (Decision, bool) {
	select {
	case d.sem <- struct{}{}:
		return Decision{}, true
	default:
	}
	if d.opts.slotWait != nil {
		d.opts.slotWait()
	}
	select {
	case d.sem <- struct{}{}:
		return Decision{}, true
	case <-ctx.Done():
		if d.base.Err() != nil {
			return refuse(http.StatusServiceUnavailable, ReasonAuthUnavailable, "authorizer closed"), false
		}
		return refuse(http.StatusServiceUnavailable, ReasonOverloaded,
			fmt.Sprintf("all %d auth server slots busy for %v", cap(d.sem), d.timeout)), false
	}
}

func (d *delegate) unavailable(err error) Decision {
	if d.base.Err() != nil {
		return refuse(http.StatusServiceUnavailable, ReasonAuthUnavailable, "authorizer closed")
	}
	d.health.fail(err)
	return refuse(http.StatusServiceUnavailable, ReasonAuthUnavailable, err.Error())
}
