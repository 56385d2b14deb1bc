package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/ssemesh/ssemesh/topology"
)

// statusStreams is the part of /v1/streams the summary shows.
type statusStreams struct {
	Node    string `json:"node"`
	Streams []struct {
		Stream      string `json:"stream"`
		Upstream    string `json:"upstream"`
		State       string `json:"state"`
		Clients     int    `json:"clients"`
		EventsIn    uint64 `json:"events_in"`
		Reconnects  uint64 `json:"reconnects"`
		LastEventID string `json:"last_event_id"`
		LastError   string `json:"last_error"`
	} `json:"streams"`
}

// statusNodes is /v1/nodes.
type statusNodes struct {
	Self        string                `json:"self"`
	Nodes       []topology.NodeReport `json:"nodes"`
	Unreachable []string              `json:"unreachable"`
}

var statusCommand = adminCommand("status",
	"ssemesh status [--admin host:port]",
	"print a one-screen summary of one node",
	`Prints one node's state: ready or draining, its place in the mesh, its
clients and streams with their upstreams and last errors.`)

// cmdStatus prints a one-screen summary of one node.
func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	var a adminFlags
	a.register(fs)
	if err := parseFlags(fs, args, &statusCommand, stdout, os.LookupEnv); err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}

	// /readyz answers 503 while the node drains: that is a state to show,
	// not a failure to report.
	code, body, err := c.get(ctx, "/readyz", nil, http.StatusServiceUnavailable)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	var ready struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(body, &ready); err != nil {
		return fmt.Errorf("status: reading /readyz (HTTP %d): %w", code, err)
	}
	var streams statusStreams
	if err := c.getJSON(ctx, "/v1/streams", &streams); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	var nodes statusNodes
	if err := c.getJSON(ctx, "/v1/nodes", &nodes); err != nil {
		return fmt.Errorf("status: %w", err)
	}

	self := nodes.Self
	if self == "" {
		self = streams.Node
	}
	var me *topology.NodeReport
	for i := range nodes.Nodes {
		if nodes.Nodes[i].ID == self {
			me = &nodes.Nodes[i]
		}
	}

	w := &stickyWriter{w: stdout}
	w.printf("node     %s  %s\n", self, strings.ToUpper(dashIfEmpty(ready.Status)))
	if me != nil {
		w.printf("place    data centre %s, tier %d, %s\n", dashIfEmpty(me.DC), me.Tier, dashIfEmpty(string(me.State)))
		w.printf("address  clients %s, admin %s\n", dashIfEmpty(me.ClientAddr), dashIfEmpty(me.AdminAddr))
		limit := ""
		if me.Capacity > 0 {
			limit = fmt.Sprintf(" of %d (%.0f%%)", me.Capacity, 100*float64(me.Clients)/float64(me.Capacity))
		}
		w.printf("load     %d clients%s, %d streams\n", me.Clients, limit, me.Streams)
	}
	if len(nodes.Nodes) > 1 || len(nodes.Unreachable) > 0 {
		byState := map[topology.State]int{}
		for _, n := range nodes.Nodes {
			byState[n.State]++
		}
		var parts []string
		for _, s := range []topology.State{topology.StateAlive, topology.StateSuspect, topology.StateDraining, topology.StateLeft, topology.StateUnreachable} {
			if byState[s] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", byState[s], s))
			}
		}
		w.printf("mesh     %d nodes: %s\n", len(nodes.Nodes), strings.Join(parts, ", "))
		if len(nodes.Unreachable) > 0 {
			w.printf("         not reached: %s\n", strings.Join(nodes.Unreachable, ", "))
		}
	}
	w.printf("\n")
	if len(streams.Streams) == 0 {
		w.printf("no open streams\n")
		return w.err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSTATE\tCLIENTS\tEVENTS\tRECONNECTS\tLAST ID\tUPSTREAM")
	var lastErrors []string
	for _, s := range streams.Streams {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", clipMiddle(s.Stream, 48), s.State, s.Clients, s.EventsIn,
			s.Reconnects, clipMiddle(dashIfEmpty(s.LastEventID), 20), clipMiddle(dashIfEmpty(s.Upstream), 56))
		if s.LastError != "" {
			lastErrors = append(lastErrors, fmt.Sprintf("  %s: %s", clipMiddle(s.Stream, 48), clipMiddle(s.LastError, 100)))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("status: writing output: %w", err)
	}
	if len(lastErrors) > 0 {
		w.printf("\nlast upstream errors:\n%s\n", strings.Join(lastErrors, "\n"))
	}
	if w.err != nil {
		return fmt.Errorf("status: writing output: %w", w.err)
	}
	return nil
}

// stickyWriter keeps the first write error, so a summary of many lines checks
// it once.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (e *stickyWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *stickyWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clipMiddle shortens s to at most n runes, keeping both ends: stream keys
// and URLs differ at their ends more than in their middles.
func clipMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n || n < 5 {
		return s
	}
	head := (n - 1) / 2
	tail := n - 1 - head
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}
