package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/benchstat"
)

// workerSpec is what one worker process is told to do. All times are
// absolute so that every process of a run shares one schedule.
type workerSpec struct {
	ID int `json:"id"`
	// URLs are the load's targets; client i starts on URLs[homeURL(i)]
	// and moves to another after losing its stream (Failover).
	URLs    []string `json:"urls"`
	Sources []string `json:"sources"`
	// For https: the CA bundle to trust (empty: the system roots) or no
	// verification at all, and the protocol, protoHTTP1 (also for http) or
	// protoH2.
	CAFile   string `json:"ca_file,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`
	Proto    string `json:"proto,omitempty"`
	// Clients are dealt out in blocks of Block consecutive ones (0 counts
	// as 1); the worker runs blocks First, First+Stride, ... of the clients
	// below Total, so that every process takes part in every stage of the
	// ramp. Client i starts at Start + Ramp*i/Total. With h2 the clients of
	// a block share a connection per URL from source (i/Block) %
	// len(Sources); otherwise client i has its own from source i %
	// len(Sources).
	First  int `json:"first"`
	Stride int `json:"stride"`
	Total  int `json:"total"`
	Block  int `json:"block,omitempty"`
	// Start of the ramp, the measurement window [T0, T1), and End, when
	// every client disconnects.
	Start time.Time     `json:"start"`
	Ramp  time.Duration `json:"ramp"`
	T0    time.Time     `json:"t0"`
	T1    time.Time     `json:"t1"`
	End   time.Time     `json:"end"`
	// StormFrom and StormTo (zero: no storm) bound the send times of the
	// events whose latency StormLatency records for sessions established
	// before StormFrom: the clients the storm did not disconnect.
	StormFrom time.Time `json:"storm_from,omitzero"`
	StormTo   time.Time `json:"storm_to,omitzero"`
	// ConnectTimeout bounds dialling plus the response headers.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// MaxReconnects bounds the attempts of one client after its first;
	// reconnects of its own accord (churn) do not count.
	MaxReconnects int `json:"max_reconnects"`
	// Failover is failoverRandom or failoverNext; Delay sets the wait
	// before a reconnect.
	Failover string      `json:"failover"`
	Delay    delayPolicy `json:"delay"`
	// ChurnEvery is the mean time between two reconnects of a client of
	// its own accord (0: never).
	ChurnEvery time.Duration `json:"churn_every,omitempty"`
	// SampleEvery is the period of the timeline.
	SampleEvery time.Duration `json:"sample_every"`
}

// workerResult is one worker's mergeable outcome. The totals are the sums
// of the per-URL figures (URLs), but for the sequence range, the connect
// phase, the connections and the CPU, which only exist as totals.
type workerResult struct {
	Clients     int            `json:"clients"`
	Connected   int            `json:"connected"` // connected at least once
	Failed      int            `json:"failed"`    // never connected
	Late        int            `json:"late"`      // first connected after T0
	FailReasons map[string]int `json:"fail_reasons"`
	// Drops counts why connected sessions ended before the run did; each
	// drop is followed by a reconnect attempt.
	Drops      map[string]int `json:"drops"`
	Reconnects int            `json:"reconnects"`
	// LastConnect is when the last client that was not late first
	// connected, in unix nanoseconds (0: none): the end of the connect
	// phase.
	LastConnect int64 `json:"last_connect"`
	// Connections counts the TCP connections established (with TLS, each
	// a full handshake).
	Connections int64 `json:"connections"`
	// Over in-window events (send time in [T0, T1)), summed over clients:
	// Distinct counts each client's first receipt of a seq, Dups repeats.
	Distinct int64 `json:"distinct"`
	Dups     int64 `json:"dups"`
	// MinSeq and MaxSeq bound the in-window seqs any client saw (0: none).
	MinSeq   int64 `json:"min_seq"`
	MaxSeq   int64 `json:"max_seq"`
	Unparsed int64 `json:"unparsed"` // events without a bench payload
	// Latency of first receipts, in nanoseconds.
	Latency *benchstat.Histogram `json:"latency"`
	// StormLatency: of the first receipts of events sent in [StormFrom,
	// StormTo) on sessions established before StormFrom.
	StormLatency *benchstat.Histogram `json:"storm_latency,omitempty"`
	// CPU seconds of this process during the window and in total.
	CPUWindow   float64 `json:"cpu_window"`
	CPUTotal    float64 `json:"cpu_total"`
	Interrupted bool    `json:"interrupted"`

	URLs     []*urlResult `json:"urls"`
	Timeline *timeline    `json:"timeline,omitempty"`
}

func newWorkerResult() *workerResult {
	return &workerResult{FailReasons: map[string]int{}, Drops: map[string]int{}, Latency: benchstat.NewHistogram()}
}

// merge adds o into r.
func (r *workerResult) merge(o *workerResult) {
	r.Clients += o.Clients
	r.Connected += o.Connected
	r.Failed += o.Failed
	r.Late += o.Late
	r.LastConnect = max(r.LastConnect, o.LastConnect)
	r.Connections += o.Connections
	addCounts(&r.FailReasons, o.FailReasons)
	addCounts(&r.Drops, o.Drops)
	r.Reconnects += o.Reconnects
	r.Distinct += o.Distinct
	r.Dups += o.Dups
	if o.MinSeq != 0 && (r.MinSeq == 0 || o.MinSeq < r.MinSeq) {
		r.MinSeq = o.MinSeq
	}
	r.MaxSeq = max(r.MaxSeq, o.MaxSeq)
	r.Unparsed += o.Unparsed
	if o.Latency != nil {
		r.Latency.Merge(o.Latency)
	}
	if o.StormLatency != nil {
		if r.StormLatency == nil {
			r.StormLatency = benchstat.NewHistogram()
		}
		r.StormLatency.Merge(o.StormLatency)
	}
	r.CPUWindow += o.CPUWindow
	r.CPUTotal += o.CPUTotal
	r.Interrupted = r.Interrupted || o.Interrupted
	r.URLs = mergeURLs(r.URLs, o.URLs)
	if o.Timeline != nil {
		if r.Timeline == nil {
			r.Timeline = &timeline{}
		}
		r.Timeline.merge(o.Timeline)
	}
}

// sumURLs sets the totals that are sums of the per-URL figures.
func (r *workerResult) sumURLs() {
	r.Clients, r.Connected, r.Failed, r.Late, r.Reconnects = 0, 0, 0, 0, 0
	r.Distinct, r.Dups, r.Unparsed = 0, 0, 0
	r.FailReasons, r.Drops = map[string]int{}, map[string]int{}
	r.Latency = benchstat.NewHistogram()
	for _, u := range r.URLs {
		r.Clients += u.Clients
		r.Connected += u.Connected
		r.Failed += u.Failed
		r.Late += u.Late
		r.Reconnects += u.Reconnects
		r.Distinct += u.Distinct
		r.Dups += u.Dups
		r.Unparsed += u.Unparsed
		addCounts(&r.FailReasons, u.FailReasons)
		addCounts(&r.Drops, u.Drops)
		r.Latency.Merge(u.Latency)
	}
}

func (s workerSpec) validate() error {
	switch {
	case s.Stride <= 0 || s.First < 0 || s.Block < 0 || s.First >= s.blocks():
		return fmt.Errorf("blocks of %d clients from %d by %d below %d: empty or invalid", s.block(), s.First, s.Stride, s.Total)
	case s.Proto != "" && s.Proto != protoHTTP1 && s.Proto != protoH2:
		return fmt.Errorf("protocol %q", s.Proto)
	case len(s.Sources) == 0:
		return fmt.Errorf("no sources")
	case len(s.URLs) == 0:
		return fmt.Errorf("no URLs")
	case s.Failover != "" && s.Failover != failoverRandom && s.Failover != failoverNext:
		return fmt.Errorf("failover %q", s.Failover)
	case s.Delay.Retry < 0 || s.Delay.Jitter < 0 || s.Delay.Jitter > 1 || s.ChurnEvery < 0:
		return fmt.Errorf("reconnect delay %+v, churn %v", s.Delay, s.ChurnEvery)
	case !s.Start.Before(s.T0) || !s.T0.Before(s.T1) || s.End.Before(s.T1):
		return fmt.Errorf("schedule not in order: start %v, t0 %v, t1 %v, end %v", s.Start, s.T0, s.T1, s.End)
	case s.ConnectTimeout <= 0:
		return fmt.Errorf("connect timeout %v", s.ConnectTimeout)
	}
	return nil
}

// block is the number of consecutive clients dealt out together.
func (s workerSpec) block() int { return max(s.Block, 1) }

// blocks is the number of blocks of all processes together.
func (s workerSpec) blocks() int { return (s.Total + s.block() - 1) / s.block() }

// localBlocks is the number of blocks this worker runs.
func (s workerSpec) localBlocks() int {
	if s.Stride <= 0 || s.First < 0 || s.First >= s.blocks() {
		return 0
	}
	return (s.blocks()-s.First-1)/s.Stride + 1
}

// clientIDs yields the clients the spec runs, in order.
func (s workerSpec) clientIDs() iter.Seq[int] {
	return func(yield func(int) bool) {
		b := s.block()
		for k := range s.localBlocks() {
			first := (s.First + k*s.Stride) * b
			for i := first; i < min(first+b, s.Total); i++ {
				if !yield(i) {
					return
				}
			}
		}
	}
}

// clients returns how many clients the spec runs.
func (s workerSpec) clients() int {
	n := 0
	for range s.clientIDs() {
		n++
	}
	return n
}

// runWorkerCommand is the "worker" subcommand: it reads a spec from --spec
// and its schedule from stdin, runs it and writes the JSON result to stdout.
func runWorkerCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, log logrus.FieldLogger) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	specJSON := fs.String("spec", "", "worker spec as JSON (written by load)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	var spec workerSpec
	if err := json.Unmarshal([]byte(*specJSON), &spec); err != nil {
		return usageError{fmt.Errorf("decoding --spec: %w", err)}
	}
	// Handshake with load: announce readiness, then read the schedule
	// that load fixes once every worker is ready.
	if _, err := fmt.Fprintln(stdout, readyLine); err != nil {
		return fmt.Errorf("announcing readiness: %w", err)
	}
	line, err := bufio.NewReader(stdin).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("reading schedule: %w", err)
	}
	var sc schedule
	if err := json.Unmarshal(line, &sc); err != nil {
		return fmt.Errorf("decoding schedule: %w", err)
	}
	spec.setSchedule(sc)
	res, err := runWorker(ctx, spec, log.WithField("worker", spec.ID))
	if err != nil {
		return err
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		return fmt.Errorf("writing result: %w", err)
	}
	return nil
}

// worker is the shared state of one process's clients.
type worker struct {
	spec    workerSpec
	log     logrus.FieldLogger
	targets []target
	dialers []*net.Dialer
	t0, t1  int64 // window in unix nanoseconds
	// The storm's part in unix nanoseconds, and the latency there of the
	// sessions it did not end (nil: no storm).
	stormFrom, stormTo int64
	stormLat           *benchstat.Histogram
	dials              atomic.Int64
	live               []urlLive // per URL

	mu  sync.Mutex
	res *workerResult
}

// target is one URL as the clients reach it.
type target struct {
	url    string
	addr   string // host:port to dial
	host   string // Host header
	reqURI string
	// tls is the configuration of the HTTP/1.1 clients over https (nil:
	// plain http); h2 holds the connections of the h2 clients, one per
	// local block.
	tls *tls.Config
	h2  []*h2Conn
}

// runWorker runs the spec's clients until spec.End (or ctx ends) and returns
// their merged outcome.
func runWorker(ctx context.Context, spec workerSpec, log logrus.FieldLogger) (*workerResult, error) {
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("worker %d: %w", spec.ID, err)
	}
	w := &worker{
		spec: spec, log: log, t0: spec.T0.UnixNano(), t1: spec.T1.UnixNano(), res: newWorkerResult(),
		live: make([]urlLive, len(spec.URLs)),
	}
	for _, s := range spec.Sources {
		a, err := netip.ParseAddr(s)
		if err != nil || !loopback.Contains(a) {
			return nil, fmt.Errorf("worker %d: source %q is not in 127.0.0.0/8", spec.ID, s)
		}
		w.dialers = append(w.dialers, &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: a.AsSlice()},
			Timeout:   spec.ConnectTimeout,
			KeepAlive: -1, // the streams carry their own heartbeats
			Control:   sourceControl,
		})
	}
	for _, raw := range spec.URLs {
		t, err := w.newTarget(raw)
		if err != nil {
			return nil, fmt.Errorf("worker %d: %w", spec.ID, err)
		}
		w.targets = append(w.targets, t)
	}
	if !spec.StormFrom.IsZero() {
		w.stormFrom, w.stormTo = spec.StormFrom.UnixNano(), spec.StormTo.UnixNano()
		w.stormLat = benchstat.NewHistogram()
	}
	for i := range w.live {
		w.live[i].latency = benchstat.NewHistogram()
		w.res.URLs = append(w.res.URLs, newURLResult())
	}
	for i := range spec.clientIDs() {
		w.res.URLs[homeURL(i, len(spec.URLs))].Clients++
	}

	runCtx, cancel := context.WithDeadline(ctx, spec.End)
	defer cancel()
	cpuStart, _ := readProc("self")
	var wg sync.WaitGroup
	var cpuT0, cpuT1 float64
	wg.Go(func() {
		if sleepUntil(runCtx, spec.T0) {
			s, _ := readProc("self")
			cpuT0 = s.CPUSeconds
			for u := range w.live {
				w.res.URLs[u].ConnectedT0 = int(w.live[u].connected.Load())
			}
		}
		if sleepUntil(runCtx, spec.T1) {
			s, _ := readProc("self")
			cpuT1 = s.CPUSeconds
			for u := range w.live {
				w.res.URLs[u].ConnectedT1 = int(w.live[u].connected.Load())
			}
		}
	})
	var tl *timeline
	if spec.SampleEvery > 0 {
		wg.Go(func() { tl = w.sample(runCtx) })
	}
	for i := range spec.clientIDs() {
		wg.Go(func() { w.runClient(runCtx, i) })
	}
	wg.Wait()
	cpuEnd, _ := readProc("self")
	for _, t := range w.targets {
		for _, c := range t.h2 {
			c.close()
		}
	}

	res := w.res
	for u := range w.live {
		res.URLs[u].Latency = w.live[u].latency
	}
	res.sumURLs()
	res.StormLatency = w.stormLat
	res.Timeline = tl
	res.Connections = w.dials.Load()
	if cpuT1 > 0 {
		res.CPUWindow = cpuT1 - cpuT0
	}
	res.CPUTotal = cpuEnd.CPUSeconds - cpuStart.CPUSeconds
	res.Interrupted = ctx.Err() != nil
	log.WithFields(logrus.Fields{"connected": res.Connected, "failed": res.Failed, "distinct": res.Distinct}).
		Debug("ssemesh-bench: worker done")
	return res, nil
}

// newTarget prepares the clients' way to one URL.
func (w *worker) newTarget(raw string) (target, error) {
	u, addr, err := parseTarget(raw)
	if err != nil {
		return target{}, err
	}
	t := target{url: raw, addr: addr, host: u.Host, reqURI: u.RequestURI()}
	spec := w.spec
	if u.Scheme != "https" {
		if spec.Proto == protoH2 {
			return t, fmt.Errorf("HTTP/2 needs an https URL, not %s", raw)
		}
		return t, nil
	}
	conf, err := clientTLSConfig(spec.CAFile, spec.Insecure, u.Hostname())
	if err != nil {
		return t, err
	}
	if spec.Proto != protoH2 {
		conf.NextProtos = alpn(protoHTTP1)
		t.tls = conf
		return t, nil
	}
	for k := range spec.localBlocks() {
		d := w.dialers[(spec.First+k*spec.Stride)%len(w.dialers)]
		t.h2 = append(t.h2, newH2Conn(d, addr, conf, spec.ConnectTimeout, &w.dials))
	}
	return t, nil
}

// sample records the live state of every URL at Start + k*SampleEvery
// until the run ends.
func (w *worker) sample(ctx context.Context) *timeline {
	tl := &timeline{Start: w.spec.Start, Every: w.spec.SampleEvery, URLs: make([]urlSeries, len(w.live))}
	for k := 0; ; k++ {
		at := tl.at(k)
		if at.After(w.spec.End) || !sleepUntil(ctx, at) {
			return tl
		}
		for u := range w.live {
			tl.URLs[u].add(&w.live[u])
		}
	}
}

// sleepUntil waits for t and reports whether it was reached before ctx ended.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// clientStats is one client's tally over all its sessions, on whichever
// URL, merged into the worker's at the end so that the event path takes no
// lock.
type clientStats struct {
	tracker     seqTracker
	connected   bool
	late        bool
	connectedAt int64 // first connect, unix nanoseconds
	distinct    int64
	dups        int64
	unparsed    int64
	minSeq      int64
	maxSeq      int64
}

// simClient is one simulated client: where it started and is now, and
// what it carries from one session to the next.
type simClient struct {
	id        int
	home, cur int
	last      int       // URL of the last session, -1 before the first
	parser    sseParser // Last-Event-ID and reconnection time
	st        clientStats
}

// errChurn ends a session that the client closes to reconnect of its own
// accord.
var errChurn = errors.New("churn: reconnecting")

// runClient runs one client: wait for its slot in the ramp, connect, read,
// and after a drop reconnect with Last-Event-ID, to another URL when there
// are several, until ctx ends.
func (w *worker) runClient(ctx context.Context, i int) {
	n := len(w.targets)
	cl := &simClient{id: i, home: homeURL(i, n), last: -1}
	cl.cur = cl.home
	at := w.spec.Start.Add(time.Duration(int64(w.spec.Ramp) * int64(i) / int64(w.spec.Total)))
	if !sleepUntil(ctx, at) {
		w.finishClient(cl, "not started: run ended")
		return
	}
	const initialTries = 3
	lastReason := ""
	failures := 0 // consecutive attempts that got no stream
	for tries := 0; ; {
		u := cl.cur
		a := w.attempt(ctx, cl, u)
		if ctx.Err() != nil {
			break
		}
		if a.established {
			failures = 0
		}
		if a.churned {
			w.count(func() { w.res.URLs[u].Churns++ })
			cl.cur = churnURL(n, rand.IntN)
			continue
		}
		lastReason = classify(a.err)
		w.recordEnd(u, a, lastReason)
		if !cl.st.connected && tries+1 >= initialTries {
			break
		}
		if tries >= w.spec.MaxReconnects {
			break
		}
		tries++
		wait := w.spec.Delay.delay(retryAfterOf(a.err), cl.parser.retry, cl.parser.hasRetry, failures, rand.Float64)
		if !a.established {
			failures++
		}
		cl.cur = failoverURL(u, n, w.spec.Failover, rand.IntN)
		if !sleepUntil(ctx, time.Now().Add(wait)) {
			break
		}
	}
	if !cl.st.connected && lastReason == "" {
		lastReason = "run ended before connecting"
	}
	w.finishClient(cl, lastReason)
}

// attemptResult is how one attempt of a client ended.
type attemptResult struct {
	err         error
	established bool // the session got past the response headers
	churned     bool // the client ended it to reconnect of its own accord
}

// attempt runs one session of cl on URL u, carrying the client's resume
// point in and out, and keeps the URL's live state.
func (w *worker) attempt(ctx context.Context, cl *simClient, u int) attemptResult {
	live := &w.live[u]
	sess := w.newSession(cl.id, u)
	p := sess.parser()
	*p = cl.parser
	sctx := ctx
	if w.spec.ChurnEvery > 0 {
		var cancel context.CancelCauseFunc
		sctx, cancel = context.WithCancelCause(ctx)
		churn := time.AfterFunc(time.Duration(rand.ExpFloat64()*float64(w.spec.ChurnEvery)), func() { cancel(errChurn) })
		defer churn.Stop()
		defer cancel(nil)
	}
	var res attemptResult
	serving := false
	calm := false // established before the storm
	onConnect := func() {
		res.established = true
		calm = w.stormLat != nil && time.Now().UnixNano() < w.stormFrom
		live.connected.Add(1)
		live.sessions.Add(1)
		w.recordSession(u, cl.last)
		cl.last = u
		if st := &cl.st; !st.connected {
			now := time.Now()
			st.connected = true
			st.late = now.After(w.spec.T0)
			st.connectedAt = now.UnixNano()
		}
	}
	onEvent := func(data []byte) {
		if !serving {
			serving = true
			live.serving.Add(1)
		}
		w.onEvent(&cl.st, u, data, calm)
	}
	res.err = sess.session(sctx, onConnect, onEvent)
	cl.parser = *p
	if res.established {
		live.connected.Add(-1)
	}
	if serving {
		live.serving.Add(-1)
	}
	res.churned = ctx.Err() == nil && context.Cause(sctx) == errChurn
	return res
}

// count runs f, which updates the worker's result, under its lock.
func (w *worker) count(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f()
}

// recordSession counts a session established on u; prev is the URL of the
// client's previous one (-1: none).
func (w *worker) recordSession(u, prev int) {
	w.count(func() {
		r := w.res.URLs[u]
		r.Sessions++
		if prev >= 0 {
			r.Reconnects++
			if prev != u {
				r.Failovers++
			}
		}
	})
}

// recordEnd counts why an attempt on u ended: a drop of an established
// session, a refusal (an HTTP answer without a stream) or an error.
func (w *worker) recordEnd(u int, a attemptResult, reason string) {
	var se statusError
	refused := !a.established && errors.As(a.err, &se)
	if refused {
		w.live[u].refused.Add(1)
	}
	w.count(func() {
		r := w.res.URLs[u]
		switch {
		case a.established:
			r.Drops[reason]++
		case refused:
			r.Refusals[reason]++
		default:
			r.Errors[reason]++
		}
	})
}

// newSession returns client i's way to the stream at URL u.
func (w *worker) newSession(i, u int) sseSession {
	t := &w.targets[u]
	if t.h2 != nil {
		k := (i/w.spec.block() - w.spec.First) / w.spec.Stride
		return &h2Stream{conn: t.h2[k], url: t.url, timeout: w.spec.ConnectTimeout}
	}
	return &streamConn{
		dialer:     w.dialers[i%len(w.dialers)],
		addr:       t.addr,
		host:       t.host,
		requestURI: t.reqURI,
		timeout:    w.spec.ConnectTimeout,
		tls:        t.tls,
		dials:      &w.dials,
	}
}

// onEvent accounts for one event client st received through URL u; calm
// says the session began before the storm.
func (w *worker) onEvent(st *clientStats, u int, data []byte, calm bool) {
	now := time.Now().UnixNano()
	seq, sent, ok := parseBench(data)
	if !ok {
		st.unparsed++
		return
	}
	if sent < w.t0 || sent >= w.t1 {
		return
	}
	if !st.tracker.add(seq) {
		st.dups++
		return
	}
	st.distinct++
	if st.minSeq == 0 || seq < st.minSeq {
		st.minSeq = seq
	}
	st.maxSeq = max(st.maxSeq, seq)
	w.live[u].latency.Record(now - sent) // atomic, shared by all clients
	if calm && sent >= w.stormFrom && sent < w.stormTo {
		w.stormLat.Record(now - sent)
	}
}

// finishClient adds a client's tally to its home URL's cohort.
func (w *worker) finishClient(cl *simClient, failReason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := &cl.st
	r := w.res.URLs[cl.home]
	if !st.connected {
		r.Failed++
		r.FailReasons[failReason]++
		return
	}
	r.Connected++
	if st.late {
		r.Late++
	} else {
		w.res.LastConnect = max(w.res.LastConnect, st.connectedAt)
	}
	r.Distinct += st.distinct
	r.Dups += st.dups
	r.Unparsed += st.unparsed
	if st.minSeq != 0 && (w.res.MinSeq == 0 || st.minSeq < w.res.MinSeq) {
		w.res.MinSeq = st.minSeq
	}
	w.res.MaxSeq = max(w.res.MaxSeq, st.maxSeq)
}
