package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// writeURLs prints the per-URL table, with a total row, and the reasons of
// drops, refusals and errors per URL.
func (r *Report) writeURLs(w io.Writer) {
	fmt.Fprintln(w, "  per URL     COHORT: clients sent there first, and their events wherever they went; ON T0/T1: sessions open")
	fmt.Fprintln(w, "              at window start/end; latency: events received through the URL; SESS: sessions established")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tNAME\tCOHORT\tON T0\tON T1\tEXPECTED\tDELIVERED\tLOST\tDUP\tP50 ms\tP99 ms\tMAX ms\tSESS\tRECONN\tFAILOVER\tCHURN\tREFUSED\t")
	var tot URLReport
	row := func(u URLReport, lat Latency) {
		fmt.Fprintf(tw, "\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%d\t\n",
			u.Name, u.Connected, u.ConnectedAtStart, u.ConnectedAtEnd, u.Expected, u.Delivered, u.Lost, u.Duplicated,
			lat.P50Ms, lat.P99Ms, lat.MaxMs, u.Sessions, u.Reconnects, u.Failovers, u.Churns, sumOf(u.Refusals))
	}
	for _, u := range r.URLs {
		row(u, u.Latency)
		tot.Connected += u.Connected
		tot.ConnectedAtStart += u.ConnectedAtStart
		tot.ConnectedAtEnd += u.ConnectedAtEnd
		tot.Expected += u.Expected
		tot.Delivered += u.Delivered
		tot.Lost += u.Lost
		tot.Duplicated += u.Duplicated
		tot.Sessions += u.Sessions
		tot.Reconnects += u.Reconnects
		tot.Failovers += u.Failovers
		tot.Churns += u.Churns
		addCounts(&tot.Refusals, u.Refusals)
	}
	tot.Name = "total"
	row(tot, r.Latency)
	_ = tw.Flush()
	for _, k := range []struct {
		label string
		of    func(URLReport) map[string]int
	}{
		{"refusals", func(u URLReport) map[string]int { return u.Refusals }},
		{"drops", func(u URLReport) map[string]int { return u.Drops }},
		{"errors", func(u URLReport) map[string]int { return u.Errors }},
	} {
		var parts []string
		for _, u := range r.URLs {
			if m := k.of(u); len(m) > 0 {
				parts = append(parts, fmt.Sprintf("%s: %s", u.Name, fmtReasons(m)))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "  %-11s %s\n", k.label, strings.Join(parts, "; "))
		}
	}
	var peaks []string
	for _, u := range r.URLs {
		if u.PeakSessionsPerS > 0 || u.PeakRefusedPerS > 0 {
			peaks = append(peaks, fmt.Sprintf("%s %.0f sessions/s, %.0f refusals/s", u.Name, u.PeakSessionsPerS, u.PeakRefusedPerS))
		}
	}
	if len(peaks) > 0 {
		fmt.Fprintf(w, "  peak rates  (1 s windows, in the window) %s\n", strings.Join(peaks, "; "))
	}
}

func sumOf(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// writeNodes prints the cost of every node given by --node-pids.
func (r *Report) writeNodes(w io.Writer) {
	if len(r.Nodes) == 0 {
		return
	}
	fmt.Fprintln(w, "  nodes       RSS at window start/end and the most over the run; CPU in the window; per client (leaves):")
	fmt.Fprintln(w, "              RSS at window start less the first reading, over the clients on it at window start")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tNODE\tPID\tRSS T0 MiB\tRSS T1 MiB\tRSS MAX MiB\tCPU s\tCPU %\tCLIENTS T0\tKiB/CLIENT\t\t")
	for _, n := range r.Nodes {
		pids := make([]string, len(n.PIDs))
		for i, p := range n.PIDs {
			pids[i] = fmt.Sprint(p)
		}
		note := ""
		if len(n.PIDs) > 1 {
			note = fmt.Sprintf("restarted %d time(s)", len(n.PIDs)-1)
		}
		if n.DownSamples > 0 {
			note = strings.TrimPrefix(note+fmt.Sprintf(", down in %d reading(s)", n.DownSamples), ", ")
		}
		clients, per := "-", "-"
		if n.Clients > 0 {
			clients = fmt.Sprint(n.Clients)
		}
		if n.RSSPerClientKB > 0 {
			per = fmt.Sprintf("%.2f", n.RSSPerClientKB)
		}
		fmt.Fprintf(tw, "\t%s\t%s\t%.1f\t%.1f\t%.1f\t%.2f\t%.0f\t%s\t%s\t%s\t\n", n.Name, strings.Join(pids, ">"),
			kib2mib(n.RSSStartKB), kib2mib(n.RSSEndKB), kib2mib(n.RSSMaxKB), n.CPUSeconds, n.CPUPercent, clients, per, note)
	}
	_ = tw.Flush()
}

// writeBackend prints the back end's connection count over the run.
func (r *Report) writeBackend(w io.Writer) {
	b := r.Backend
	if b == nil {
		return
	}
	fmt.Fprintf(w, "  back end    SSE connections open: min %d, max %d over %d readings (1/s); %d new during the run",
		b.OpenMin, b.OpenMax, b.Samples, b.NewConnections)
	if b.Errors > 0 {
		fmt.Fprintf(w, "; %d readings failed (%s)", b.Errors, b.LastError)
	}
	fmt.Fprintln(w)
	if len(b.Changes) > 0 {
		parts := make([]string, len(b.Changes))
		for i, c := range b.Changes {
			parts[i] = fmt.Sprintf("%+.0fs: %d", c.AtSeconds, c.Open)
		}
		fmt.Fprintf(w, "              changes (from window start): %s\n", strings.Join(parts, ", "))
	}
}

// writeText prints the storm and the recovery from it; nothing for nil.
func (s *StormReport) writeText(w io.Writer) {
	if s == nil {
		return
	}
	fmt.Fprintf(w, "  storm       %q at %+.1fs into the window (took %.2fs)", s.Command, s.OffsetSeconds, s.TookSeconds)
	if s.Error != "" {
		fmt.Fprintf(w, ": %s", s.Error)
	}
	fmt.Fprintln(w)
	if s.SampleSeconds == 0 {
		fmt.Fprintln(w, "              no timeline around the storm")
		return
	}
	rec := func(label string, r Recovery) {
		fmt.Fprintf(w, "  %-11s %d before, %d at the lowest; back to 99%% %s, to 100%% %s\n",
			label, r.Baseline, r.Low, fmtSince(r.Recovered99), fmtSince(r.Recovered100))
	}
	rec("receiving", s.Serving)
	rec("connected", s.Connected)
	fmt.Fprintf(w, "  reconnects  %d sessions after the storm over %.2fs: %.0f/s average; peak %.0f/s over 1 s, %.0f/s over %.2fs\n",
		s.Sessions, s.SpanSeconds, s.AvgPerS, s.PeakPerS, s.PeakSamplePerS, s.SampleSeconds)
	if c := s.Calm; c.Count > 0 {
		fmt.Fprintf(w, "  undisturbed clients on sessions from before the storm, events sent in its first %.0fs: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d receipts)\n",
			s.CalmSeconds, c.P50Ms, c.P99Ms, c.MaxMs, c.Count)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tNAME\tON BEFORE\tON AFTER\tNEW SESS\tPEAK /s\tREFUSED\tREFUSED PEAK /s\t")
	for _, u := range s.URLs {
		fmt.Fprintf(tw, "\t%s\t%d\t%d\t%d\t%.0f\t%d\t%.0f\t\n", u.Name, u.ConnectedBefore, u.ConnectedAfter,
			u.Sessions, u.PeakPerS, u.Refused, u.RefusedPeakPerS)
	}
	_ = tw.Flush()
}

func fmtSince(d *float64) string {
	if d == nil {
		return "not within the window"
	}
	if *d == 0 {
		return "at once (never below)"
	}
	return fmt.Sprintf("after %.2fs", *d)
}
