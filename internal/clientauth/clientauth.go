// Package clientauth decides whether a client may read a stream.
//
// A back end may require its clients to prove who they are, in one of two
// ways (Config):
//
//   - delegate: a GET to an auth server, the way nginx's auth_request and
//     nchan's authorize work. Only the configured headers of the client
//     go, with X-Original-URI and X-Forwarded-For; a 2xx admits, a 401 or
//     403 refuses with that status and the server's WWW-Authenticate, and
//     anything else refuses with 503 (fail closed). Verdicts are cached
//     per credential and stream, concurrent checks of one credential share
//     one request, and requests in flight are bounded, so a flood of
//     clients holding one cookie costs the auth server one request.
//     The auth server should decide on the forwarded headers and the URI
//     only: X-Forwarded-For is not part of the cache key.
//   - jwt: a token verified locally (Mercure style), from the
//     Authorization: Bearer header, else the configured cookie, else the
//     access_token query parameter. HS256 with a shared secret, RS256 and
//     ES256 with keys from a JWKS URL; no other algorithm, and each only
//     with its own kind of key. exp, nbf, aud and (when configured) iss are
//     checked with a leeway of Leeway. A token without exp is accepted and
//     never expires: issue short-lived tokens.
//
// Paths claim (jwt.paths_claim): the claim must be a list of strings. A
// token may read a stream when one of them is "*" (every stream) or
// matches the escaped stream path by path.Match over the whole path:
// "/feeds/*" admits "/feeds/a" but neither "/feeds/a/b" nor "/feeds".
// A missing claim, a claim that is not a list of strings, or one that
// matches nothing is 403 wrong_path.
//
// The node holds one Auth per back end, checks clients only (never child
// nodes, which meshauth admits), and renders a refusal as Decision.Status
// with Decision.Header. Nothing here logs per check; Decision.Detail is
// for the node's own log lines.
package clientauth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// QueryParam carries a token for clients that can set neither a header nor
// a cookie. The node removes it (StripToken) before the query is logged,
// keyed on or sent upstream.
const QueryParam = "access_token"

// Leeway is the clock skew allowed on exp and nbf.
const Leeway = 5 * time.Second

// Reasons are stable labels for refusals, for metrics and logs.
const (
	ReasonMissingCredentials = "missing_credentials" // no token (jwt)
	ReasonInvalidToken       = "invalid_token"       // malformed, bad signature, unknown key, wrong algorithm
	ReasonExpired            = "expired"             // exp passed
	ReasonNotYetValid        = "not_yet_valid"       // nbf in the future
	ReasonWrongAudience      = "wrong_audience"      // aud lacks Audience
	ReasonWrongIssuer        = "wrong_issuer"        // iss is not Issuer
	ReasonWrongPath          = "wrong_path"          // the paths claim does not cover the stream
	ReasonDenied             = "denied"              // the auth server answered 401 or 403
	ReasonAuthUnavailable    = "auth_unavailable"    // auth server error or odd status, JWKS unavailable, Auth closed
	ReasonTimeout            = "timeout"             // the auth server did not answer within Timeout
	ReasonOverloaded         = "overloaded"          // no request slot within Timeout
)

var reasons = [...]string{
	ReasonMissingCredentials, ReasonInvalidToken, ReasonExpired, ReasonNotYetValid,
	ReasonWrongAudience, ReasonWrongIssuer, ReasonWrongPath, ReasonDenied,
	ReasonAuthUnavailable, ReasonTimeout, ReasonOverloaded,
}

// Reasons returns every refusal reason, so that metrics can be created
// with all their labels before the first refusal.
func Reasons() []string { return append([]string(nil), reasons[:]...) }

// Request is what a check may look at; the node builds it from the client's
// request.
type Request struct {
	// Header is the client's request header (read only).
	Header http.Header
	// Path is the escaped stream path.
	Path string
	// Query is the client's query, access_token included: the jwt mode
	// reads the token from it when no header or cookie carries one.
	Query url.Values
	// ClientAddr is the client's IP address, sent as X-Forwarded-For.
	ClientAddr string
	// OriginalURI is path?query as the client sent it with access_token
	// removed, sent as X-Original-URI. Empty means Path and Query without
	// access_token.
	OriginalURI string
}

// uri is what the auth server is told the client asked for.
func (r Request) uri() string {
	if r.OriginalURI != "" {
		return r.OriginalURI
	}
	_, rest := StripToken(r.Query)
	if len(rest) == 0 {
		return r.Path
	}
	return r.Path + "?" + rest.Encode()
}

// Decision is the outcome of a check.
type Decision struct {
	// Allow admits the client.
	Allow bool
	// Status is the HTTP status to answer when !Allow: 401, 403 or 503.
	Status int
	// Reason is one of the Reason constants when !Allow, "" when Allow.
	Reason string
	// Header holds headers to send with the refusal (WWW-Authenticate).
	Header http.Header
	// Expires, when not zero, is when the admitted client's credentials
	// end (a token's exp); the node closes the stream then, with a retry
	// hint. It may lie up to Leeway in the past.
	Expires time.Time
	// Detail explains the outcome, for logs only: it may name keys or
	// errors but never carries credentials.
	Detail string
}

func allow(expires time.Time, detail string) Decision {
	return Decision{Allow: true, Expires: expires, Detail: detail}
}

func refuse(status int, reason, detail string) Decision {
	return Decision{Status: status, Reason: reason, Detail: detail}
}

// clone gives each caller its own Header: a decision shared between merged
// checks or kept in the cache must not be changed by one of them.
func (d Decision) clone() Decision {
	d.Header = d.Header.Clone()
	return d
}

// Authorizer decides whether a client may read a stream. Check must be safe
// for concurrent use.
type Authorizer interface {
	Check(ctx context.Context, r Request) Decision
}

// checker is one way of checking: delegate or jwt.
type checker interface {
	check(ctx context.Context, r Request) Decision
	healthy() (bool, string)
	closeIdle() // releases idle connections, after Close stopped all work
}

// Auth is the Authorizer of one back end. It is safe for concurrent use.
type Auth struct {
	impl   checker
	stats  *counters
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the goroutines started by start

	mu     sync.Mutex
	closed bool
}

var _ Authorizer = (*Auth)(nil)

// options are the knobs tests turn; New uses the defaults.
type options struct {
	now  func() time.Time // the clock for expiry: cache entries, tokens, fetch rate
	jwks jwksTiming
	// hooks let tests await events instead of sleeping: nil in production.
	slotWait func() // a delegate request waits for a free slot
	joined   func() // a delegate check joins another's request
}

func defaultOptions() options {
	return options{now: time.Now, jwks: defaultJWKSTiming}
}

// New returns the Authorizer for cfg. With a JWKS URL it starts the
// goroutine that keeps the keys fresh (Close stops it) and returns without
// waiting for the first fetch: checks made before it ends wait for it.
func New(cfg Config, log logrus.FieldLogger) (*Auth, error) {
	return newAuth(cfg, log, defaultOptions())
}

func newAuth(cfg Config, log logrus.FieldLogger, o options) (*Auth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("clientauth: %w", err)
	}
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = l
	}
	log = log.WithField("component", "clientauth")
	ctx, cancel := context.WithCancel(context.Background())
	a := &Auth{stats: newCounters(), ctx: ctx, cancel: cancel}
	var err error
	if cfg.Delegate != nil {
		a.impl, err = newDelegate(ctx, cfg.Delegate.withDefaults(), log, a.stats, o)
	} else {
		a.impl, err = newJWTChecker(cfg.JWT, log, a.stats, o, a.start)
	}
	if err != nil {
		// Nothing was started: the JWKS loop starts last, once it cannot fail.
		cancel()
		return nil, fmt.Errorf("clientauth: %w", err)
	}
	return a, nil
}

// start runs f in a goroutine owned by a: Close cancels ctx and waits for
// f to return. After Close it runs nothing.
func (a *Auth) start(f func(ctx context.Context)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f(a.ctx)
	}()
}

// Check decides whether the client described by r may read the stream.
// It returns within the delegate Timeout, or for jwt within a JWKS fetch
// when the token names an unknown key; ctx only shortens waits for work
// shared with other checks. After Close every check is 503.
func (a *Auth) Check(ctx context.Context, r Request) Decision {
	start := time.Now()
	var d Decision
	if a.ctx.Err() != nil {
		d = refuse(http.StatusServiceUnavailable, ReasonAuthUnavailable, "authorizer closed")
	} else {
		d = a.impl.check(ctx, r)
	}
	a.stats.observe(d, time.Since(start))
	return d
}

// Close stops the background work and waits for it; checks after Close
// are refused with 503.
func (a *Auth) Close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.wg.Wait()
	a.impl.closeIdle()
}

// Stats returns a snapshot of the counters since New.
func (a *Auth) Stats() Stats { return a.stats.snapshot() }

// Healthy reports false, with a detail for /readyz, while the last
// request to the auth server failed (error, timeout, 5xx or an odd
// status) or the last JWKS fetch failed or none has succeeded yet.
func (a *Auth) Healthy() (ok bool, detail string) { return a.impl.healthy() }

// StripToken returns the first access_token value of q and a copy of q
// without any; q is not changed.
func StripToken(q url.Values) (token string, rest url.Values) {
	rest = make(url.Values, len(q))
	for k, v := range q {
		if k == QueryParam {
			if len(v) > 0 {
				token = v[0]
			}
			continue
		}
		rest[k] = append([]string(nil), v...)
	}
	return token, rest
}
