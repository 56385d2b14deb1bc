package clientauth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// authServer is an auth server for tests: it counts requests and answers
// with handle.
type authServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newAuthServer(t *testing.T, handle http.HandlerFunc) *authServer {
	t.Helper()
	s := &authServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		handle(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func delegateAuth(t *testing.T, url string, clk *fakeClock, o options, f func(*DelegateConfig)) *Auth {
	t.Helper()
	cfg := &DelegateConfig{URL: url}
	if f != nil {
		f(cfg)
	}
	return newTestAuth(t, Config{Delegate: cfg}, clk, o)
}

func cookieRequest(path, cookie string) Request {
	return Request{Path: path, OriginalURI: path, ClientAddr: "192.0.2.7", Header: header("Cookie", cookie)}
}

func TestDelegateVerdicts(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		wwwAuth    string
		wantAllow  bool
		wantStatus int
		wantReason string
		wantHeader string // WWW-Authenticate passed on
		healthy    bool
	}{
		{"200 admits", 200, "", true, 0, "", "", true},
		{"204 admits", 204, "", true, 0, "", "", true},
		{"401 refuses with the challenge", 401, `Bearer realm="feeds"`, false, 401, ReasonDenied, `Bearer realm="feeds"`, true},
		{"403 refuses", 403, "", false, 403, ReasonDenied, "", true},
		{"500 fails closed", 500, "", false, 503, ReasonAuthUnavailable, "", false},
		{"404 fails closed", 404, "", false, 503, ReasonAuthUnavailable, "", false},
		{"redirect is not followed", 302, "", false, 503, ReasonAuthUnavailable, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var target atomic.Int64
			elsewhere := newAuthServer(t, func(http.ResponseWriter, *http.Request) { target.Add(1) })
			srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.wwwAuth != "" {
					w.Header().Set("WWW-Authenticate", tt.wwwAuth)
				}
				if tt.status == 302 {
					w.Header().Set("Location", elsewhere.URL)
				}
				w.WriteHeader(tt.status)
				fmt.Fprint(w, "body to drain")
			})
			a := delegateAuth(t, srv.URL, newFakeClock(), options{}, nil)
			d := check(a, cookieRequest("/feed", "session=1"))
			wantDecision(t, d, tt.wantAllow, tt.wantStatus, tt.wantReason)
			if got := d.Header.Get("WWW-Authenticate"); got != tt.wantHeader {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantHeader)
			}
			if ok, detail := a.Healthy(); ok != tt.healthy {
				t.Errorf("Healthy = %v (%s), want %v", ok, detail, tt.healthy)
			}
			if n := target.Load(); n != 0 {
				t.Errorf("redirect target got %d requests", n)
			}
		})
	}
}

func TestDelegateUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	a := delegateAuth(t, url, newFakeClock(), options{}, nil)
	wantDecision(t, check(a, cookieRequest("/feed", "s=1")), false, 503, ReasonAuthUnavailable)
	if ok, detail := a.Healthy(); ok || !strings.Contains(detail, "auth server") {
		t.Errorf("Healthy = %v, %q; want false naming the auth server", ok, detail)
	}
}

func TestDelegateTimeout(t *testing.T) {
	var slow atomic.Bool
	slow.Store(true)
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			<-r.Context().Done() // answer only when the checker gives up
		}
	})
	a := delegateAuth(t, srv.URL, newFakeClock(), options{}, func(c *DelegateConfig) { c.Timeout = 100 * time.Millisecond })
	start := time.Now()
	wantDecision(t, check(a, cookieRequest("/feed", "s=1")), false, 503, ReasonTimeout)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("check took %v with a 100ms timeout", took)
	}
	if ok, _ := a.Healthy(); ok {
		t.Error("Healthy after a timeout")
	}
	// A timeout is not a verdict: the next check asks again, and a good
	// answer makes the authorizer healthy again.
	slow.Store(false)
	wantDecision(t, check(a, cookieRequest("/feed", "s=1")), true, 0, "")
	if ok, detail := a.Healthy(); !ok {
		t.Errorf("Healthy = false (%s) after a good answer", detail)
	}
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("auth server got %d requests, want 2", n)
	}
}

func TestDelegateForwardsOnlyListedHeaders(t *testing.T) {
	client := header(
		"Authorization", "Bearer abc",
		"Cookie", "session=1",
		"Cookie", "theme=dark",
		"X-Secret", "do not send",
		"X-Api-Key", "k1",
		"X-Forwarded-For", "6.6.6.6",
		"X-Original-URI", "/lies",
		"Last-Event-ID", "42",
	)
	// Added by Go's client, not by the client of the node.
	transport := map[string]bool{"User-Agent": true, "Accept-Encoding": true}
	tests := []struct {
		name    string
		forward []string
		want    http.Header
	}{
		{"default", nil, header(
			"Authorization", "Bearer abc",
			"Cookie", "session=1", "Cookie", "theme=dark",
			"X-Original-Uri", "/feed?topic=a",
			"X-Forwarded-For", "192.0.2.7",
		)},
		{"custom list", []string{"x-api-key", "X-Absent"}, header(
			"X-Api-Key", "k1",
			"X-Original-Uri", "/feed?topic=a",
			"X-Forwarded-For", "192.0.2.7",
		)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan http.Header, 1)
			srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
				h := r.Header.Clone()
				for k := range transport {
					h.Del(k)
				}
				got <- h
			})
			a := delegateAuth(t, srv.URL, newFakeClock(), options{}, func(c *DelegateConfig) { c.Forward = tt.forward })
			r := Request{Header: client, Path: "/feed", OriginalURI: "/feed?topic=a", ClientAddr: "192.0.2.7"}
			wantDecision(t, check(a, r), true, 0, "")
			h := recv(t, got, "the auth request")
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("auth server saw\n%v\nwant\n%v", sortedHeader(h), sortedHeader(tt.want))
			}
		})
	}
}

func sortedHeader(h http.Header) string {
	var lines []string
	for k, vs := range h {
		lines = append(lines, k+": "+strings.Join(vs, " | "))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestDelegateCache(t *testing.T) {
	// Checks at 0, 10, 29 and 31 s with a 30 s cache: the requests made so
	// far after each.
	steps := []time.Duration{0, 10 * time.Second, 19 * time.Second, 2 * time.Second}
	tests := []struct {
		name     string
		status   int
		allow    bool
		want     int // status when refused
		reason   string
		requests []int64
		hits     uint64
	}{
		{"admit is cached", 200, true, 0, "", []int64{1, 1, 1, 2}, 2},
		{"refusal is cached", 403, false, 403, ReasonDenied, []int64{1, 1, 1, 2}, 2},
		{"error is not cached", 500, false, 503, ReasonAuthUnavailable, []int64{1, 2, 3, 4}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(tt.status) })
			clk := newFakeClock()
			a := delegateAuth(t, srv.URL, clk, options{}, func(c *DelegateConfig) { c.Cache = dur(30 * time.Second) })
			for i, adv := range steps {
				clk.Advance(adv)
				wantDecision(t, check(a, cookieRequest("/feed", "s=1")), tt.allow, tt.want, tt.reason)
				if n := srv.requests.Load(); n != tt.requests[i] {
					t.Fatalf("after check %d: %d requests, want %d", i, n, tt.requests[i])
				}
			}
			if hits := a.Stats().CacheHits; hits != tt.hits {
				t.Errorf("CacheHits = %d, want %d", hits, tt.hits)
			}
		})
	}
}

func TestDelegateCacheOff(t *testing.T) {
	srv := newAuthServer(t, func(http.ResponseWriter, *http.Request) {})
	a := delegateAuth(t, srv.URL, newFakeClock(), options{}, func(c *DelegateConfig) { c.Cache = dur(0) })
	for range 3 {
		wantDecision(t, check(a, cookieRequest("/feed", "s=1")), true, 0, "")
	}
	if n := srv.requests.Load(); n != 3 {
		t.Errorf("%d requests with the cache off, want 3", n)
	}
}

// TestDelegateCacheKeyHasPath: a credential may read one stream and not
// another, so a verdict for one path is not reused for another.
func TestDelegateCacheKeyHasPath(t *testing.T) {
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Original-URI") != "/public" {
			w.WriteHeader(http.StatusForbidden)
		}
	})
	a := delegateAuth(t, srv.URL, newFakeClock(), options{}, nil)
	wantDecision(t, check(a, cookieRequest("/public", "s=1")), true, 0, "")
	wantDecision(t, check(a, cookieRequest("/private", "s=1")), false, 403, ReasonDenied)
	wantDecision(t, check(a, cookieRequest("/public", "s=1")), true, 0, "")
	wantDecision(t, check(a, cookieRequest("/private", "s=1")), false, 403, ReasonDenied)
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (one per path)", n)
	}
}

// TestDelegateMerge: a flood of clients with one cookie makes one request,
// even with the cache off, because concurrent checks share it.
func TestDelegateMerge(t *testing.T) {
	const n = 1000
	release := make(chan struct{})
	arrived := make(chan struct{}, n)
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	})
	joined := make(chan struct{}, n)
	a := delegateAuth(t, srv.URL, newFakeClock(), options{joined: func() { joined <- struct{}{} }},
		func(c *DelegateConfig) { c.Cache = dur(0) })

	var wg sync.WaitGroup
	var allowed atomic.Int64
	for range n {
		wg.Go(func() {
			if check(a, cookieRequest("/feed", "session=flood")).Allow {
				allowed.Add(1)
			}
		})
	}
	recv(t, arrived, "the one request")
	for i := range n - 1 {
		recv(t, joined, fmt.Sprintf("check %d to join", i))
	}
	close(release)
	wg.Wait()
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("auth server got %d requests, want 1", got)
	}
	if got := allowed.Load(); got != n {
		t.Errorf("%d of %d checks allowed", got, n)
	}
	if s := a.Stats(); s.Merged != n-1 || s.AuthRequests != 1 || s.Allowed != n {
		t.Errorf("Stats Merged = %d AuthRequests = %d Allowed = %d, want %d, 1, %d", s.Merged, s.AuthRequests, s.Allowed, n-1, n)
	}
}

// TestDelegateBound: with MaxConcurrent 2, the auth server never sees more
// than 2 requests at once; the others wait for a slot.
func TestDelegateBound(t *testing.T) {
	const n = 8
	var inFlight, peak atomic.Int64
	release := make(chan struct{})
	arrived := make(chan struct{}, n)
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		now := inFlight.Add(1)
		for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
		}
		arrived <- struct{}{}
		<-release
		inFlight.Add(-1)
	})
	waiting := make(chan struct{}, n)
	a := delegateAuth(t, srv.URL, newFakeClock(), options{slotWait: func() { waiting <- struct{}{} }},
		func(c *DelegateConfig) { c.MaxConcurrent, c.Timeout = 2, 30*time.Second })

	var wg sync.WaitGroup
	var allowed atomic.Int64
	for i := range n {
		wg.Go(func() {
			if check(a, cookieRequest("/feed", fmt.Sprintf("user=%d", i))).Allow {
				allowed.Add(1)
			}
		})
	}
	// Two requests hold the slots and every other check waits for one:
	// only now is "at most 2" a claim about the bound.
	recv(t, arrived, "request 1")
	recv(t, arrived, "request 2")
	for i := range n - 2 {
		recv(t, waiting, fmt.Sprintf("check %d to wait for a slot", i))
	}
	if got := inFlight.Load(); got != 2 {
		t.Errorf("%d requests in flight while all checks are started, want 2", got)
	}
	close(release)
	wg.Wait()
	if got := peak.Load(); got != 2 {
		t.Errorf("peak in flight = %d, want 2", got)
	}
	if got := srv.requests.Load(); got != n {
		t.Errorf("%d requests, want %d", got, n)
	}
	if got := allowed.Load(); got != n {
		t.Errorf("%d of %d allowed", got, n)
	}
}

// TestDelegateOverloaded: a check that gets no slot within Timeout is 503
// overloaded, and makes no request.
func TestDelegateOverloaded(t *testing.T) {
	srv := newAuthServer(t, func(http.ResponseWriter, *http.Request) {})
	a := delegateAuth(t, srv.URL, newFakeClock(), options{}, func(c *DelegateConfig) {
		c.MaxConcurrent, c.Timeout = 1, 50*time.Millisecond
	})
	d := a.impl.(*delegate)
	d.sem <- struct{}{} // the only slot, held
	wantDecision(t, check(a, cookieRequest("/feed", "s=1")), false, 503, ReasonOverloaded)
	<-d.sem
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests while overloaded", n)
	}
	// Overload is not cached: with the slot free the check goes through.
	wantDecision(t, check(a, cookieRequest("/feed", "s=1")), true, 0, "")
	if ok, detail := a.Healthy(); !ok {
		t.Errorf("Healthy = false (%s): overload is ours, not the auth server's", detail)
	}
}

// TestDelegateWaiterContext: a check waiting for another's request gives up
// when its own context ends; the request and its owner are unaffected.
func TestDelegateWaiterContext(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	srv := newAuthServer(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	})
	joined := make(chan struct{}, 1)
	a := delegateAuth(t, srv.URL, newFakeClock(), options{joined: func() { joined <- struct{}{} }}, nil)
	first := make(chan Decision, 1)
	go func() { first <- check(a, cookieRequest("/feed", "s=1")) }()
	recv(t, arrived, "the request")
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan Decision, 1)
	go func() { second <- a.Check(ctx, cookieRequest("/feed", "s=1")) }()
	recv(t, joined, "the second check to join")
	cancel()
	wantDecision(t, recv(t, second, "the second decision"), false, 503, ReasonTimeout)
	close(release)
	wantDecision(t, recv(t, first, "the first decision"), true, 0, "")
}

func TestCheckAfterClose(t *testing.T) {
	srv := newAuthServer(t, func(http.ResponseWriter, *http.Request) {})
	a := delegateAuth(t, srv.URL, newFakeClock(), options{}, nil)
	a.Close()
	a.Close() // idempotent
	wantDecision(t, check(a, cookieRequest("/feed", "s=1")), false, 503, ReasonAuthUnavailable)
	if n := srv.requests.Load(); n != 0 {
		t.Errorf("%d requests after Close", n)
	}
}
