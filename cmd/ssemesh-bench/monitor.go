package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// monitorEvery is the period of the monitor's samples of the nodes and the
// back end.
const monitorEvery = time.Second

// nodeSpec is a node whose cost the report shows: a PID, or a file holding
// it, re-read at every sample so that a restarted node is followed.
type nodeSpec struct {
	Name    string
	PID     int
	PIDFile string
}

// pid returns the node's current PID.
func (n nodeSpec) pid() (int, error) {
	if n.PIDFile == "" {
		return n.PID, nil
	}
	raw, err := os.ReadFile(n.PIDFile)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("PID file %s holds %q", n.PIDFile, truncate(strings.TrimSpace(string(raw)), 20))
	}
	return pid, nil
}

// parseNodeSpecs reads --node-pids: comma-separated [NAME=]PID or
// [NAME=]PIDFILE. The i-th unnamed entry takes the name of the i-th URL
// (or "node-i" past them).
func parseNodeSpecs(list string, urls []namedURL) ([]nodeSpec, error) {
	var out []nodeSpec
	names := map[string]bool{}
	unnamed := 0
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var n nodeSpec
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			name, val = "", f
		}
		if name == "" {
			if unnamed < len(urls) {
				name = urls[unnamed].Name
			} else {
				name = fmt.Sprintf("node-%d", unnamed)
			}
			unnamed++
		}
		n.Name = name
		if pid, err := strconv.Atoi(val); err == nil {
			if pid <= 0 {
				return nil, fmt.Errorf("%q: not a PID", f)
			}
			n.PID = pid
		} else if val != "" && !strings.ContainsAny(val, "\n\x00") {
			n.PIDFile = val
		} else {
			return nil, fmt.Errorf("%q: want [NAME=]PID or [NAME=]PIDFILE", f)
		}
		if names[n.Name] {
			return nil, fmt.Errorf("node %q given twice", n.Name)
		}
		names[n.Name] = true
		out = append(out, n)
	}
	return out, nil
}

// procPoint is one reading of a node; PID 0 means it was not running.
type procPoint struct {
	at  time.Time
	pid int
	procSample
}

// connPoint is one reading of the back end's connection count.
type connPoint struct {
	at          time.Time
	open, total int
	err         error
}

// monitor samples the nodes' RSS and CPU and the back end's connection
// count once a second, and at the window's start and end.
type monitor struct {
	nodes      []nodeSpec
	backendURL string
	http       *http.Client

	mu     sync.Mutex
	points [][]procPoint // per node
	conns  []connPoint
}

func newMonitor(nodes []nodeSpec, backendURL string) *monitor {
	return &monitor{
		nodes: nodes, backendURL: backendURL, points: make([][]procPoint, len(nodes)),
		// The back end is on loopback: a reading that takes longer than
		// this says the machine is overloaded, and is counted as failed.
		http: &http.Client{Timeout: 900 * time.Millisecond},
	}
}

func (m *monitor) active() bool { return len(m.nodes) > 0 || m.backendURL != "" }

// instants lists when the monitor samples: every monitorEvery from the
// schedule's start to its end, and at T0 and T1.
func instants(sc schedule) []time.Time {
	var out []time.Time
	for t := sc.Start; !t.After(sc.End); t = t.Add(monitorEvery) {
		out = append(out, t)
	}
	out = append(out, sc.T0, sc.T1)
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return slices.CompactFunc(out, func(a, b time.Time) bool { return a.Equal(b) })
}

// run samples until ctx ends or the schedule does.
func (m *monitor) run(ctx context.Context, sc schedule) {
	// A reading that has begun is bounded by the client's timeout, not
	// cut by the end of the schedule.
	reqCtx := context.WithoutCancel(ctx)
	for _, at := range instants(sc) {
		if !sleepUntil(ctx, at) {
			return
		}
		m.sample(reqCtx, at)
	}
}

// sample takes one reading of everything, recorded as of at (the
// schedule's instant, so that T0 and T1 are found exactly).
func (m *monitor) sample(ctx context.Context, at time.Time) {
	for i, n := range m.nodes {
		p := procPoint{at: at}
		if pid, err := n.pid(); err == nil {
			if s, err := readProc(strconv.Itoa(pid)); err == nil {
				p.pid, p.procSample = pid, s
			}
		}
		m.mu.Lock()
		m.points[i] = append(m.points[i], p)
		m.mu.Unlock()
	}
	if m.backendURL != "" {
		c := connPoint{at: at}
		c.open, c.total, c.err = m.backendConns(ctx)
		m.mu.Lock()
		m.conns = append(m.conns, c)
		m.mu.Unlock()
	}
}

// backendConns reads the back end's open and total SSE connections.
func (m *monitor) backendConns(ctx context.Context) (open, total int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.backendURL, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	return parseConnCounts(body)
}

// parseConnCounts reads either form of the bench back end's counts: the
// totals of /_backend/connections ({"open":N,"total":M,...}) or the
// per-stream stats of /_backend/stats ({"/path":{"open":N,"total":M,...}}),
// summed.
func parseConnCounts(body []byte) (open, total int, err error) {
	type counts struct {
		Open  *int `json:"open"`
		Total *int `json:"total"`
	}
	var top counts
	if err := json.Unmarshal(body, &top); err == nil && top.Open != nil && top.Total != nil {
		return *top.Open, *top.Total, nil
	}
	var per map[string]counts
	if err := json.Unmarshal(body, &per); err != nil {
		return 0, 0, fmt.Errorf("decoding connection counts: %w", err)
	}
	for k, c := range per {
		if c.Open == nil || c.Total == nil {
			return 0, 0, fmt.Errorf("decoding connection counts: %q has no open and total", truncate(k, 40))
		}
		open += *c.Open
		total += *c.Total
	}
	return open, total, nil
}

// NodeCost is one node's memory and CPU over a run, read from /proc.
type NodeCost struct {
	Name string `json:"name"`
	// PIDs lists the processes seen, in order: more than one means the
	// node was restarted.
	PIDs       []int   `json:"pids"`
	RSSFirstKB int64   `json:"rss_first_kb"` // the first reading, before the ramp
	RSSStartKB int64   `json:"rss_start_kb"` // at the window's start
	RSSEndKB   int64   `json:"rss_end_kb"`   // at its end
	RSSMaxKB   int64   `json:"rss_max_kb"`   // over the run
	CPUSeconds float64 `json:"cpu_seconds"`  // in the window, over all its processes
	CPUPercent float64 `json:"cpu_percent"`  // of one core
	// DownSamples counts readings that found no process.
	DownSamples int `json:"down_samples"`
	// For a node that is also one of the load's URLs (same name): the
	// clients it held at the window's start and what each cost it, RSS at
	// the window's start less the first reading, over those clients.
	Clients        int     `json:"clients,omitempty"`
	RSSPerClientKB float64 `json:"rss_per_client_kb,omitempty"`
}

// nodeCosts summarises the readings of every node.
func (m *monitor) nodeCosts(t0, t1 time.Time) []NodeCost {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []NodeCost
	for i, n := range m.nodes {
		out = append(out, costOf(n.Name, m.points[i], t0, t1))
	}
	return out
}

// costOf summarises one node's readings. CPU is summed over consecutive
// readings of the same process inside [t0, t1], so a restart costs only
// the new process's first second.
func costOf(name string, pts []procPoint, t0, t1 time.Time) NodeCost {
	c := NodeCost{Name: name}
	var prev *procPoint
	for i := range pts {
		p := &pts[i]
		if p.pid == 0 {
			c.DownSamples++
			prev = nil
			continue
		}
		if len(c.PIDs) == 0 || c.PIDs[len(c.PIDs)-1] != p.pid {
			c.PIDs = append(c.PIDs, p.pid)
		}
		if c.RSSFirstKB == 0 {
			c.RSSFirstKB = p.RSSKB
		}
		c.RSSMaxKB = max(c.RSSMaxKB, p.RSSKB)
		if p.at.Equal(t0) {
			c.RSSStartKB = p.RSSKB
		}
		if p.at.Equal(t1) {
			c.RSSEndKB = p.RSSKB
		}
		inWindow := !p.at.Before(t0) && !p.at.After(t1)
		if prev != nil && inWindow && !prev.at.Before(t0) && prev.pid == p.pid {
			c.CPUSeconds += p.CPUSeconds - prev.CPUSeconds
		}
		prev = p
	}
	if d := t1.Sub(t0).Seconds(); d > 0 {
		c.CPUPercent = 100 * c.CPUSeconds / d
	}
	return c
}

// BackendConns is the back end's count of SSE connections over the run:
// in a healthy tree exactly one per stream at every reading.
type BackendConns struct {
	URL     string `json:"url"`
	Samples int    `json:"samples"`
	Errors  int    `json:"errors"`
	OpenMin int    `json:"open_min"`
	OpenMax int    `json:"open_max"`
	// NewConnections is how many the back end accepted between the first
	// reading and the last.
	NewConnections int `json:"new_connections"`
	// Changes lists the readings where the open count changed, in
	// seconds from the window's start (the first 20).
	Changes   []OpenChange `json:"changes,omitempty"`
	LastError string       `json:"last_error,omitempty"`
}

// OpenChange is a reading whose open count differs from the one before.
type OpenChange struct {
	AtSeconds float64 `json:"at_seconds"`
	Open      int     `json:"open"`
}

// maxChanges bounds BackendConns.Changes.
const maxChanges = 20

// backendReport summarises the back end's readings (nil: none asked for).
func (m *monitor) backendReport(t0 time.Time) *BackendConns {
	if m.backendURL == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return summariseConns(m.backendURL, m.conns, t0)
}

func summariseConns(url string, pts []connPoint, t0 time.Time) *BackendConns {
	b := &BackendConns{URL: url}
	first, last, prevOpen := -1, -1, -1
	for _, p := range pts {
		if p.err != nil {
			b.Errors++
			b.LastError = p.err.Error()
			continue
		}
		if b.Samples == 0 {
			b.OpenMin, b.OpenMax, first = p.open, p.open, p.total
		}
		b.Samples++
		b.OpenMin, b.OpenMax, last = min(b.OpenMin, p.open), max(b.OpenMax, p.open), p.total
		if prevOpen >= 0 && p.open != prevOpen && len(b.Changes) < maxChanges {
			b.Changes = append(b.Changes, OpenChange{AtSeconds: p.at.Sub(t0).Seconds(), Open: p.open})
		}
		prevOpen = p.open
	}
	if b.Samples > 0 {
		b.NewConnections = last - first
	}
	return b
}
