package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
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
	ID      int      `json:"id"`
	URL     string   `json:"url"`
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
	// a block share a connection from source (i/Block) % len(Sources);
	// otherwise client i has its own from source i % len(Sources).
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
	// ConnectTimeout bounds dialling plus the response headers.
	ConnectTimeout time.Duration `json:"connect_timeout"`
	// MaxReconnects bounds the sessions of one client after its first.
	MaxReconnects int `json:"max_reconnects"`
}

// workerResult is one worker's mergeable outcome.
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
	// CPU seconds of this process during the window and in total.
	CPUWindow   float64 `json:"cpu_window"`
	CPUTotal    float64 `json:"cpu_total"`
	Interrupted bool    `json:"interrupted"`
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
	for k, v := range o.FailReasons {
		r.FailReasons[k] += v
	}
	for k, v := range o.Drops {
		r.Drops[k] += v
	}
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
	r.CPUWindow += o.CPUWindow
	r.CPUTotal += o.CPUTotal
	r.Interrupted = r.Interrupted || o.Interrupted
}

func (s workerSpec) validate() error {
	switch {
	case s.Stride <= 0 || s.First < 0 || s.Block < 0 || s.First >= s.blocks():
		return fmt.Errorf("blocks of %d clients from %d by %d below %d: empty or invalid", s.block(), s.First, s.Stride, s.Total)
	case s.Proto != "" && s.Proto != protoHTTP1 && s.Proto != protoH2:
		return fmt.Errorf("protocol %q", s.Proto)
	case len(s.Sources) == 0:
		return fmt.Errorf("no sources")
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
	addr    string
	host    string
	reqURI  string
	dialers []*net.Dialer
	t0, t1  int64 // window in unix nanoseconds
	// tls is the configuration of the HTTP/1.1 clients over https (nil:
	// plain http); h2 holds the connections of the h2 clients, one per
	// local block.
	tls   *tls.Config
	h2    []*h2Conn
	dials atomic.Int64

	mu  sync.Mutex
	res *workerResult
}

// runWorker runs the spec's clients until spec.End (or ctx ends) and returns
// their merged outcome.
func runWorker(ctx context.Context, spec workerSpec, log logrus.FieldLogger) (*workerResult, error) {
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("worker %d: %w", spec.ID, err)
	}
	u, addr, err := parseTarget(spec.URL)
	if err != nil {
		return nil, fmt.Errorf("worker %d: %w", spec.ID, err)
	}
	w := &worker{
		spec: spec, log: log, addr: addr, host: u.Host, reqURI: u.RequestURI(),
		t0: spec.T0.UnixNano(), t1: spec.T1.UnixNano(), res: newWorkerResult(),
	}
	w.res.Clients = spec.clients()
	for _, s := range spec.Sources {
		a, err := netip.ParseAddr(s)
		if err != nil || !loopback.Contains(a) {
			return nil, fmt.Errorf("worker %d: source %q is not in 127.0.0.0/8", spec.ID, s)
		}
		w.dialers = append(w.dialers, &net.Dialer{
			LocalAddr: &net.TCPAddr{IP: a.AsSlice()},
			Timeout:   spec.ConnectTimeout,
			KeepAlive: -1, // the streams carry their own heartbeats
		})
	}
	if u.Scheme == "https" {
		conf, err := clientTLSConfig(spec.CAFile, spec.Insecure, u.Hostname())
		if err != nil {
			return nil, fmt.Errorf("worker %d: %w", spec.ID, err)
		}
		if spec.Proto == protoH2 {
			for k := range spec.localBlocks() {
				d := w.dialers[(spec.First+k*spec.Stride)%len(w.dialers)]
				w.h2 = append(w.h2, newH2Conn(d, addr, conf, spec.ConnectTimeout, &w.dials))
			}
		} else {
			conf.NextProtos = alpn(protoHTTP1)
			w.tls = conf
		}
	} else if spec.Proto == protoH2 {
		return nil, fmt.Errorf("worker %d: HTTP/2 needs an https URL", spec.ID)
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
		}
		if sleepUntil(runCtx, spec.T1) {
			s, _ := readProc("self")
			cpuT1 = s.CPUSeconds
		}
	})
	for i := range spec.clientIDs() {
		wg.Go(func() { w.runClient(runCtx, i) })
	}
	wg.Wait()
	cpuEnd, _ := readProc("self")
	for _, c := range w.h2 {
		c.close()
	}

	res := w.res
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

// clientStats is one client's tally, merged into the worker's at the end so
// that the event path takes no lock.
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

// runClient runs one client: wait for its slot in the ramp, connect, read,
// and reconnect with Last-Event-ID after a drop, until ctx ends.
func (w *worker) runClient(ctx context.Context, i int) {
	at := w.spec.Start.Add(time.Duration(int64(w.spec.Ramp) * int64(i) / int64(w.spec.Total)))
	if !sleepUntil(ctx, at) {
		w.finishClient(&clientStats{}, "not started: run ended")
		return
	}
	sc := w.newSession(i)
	st := &clientStats{}
	sessionOK := false // the current session got past the response headers
	onConnect := func() {
		sessionOK = true
		if !st.connected {
			now := time.Now()
			st.connected = true
			st.late = now.After(w.spec.T0)
			st.connectedAt = now.UnixNano()
		}
	}
	onEvent := func(data []byte) { w.onEvent(st, data) }

	const initialTries = 3
	lastReason := ""
	drops := map[string]int{}
	reconnects, failures := 0, 0
	for attempt := 0; attempt <= w.spec.MaxReconnects; attempt++ {
		if st.connected {
			reconnects++
		}
		sessionOK = false
		err := sc.session(ctx, onConnect, onEvent)
		if ctx.Err() != nil {
			break
		}
		lastReason = classify(err)
		if st.connected {
			drops[lastReason]++
		} else if attempt+1 >= initialTries {
			break
		}
		if sessionOK {
			failures = 0
		}
		// Jittered exponential backoff from 50ms to 2s over consecutive
		// failures, so a restarting node is not hammered in lockstep.
		backoff := min(50*time.Millisecond<<min(failures, 6), 2*time.Second)
		failures++
		backoff = backoff/2 + rand.N(backoff/2+1)
		if !sleepUntil(ctx, time.Now().Add(backoff)) {
			break
		}
	}
	w.mu.Lock()
	for k, v := range drops {
		w.res.Drops[k] += v
	}
	w.res.Reconnects += reconnects
	w.mu.Unlock()
	if !st.connected && lastReason == "" {
		lastReason = "run ended before connecting"
	}
	w.finishClient(st, lastReason)
}

// newSession returns client i's way to the stream.
func (w *worker) newSession(i int) sseSession {
	if w.h2 != nil {
		k := (i/w.spec.block() - w.spec.First) / w.spec.Stride
		return &h2Stream{conn: w.h2[k], url: w.spec.URL, timeout: w.spec.ConnectTimeout}
	}
	return &streamConn{
		dialer:     w.dialers[i%len(w.dialers)],
		addr:       w.addr,
		host:       w.host,
		requestURI: w.reqURI,
		timeout:    w.spec.ConnectTimeout,
		tls:        w.tls,
		dials:      &w.dials,
	}
}

func (w *worker) onEvent(st *clientStats, data []byte) {
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
	w.res.Latency.Record(now - sent) // atomic, shared by all clients
}

func (w *worker) finishClient(st *clientStats, failReason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.res
	if !st.connected {
		r.Failed++
		r.FailReasons[failReason]++
		return
	}
	r.Connected++
	if st.late {
		r.Late++
	} else {
		r.LastConnect = max(r.LastConnect, st.connectedAt)
	}
	r.Distinct += st.distinct
	r.Dups += st.dups
	r.Unparsed += st.unparsed
	if st.minSeq != 0 && (r.MinSeq == 0 || st.minSeq < r.MinSeq) {
		r.MinSeq = st.minSeq
	}
	r.MaxSeq = max(r.MaxSeq, st.maxSeq)
}
