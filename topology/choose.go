package topology

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// Choice is where one node takes one stream from.
type Choice struct {
	// Backend is true when this node connects to the back end itself: it is
	// the stream's owner.
	Backend bool
	// Parent is the node to take the stream from when Backend is false.
	Parent Node
	// Owner is the ID of the root that owns the stream's back-end
	// connection; empty when there is none.
	Owner string
	// CrossDC is true when Parent is in another data centre.
	CrossDC bool
	// OK is false when no upstream can be chosen; Reason then says why.
	OK bool
	// Reason explains the choice, or why there is none.
	Reason string
}

// Choose returns where node self takes stream from, given the back end's
// data centre ("" = unknown) and the IDs of nodes that self must avoid for
// now (they refused it with 508 or failed). It is O(len(v.Nodes)); callers
// that choose for many streams over one view should build a Plan once.
func Choose(v View, self string, stream string, backendDC string, avoid map[string]bool) Choice {
	return NewPlan(v).Choose(self, stream, backendDC, avoid)
}

// Plan is a View indexed for repeated choices. It is immutable after
// NewPlan and safe for concurrent use.
type Plan struct {
	nodes []planNode
	byID  map[string]int
	// byDC lists each data centre's nodes by ascending tier, so that the
	// scans below stop at the first tier that decides.
	byDC map[string][]int
	// roots are the alive tier-0 nodes: the only owner candidates.
	roots   []int
	rootDCs []string
}

type planNode struct {
	Node
	hash uint64
}

// NewPlan indexes v. The first entry wins when an ID is listed twice, so
// that every caller resolves the duplicate the same way.
func NewPlan(v View) *Plan {
	p := &Plan{
		nodes: make([]planNode, 0, len(v.Nodes)),
		byID:  make(map[string]int, len(v.Nodes)),
		byDC:  make(map[string][]int),
	}
	rootDC := make(map[string]bool)
	for _, n := range v.Nodes {
		if _, dup := p.byID[n.ID]; dup {
			continue
		}
		i := len(p.nodes)
		p.nodes = append(p.nodes, planNode{Node: n, hash: keyHash(n.ID)})
		p.byID[n.ID] = i
		p.byDC[n.DC] = append(p.byDC[n.DC], i)
		if n.Tier == 0 && n.Alive() {
			p.roots = append(p.roots, i)
			if !rootDC[n.DC] {
				rootDC[n.DC] = true
				p.rootDCs = append(p.rootDCs, n.DC)
			}
		}
	}
	for _, idx := range p.byDC {
		sort.SliceStable(idx, func(a, b int) bool { return p.nodes[idx[a]].Tier < p.nodes[idx[b]].Tier })
	}
	sort.Strings(p.rootDCs)
	return p
}

// Node returns the node with the given ID.
func (p *Plan) Node(id string) (Node, bool) {
	i, ok := p.byID[id]
	if !ok {
		return Node{}, false
	}
	return p.nodes[i].Node, true
}

// Owner returns the root that owns stream's back-end connection.
func (p *Plan) Owner(stream, backendDC string) (Node, bool) {
	o := p.owner(keyHash(stream), backendDC)
	if o < 0 {
		return Node{}, false
	}
	return p.nodes[o].Node, true
}

// Choose is the indexed form of the package-level Choose.
func (p *Plan) Choose(self string, stream string, backendDC string, avoid map[string]bool) Choice {
	si, ok := p.byID[self]
	if !ok {
		return Choice{Reason: fmt.Sprintf("node %q is not in the view", self)}
	}
	hs := keyHash(stream)
	o := p.owner(hs, backendDC)
	if o < 0 {
		return Choice{Reason: "no live root (tier 0) in any data centre"}
	}
	owner := p.nodes[o].Node
	c := Choice{Owner: owner.ID}
	if si == o {
		c.Backend, c.OK, c.Reason = true, true, "owner: connects to the back end"
		return c
	}
	me := p.nodes[si].Node
	// Interchangeable parents are ranked per (stream, child): keyed on the
	// stream alone, every child of a tier would pick the same parent and a
	// hot stream would load one relay per tier while its peers idle.
	hc := childHash(hs, p.nodes[si].hash)
	eligible := func(i int) bool {
		n := p.nodes[i].Node
		return i != si && n.Alive() && !n.Full() && !avoid[n.ID]
	}
	parent := func(i int, reason string) Choice {
		c.Parent = p.nodes[i].Node
		c.CrossDC = c.Parent.DC != me.DC
		c.OK, c.Reason = true, reason
		return c
	}

	head := p.head(hs, o, me.DC)
	if head != si {
		// Inside the data centre: the nearest lower tier first, so that
		// leaves load relays rather than roots; the head last, because it
		// is the one node every other node of the data centre can reach.
		if i := p.nearestLower(hc, me.DC, me.Tier, eligible); i >= 0 {
			return parent(i, fmt.Sprintf("same data centre, tier %d", p.nodes[i].Tier))
		}
		switch {
		case head < 0:
			c.Reason = fmt.Sprintf("no live node in data centre %q to bring the stream in", me.DC)
		case avoid[p.nodes[head].ID]:
			c.Reason = fmt.Sprintf("%s, the head of data centre %q for this stream, is avoided", p.nodes[head].ID, me.DC)
		default:
			return parent(head, fmt.Sprintf("head of data centre %q", me.DC))
		}
		return c
	}

	// Self is the gateway of a data centre without the owner: the one node
	// of its data centre that crosses to the owner's data centre. Every
	// node there reaches the owner without leaving it, so any of them will
	// do; the nearest lower tier spreads gateways over the owner's relays.
	ownerDC := owner.DC
	if i := p.nearestLower(hc, ownerDC, me.Tier, eligible); i >= 0 {
		return parent(i, fmt.Sprintf("gateway of %q, from the owner's data centre %q tier %d", me.DC, ownerDC, p.nodes[i].Tier))
	}
	if !avoid[owner.ID] {
		return parent(o, fmt.Sprintf("gateway of %q, from the owner", me.DC))
	}
	if i := p.lowest(hc, ownerDC, eligible); i >= 0 {
		return parent(i, fmt.Sprintf("gateway of %q, from the owner's data centre %q tier %d (owner avoided)", me.DC, ownerDC, p.nodes[i].Tier))
	}
	c.Reason = fmt.Sprintf("gateway of %q: no usable node in the owner's data centre %q", me.DC, ownerDC)
	return c
}

// owner returns the index of the stream's owner or -1: the rendezvous winner
// among the alive roots of the back end's data centre, or, when it has none,
// of the first data centre by name that has some. An unknown back-end data
// centre spreads owners over all alive roots.
func (p *Plan) owner(hs uint64, backendDC string) int {
	if len(p.roots) == 0 {
		return -1
	}
	dc := ""
	if backendDC != "" {
		dc = p.rootDCs[0] // sorted
		if slices.Contains(p.rootDCs, backendDC) {
			dc = backendDC
		}
	}
	pk := newPicker(p, hs)
	for _, i := range p.roots {
		if backendDC != "" && p.nodes[i].DC != dc {
			continue
		}
		pk.consider(i)
	}
	return pk.best
}

// head returns the index of the node through which the stream enters dc, or
// -1. Capacity is ignored on purpose: a head that moved whenever its client
// count crossed the limit would move the back-end connection or the
// cross-DC link with it.
func (p *Plan) head(hs uint64, owner int, dc string) int {
	if p.nodes[owner].DC == dc {
		return owner
	}
	return p.gateway(hs, dc)
}

// gateway is the rendezvous winner among the alive nodes of dc's lowest tier
// that has alive nodes; draining nodes stand in only when nothing in dc is
// alive, so that a data centre being drained keeps one link until it empties.
func (p *Plan) gateway(hs uint64, dc string) int {
	for _, st := range [...]State{StateAlive, StateDraining} {
		if i := p.lowest(hs, dc, func(i int) bool { return p.nodes[i].State == st }); i >= 0 {
			return i
		}
	}
	return -1
}

// nearestLower returns the rendezvous winner under key among the nodes of
// dc accepted by ok whose tier is the highest one below tier, or -1.
func (p *Plan) nearestLower(key uint64, dc string, tier int, ok func(int) bool) int {
	pk := newPicker(p, key)
	idx := p.byDC[dc]
	found := math.MinInt
	for k := len(idx) - 1; k >= 0; k-- {
		i := idx[k]
		t := p.nodes[i].Tier
		if t < found {
			break
		}
		if t >= tier || !ok(i) {
			continue
		}
		found = t
		pk.consider(i)
	}
	return pk.best
}

// lowest returns the rendezvous winner under key among the nodes of dc
// accepted by ok on the lowest tier that has any, or -1.
func (p *Plan) lowest(key uint64, dc string, ok func(int) bool) int {
	pk := newPicker(p, key)
	found := math.MaxInt
	for _, i := range p.byDC[dc] {
		t := p.nodes[i].Tier
		if t > found {
			break
		}
		if !ok(i) {
			continue
		}
		found = t
		pk.consider(i)
	}
	return pk.best
}

// picker keeps the highest-random-weight candidate seen so far; equal
// weights (a 2^-64 event) fall back to the lower ID so the result never
// depends on iteration order.
type picker struct {
	p    *Plan
	key  uint64
	best int
	w    uint64
}

func newPicker(p *Plan, key uint64) picker { return picker{p: p, key: key, best: -1} }

func (k *picker) consider(i int) {
	w := weight(k.key, k.p.nodes[i].hash)
	if k.best < 0 || w > k.w || (w == k.w && k.p.nodes[i].ID < k.p.nodes[k.best].ID) {
		k.best, k.w = i, w
	}
}
