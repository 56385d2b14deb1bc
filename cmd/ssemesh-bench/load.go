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
	// source address.
	maxClientsPerSource = 28000
)

// loadConfig is a parsed and validated "load" command line.
type loadConfig struct {
	url            string
	clients        int
	procs          int
	sources        []netip.Addr
	ramp           time.Duration
	settle         time.Duration
	duration       time.Duration
	drain          time.Duration
	connectTimeout time.Duration
	maxReconnects  int
	nodePID        int
	json           bool
	// exe is the binary re-executed as "worker"; os.Executable by default.
	exe string
}

func parseLoadFlags(args []string, stderr io.Writer) (loadConfig, error) {
	var c loadConfig
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "", "SSE URL to load (loopback only), e.g. http://127.0.0.1:8080/bench")
	fs.IntVar(&c.clients, "clients", 100, "number of SSE clients")
	fs.IntVar(&c.procs, "procs", 0, fmt.Sprintf("worker processes (0: one per %d clients)", clientsPerProc))
	sources := fs.String("sources", "127.0.0.1", "comma-separated loopback source addresses (one per ~20,000 clients)")
	fs.DurationVar(&c.ramp, "ramp", 5*time.Second, "time over which clients connect")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "wait after the ramp before measuring")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measurement window")
	fs.DurationVar(&c.drain, "drain", time.Second, "time after the window for in-flight events to arrive")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "dial plus response-header timeout")
	fs.IntVar(&c.maxReconnects, "max-reconnects", 100, "sessions per client after the first")
	fs.IntVar(&c.nodePID, "node-pid", 0, "PID of the node under test, for its RSS and CPU (0: skip)")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	var err error
	if c.sources, err = parseSources(*sources); err != nil {
		return c, usageError{err}
	}
	if c.procs == 0 {
		c.procs = (c.clients + clientsPerProc - 1) / clientsPerProc
	}
	if err := c.validate(); err != nil {
		return c, usageError{err}
	}
	return c, nil
}

func (c loadConfig) validate() error {
	if c.url == "" {
		return errors.New("--url is required")
	}
	if _, _, err := parseTarget(c.url); err != nil {
		return err
	}
	switch {
	case c.clients < 1:
		return fmt.Errorf("--clients %d: need at least one", c.clients)
	case c.procs < 1 || c.procs > c.clients:
		return fmt.Errorf("--procs %d: need between 1 and --clients", c.procs)
	case (c.clients+c.procs-1)/c.procs > maxClientsPerProc:
		return fmt.Errorf("%d clients over %d processes exceed %d per process (open-file cap): raise --procs", c.clients, c.procs, maxClientsPerProc)
	case (c.clients+len(c.sources)-1)/len(c.sources) > maxClientsPerSource:
		return fmt.Errorf("%d clients over %d source addresses exceed %d per address (ephemeral ports): add --sources", c.clients, len(c.sources), maxClientsPerSource)
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
	}
	return nil
}

// runLoad is the "load" subcommand.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer, log logrus.FieldLogger) error {
	cfg, err := parseLoadFlags(args, stderr)
	if err != nil {
		return err
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
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
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

// load runs one measurement and returns its report.
func load(ctx context.Context, cfg loadConfig, stderr io.Writer, log logrus.FieldLogger) (*Report, error) {
	rep := &Report{URL: cfg.url, Clients: cfg.clients, Procs: cfg.procs}
	for _, s := range cfg.sources {
		rep.Sources = append(rep.Sources, s.String())
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
	specs := make([]workerSpec, cfg.procs)
	for id := range specs {
		specs[id] = workerSpec{
			ID: id, URL: cfg.url, First: id, Stride: cfg.procs, Total: cfg.clients, Ramp: cfg.ramp,
			ConnectTimeout: cfg.connectTimeout, MaxReconnects: cfg.maxReconnects,
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
	log.WithFields(logrus.Fields{"clients": cfg.clients, "procs": cfg.procs, "window_start": t0.Format(time.RFC3339), "end": sched.End.Format(time.RFC3339)}).
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
			rep.Node = n
		}
	}
	return rep, nil
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
