package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

const (
	// maxClientsPerProc leaves headroom under the 20,000 open-file cap of
	// every process for the runtime's own descriptors.
	maxClientsPerProc = 18000
	// clientsPerProc is the default share of one worker process: enough to
	// keep a core busy, few enough for its goroutines to be scheduled fairly.
	clientsPerProc = 4000
	// maxClientsPerSource stays under the ~28,000 ephemeral ports of one
	// source address, with room for connections closing while their
	// clients reconnect.
	maxClientsPerSource = 25000
	// maxTimelineSamples bounds the timeline of a long run: its period
	// grows past --sample-every when needed.
	maxTimelineSamples = 20000
)

// loadConfig is a parsed and validated "load" command line.
type loadConfig struct {
	urls           []namedURL
	caFile         string
	insecure       bool
	proto          string
	h2Streams      int
	clients        int
	procs          int
	sources        []netip.Addr
	ramp           time.Duration
	settle         time.Duration
	duration       time.Duration
	drain          time.Duration
	connectTimeout time.Duration
	maxReconnects  int
	failover       string
	delay          delayPolicy
	churnEvery     time.Duration
	sampleEvery    time.Duration
	nodePID        int
	nodes          []nodeSpec
	backendStats   string
	stormAt        time.Duration
	stormCmd       string
	stormSpan      time.Duration
	json           bool
	jsonFile       string
	// exe is the binary re-executed as "worker"; os.Executable by default.
	exe string
}

func parseLoadFlags(args []string, stderr io.Writer) (loadConfig, error) {
	var c loadConfig
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var urlErr error
	addURL := func(v string) error {
		n, err := parseNamedURL(v)
		if err != nil {
			urlErr = err // reported after parsing, as a usage error
			return nil
		}
		c.urls = append(c.urls, n)
		return nil
	}
	fs.Func("url", "SSE URL to load, [NAME=]URL (loopback only), e.g. http://127.0.0.1:8080/bench or leaf-0=http://...; repeatable: clients are spread evenly and fail over between them", addURL)
	fs.Func("urls", "comma-separated list of [NAME=]URL, as repeated --url", func(v string) error {
		for f := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(f) != "" {
				if err := addURL(f); err != nil {
					return err
				}
			}
		}
		return nil
	})
	fs.StringVar(&c.caFile, "ca", "", "https: PEM CA bundle to trust for the node's certificate (default: the system roots)")
	fs.BoolVar(&c.insecure, "insecure", false, "https: do not verify the node's certificate")
	fs.StringVar(&c.proto, "proto", protoHTTP1, "https: http1 (a TLS connection per client) or h2 (clients as HTTP/2 streams)")
	fs.IntVar(&c.h2Streams, "h2-streams", defaultH2Streams, "h2: clients per TLS connection")
	fs.IntVar(&c.clients, "clients", 100, "number of SSE clients, in total over the URLs")
	fs.IntVar(&c.procs, "procs", 0, fmt.Sprintf("worker processes (0: one per %d clients)", clientsPerProc))
	sources := fs.String("sources", "127.0.0.1", fmt.Sprintf("comma-separated loopback source addresses (one per ~20,000 clients, at most %d)", maxClientsPerSource))
	fs.DurationVar(&c.ramp, "ramp", 5*time.Second, "time over which clients connect")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "wait after the ramp before measuring")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measurement window")
	fs.DurationVar(&c.drain, "drain", time.Second, "time after the window for in-flight events to arrive")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "dial plus response-header timeout")
	fs.IntVar(&c.maxReconnects, "max-reconnects", 100, "attempts per client after the first (churn reconnects not counted)")
	fs.StringVar(&c.failover, "failover", failoverRandom, "URL of the next attempt after a drop or refusal: random (among the others) or next (in the list)")
	fs.DurationVar(&c.delay.Retry, "retry", 500*time.Millisecond, "reconnection time until the server sends a retry: field")
	fs.Float64Var(&c.delay.Jitter, "retry-jitter", 0.5, "spread of a reconnect delay: ±this fraction (Retry-After: +this fraction only)")
	churn := fs.String("churn", "", "clients reconnecting of their own accord with Last-Event-ID, to any URL, e.g. 5%/min (default none)")
	fs.DurationVar(&c.sampleEvery, "sample-every", 250*time.Millisecond, "period of the per-URL timeline (sessions, receiving clients, refusals)")
	fs.IntVar(&c.nodePID, "node-pid", 0, "PID of the node under test, for its RSS and CPU (0: skip)")
	nodes := fs.String("node-pids", "", "nodes to report RSS and CPU of, comma-separated [NAME=]PID or [NAME=]PIDFILE (a PID file is re-read, following restarts); unnamed ones take the names of the URLs in order")
	fs.StringVar(&c.backendStats, "backend-stats", "", "URL of the bench back end's connection count (ssemesh-bench backend: /_backend/connections), sampled every second")
	fs.DurationVar(&c.stormAt, "storm-at", 0, "run --storm-cmd this long into the window")
	fs.StringVar(&c.stormCmd, "storm-cmd", "", "shell command run at --storm-at (e.g. kill -9 PID); the report measures the recovery from it")
	fs.DurationVar(&c.stormSpan, "storm-span", 15*time.Second, "the storm's first part, over which the report gives the latency of the clients it did not disconnect")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON")
	fs.StringVar(&c.jsonFile, "json-file", "", "also write the report as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if urlErr != nil {
		return c, usageError{urlErr}
	}
	var err error
	if c.sources, err = parseSources(*sources); err != nil {
		return c, usageError{err}
	}
	if c.churnEvery, err = parseChurn(*churn); err != nil {
		return c, usageError{fmt.Errorf("--churn: %w", err)}
	}
	if c.nodes, err = parseNodeSpecs(*nodes, c.urls); err != nil {
		return c, usageError{fmt.Errorf("--node-pids: %w", err)}
	}
	if c.procs == 0 {
		c.procs = (c.clients + clientsPerProc - 1) / clientsPerProc
		if c.proto == protoH2 && c.h2Streams > 0 {
			// Every process needs a connection of its own.
			c.procs = min(c.procs, c.conns())
		}
	}
	if err := c.validate(); err != nil {
		return c, usageError{err}
	}
	if c.caFile != "" {
		if _, err := loadCA(c.caFile); err != nil {
			return c, usageError{fmt.Errorf("--ca: %w", err)}
		}
	}
	return c, nil
}

// block is how many consecutive clients share a connection.
func (c loadConfig) block() int {
	if c.proto == protoH2 {
		return c.h2Streams
	}
	return 1
}

// conns is the number of connections the clients need at once. (With h2
// and several URLs, a block of clients spread over them by failovers uses
// a connection on each.)
func (c loadConfig) conns() int { return (c.clients + c.block() - 1) / c.block() }

// tls reports whether the targets are https.
func (c loadConfig) tls() bool { return len(c.urls) > 0 && strings.HasPrefix(c.urls[0].URL, "https:") }

// rawURLs lists the targets' URLs.
func (c loadConfig) rawURLs() []string {
	out := make([]string, len(c.urls))
	for i, u := range c.urls {
		out[i] = u.URL
	}
	return out
}

func (c loadConfig) validate() error {
	if len(c.urls) == 0 {
		return errors.New("--url is required")
	}
	names, seen := map[string]bool{}, map[string]bool{}
	scheme := ""
	for _, n := range c.urls {
		u, _, err := parseTarget(n.URL)
		if err != nil {
			return err
		}
		if scheme == "" {
			scheme = u.Scheme
		}
		switch {
		case u.Scheme != scheme:
			return fmt.Errorf("url %q: every URL must have the scheme of the first", n.URL)
		case names[n.Name]:
			return fmt.Errorf("url name %q given twice", n.Name)
		case seen[n.URL]:
			return fmt.Errorf("url %q given twice", n.URL)
		}
		names[n.Name], seen[n.URL] = true, true
		switch {
		case u.Scheme == "http" && c.proto == protoH2:
			return errors.New("--proto h2 needs an https:// URL (HTTP/2 without TLS is not supported)")
		case u.Scheme == "http" && (c.caFile != "" || c.insecure):
			return errors.New("--ca and --insecure apply to https:// URLs only")
		}
	}
	switch {
	case c.proto != protoHTTP1 && c.proto != protoH2:
		return fmt.Errorf("--proto %q: want %s or %s", c.proto, protoHTTP1, protoH2)
	case c.caFile != "" && c.insecure:
		return errors.New("--ca and --insecure exclude each other")
	case c.h2Streams < 1:
		return fmt.Errorf("--h2-streams %d: need at least one", c.h2Streams)
	}
	// With h2 the limits of processes and addresses apply to connections,
	// not clients.
	unit := "clients"
	if c.proto == protoH2 {
		unit = "HTTP/2 connections"
	}
	conns := c.conns()
	switch {
	case c.clients < 1:
		return fmt.Errorf("--clients %d: need at least one", c.clients)
	case c.procs < 1 || c.procs > conns:
		if c.proto == protoH2 {
			return fmt.Errorf("--procs %d: need between 1 and the %d HTTP/2 connections (--clients / --h2-streams)", c.procs, conns)
		}
		return fmt.Errorf("--procs %d: need between 1 and --clients", c.procs)
	case (conns+c.procs-1)/c.procs > maxClientsPerProc:
		return fmt.Errorf("%d %s over %d processes exceed %d per process (open-file cap): raise --procs", conns, unit, c.procs, maxClientsPerProc)
	case (conns+len(c.sources)-1)/len(c.sources) > maxClientsPerSource:
		return fmt.Errorf("%d %s over %d source addresses exceed %d per address (ephemeral ports): add --sources", conns, unit, len(c.sources), maxClientsPerSource)
	case c.duration <= 0:
		return fmt.Errorf("--duration %v must be positive", c.duration)
	case c.ramp < 0 || c.settle < 0 || c.drain < 0:
		return errors.New("--ramp, --settle and --drain must not be negative")
	case c.connectTimeout <= 0:
		return fmt.Errorf("--connect-timeout %v must be positive", c.connectTimeout)
	case c.maxReconnects < 0:
		return fmt.Errorf("--max-reconnects %d must not be negative", c.maxReconnects)
	case c.nodePID < 0:
		return fmt.Errorf("--node-pid %d", c.nodePID)
	case c.failover != failoverRandom && c.failover != failoverNext:
		return fmt.Errorf("--failover %q: want %s or %s", c.failover, failoverRandom, failoverNext)
	case c.delay.Retry < 0:
		return fmt.Errorf("--retry %v must not be negative", c.delay.Retry)
	case c.delay.Jitter < 0 || c.delay.Jitter > 1:
		return fmt.Errorf("--retry-jitter %v: want 0 to 1", c.delay.Jitter)
	case c.sampleEvery < 10*time.Millisecond:
		return fmt.Errorf("--sample-every %v: at least 10ms", c.sampleEvery)
	case (c.stormCmd == "") != (c.stormAt == 0):
		return errors.New("--storm-at and --storm-cmd go together")
	case c.stormSpan <= 0:
		return fmt.Errorf("--storm-span %v must be positive", c.stormSpan)
	case c.stormAt < 0 || c.stormAt >= c.duration:
		return fmt.Errorf("--storm-at %v must fall inside the window (--duration %v)", c.stormAt, c.duration)
	}
	if c.backendStats != "" {
		if u, _, err := parseTarget(c.backendStats); err != nil || u.Scheme != "http" {
			return fmt.Errorf("--backend-stats %q: want an http:// loopback URL (%v)", c.backendStats, err)
		}
	}
	return nil
}

// runLoad is the "load" subcommand.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer, log logrus.FieldLogger) error {
	cfg, err := parseLoadFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.insecure {
		fmt.Fprintln(stderr, "ssemesh-bench load: warning: --insecure: the node's certificate is not verified")
	}
	if cfg.exe == "" && cfg.procs > 1 {
		if cfg.exe, err = os.Executable(); err != nil {
			return fmt.Errorf("finding own executable for worker processes: %w", err)
		}
	}
	rep, err := load(ctx, cfg, stderr, log)
	if err != nil {
		return err
	}
	if cfg.jsonFile != "" {
		if err := writeJSONFile(cfg.jsonFile, rep); err != nil {
			return err
		}
	}
	if cfg.json {
		if err := writeJSON(stdout, rep); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	} else {
		rep.writeText(stdout)
	}
	if rep.Interrupted {
		return errors.New("interrupted: the report covers only part of the run")
	}
	return nil
}

func writeJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func writeJSONFile(name string, rep *Report) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("--json-file: %w", err)
	}
	if err := writeJSON(f, rep); err != nil {
		f.Close()
		return fmt.Errorf("--json-file: writing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--json-file: %w", err)
	}
	return nil
}

// load runs one measurement and returns its report.
func load(ctx context.Context, cfg loadConfig, stderr io.Writer, log logrus.FieldLogger) (*Report, error) {
	rep := &Report{URL: strings.Join(cfg.rawURLs(), ","), TLS: cfg.tls(), Proto: cfg.proto, Clients: cfg.clients, Procs: cfg.procs}
	if cfg.proto == protoH2 {
		rep.H2Streams = cfg.h2Streams
	}
	for _, s := range cfg.sources {
		rep.Sources = append(rep.Sources, s.String())
	}
	if cfg.tls() {
		for _, n := range cfg.urls {
			u, addr, err := parseTarget(n.URL)
			if err != nil {
				return nil, err
			}
			conf, err := clientTLSConfig(cfg.caFile, cfg.insecure, u.Hostname())
			if err != nil {
				return nil, err
			}
			if err := checkTLS(ctx, addr, conf, cfg.proto, cfg.connectTimeout); err != nil {
				return nil, err
			}
		}
	}
	pidStr := strconv.Itoa(cfg.nodePID)
	var nodeBefore procSample
	if cfg.nodePID != 0 {
		var err error
		// Read before any client connects: the baseline of RSS per client.
		if nodeBefore, err = readProc(pidStr); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	selfStart, _ := readProc("self")

	errOut := lockedStderr(stderr)
	// The timeline's period: --sample-every, or longer for a long run.
	span := cfg.ramp + cfg.settle + cfg.duration + cfg.drain + 100*time.Millisecond
	sampleEvery := max(cfg.sampleEvery, (span / maxTimelineSamples).Round(time.Millisecond))
	specs := make([]workerSpec, cfg.procs)
	for id := range specs {
		specs[id] = workerSpec{
			ID: id, URLs: cfg.rawURLs(), CAFile: cfg.caFile, Insecure: cfg.insecure, Proto: cfg.proto,
			First: id, Stride: cfg.procs, Total: cfg.clients, Ramp: cfg.ramp,
			ConnectTimeout: cfg.connectTimeout, MaxReconnects: cfg.maxReconnects,
			Failover: cfg.failover, Delay: cfg.delay, ChurnEvery: cfg.churnEvery, SampleEvery: sampleEvery,
		}
		if cfg.proto == protoH2 {
			specs[id].Block = cfg.h2Streams
		}
		for _, src := range cfg.sources {
			specs[id].Sources = append(specs[id].Sources, src.String())
		}
	}
	// Worker processes are started first and the schedule fixed only once
	// all of them are ready, so that a slow start cannot eat into the ramp.
	var procs []*workerProc
	if cfg.procs > 1 {
		for _, spec := range specs {
			p, err := startWorker(ctx, cfg.exe, spec, errOut)
			if err != nil {
				for _, p := range procs {
					p.abort()
				}
				return nil, fmt.Errorf("worker %d: %w", spec.ID, err)
			}
			procs = append(procs, p)
		}
	}

	start := time.Now().Add(100 * time.Millisecond)
	sched := schedule{Start: start}
	sched.T0 = start.Add(cfg.ramp + cfg.settle)
	sched.T1 = sched.T0.Add(cfg.duration)
	sched.End = sched.T1.Add(cfg.drain)
	if cfg.stormCmd != "" {
		sched.StormFrom = sched.T0.Add(cfg.stormAt)
		sched.StormTo = sched.StormFrom.Add(cfg.stormSpan)
		if sched.StormTo.After(sched.T1) {
			sched.StormTo = sched.T1
		}
	}
	t0, t1 := sched.T0, sched.T1
	rep.WindowStart, rep.WindowEnd, rep.WindowSeconds = t0, t1, cfg.duration.Seconds()

	// Every loop below ends by this deadline even if a worker hangs.
	runCtx, cancel := context.WithDeadline(ctx, sched.End.Add(cfg.connectTimeout+30*time.Second))
	defer cancel()

	var wg sync.WaitGroup
	var nodeT0, nodeT1, selfT0, selfT1 procSample
	var nodeErr error
	wg.Go(func() {
		sample := func(s, n *procSample) {
			*s, _ = readProc("self")
			if cfg.nodePID != 0 && nodeErr == nil {
				*n, nodeErr = readProc(pidStr)
			}
		}
		if sleepUntil(runCtx, t0) {
			sample(&selfT0, &nodeT0)
		}
		if sleepUntil(runCtx, t1) {
			sample(&selfT1, &nodeT1)
		}
	})
	var connectCPU []cpuSample
	if cfg.nodePID != 0 {
		wg.Go(func() { connectCPU = sampleCPU(runCtx, pidStr, start, t0) })
	}
	mon := newMonitor(cfg.nodes, cfg.backendStats)
	if mon.active() {
		// Its own context: it stops at the end of the run, not at the
		// hard deadline.
		monCtx, monCancel := context.WithDeadline(runCtx, sched.End)
		defer monCancel()
		wg.Go(func() { mon.run(monCtx, sched) })
	}
	var storm *StormReport
	if cfg.stormCmd != "" {
		storm = &StormReport{Command: cfg.stormCmd, OffsetSeconds: cfg.stormAt.Seconds()}
		wg.Go(func() { storm.run(runCtx, t0.Add(cfg.stormAt), errOut) })
	}

	results := make([]*workerResult, cfg.procs)
	errs := make([]error, cfg.procs)
	if cfg.procs == 1 {
		spec := specs[0]
		spec.setSchedule(sched)
		wg.Go(func() { results[0], errs[0] = runWorker(runCtx, spec, log.WithField("worker", 0)) })
	}
	for id, p := range procs {
		wg.Go(func() { results[id], errs[id] = p.run(runCtx, sched) })
	}
	log.WithFields(logrus.Fields{"clients": cfg.clients, "procs": cfg.procs, "urls": len(cfg.urls), "window_start": t0.Format(time.RFC3339), "end": sched.End.Format(time.RFC3339)}).
		Info("ssemesh-bench: load started")
	wg.Wait()
	selfEnd, _ := readProc("self")

	merged := newWorkerResult()
	for id, r := range results {
		if errs[id] != nil {
			return nil, fmt.Errorf("worker %d: %w", id, errs[id])
		}
		merged.merge(r)
	}
	interrupted := ctx.Err() != nil
	if now := time.Now(); interrupted && now.Before(t1) {
		// The window was cut short: rates refer to the part that ran.
		rep.WindowEnd = now
		if now.Before(t0) {
			rep.WindowEnd = t0
		}
		rep.WindowSeconds = rep.WindowEnd.Sub(t0).Seconds()
	}
	rep.fill(merged, interrupted)
	rep.fillURLs(cfg.urls, merged)
	if mon.active() {
		rep.Nodes = mon.nodeCosts(t0, t1)
		rep.nodeClients()
		rep.Backend = mon.backendReport(t0)
	}
	if storm != nil {
		storm.analyse(merged.Timeline, cfg.urls, t1)
		storm.Calm = latencyOf(merged.StormLatency)
		storm.CalmSeconds = sched.StormTo.Sub(sched.StormFrom).Seconds()
		rep.Storm = storm
	}

	// The parent's own CPU counts too, except in-process, where the worker
	// measured this very process.
	rep.LoadCPUSeconds = merged.CPUWindow
	rep.LoadCPUTotalSeconds = selfEnd.CPUSeconds - selfStart.CPUSeconds
	if cfg.procs > 1 {
		if selfT1.CPUSeconds > 0 {
			rep.LoadCPUSeconds += selfT1.CPUSeconds - selfT0.CPUSeconds
		}
		rep.LoadCPUTotalSeconds += merged.CPUTotal
	}
	rep.LoadCPUPerMillion = perMillion(rep.LoadCPUSeconds, rep.Delivered)

	if cfg.nodePID != 0 {
		if nodeErr != nil {
			rep.NodeError = nodeErr.Error()
		} else if nodeT1.RSSKB != 0 {
			n := &NodeReport{
				PID: cfg.nodePID, RSSBeforeKB: nodeBefore.RSSKB, RSSStartKB: nodeT0.RSSKB, RSSEndKB: nodeT1.RSSKB,
				CPUSeconds: nodeT1.CPUSeconds - nodeT0.CPUSeconds,
			}
			if rep.Connected > 0 {
				n.RSSPerClientKB = float64(n.RSSStartKB-n.RSSBeforeKB) / float64(rep.Connected)
			}
			n.CPUSecondsPerMillion = perMillion(n.CPUSeconds, rep.Delivered)
			n.fillConnect(connectCPU, merged.LastConnect, rep.Connected-rep.LateConnects)
			rep.Node = n
		}
	}
	return rep, nil
}

// connectSampleEvery is the resolution of the end of the connect phase;
// /proc counts CPU in 10 ms ticks anyway.
const connectSampleEvery = 50 * time.Millisecond

// cpuSample is a process's CPU seconds at a moment.
type cpuSample struct {
	at  time.Time
	cpu float64
}

// sampleCPU reads the CPU of process pid from start, then every
// connectSampleEvery until a reading at or after end: when the connect
// phase ends is known only afterwards, from the workers' results.
func sampleCPU(ctx context.Context, pid string, start, end time.Time) []cpuSample {
	if !sleepUntil(ctx, start) {
		return nil
	}
	tick := time.NewTicker(connectSampleEvery)
	defer tick.Stop()
	var out []cpuSample
	for {
		s, err := readProc(pid)
		if err != nil {
			return out
		}
		now := time.Now()
		out = append(out, cpuSample{at: now, cpu: s.CPUSeconds})
		if !now.Before(end) {
			return out
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return out
		}
	}
}

// fillConnect sets the node's cost of accepting clients: its CPU from the
// start of the ramp to the first sample after the last timely connect
// (lastConnect, unix nanoseconds), spread over the connects. That span also
// holds the node's idle work and its deliveries to the clients already
// connected, the same in a plain-HTTP run of the same size: the difference
// between a TLS run and the plain one is the cost of the handshakes.
func (n *NodeReport) fillConnect(samples []cpuSample, lastConnect int64, connects int) {
	if len(samples) < 2 || lastConnect == 0 || connects <= 0 {
		return
	}
	end := samples[len(samples)-1]
	for _, s := range samples[1:] {
		if s.at.UnixNano() >= lastConnect {
			end = s
			break
		}
	}
	n.Connects = connects
	n.ConnectSeconds = end.at.Sub(samples[0].at).Seconds()
	n.ConnectCPUSeconds = end.cpu - samples[0].cpu
	n.ConnectCPUMsPer1000 = n.ConnectCPUSeconds * 1e6 / float64(connects)
}

func perMillion(cpu float64, deliveries int64) float64 {
	if deliveries == 0 {
		return 0
	}
	return cpu / (float64(deliveries) / 1e6)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// syncWriter serialises writes of several worker processes' stderr when the
// destination is not a file (os/exec copies those in goroutines).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// lockedStderr returns w itself when it is a file (the child writes to it
// directly) and a serialising wrapper otherwise.
func lockedStderr(w io.Writer) io.Writer {
	if _, ok := w.(*os.File); ok {
		return w
	}
	return &syncWriter{w: w}
}

// fmtReasons renders a reason -> count map, most frequent first.
func fmtReasons(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
