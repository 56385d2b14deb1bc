package topology

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
)

// RenderText renders the report as text: the nodes grouped under one header
// per data centre, then for each stream (all of them when stream is "") an
// indented tree from the back end through the owner down to every node that
// reported the stream. Every node appears once per stream; nodes that do not
// reach the back end (a cycle, or an upstream that reported nothing) are
// listed under "detached".
func RenderText(r Report, stream string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ssemesh topology at %s\n", orDash(r.GeneratedAt))
	if len(r.Unreachable) > 0 {
		fmt.Fprintf(&b, "unreachable: %s\n", strings.Join(r.Unreachable, ", "))
	}
	nodes := indexNodes(r)
	for _, dc := range nodeDCs(r) {
		fmt.Fprintf(&b, "\ndata centre %s\n", orDash(dc))
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tTIER\tSTATE\tCLIENTS\tSTREAMS\tCLIENT ADDR\tADMIN ADDR")
		var errs []string
		for _, n := range nodesIn(r, dc) {
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%d\t%s\t%s\n",
				n.ID, n.Tier, stateLabel(n), clientsLabel(n.Node), n.Streams, orDash(n.ClientAddr), orDash(n.AdminAddr))
			if n.Error != "" {
				errs = append(errs, fmt.Sprintf("  %s: %s\n", n.ID, n.Error))
			}
		}
		_ = tw.Flush() // writes to a strings.Builder cannot fail
		for _, e := range errs {
			b.WriteString(e)
		}
	}
	streams, missing := selectStreams(r, stream)
	if missing {
		fmt.Fprintf(&b, "\nstream %q: not in the report\n", stream)
	}
	for _, s := range streams {
		b.WriteString("\n")
		renderStreamText(&b, s, nodes)
	}
	return b.String()
}

func renderStreamText(b *strings.Builder, s StreamReport, nodes map[string]NodeReport) {
	fmt.Fprintf(b, "stream %q\n", s.Stream)
	fmt.Fprintf(b, "  owner %s\n", orDash(s.Owner))
	t := newStreamTree(s, nodes)
	var walk func(id, prefix string, last bool)
	walk = func(id, prefix string, last bool) {
		branch, next := branchGlyph(last), "│  "
		if last {
			next = "   "
		}
		fmt.Fprintf(b, "%s%s%s\n", prefix, branch, t.label(id))
		t.printed[id] = true
		kids := t.kids[id]
		for i, k := range kids {
			if t.printed[k] {
				// Only reachable through a cycle with this node's
				// ancestors; the loop is shown once, here.
				fmt.Fprintf(b, "%s%s%s%s (cycle)\n", prefix, next, branchGlyph(i == len(kids)-1), k)
				continue
			}
			walk(k, prefix+next, i == len(kids)-1)
		}
	}
	fmt.Fprintf(b, "  back end %s\n", orDash(s.Backend))
	top := t.kids[""]
	for i, id := range top {
		walk(id, "  ", i == len(top)-1)
	}
	var detached []string
	for _, id := range t.all {
		if t.printed[id] {
			continue
		}
		detached = append(detached, t.topOf(id))
	}
	if len(detached) == 0 {
		return
	}
	b.WriteString("  detached (not connected to the back end)\n")
	for len(detached) > 0 {
		id := detached[0]
		detached = detached[1:]
		if t.printed[id] {
			continue
		}
		walk(id, "  ", true)
	}
}

// streamTree arranges one stream's edges for printing: every node hangs
// under its first upstream (sorted), siblings in (DC, tier, ID) order.
type streamTree struct {
	nodes   map[string]NodeReport
	edges   map[string][]StreamEdge // by child, sorted by parent
	kids    map[string][]string     // by primary parent; "" is the back end
	all     []string                // every node of the stream, sorted
	printed map[string]bool
}

func newStreamTree(s StreamReport, nodes map[string]NodeReport) *streamTree {
	t := &streamTree{
		nodes:   nodes,
		edges:   make(map[string][]StreamEdge),
		kids:    make(map[string][]string),
		printed: make(map[string]bool),
	}
	seen := make(map[string]bool)
	note := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			t.all = append(t.all, id)
		}
	}
	for _, e := range s.Edges {
		t.edges[e.Child] = append(t.edges[e.Child], e)
		note(e.Child)
		note(e.Parent)
	}
	sort.Strings(t.all)
	for child, es := range t.edges {
		sort.SliceStable(es, func(i, j int) bool { return es[i].Parent < es[j].Parent })
		t.kids[es[0].Parent] = append(t.kids[es[0].Parent], child)
	}
	for p, ks := range t.kids {
		sort.Slice(ks, func(i, j int) bool { return t.less(ks[i], ks[j]) })
		t.kids[p] = ks
	}
	return t
}

func (t *streamTree) less(a, b string) bool {
	na, nb := t.nodes[a], t.nodes[b]
	if na.DC != nb.DC {
		return na.DC < nb.DC
	}
	if na.Tier != nb.Tier {
		return na.Tier < nb.Tier
	}
	return a < b
}

// topOf follows primary upstreams from id to the first node without one, or
// to the smallest ID of the cycle it runs into.
func (t *streamTree) topOf(id string) string {
	visited := map[string]bool{}
	cur := id
	for {
		es := t.edges[cur]
		if len(es) == 0 || es[0].Parent == "" || t.printed[es[0].Parent] {
			return cur
		}
		visited[cur] = true
		next := es[0].Parent
		if visited[next] {
			// In a cycle: start at its smallest member for a stable output.
			smallest := next
			for c := t.edges[next][0].Parent; c != next; c = t.edges[c][0].Parent {
				if c < smallest {
					smallest = c
				}
			}
			return smallest
		}
		cur = next
	}
}

func (t *streamTree) label(id string) string {
	var b strings.Builder
	b.WriteString(id)
	n, known := t.nodes[id]
	if !known {
		b.WriteString("  [unknown node]")
	} else {
		fmt.Fprintf(&b, "  [%s t%d %s]", orDash(n.DC), n.Tier, stateLabel(n))
	}
	es := t.edges[id]
	if len(es) == 0 {
		b.WriteString("  no upstream reported")
		return b.String()
	}
	e := es[0]
	if e.Parent != "" {
		if p, ok := t.nodes[e.Parent]; ok && known && p.DC != n.DC {
			fmt.Fprintf(&b, "  cross-dc from %s", orDash(p.DC))
		}
	}
	fmt.Fprintf(&b, "  lag %.1fms/%d ev  %.1f ev/s  last id %s", e.LagMs, e.LagEvents, e.EventsPerSec, orDash(e.LastEventID))
	if len(es) > 1 {
		others := make([]string, 0, len(es)-1)
		for _, o := range es[1:] {
			others = append(others, orBackEnd(o.Parent))
		}
		fmt.Fprintf(&b, "  also from %s", strings.Join(others, ", "))
	}
	return b.String()
}

// RenderDOT renders the report as a Graphviz digraph: one cluster per data
// centre, nodes filled by state (dashed when unreachable), edges from
// upstream to downstream, cross-data-centre edges bold. stream "" draws all
// streams, labelling each edge with its stream.
func RenderDOT(r Report, stream string) string {
	var b strings.Builder
	streams, _ := selectStreams(r, stream)
	title := "ssemesh topology"
	if stream != "" {
		title += " — " + stream
	}
	if r.GeneratedAt != "" {
		title += " — " + r.GeneratedAt
	}
	b.WriteString("digraph \"ssemesh\" {\n")
	fmt.Fprintf(&b, "  graph [rankdir=TB, labelloc=t, fontname=\"Helvetica\", label=%s];\n", dotQuote(title))
	b.WriteString("  node [shape=ellipse, style=filled, fontname=\"Helvetica\"];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=10];\n")

	backends := make(map[string]bool)
	for _, s := range streams {
		backends[backendName(s)] = true
	}
	for _, name := range sortedKeys(backends) {
		fmt.Fprintf(&b, "  %s [shape=box, fillcolor=\"#cfe2ff\", label=%s];\n",
			dotQuote("backend:"+name), dotQuote("back end\n"+name))
	}
	for i, dc := range nodeDCs(r) {
		fmt.Fprintf(&b, "  subgraph %s {\n", dotQuote(fmt.Sprintf("cluster_%d", i)))
		fmt.Fprintf(&b, "    label=%s;\n", dotQuote(orDash(dc)))
		for _, n := range nodesIn(r, dc) {
			style := "filled"
			if !n.Reachable {
				style = "filled,dashed"
			}
			fmt.Fprintf(&b, "    %s [fillcolor=%q, style=%q, label=%s];\n", dotQuote("node:"+n.ID), stateColour(n.State), style,
				dotQuote(fmt.Sprintf("%s\ntier %d · %s\nclients %s", n.ID, n.Tier, n.State, clientsLabel(n.Node))))
		}
		b.WriteString("  }\n")
	}

	nodes := indexNodes(r)
	for _, s := range streams {
		edges := append([]StreamEdge(nil), s.Edges...)
		sort.SliceStable(edges, func(i, j int) bool {
			if edges[i].Parent != edges[j].Parent {
				return edges[i].Parent < edges[j].Parent
			}
			return edges[i].Child < edges[j].Child
		})
		for _, e := range edges {
			from := "backend:" + backendName(s)
			if e.Parent != "" {
				from = "node:" + e.Parent
			}
			label := fmt.Sprintf("%.1fms", e.LagMs)
			if stream == "" && len(streams) > 1 {
				label = s.Stream + "\n" + label
			}
			attrs := fmt.Sprintf("label=%s", dotQuote(label))
			c, okc := nodes[e.Child]
			p, okp := nodes[e.Parent]
			if e.Parent != "" && okc && okp && c.DC != p.DC {
				attrs += ", style=bold, color=\"#d62828\""
			}
			fmt.Fprintf(&b, "  %s -> %s [%s];\n", dotQuote(from), dotQuote("node:"+e.Child), attrs)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func selectStreams(r Report, stream string) (out []StreamReport, missing bool) {
	if stream == "" {
		out = append(out, r.Streams...)
		sort.SliceStable(out, func(i, j int) bool { return out[i].Stream < out[j].Stream })
		return out, false
	}
	for _, s := range r.Streams {
		if s.Stream == stream {
			return []StreamReport{s}, false
		}
	}
	return nil, true
}

func indexNodes(r Report) map[string]NodeReport {
	m := make(map[string]NodeReport, len(r.Nodes))
	for _, n := range r.Nodes {
		if _, dup := m[n.ID]; !dup {
			m[n.ID] = n
		}
	}
	return m
}

func nodeDCs(r Report) []string {
	set := make(map[string]bool)
	for _, n := range r.Nodes {
		set[n.DC] = true
	}
	return sortedKeys(set)
}

func nodesIn(r Report, dc string) []NodeReport {
	var out []NodeReport
	for _, n := range r.Nodes {
		if n.DC == dc {
			out = append(out, n)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Tier != out[j].Tier {
			return out[i].Tier < out[j].Tier
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func backendName(s StreamReport) string {
	if s.Backend != "" {
		return s.Backend
	}
	return s.Stream
}

func stateLabel(n NodeReport) string {
	s := string(n.State)
	if s == "" {
		s = "-"
	}
	if !n.Reachable && n.State != StateUnreachable {
		s += " (not reached)"
	}
	return s
}

func clientsLabel(n Node) string {
	if n.Capacity == 0 {
		return fmt.Sprintf("%d", n.Clients)
	}
	full := ""
	if n.Full() {
		full = " full"
	}
	return fmt.Sprintf("%d/%d%s", n.Clients, n.Capacity, full)
}

func stateColour(s State) string {
	switch s {
	case StateAlive:
		return "#b7e4c7"
	case StateSuspect:
		return "#ffe066"
	case StateDraining:
		return "#ffb870"
	case StateLeft:
		return "#d9d9d9"
	case StateUnreachable:
		return "#f4a3a3"
	default:
		return "#ffffff"
	}
}

// dotQuote makes s a DOT quoted string. Newlines become the \n escape DOT
// renders as a line break.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "")
	return `"` + r.Replace(s) + `"`
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func branchGlyph(last bool) string {
	if last {
		return "└─ "
	}
	return "├─ "
}

func orBackEnd(parent string) string {
	if parent == "" {
		return "back end"
	}
	return parent
}
