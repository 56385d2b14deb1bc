package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/retry"
	"github.com/ssemesh/ssemesh/internal/sse"
)

// newUpstreamClient builds the HTTP client for upstream streams: no overall
// timeout (a stream never ends by itself), a bound on waiting for response
// headers, retries only for transport errors, 429 and 5xx, and redirects
// followed only within the upstream's own origin.
func newUpstreamClient(cfg Config, log logrus.FieldLogger, tc *tls.Config) *retryablehttp.Client {
	tr := &http.Transport{
		TLSClientConfig:       tc,
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: cfg.ConnectTimeout,
		TLSHandshakeTimeout:   cfg.ConnectTimeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		// SSE bodies are read as they come; compression would only buffer.
		DisableCompression: true,
	}
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{Transport: refusedBodyCloser{tr}, CheckRedirect: checkRedirect}
	c.RetryMax = cfg.ConnectRetries
	c.RetryWaitMin = cfg.BackoffMin
	c.RetryWaitMax = cfg.BackoffMax
	c.Backoff = jitterBackoff
	c.CheckRetry = checkRetry
	c.PrepareRetry = func(req *http.Request) error {
		prepare(req)
		return nil
	}
	// Hand the last answer back as it is, so a refusal's status reaches the
	// subscriber instead of a generic "giving up" error.
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.Logger = leveledLogger{log}
	return c
}

// maxRedirects bounds the redirects followed for one connect, as a browser's
// EventSource would follow a few.
const maxRedirects = 3

// checkRedirect follows a redirect only to the origin (scheme, host and
// port) of the request that started the chain, at most maxRedirects times.
// The configured headers and credentials travel with every hop, so any other
// origin would receive them: such a redirect is answered to subscribers as
// the refusal it is instead. The Referer Go adds names the upstream URL with
// its query, which may hold a key; it is dropped.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects || !sameOrigin(via[0].URL, req.URL) {
		return http.ErrUseLastResponse
	}
	req.Header.Del("Referer")
	prepare(req)
	return nil
}

// sameOrigin compares scheme, host and port, with default ports filled in.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && portOf(a) == portOf(b)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// refusedBodyCloser closes the body of every answer that is not a stream
// before anyone reads it. A back end may answer an error status, or 200 with
// another content type, and keep the connection open without ever ending
// the body: reading it to reuse the connection (as the retrying client
// does between attempts) would block the stream for good.
type refusedBodyCloser struct{ base *http.Transport }

func (t refusedBodyCloser) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && (resp.StatusCode != http.StatusOK || !isEventStream(resp.Header.Get("Content-Type"))) {
		_ = resp.Body.Close()
		resp.Body = http.NoBody
	}
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (t refusedBodyCloser) CloseIdleConnections() { t.base.CloseIdleConnections() }

// prepareKey carries a Target's Prepare to every attempt of a request.
type prepareKey struct{}

// prepare runs the request's Target.Prepare, if any.
func prepare(req *http.Request) {
	if f, ok := req.Context().Value(prepareKey{}).(func(*http.Request)); ok {
		f(req)
	}
}

// failFastKey marks a request to an upstream that has alternatives (another
// parent node, another back-end instance): the stream moves on to the next
// one at once instead of retrying this one.
type failFastKey struct{}

// checkRetry retries transport errors, 429 and 5xx (but not 501), never a
// cancelled context, never another status: a 4xx or 204 is the back end's
// answer and is passed on.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if ctx.Value(failFastKey{}) != nil {
		return false, nil
	}
	if err != nil {
		return true, nil
	}
	if resp.StatusCode == http.StatusTooManyRequests || (resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented) {
		return true, nil
	}
	return false, nil
}

// jitterBackoff is exponential backoff with full jitter between min and
// max, honouring Retry-After on 429/503.
func jitterBackoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			// Compare in seconds: a huge value would overflow the Duration
			// and wrap to an immediate retry.
			if int64(s) <= int64(max/time.Second) {
				return time.Duration(s) * time.Second
			}
			return max
		}
	}
	return backoffFor(min, max).Delay(attempt)
}

// backoffFor is the relay's backoff between min and max: waits in [d/2, d]
// where d = min·2^attempt capped at max. A min above max counts as max
// (Config.Validate refuses it; go-retryablehttp passes its own bounds).
func backoffFor(lo, hi time.Duration) retry.Backoff {
	return retry.Backoff{Min: min(lo, hi), Max: hi, Jitter: retry.HalfJitter}
}

// leveledLogger routes go-retryablehttp's per-request chatter to debug.
type leveledLogger struct{ log logrus.FieldLogger }

func (l leveledLogger) fields(kv []interface{}) logrus.FieldLogger {
	f := logrus.Fields{}
	for i := 0; i+1 < len(kv); i += 2 {
		f[fmt.Sprint(kv[i])] = kv[i+1]
	}
	return l.log.WithFields(f)
}
func (l leveledLogger) Error(msg string, kv ...interface{}) { l.fields(kv).Debug(msg) }
func (l leveledLogger) Warn(msg string, kv ...interface{})  { l.fields(kv).Debug(msg) }
func (l leveledLogger) Info(msg string, kv ...interface{})  { l.fields(kv).Debug(msg) }
func (l leveledLogger) Debug(msg string, kv ...interface{}) { l.fields(kv).Debug(msg) }

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}

// connect opens the upstream once (with the client's own retries) and
// classifies the answer. resp is non-nil only for a usable stream.
func (s *stream) connect(ctx context.Context, t Target, lastID string, hasLastID bool) (*http.Response, *Error, bool) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeNoUpstream, Reason: fmt.Sprintf("bad upstream URL: %v", err)}, false
	}
	for k, vs := range t.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if h := t.Header.Get("Host"); h != "" {
		req.Host = h
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", s.r.cfg.UserAgent)
	}
	// An id that cannot be a header value was never sent by an upstream
	// (the parser refuses them) and must not fail the request: callers
	// check ids from clients, this is the last line.
	if hasLastID && ValidLastEventID(lastID) {
		req.Header.Set("Last-Event-ID", lastID)
	}
	rctx := ctx
	if t.Fallback {
		rctx = context.WithValue(rctx, failFastKey{}, true)
	}
	if t.Prepare != nil {
		rctx = context.WithValue(rctx, prepareKey{}, t.Prepare)
		t.Prepare(req.Request)
	}
	req = req.WithContext(rctx)
	resp, err := s.r.clientFor(t.TLS).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, &Error{Status: http.StatusServiceUnavailable, Code: CodeStreamClosing, Reason: "cancelled"}, false
		}
		s.r.metrics.upstreamError("transport")
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeUpstreamUnreachable, Reason: fmt.Sprintf("upstream unreachable: %v", unwrapURL(err))}, false
	}
	// A node upstream names its refusals; a chain passes the name on.
	relayed := codeFrom(resp.Header.Get(ErrorHeader))
	pick := func(own string) string {
		if relayed != "" {
			return relayed
		}
		return own
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		drainClose(resp)
		s.r.metrics.upstreamError("204")
		return nil, &Error{Status: http.StatusNoContent, Code: pick(CodeStreamEnded), Upstream: 204, Reason: "upstream ended the stream (204 No Content)"}, true
	case isRedirect(resp.StatusCode):
		drainClose(resp)
		s.r.metrics.upstreamError("redirect")
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeUpstreamRedirect, Upstream: resp.StatusCode,
			Reason: fmt.Sprintf("upstream answered %s to %s: redirects are followed only within the upstream's origin, at most %d times", resp.Status, redirectOrigin(resp), maxRedirects)}, false
	case resp.StatusCode != http.StatusOK:
		drainClose(resp)
		s.r.metrics.upstreamError(strconv.Itoa(resp.StatusCode))
		status := resp.StatusCode
		if status < 400 || status > 599 {
			status = http.StatusBadGateway
		}
		return nil, &Error{Status: status, Code: pick(CodeUpstreamStatus), Upstream: resp.StatusCode, Reason: fmt.Sprintf("upstream answered %s", resp.Status),
			RetryAfter: retryAfterOf(resp)}, false
	case !isEventStream(resp.Header.Get("Content-Type")):
		drainClose(resp)
		s.r.metrics.upstreamError("content_type")
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeUpstreamContentType, Upstream: 200, Reason: fmt.Sprintf("upstream answered Content-Type %q, not text/event-stream", resp.Header.Get("Content-Type"))}, false
	}
	return resp, nil, false
}

// isRedirect reports the statuses an HTTP client follows.
func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// codeFrom accepts a refusal code from an upstream's ErrorHeader: lower-case
// letters and '_', at most 40 of them. Anything else is not a code.
func codeFrom(v string) string {
	if v == "" || len(v) > 40 {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 'a' || c > 'z') && c != '_' {
			return ""
		}
	}
	return v
}

// retryAfterOf reads a refusal's Retry-After in seconds (0 when absent),
// so a node passes on the pace its upstream asked for.
func retryAfterOf(resp *http.Response) int {
	s, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || s < 0 {
		return 0
	}
	return min(s, 3600)
}

// redirectOrigin names where a redirect pointed, without its path and
// query (which may carry a key), for the log.
func redirectOrigin(resp *http.Response) string {
	loc, err := resp.Location()
	if err != nil {
		return "an unreadable location"
	}
	return loc.Scheme + "://" + loc.Host
}

// ValidLastEventID reports whether id can be sent as a Last-Event-ID: no
// CR, LF or NUL (a header value cannot hold them; a WHATWG client never
// sends them) and at most MaxLastEventIDBytes.
func ValidLastEventID(id string) bool {
	return len(id) <= MaxLastEventIDBytes && !strings.ContainsAny(id, "\r\n\x00")
}

// MaxLastEventIDBytes bounds a resume point taken from a client.
const MaxLastEventIDBytes = 1024

func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	for errors.As(err, &ue) {
		inner := ue.Unwrap()
		if inner == nil {
			break
		}
		err = inner
		if _, ok := err.(*net.OpError); ok {
			break
		}
	}
	return err
}

// drainClose closes a refused answer's body. refusedBodyCloser has closed
// the connection's body already; reading it could block for good.
func drainClose(resp *http.Response) { _ = resp.Body.Close() }

// upstream is the upstream half of a stream: where it connects, the
// connection delivering now and the history fetches running. The fields
// below the channels are guarded by the fan-out half's mu.
type upstream struct {
	target   TargetFunc
	ctx      context.Context // the stream's lifetime; fanout.stop ends it
	retarget chan struct{}   // 1-buffered: the target changed, reconnect make-before-break

	origin     string // Last-Event-ID the stream was first opened upstream with
	originSet  bool
	label      string // upstream label, for reports
	parent     string // Target.Parent of the connection delivering now
	lastErr    string
	reconnects uint64
	fetches    map[string]*fetchCall // history fetches running, by resume id
}

// resumeID is the Last-Event-ID for the next upstream connection.
func (s *stream) resumeID() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastID, s.hasLastID
}

func (s *stream) retargetSignal() {
	select {
	case s.retarget <- struct{}{}:
	default:
	}
}

// runUpstream keeps the stream's upstream subscription alive until the stream
// closes: connect, read, reconnect with backoff and Last-Event-ID, and switch
// targets make-before-break when asked to.
func (s *stream) runUpstream() {
	cfg := &s.r.cfg
	bo := backoffFor(cfg.BackoffMin, cfg.BackoffMax)
	var failures retry.Failures
	var prev *Attempt
	for s.ctx.Err() == nil {
		t, err := s.target(prev)
		prev = nil
		if err != nil {
			if s.fail(&Error{Status: http.StatusBadGateway, Code: CodeNoUpstream, Reason: fmt.Sprintf("no upstream: %v", err), RetryAfter: 1}, false) {
				return
			}
			s.noteFailure(&failures, err.Error())
			s.sleep(bo.Next())
			continue
		}
		lastID, hasLastID := s.resumeID()
		resp, refusal, ended := s.connect(s.ctx, t, lastID, hasLastID)
		if refusal != nil {
			if s.ctx.Err() != nil {
				return
			}
			if !ended && s.dropRefusedOrigin(refusal) {
				continue
			}
			prev = &Attempt{Target: t, Status: refusal.Upstream, Code: refusal.Code, Reason: refusal.Reason}
			// The upstream's own failure (one of several parents or
			// instances that cannot serve now) is not the stream's answer:
			// ask for a target again.
			hidden := !ended && t.Hide != nil && t.Hide(refusal)
			if !hidden && s.fail(refusal, ended) {
				// Streams that fail at once come in floods when a client
				// asks for many that do not exist: one line per few
				// seconds says what happens.
				if ended {
					s.r.logs.Log("ended", s.log.WithField("upstream", t.Label), logrus.InfoLevel, "upstream ended the stream (204): subscribers closed")
				} else {
					s.r.logs.Log("refused", s.log.WithField("upstream", t.Label).WithField("reason", refusal.Reason), logrus.WarnLevel, "upstream refused the stream")
				}
				return
			}
			s.noteFailure(&failures, refusal.Reason)
			s.sleep(s.retryFloor(t, bo.Next()))
			continue
		}
		skip := 0
		for resp != nil {
			s.r.metrics.UpstreamConnects.Add(1)
			s.setLive(t)
			if n := failures.Reset(); n > 0 {
				s.log.WithField("upstream", t.Label).WithField("failures", n).Info("upstream reconnected")
			}
			var sw *switchover
			var got int
			got, err, sw = s.readSwitchable(resp, t, skip)
			if got > 0 {
				bo.Reset() // a stream that delivered is healthy again
			}
			resp = nil
			if sw != nil {
				s.r.metrics.Reparents.Add(1)
				s.log.WithFields(logrus.Fields{"from": t.Label, "to": sw.target.Label, "skip": sw.skip}).Info("upstream switched make-before-break")
				t, resp, skip = sw.target, sw.resp, sw.skip
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		s.reconnects++
		s.mu.Unlock()
		reason, code := "upstream closed the stream", ""
		switch {
		case errors.Is(err, errIdle):
			reason, code = err.Error(), CodeUpstreamIdle
		case errors.Is(err, errTooLarge):
			reason, code = err.Error(), CodeUpstreamTooLarge
		case err != nil:
			reason, code = err.Error(), CodeUpstreamRead
		}
		prev = &Attempt{Target: t, Code: code, Reason: reason}
		s.noteFailure(&failures, reason)
		s.sleep(s.retryFloor(t, bo.Next()))
	}
}

// dropRefusedOrigin handles the first connect of a stream opened from a
// subscriber's Last-Event-ID that the upstream refused as a client error
// (4xx). The id is the opening subscriber's, and other subscribers that
// joined while the stream connected must not get that subscriber's refusal:
// the stream reconnects at once without the id, and the subscriber that
// named it resumes through a history fetch (a gap if that is refused too).
// It reports whether the stream should reconnect.
func (s *stream) dropRefusedOrigin(e *Error) bool {
	if e.Upstream < 400 || e.Upstream > 499 || e.Upstream == http.StatusTooManyRequests || e.Upstream == http.StatusRequestTimeout {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateConnecting || !s.originSet || s.eventsIn > 0 {
		return false
	}
	s.log.WithField("last_event_id", s.origin).WithField("reason", e.Reason).Info("upstream refused to resume from the id the stream was opened with: opening it without")
	s.originSet, s.origin = false, ""
	s.lastID, s.hasLastID = "", false
	return true
}

// switchover is a new upstream connection opened while the old one was
// still delivering; skip is how many of its first blocks the old one
// already delivered.
type switchover struct {
	target Target
	resp   *http.Response
	skip   int
	base   uint64 // eventsIn at the resume point
	resume bool   // the new connection resumed from an id
}

// readSwitchable reads resp like read, while watching for a retarget
// request. On one it opens the new target resumed from the last id, and only
// once that answered closes the old connection (make-before-break). Blocks
// the old connection delivered after the resume point are skipped on the new
// one, so subscribers see neither a gap nor a duplicate.
func (s *stream) readSwitchable(resp *http.Response, cur Target, skip int) (int, error, *switchover) {
	wctx, wcancel := context.WithCancel(s.ctx)
	result := make(chan *switchover, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-wctx.Done():
				return
			case <-s.retarget:
			}
			nt, err := s.target(nil)
			if err != nil || (nt.URL == cur.URL && nt.Version == cur.Version) {
				continue
			}
			s.mu.Lock()
			lastID, hasLastID, base := s.lastID, s.hasLastID, s.eventsAtLastID
			s.mu.Unlock()
			nresp, refusal, _ := s.connect(s.ctx, nt, lastID, hasLastID)
			if refusal != nil {
				if wctx.Err() == nil {
					s.log.WithField("to", nt.Label).WithField("reason", refusal.Reason).Warn("new upstream refused: staying on the current one")
					// Report the refusal so the target function can steer
					// away from it (a node avoids that parent for a while);
					// the stream stays where it is, so the choice it
					// returns is not used now.
					_, _ = s.target(&Attempt{Target: nt, Status: refusal.Upstream, Code: refusal.Code, Reason: refusal.Reason})
				}
				continue
			}
			// skip is resolved once the old connection has stopped.
			result <- &switchover{target: nt, resp: nresp, base: base, resume: hasLastID}
			_ = resp.Body.Close() // break: the read below returns
			return
		}
	}()
	got, err := s.read(resp, skip, idleFor(&s.r.cfg, resp, cur.Parent != ""))
	wcancel()
	<-done
	select {
	case sw := <-result:
		if sw.resume {
			s.mu.Lock()
			sw.skip = int(s.eventsIn - sw.base)
			s.mu.Unlock()
		}
		return got, nil, sw
	default:
		return got, err, nil
	}
}

// noteFailure logs the first failure of a run and every tenth after it.
func (s *stream) noteFailure(failures *retry.Failures, reason string) {
	n, log := failures.Add()
	s.mu.Lock()
	s.lastErr = reason
	s.mu.Unlock()
	if log {
		s.log.WithField("failures", n).WithField("reason", reason).Warn("upstream lost: reconnecting with backoff")
	}
}

// retryFloor raises a backoff to the upstream's own retry: value, the pace
// the back end asked its clients to reconnect at. It does not apply after a
// parent node failed: the next attempt goes to another node, and re-parenting
// must not wait for a delay meant for the back end.
func (s *stream) retryFloor(t Target, d time.Duration) time.Duration {
	if t.Parent != "" {
		return d
	}
	s.mu.Lock()
	r := s.retry
	s.mu.Unlock()
	if r > 0 {
		if floor := time.Duration(r) * time.Millisecond; floor > d && floor <= s.r.cfg.BackoffMax {
			return floor
		}
	}
	return d
}

// sleep waits out a backoff. A retarget ends it early: the node has a new
// view (the parent that failed is gone from it, another one is chosen), and
// waiting the rest of a backoff meant for the old target only keeps the
// subscribers waiting.
func (s *stream) sleep(d time.Duration) {
	if s.r.onBackoff != nil {
		s.r.onBackoff(s.key)
	}
	retry.SleepWake(s.ctx, d, s.retarget)
}

var (
	errIdle     = errors.New("upstream silent for longer than idle_timeout")
	errTooLarge = errors.New("upstream event exceeds max_event_bytes")
)

// read consumes one upstream response until it ends, publishing every block
// but the first skip ones. It returns how many blocks arrived.
func (s *stream) read(resp *http.Response, skip int, idleAfter time.Duration) (int, error) {
	defer resp.Body.Close()
	cfg := &s.r.cfg
	// The idle timer cancels the body read: any bytes, comments included,
	// prove the upstream alive.
	idle := make(chan struct{})
	var once sync.Once
	timer := time.AfterFunc(idleAfter, func() {
		once.Do(func() { close(idle) })
		_ = resp.Body.Close()
	})
	defer timer.Stop()
	p := sse.NewParser(cfg.MaxEventBytes)
	buf := make([]byte, 64<<10)
	got := 0
	emit := func(ev sse.Event) {
		got++
		if skip > 0 {
			skip--
			return
		}
		s.fanout.publish(ev, time.Now()) // the seam: one call per block
	}
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			timer.Reset(idleAfter)
			if perr := p.Feed(buf[:n], emit); perr != nil {
				s.r.metrics.upstreamError("too_large")
				s.log.WithError(perr).Error("upstream event too large: reconnecting (raise max_event_bytes if the back end really sends such events)")
				return got, errTooLarge
			}
		}
		if err != nil {
			select {
			case <-idle:
				s.r.metrics.upstreamError("idle")
				return got, errIdle
			default:
			}
			if err == io.EOF {
				return got, nil
			}
			return got, fmt.Errorf("reading upstream: %w", err)
		}
	}
}
