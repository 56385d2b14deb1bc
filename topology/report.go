package topology

import (
	"fmt"
	"sort"
	"strings"
)

// StreamEdge is one node's upstream link for one stream, as that node
// reports it.
type StreamEdge struct {
	Child string `json:"child"`
	// Parent is the upstream node's ID; "" means the back end itself.
	Parent       string  `json:"parent"`
	LagMs        float64 `json:"lagMs"`
	LagEvents    int64   `json:"lagEvents"`
	LastEventID  string  `json:"lastEventId"`
	EventsPerSec float64 `json:"eventsPerSec"`
}

// StreamReport is the tree of one stream.
type StreamReport struct {
	Stream string `json:"stream"`
	// Backend names the back end the stream comes from.
	Backend string `json:"backend"`
	// Owner is the root expected to hold the back-end connection.
	Owner string       `json:"owner"`
	Edges []StreamEdge `json:"edges"`
}

// NodeReport is a node as the report shows it.
type NodeReport struct {
	Node
	// Reachable is false when the node's admin API could not be asked;
	// its edges are then missing from the report.
	Reachable bool `json:"reachable"`
	// Error says why the node was not reached.
	Error string `json:"error,omitempty"`
}

// Report is the mesh-wide tree the admin API serves.
type Report struct {
	// GeneratedAt is supplied by the caller (this package has no clock).
	GeneratedAt string         `json:"generatedAt"`
	Nodes       []NodeReport   `json:"nodes"`
	Streams     []StreamReport `json:"streams"`
	// Unreachable lists data centres or nodes that could not be asked.
	Unreachable []string `json:"unreachable,omitempty"`
}

// StreamSpec names a stream for Expected.
type StreamSpec struct {
	Stream    string
	Backend   string
	BackendDC string
}

// Expected returns the report the mesh converges to on view v when every
// node that is still a member (alive, suspect or draining) carries every
// given stream: the edges come from Choose with nothing avoided. Nodes that
// have left or are unreachable are listed but carry nothing.
func Expected(v View, generatedAt string, streams []StreamSpec) Report {
	p := NewPlan(v)
	r := Report{GeneratedAt: generatedAt}
	for _, pn := range p.nodes {
		reach := member(pn.State)
		nr := NodeReport{Node: pn.Node, Reachable: reach}
		if !reach {
			nr.Error = fmt.Sprintf("node is %s", pn.State)
		}
		r.Nodes = append(r.Nodes, nr)
	}
	for _, s := range streams {
		sr := StreamReport{Stream: s.Stream, Backend: s.Backend, Edges: []StreamEdge{}}
		for _, pn := range p.nodes {
			if !member(pn.State) {
				continue
			}
			c := p.Choose(pn.ID, s.Stream, s.BackendDC, nil)
			sr.Owner = c.Owner
			if !c.OK {
				continue
			}
			e := StreamEdge{Child: pn.ID}
			if !c.Backend {
				e.Parent = c.Parent.ID
			}
			sr.Edges = append(sr.Edges, e)
		}
		r.Streams = append(r.Streams, sr)
	}
	return r
}

func member(s State) bool {
	return s == StateAlive || s == StateSuspect || s == StateDraining
}

// ViolationKind classifies a Violation.
type ViolationKind string

// Kinds of invariant violations Validate reports.
const (
	KindDuplicateNode ViolationKind = "duplicate-node"
	KindUnknownNode   ViolationKind = "unknown-node"
	KindNoOwner       ViolationKind = "no-owner"
	KindManyOwners    ViolationKind = "many-owners"
	KindOwnerMismatch ViolationKind = "owner-mismatch"
	KindManyParents   ViolationKind = "many-parents"
	KindCycle         ViolationKind = "cycle"
	KindCrossDC       ViolationKind = "cross-dc"
	KindDetached      ViolationKind = "detached"
)

// Violation is one broken invariant found in a report.
type Violation struct {
	Kind ViolationKind
	// Stream is empty for violations that concern the node list.
	Stream string
	// Nodes are the node IDs involved, in a deterministic order.
	Nodes  []string
	Detail string
}

func (v *Violation) Error() string {
	var b strings.Builder
	b.WriteString("topology: ")
	if v.Stream != "" {
		fmt.Fprintf(&b, "stream %q: ", v.Stream)
	}
	b.WriteString(string(v.Kind))
	if v.Detail != "" {
		b.WriteString(": ")
		b.WriteString(v.Detail)
	}
	return b.String()
}

// Validate checks the invariants of a report and returns one *Violation per
// problem, in a deterministic order: duplicate node IDs, then for every
// stream edges naming unknown nodes, a missing or extra owner (back-end
// link), a back-end link held by another node than Owner, nodes with more
// than one upstream, cycles, more than one cross-data-centre link into one
// data centre, and links from nodes that themselves have no upstream
// (reported only when that node was reachable, as an unreachable node's
// edges are simply unknown).
func Validate(r Report) []error {
	var errs []error
	nodes := make(map[string]NodeReport, len(r.Nodes))
	for _, n := range r.Nodes {
		if _, dup := nodes[n.ID]; dup {
			errs = append(errs, &Violation{Kind: KindDuplicateNode, Nodes: []string{n.ID},
				Detail: fmt.Sprintf("node %q listed more than once", n.ID)})
			continue
		}
		nodes[n.ID] = n
	}
	for _, s := range r.Streams {
		errs = append(errs, validateStream(s, nodes)...)
	}
	return errs
}

func validateStream(s StreamReport, nodes map[string]NodeReport) []error {
	var errs []error
	add := func(kind ViolationKind, ids []string, format string, args ...any) {
		errs = append(errs, &Violation{Kind: kind, Stream: s.Stream, Nodes: ids, Detail: fmt.Sprintf(format, args...)})
	}

	parents := make(map[string][]string)
	var owners []string
	for _, e := range s.Edges {
		if _, ok := nodes[e.Child]; !ok {
			add(KindUnknownNode, []string{e.Child}, "edge from unknown node %q", e.Child)
		}
		if e.Parent == "" {
			owners = append(owners, e.Child)
		} else if _, ok := nodes[e.Parent]; !ok {
			add(KindUnknownNode, []string{e.Parent}, "edge from %q to unknown node %q", e.Child, e.Parent)
		}
		parents[e.Child] = append(parents[e.Child], e.Parent)
	}

	sort.Strings(owners)
	switch {
	case len(owners) == 0 && len(s.Edges) > 0:
		add(KindNoOwner, nil, "no node connects to the back end")
	case len(owners) > 1:
		add(KindManyOwners, owners, "%d nodes connect to the back end: %s", len(owners), strings.Join(owners, ", "))
	}
	if len(owners) == 1 && s.Owner != "" && owners[0] != s.Owner {
		add(KindOwnerMismatch, []string{owners[0], s.Owner}, "%q connects to the back end, owner is %q", owners[0], s.Owner)
	}

	children := sortedKeys(parents)
	for _, c := range children {
		if ps := parents[c]; len(ps) > 1 {
			sorted := append([]string(nil), ps...)
			sort.Strings(sorted)
			add(KindManyParents, append([]string{c}, sorted...), "%q has %d upstreams: %s", c, len(ps), strings.Join(quoteAll(sorted), ", "))
		}
	}

	for _, cyc := range findCycles(children, parents) {
		add(KindCycle, cyc, "%s", strings.Join(append(cyc, cyc[0]), " -> "))
	}

	// Cross-DC links counted per receiving data centre.
	crossInto := make(map[string][]string)
	for _, e := range s.Edges {
		c, okc := nodes[e.Child]
		pn, okp := nodes[e.Parent]
		if e.Parent == "" || !okc || !okp || c.DC == pn.DC {
			continue
		}
		crossInto[c.DC] = append(crossInto[c.DC], e.Child)
	}
	for _, dc := range sortedKeys(crossInto) {
		if ids := crossInto[dc]; len(ids) > 1 {
			sort.Strings(ids)
			add(KindCrossDC, ids, "%d links into data centre %q: %s", len(ids), dc, strings.Join(ids, ", "))
		}
	}

	var detached []string
	seen := make(map[string]bool)
	for _, e := range s.Edges {
		if e.Parent == "" || seen[e.Parent] {
			continue
		}
		if n, ok := nodes[e.Parent]; ok && n.Reachable && len(parents[e.Parent]) == 0 {
			seen[e.Parent] = true
			detached = append(detached, e.Parent)
		}
	}
	sort.Strings(detached)
	for _, id := range detached {
		add(KindDetached, []string{id}, "%q feeds children but has no upstream", id)
	}
	return errs
}

// findCycles returns the cycles a depth-first walk of the child -> parent
// graph meets, each rotated to start at its smallest ID. With one upstream
// per node (the steady state) that is every cycle, each exactly once.
func findCycles(children []string, parents map[string][]string) [][]string {
	const (
		white = iota
		grey
		black
	)
	colour := make(map[string]int)
	var cycles [][]string
	var stack []string
	var visit func(id string)
	visit = func(id string) {
		colour[id] = grey
		stack = append(stack, id)
		ps := append([]string(nil), parents[id]...)
		sort.Strings(ps)
		for _, p := range ps {
			if p == "" {
				continue
			}
			switch colour[p] {
			case white:
				visit(p)
			case grey:
				for i := len(stack) - 1; i >= 0; i-- {
					if stack[i] == p {
						cycles = append(cycles, rotateMin(stack[i:]))
						break
					}
				}
			}
		}
		stack = stack[:len(stack)-1]
		colour[id] = black
	}
	for _, c := range children {
		if colour[c] == white {
			visit(c)
		}
	}
	sort.Slice(cycles, func(i, j int) bool { return strings.Join(cycles[i], "\x00") < strings.Join(cycles[j], "\x00") })
	return cycles
}

func rotateMin(c []string) []string {
	m := 0
	for i := range c {
		if c[i] < c[m] {
			m = i
		}
	}
	out := make([]string, 0, len(c))
	out = append(out, c[m:]...)
	return append(out, c[:m]...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		if s == "" {
			out[i] = "back end"
			continue
		}
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
