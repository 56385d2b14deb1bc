package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/sse"
)

// newUpstreamClient builds the HTTP client for upstream streams: no overall
// timeout (a stream never ends by itself), a bound on waiting for response
// headers, retries only for transport errors, 429 and 5xx.
func newUpstreamClient(cfg Config, log logrus.FieldLogger) *retryablehttp.Client {
	tr := &http.Transport{
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
	c.HTTPClient = &http.Client{Transport: tr}
	c.RetryMax = cfg.ConnectRetries
	c.RetryWaitMin = cfg.BackoffMin
	c.RetryWaitMax = cfg.BackoffMax
	c.Backoff = jitterBackoff
	c.CheckRetry = checkRetry
	// Hand the last answer back as it is, so a refusal's status reaches the
	// subscriber instead of a generic "giving up" error.
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.Logger = leveledLogger{log}
	return c
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
	return backoff(min, max, attempt)
}

// backoff returns a delay in [d/2, d] where d = min*2^attempt capped at max.
func backoff(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
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
		return nil, &Error{Status: http.StatusBadGateway, Reason: fmt.Sprintf("bad upstream URL: %v", err)}, false
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
	if hasLastID {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if t.Fallback {
		req = req.WithContext(context.WithValue(ctx, failFastKey{}, true))
	}
	resp, err := s.r.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, &Error{Status: http.StatusServiceUnavailable, Reason: "cancelled"}, false
		}
		s.r.metrics.upstreamError("transport")
		return nil, &Error{Status: http.StatusBadGateway, Reason: fmt.Sprintf("upstream unreachable: %v", unwrapURL(err))}, false
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		drainClose(resp)
		s.r.metrics.upstreamError("204")
		return nil, &Error{Status: http.StatusNoContent, Upstream: 204, Reason: "upstream ended the stream (204 No Content)"}, true
	case resp.StatusCode != http.StatusOK:
		drainClose(resp)
		s.r.metrics.upstreamError(strconv.Itoa(resp.StatusCode))
		status := resp.StatusCode
		if status < 400 || status > 599 {
			status = http.StatusBadGateway
		}
		return nil, &Error{Status: status, Upstream: resp.StatusCode, Reason: fmt.Sprintf("upstream answered %s", resp.Status)}, false
	case !isEventStream(resp.Header.Get("Content-Type")):
		drainClose(resp)
		s.r.metrics.upstreamError("content_type")
		return nil, &Error{Status: http.StatusBadGateway, Upstream: 200, Reason: fmt.Sprintf("upstream answered Content-Type %q, not text/event-stream", resp.Header.Get("Content-Type"))}, false
	}
	return resp, nil, false
}

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

// drainClose discards a small body so the connection can be reused.
func drainClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// runUpstream keeps the stream's upstream subscription alive until the stream
// closes: connect, read, reconnect with backoff and Last-Event-ID, and switch
// targets make-before-break when asked to.
func (s *stream) runUpstream() {
	cfg := &s.r.cfg
	attempt := 0
	failures := 0
	var prev *Attempt
	for s.ctx.Err() == nil {
		t, err := s.target(prev)
		prev = nil
		if err != nil {
			if s.fail(&Error{Status: http.StatusBadGateway, Reason: fmt.Sprintf("no upstream: %v", err)}, false) {
				return
			}
			s.noteFailure(&failures, err.Error())
			s.sleep(backoff(cfg.BackoffMin, cfg.BackoffMax, attempt))
			attempt++
			continue
		}
		lastID, hasLastID := s.resumeID()
		resp, refusal, ended := s.connect(s.ctx, t, lastID, hasLastID)
		if refusal != nil {
			if s.ctx.Err() != nil {
				return
			}
			prev = &Attempt{Target: t, Status: refusal.Upstream, Reason: refusal.Reason}
			// A refusal from one of several upstreams is not the stream's
			// answer: try the next one.
			hidden := t.Fallback && !ended && fallbackStatus(refusal.Upstream)
			if !hidden && s.fail(refusal, ended) {
				if ended {
					s.log.WithField("upstream", t.Label).Info("upstream ended the stream (204): subscribers closed")
				} else {
					s.log.WithField("upstream", t.Label).WithField("reason", refusal.Reason).Warn("upstream refused the stream")
				}
				return
			}
			s.noteFailure(&failures, refusal.Reason)
			s.sleep(s.retryFloor(t, backoff(cfg.BackoffMin, cfg.BackoffMax, attempt)))
			attempt++
			continue
		}
		skip := 0
		for resp != nil {
			s.r.metrics.UpstreamConnects.Add(1)
			s.setLive(t)
			if failures > 0 {
				s.log.WithField("upstream", t.Label).WithField("failures", failures).Info("upstream reconnected")
				failures = 0
			}
			var sw *switchover
			var got int
			got, err, sw = s.readSwitchable(resp, t, skip)
			if got > 0 {
				attempt = 0 // a stream that delivered is healthy again
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
		reason := "upstream closed the stream"
		if err != nil {
			reason = err.Error()
		}
		prev = &Attempt{Target: t, Reason: reason}
		s.noteFailure(&failures, reason)
		s.sleep(s.retryFloor(t, backoff(cfg.BackoffMin, cfg.BackoffMax, attempt)))
		attempt++
	}
}

// fallbackStatus: answers that say "this upstream cannot serve now" rather
// than "the stream is so": transport errors (0), gateway errors and loops.
func fallbackStatus(status int) bool {
	switch status {
	case 0, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout, http.StatusLoopDetected:
		return true
	}
	return false
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
			if err != nil || nt.URL == cur.URL {
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
					_, _ = s.target(&Attempt{Target: nt, Status: refusal.Upstream, Reason: refusal.Reason})
				}
				continue
			}
			// skip is resolved once the old connection has stopped.
			result <- &switchover{target: nt, resp: nresp, base: base, resume: hasLastID}
			_ = resp.Body.Close() // break: the read below returns
			return
		}
	}()
	got, err := s.read(resp, skip)
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
func (s *stream) noteFailure(failures *int, reason string) {
	*failures++
	s.mu.Lock()
	s.lastErr = reason
	s.mu.Unlock()
	if *failures == 1 || *failures%10 == 0 {
		s.log.WithField("failures", *failures).WithField("reason", reason).Warn("upstream lost: reconnecting with backoff")
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

func (s *stream) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

var (
	errIdle     = errors.New("upstream silent for longer than idle_timeout")
	errTooLarge = errors.New("upstream event exceeds max_event_bytes")
)

// read consumes one upstream response until it ends, publishing every block
// but the first skip ones. It returns how many blocks arrived.
func (s *stream) read(resp *http.Response, skip int) (int, error) {
	defer resp.Body.Close()
	cfg := &s.r.cfg
	// The idle timer cancels the body read: any bytes, comments included,
	// prove the upstream alive.
	idle := make(chan struct{})
	var once sync.Once
	timer := time.AfterFunc(cfg.IdleTimeout, func() {
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
		s.publish(ev, time.Now())
	}
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			timer.Reset(cfg.IdleTimeout)
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
