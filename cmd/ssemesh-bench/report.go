package main

import (
	"fmt"
	"io"
	"math"
	"time"

	"github.com/ssemesh/ssemesh/internal/benchstat"
)

// Report is the outcome of one load run; its JSON form is the --json output.
type Report struct {
	URL string `json:"url"`
	// TLS is an https target; Proto is http1 (a connection per client) or
	// h2 (up to H2Streams clients as streams on one connection).
	TLS           bool      `json:"tls"`
	Proto         string    `json:"proto"`
	H2Streams     int       `json:"h2_streams,omitempty"`
	Clients       int       `json:"clients"`
	Procs         int       `json:"procs"`
	Sources       []string  `json:"sources"`
	WindowStart   time.Time `json:"window_start"`
	WindowEnd     time.Time `json:"window_end"`
	WindowSeconds float64   `json:"window_seconds"`

	Connected    int            `json:"connected"`
	Failed       int            `json:"failed"`
	FailReasons  map[string]int `json:"fail_reasons"`
	LateConnects int            `json:"late_connects"` // first connected after the window began
	Drops        map[string]int `json:"drops"`         // why connected sessions ended early
	Reconnects   int            `json:"reconnects"`
	// Connections counts the TCP connections the clients established over
	// the run, reconnects included; with TLS, each was a full handshake.
	Connections int64 `json:"connections"`

	// The in-window sequence range seen by any client; every connected
	// client is expected to receive all of it.
	SeqFirst        int64   `json:"seq_first"`
	SeqLast         int64   `json:"seq_last"`
	EventsPerClient int64   `json:"events_per_client"`
	Expected        int64   `json:"expected"`
	Delivered       int64   `json:"delivered"`
	Lost            int64   `json:"lost"`
	Duplicated      int64   `json:"duplicated"`
	Unparsed        int64   `json:"unparsed"`
	DeliveriesPerS  float64 `json:"deliveries_per_second"`
	Latency         Latency `json:"latency"`

	Node      *NodeReport `json:"node,omitempty"`
	NodeError string      `json:"node_error,omitempty"`

	LoadCPUSeconds      float64 `json:"load_cpu_seconds"`       // during the window
	LoadCPUTotalSeconds float64 `json:"load_cpu_total_seconds"` // whole run
	LoadCPUPerMillion   float64 `json:"load_cpu_seconds_per_million"`

	Interrupted bool `json:"interrupted"`

	// URLs is the load per target; Nodes the cost of the nodes named by
	// --node-pids; Backend the bench back end's connections
	// (--backend-stats); Storm the fault of --storm-cmd and the recovery.
	URLs    []URLReport   `json:"urls"`
	Nodes   []NodeCost    `json:"nodes,omitempty"`
	Backend *BackendConns `json:"backend,omitempty"`
	Storm   *StormReport  `json:"storm,omitempty"`
}

// URLReport is the load on one URL. The cohort figures (Clients to
// Duplicated) are about the clients sent to the URL first, over all their
// sessions wherever they failed over to; the others are about the URL
// itself, whichever client it served.
type URLReport struct {
	Name       string `json:"name"`
	URL        string `json:"url"`
	Clients    int    `json:"clients"`
	Connected  int    `json:"connected"`
	Failed     int    `json:"failed"`
	Late       int    `json:"late_connects"`
	Expected   int64  `json:"expected"`
	Delivered  int64  `json:"delivered"`
	Lost       int64  `json:"lost"`
	Duplicated int64  `json:"duplicated"`

	// Clients with a session open on this URL at the window's start and
	// end.
	ConnectedAtStart int `json:"connected_at_start"`
	ConnectedAtEnd   int `json:"connected_at_end"`
	// Latency of the events first received through this URL.
	Latency Latency `json:"latency"`
	// Sessions established here; of those, Reconnects were not a client's
	// first, Failovers came from a session on another URL. Churns are
	// sessions here ended by their client to reconnect (--churn).
	Sessions   int `json:"sessions"`
	Reconnects int `json:"reconnects"`
	Failovers  int `json:"failovers"`
	Churns     int `json:"churns"`
	// Why sessions here ended early (Drops), attempts here were answered
	// without a stream (Refusals: status and error code) or got no answer
	// (Errors).
	Drops    map[string]int `json:"drops"`
	Refusals map[string]int `json:"refusals"`
	Errors   map[string]int `json:"errors"`
	// The most sessions established and refusals made in one second (of
	// the timeline) during the window.
	PeakSessionsPerS float64 `json:"peak_sessions_per_second"`
	PeakRefusedPerS  float64 `json:"peak_refused_per_second"`
}

// Latency summarises delivery latency (receive time minus send time) in
// milliseconds.
type Latency struct {
	Count  uint64  `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// NodeReport is the node's cost, read from /proc.
type NodeReport struct {
	PID                  int     `json:"pid"`
	RSSBeforeKB          int64   `json:"rss_before_kb"` // before any client
	RSSStartKB           int64   `json:"rss_start_kb"`  // all clients connected, window start
	RSSEndKB             int64   `json:"rss_end_kb"`    // window end
	RSSPerClientKB       float64 `json:"rss_per_client_kb"`
	CPUSeconds           float64 `json:"cpu_seconds"` // during the window
	CPUSecondsPerMillion float64 `json:"cpu_seconds_per_million"`
	// The connect phase: from the start of the ramp until the last client
	// that was not late had connected. Its CPU, per 1,000 of those
	// clients, is the node's cost of accepting clients (with TLS, mostly
	// the handshakes). Zero when nothing was measured.
	Connects            int     `json:"connects"`
	ConnectSeconds      float64 `json:"connect_seconds"`
	ConnectCPUSeconds   float64 `json:"connect_cpu_seconds"`
	ConnectCPUMsPer1000 float64 `json:"connect_cpu_ms_per_1000"`
}

// fill derives the delivery figures from the merged worker results.
//
// Every connected client should receive every event sent in the window. The
// window's sequence range is the lowest to highest in-window seq any client
// saw; the back end numbers events without gaps, so a client's loss is that
// range's length minus the distinct seqs it received. Events at the edges of
// the window that no client at all received are not counted.
func (r *Report) fill(m *workerResult, interrupted bool) {
	r.Connected, r.Failed, r.FailReasons = m.Connected, m.Failed, m.FailReasons
	r.LateConnects, r.Drops, r.Reconnects = m.Late, m.Drops, m.Reconnects
	r.Connections = m.Connections
	r.SeqFirst, r.SeqLast = m.MinSeq, m.MaxSeq
	if m.MaxSeq > 0 {
		r.EventsPerClient = m.MaxSeq - m.MinSeq + 1
	}
	r.Expected = r.EventsPerClient * int64(m.Connected)
	r.Delivered = m.Distinct
	r.Lost = r.Expected - r.Delivered
	r.Duplicated = m.Dups
	r.Unparsed = m.Unparsed
	if r.WindowSeconds > 0 {
		r.DeliveriesPerS = float64(r.Delivered) / r.WindowSeconds
	}
	r.Latency = latencyOf(m.Latency)
	r.Interrupted = interrupted
}

// fillURLs derives the per-URL figures, with the window's sequence range
// (which fill set) as every connected client's expectation.
func (r *Report) fillURLs(urls []namedURL, m *workerResult) {
	r.URLs = make([]URLReport, len(urls))
	for i, n := range urls {
		u := newURLResult()
		if i < len(m.URLs) {
			u = m.URLs[i]
		}
		ur := URLReport{
			Name: n.Name, URL: n.URL,
			Clients: u.Clients, Connected: u.Connected, Failed: u.Failed, Late: u.Late,
			Expected: r.EventsPerClient * int64(u.Connected), Delivered: u.Distinct, Duplicated: u.Dups,
			ConnectedAtStart: u.ConnectedT0, ConnectedAtEnd: u.ConnectedT1,
			Latency:  latencyOf(u.Latency),
			Sessions: u.Sessions, Reconnects: u.Reconnects, Failovers: u.Failovers, Churns: u.Churns,
			Drops: u.Drops, Refusals: u.Refusals, Errors: u.Errors,
		}
		ur.Lost = ur.Expected - ur.Delivered
		if tl := m.Timeline; tl != nil && i < len(tl.URLs) {
			if k0, k1, ok := tl.span(r.WindowStart, r.WindowEnd); ok {
				per := max(1, int(math.Round(float64(time.Second)/float64(tl.Every))))
				secs := float64(per) * tl.Every.Seconds()
				ur.PeakSessionsPerS = peakRate(tl.URLs[i].Sessions, k0, k1, per) / secs
				ur.PeakRefusedPerS = peakRate(tl.URLs[i].Refused, k0, k1, per) / secs
			}
		}
		r.URLs[i] = ur
	}
}

// nodeClients sets the clients and the RSS per client of every node named
// like one of the URLs (a leaf of scripts/bench-tree.sh).
func (r *Report) nodeClients() {
	for i := range r.Nodes {
		n := &r.Nodes[i]
		for _, u := range r.URLs {
			if u.Name != n.Name || u.ConnectedAtStart <= 0 {
				continue
			}
			n.Clients = u.ConnectedAtStart
			if n.RSSFirstKB > 0 && n.RSSStartKB > n.RSSFirstKB {
				n.RSSPerClientKB = float64(n.RSSStartKB-n.RSSFirstKB) / float64(n.Clients)
			}
		}
	}
}

// latencyOf summarises a histogram of nanoseconds in milliseconds.
func latencyOf(h *benchstat.Histogram) Latency {
	if h == nil {
		return Latency{}
	}
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return Latency{
		Count: h.Count(), MeanMs: h.Mean() / 1e6,
		P50Ms: ms(h.Quantile(0.5)), P90Ms: ms(h.Quantile(0.9)), P99Ms: ms(h.Quantile(0.99)),
		P999Ms: ms(h.Quantile(0.999)), MaxMs: ms(h.Max()),
	}
}

func (r *Report) writeText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("ssemesh-bench load %s", r.URL)
	if r.Interrupted {
		p("  INTERRUPTED: partial results")
	}
	p("  clients     %d over %d process(es) and %d source address(es); window %.1fs from %s",
		r.Clients, r.Procs, len(r.Sources), r.WindowSeconds, r.WindowStart.Format("15:04:05.000"))
	if r.TLS {
		// Only for https, so that a plain run reads as it always did.
		if r.Proto == protoH2 {
			p("  transport   TLS, HTTP/2: %d clients as streams, up to %d per connection, on %d connection(s); %d TCP connections in all",
				r.Clients, r.H2Streams, (r.Clients+r.H2Streams-1)/max(r.H2Streams, 1), r.Connections)
		} else {
			p("  transport   TLS, HTTP/1.1: one connection per client; %d TCP connections in all", r.Connections)
		}
	}
	p("  connected   %d (late %d), failed %d", r.Connected, r.LateConnects, r.Failed)
	if len(r.FailReasons) > 0 {
		p("  failures    %s", fmtReasons(r.FailReasons))
	}
	if len(r.Drops) > 0 || r.Reconnects > 0 {
		drops := fmtReasons(r.Drops)
		if drops == "" {
			drops = "none"
		}
		p("  drops       %s; reconnects %d", drops, r.Reconnects)
	}
	p("  events      seq %d..%d (%d per client); delivered %d of %d expected (%.0f/s)",
		r.SeqFirst, r.SeqLast, r.EventsPerClient, r.Delivered, r.Expected, r.DeliveriesPerS)
	lostPct := 0.0
	if r.Expected > 0 {
		lostPct = 100 * float64(r.Lost) / float64(r.Expected)
	}
	p("  lost        %d (%.4f%%), duplicated %d", r.Lost, lostPct, r.Duplicated)
	if r.Unparsed > 0 {
		p("  unparsed    %d events without a bench payload", r.Unparsed)
	}
	l := r.Latency
	p("  latency     p50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  (mean %.2fms, %d samples)",
		l.P50Ms, l.P90Ms, l.P99Ms, l.P999Ms, l.MaxMs, l.MeanMs, l.Count)
	if n := r.Node; n != nil {
		p("  node RSS    pid %d: %.1f MiB before clients, %.1f MiB at window start, %.1f MiB at end; %.1f KiB per client",
			n.PID, kib2mib(n.RSSBeforeKB), kib2mib(n.RSSStartKB), kib2mib(n.RSSEndKB), n.RSSPerClientKB)
		p("  node CPU    %.2fs in window (%.0f%% of a core); %.3fs per million deliveries",
			n.CPUSeconds, 100*n.CPUSeconds/max(r.WindowSeconds, 1e-9), n.CPUSecondsPerMillion)
		if n.Connects > 0 {
			p("  connect CPU %.2fs for %d connects in %.1fs (%.0f ms per 1,000)",
				n.ConnectCPUSeconds, n.Connects, n.ConnectSeconds, n.ConnectCPUMsPer1000)
		}
	}
	if r.NodeError != "" {
		p("  node        %s", r.NodeError)
	}
	p("  load CPU    %.2fs in window (%.2fs whole run); %.3fs per million deliveries",
		r.LoadCPUSeconds, r.LoadCPUTotalSeconds, r.LoadCPUPerMillion)
	if len(r.URLs) > 1 || len(r.Nodes) > 0 || r.Storm != nil {
		r.writeURLs(w)
	}
	r.writeNodes(w)
	r.writeBackend(w)
	r.Storm.writeText(w)
}

func kib2mib(kb int64) float64 { return float64(kb) / 1024 }
