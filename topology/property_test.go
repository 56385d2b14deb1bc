package topology

import (
	"math"
	"math/rand"
	"sort"
	"testing"
)

var propertyDCs = []string{"dc-a", "dc-b", "dc-c"}

// propertyCase is one random world; sizes go up to 1,000 nodes.
type propertyCase struct {
	seed  int64
	nodes int
	// rootlessDC has no roots at all.
	rootlessDC string
}

func propertyCases(t *testing.T) []propertyCase {
	cases := []propertyCase{
		{seed: 1, nodes: 3},
		{seed: 2, nodes: 12},
		{seed: 3, nodes: 40},
		{seed: 4, nodes: 150, rootlessDC: "dc-b"},
		{seed: 5, nodes: 400, rootlessDC: "dc-a"},
		{seed: 6, nodes: 1000},
	}
	if !testing.Short() {
		for s := int64(7); s < 17; s++ {
			cases = append(cases, propertyCase{seed: s, nodes: 1 + int(s*37)%200})
		}
	}
	return cases
}

func (pc propertyCase) world() (View, []streamCase) {
	rng := rand.New(rand.NewSource(pc.seed))
	v := randomView(rng, genOpts{nodes: pc.nodes, dcs: propertyDCs, rootlessDC: pc.rootlessDC})
	return v, randomStreams(rng, 100, propertyDCs)
}

type dcTier struct {
	dc   string
	tier int
}

// rankOf is the function docs/topology.md proves strictly decreasing along
// every edge: (not in the owner's DC, not the DC's head, tier).
type rankOf struct{ foreign, notHead, tier int }

func (a rankOf) less(b rankOf) bool {
	if a.foreign != b.foreign {
		return a.foreign < b.foreign
	}
	if a.notHead != b.notHead {
		return a.notHead < b.notHead
	}
	return a.tier < b.tier
}

// streamFacts are the per-stream roles computed through the exported API
// and cross-checked against an independent reference.
type streamFacts struct {
	owner   Node
	ok      bool
	heads   map[string]string // dc -> head ID ("" when none)
	ownerDC string
}

func factsFor(t *testing.T, fail func(string, ...any), p *Plan, sc streamCase) streamFacts {
	t.Helper()
	f := streamFacts{heads: map[string]string{}}
	f.owner, f.ok = p.Owner(sc.key, sc.backendDC)

	// Reference owner: the back end's DC if it has alive roots, else the
	// first DC by name that has some, then the rendezvous winner there (all
	// alive roots when the DC is unknown).
	rootsByDC := map[string][]string{}
	var allRoots []string
	for _, n := range p.nodes {
		if n.Tier == 0 && n.Alive() {
			rootsByDC[n.DC] = append(rootsByDC[n.DC], n.ID)
			allRoots = append(allRoots, n.ID)
		}
	}
	want := ""
	switch {
	case len(allRoots) == 0:
	case sc.backendDC == "":
		want = refWinner(sc.key, allRoots)
	case len(rootsByDC[sc.backendDC]) > 0:
		want = refWinner(sc.key, rootsByDC[sc.backendDC])
	default:
		want = refWinner(sc.key, rootsByDC[sortedKeys(rootsByDC)[0]])
	}
	if f.ok != (want != "") || f.owner.ID != want {
		fail("stream %q: owner %q (ok %v), reference %q", sc.key, f.owner.ID, f.ok, want)
	}
	if !f.ok {
		return f
	}
	f.ownerDC = f.owner.DC

	for _, dc := range sortedKeys(p.byDC) {
		h := headOf(p, sc.key, sc.backendDC, dc)
		f.heads[dc] = h.ID
		if dc == f.ownerDC {
			if h.ID != f.owner.ID {
				fail("stream %q: head of owner's DC %s is %q, want owner %q", sc.key, dc, h.ID, f.owner.ID)
			}
			continue
		}
		// Reference gateway: lowest tier among alive nodes (draining when
		// none is alive), rendezvous winner there.
		want := ""
		for _, st := range []State{StateAlive, StateDraining} {
			lowest := math.MaxInt
			var ids []string
			for _, i := range p.byDC[dc] {
				n := p.nodes[i]
				if n.State != st {
					continue
				}
				if n.Tier < lowest {
					lowest, ids = n.Tier, nil
				}
				if n.Tier == lowest {
					ids = append(ids, n.ID)
				}
			}
			if len(ids) > 0 {
				want = refWinner(sc.key, ids)
				break
			}
		}
		if h.ID != want {
			fail("stream %q: gateway of %s is %q, reference %q", sc.key, dc, h.ID, want)
		}
	}
	return f
}

func (f streamFacts) rank(n Node) rankOf {
	r := rankOf{notHead: 1, tier: n.Tier}
	if n.DC != f.ownerDC {
		r.foreign = 1
	}
	if f.heads[n.DC] == n.ID {
		r.notHead = 0
	}
	return r
}

// checkInvariants verifies every rule of docs/topology.md on one world.
// strict is false when nodes avoid parents: reachability and the exact
// preference order then legitimately differ.
func checkInvariants(t *testing.T, seed int64, p *Plan, streams []streamCase, choices [][]Choice, avoidOf func(string) map[string]bool) {
	t.Helper()
	fail := seedFailure(t, seed)
	strict := avoidOf == nil
	for s, sc := range streams {
		row := choices[s]
		f := factsFor(t, fail, p, sc)
		if !f.ok {
			for i, c := range row {
				if c.OK {
					fail("stream %q: %s chose %+v without any live root", sc.key, p.nodes[i].ID, c)
				}
			}
			continue
		}
		backends := 0
		crossInto := map[string]int{}
		candCache := map[dcTier][]string{}
		for i, c := range row {
			me := p.nodes[i].Node
			var avoid map[string]bool
			if avoidOf != nil {
				avoid = avoidOf(me.ID)
			}
			if c.Owner != f.owner.ID {
				fail("stream %q: %s sees owner %q, want %q", sc.key, me.ID, c.Owner, f.owner.ID)
			}
			head := f.heads[me.DC]
			if strict && c.OK != (head != "") {
				fail("stream %q: %s OK=%v (%s) but head of %s is %q", sc.key, me.ID, c.OK, c.Reason, me.DC, head)
			}
			if !c.OK {
				if c.Reason == "" {
					fail("stream %q: %s has no choice and no reason", sc.key, me.ID)
				}
				continue
			}
			if c.Backend {
				backends++
				if me.ID != f.owner.ID {
					fail("stream %q: %s connects to the back end, owner is %s", sc.key, me.ID, f.owner.ID)
				}
				continue
			}
			par, ok := p.Node(c.Parent.ID)
			if !ok || par != c.Parent {
				fail("stream %q: %s's parent %q is not the view's node", sc.key, me.ID, c.Parent.ID)
				continue
			}
			// Edges into a head, and a gateway's link into the owner's
			// DC, are the documented exceptions to the tier and capacity
			// rules; the rank still decreases on them.
			structural := par.ID == head || (me.ID == head && par.ID == f.owner.ID)
			gatewayLink := me.ID == head && par.DC != me.DC

			// Rule 1: eligibility.
			switch {
			case par.ID == me.ID:
				fail("stream %q: %s is its own parent", sc.key, me.ID)
			case avoid[par.ID]:
				fail("stream %q: %s chose avoided %s", sc.key, me.ID, par.ID)
			case !par.Alive() && !(par.ID == head && par.State == StateDraining):
				fail("stream %q: %s chose %s in state %s", sc.key, me.ID, par.ID, par.State)
			case par.Full() && !structural:
				fail("stream %q: %s chose full %s outside a head edge", sc.key, me.ID, par.ID)
			}
			// Rule 3: the rank strictly decreases; tiers strictly decrease
			// except on edges into a head.
			if !f.rank(par).less(f.rank(me)) {
				fail("stream %q: edge %s%v -> %s%v does not decrease the rank", sc.key, me.ID, f.rank(me), par.ID, f.rank(par))
			}
			if par.Tier >= me.Tier && !structural && !(gatewayLink && avoid[f.owner.ID]) {
				fail("stream %q: %s (tier %d) takes from %s (tier %d) outside a head edge", sc.key, me.ID, me.Tier, par.ID, par.Tier)
			}
			if c.CrossDC != (par.DC != me.DC) {
				fail("stream %q: %s CrossDC=%v for %s -> %s", sc.key, me.ID, c.CrossDC, me.DC, par.DC)
			}
			// Rule 5: only a non-owner DC's gateway crosses, into the
			// owner's DC.
			if par.DC != me.DC {
				crossInto[me.DC]++
				if me.ID != head || me.DC == f.ownerDC || par.DC != f.ownerDC {
					fail("stream %q: cross-DC edge %s(%s) -> %s(%s), head %q, owner's DC %s", sc.key, me.ID, me.DC, par.ID, par.DC, head, f.ownerDC)
				}
			}
			// A gateway takes from the owner's DC: its nearest lower tier
			// with eligible nodes, else the owner itself.
			if strict && me.ID == head && me.DC != f.ownerDC {
				best := math.MinInt
				var ids []string
				for _, j := range p.byDC[f.ownerDC] {
					n := p.nodes[j].Node
					if n.Tier >= me.Tier || !n.Alive() || n.Full() {
						continue
					}
					if n.Tier > best {
						best, ids = n.Tier, nil
					}
					if n.Tier == best {
						ids = append(ids, n.ID)
					}
				}
				want := f.owner.ID
				if len(ids) > 0 {
					want = refChildWinner(sc.key, me.ID, ids)
				}
				if par.ID != want {
					fail("stream %q: gateway %s took %s, preference says %s", sc.key, me.ID, par.ID, want)
				}
			}
			// Rule 4: non-heads take from their own DC's nearest lower
			// tier with eligible nodes, by rendezvous; the head otherwise.
			if me.ID != head {
				if par.DC != me.DC {
					fail("stream %q: non-head %s leaves its DC", sc.key, me.ID)
				}
				// Without avoid sets the candidates depend only on (DC,
				// tier): self is never among the lower tiers.
				key := dcTier{me.DC, me.Tier}
				ids, cached := candCache[key]
				if !cached || avoid != nil {
					best := math.MinInt
					ids = nil
					for _, j := range p.byDC[me.DC] {
						n := p.nodes[j].Node
						if n.ID == me.ID || n.Tier >= me.Tier || !n.Alive() || n.Full() || avoid[n.ID] {
							continue
						}
						if n.Tier > best {
							best, ids = n.Tier, nil
						}
						if n.Tier == best {
							ids = append(ids, n.ID)
						}
					}
					if avoid == nil {
						candCache[key] = ids
					}
				}
				want := head
				if len(ids) > 0 {
					want = refChildWinner(sc.key, me.ID, ids)
				}
				if par.ID != want {
					fail("stream %q: %s (tier %d) took %s (tier %d), preference says %s", sc.key, me.ID, me.Tier, par.ID, par.Tier, want)
				}
			}
		}
		if backends != 1 {
			fail("stream %q: %d nodes connect to the back end", sc.key, backends)
		}
		for dc, n := range crossInto {
			if n > 1 {
				fail("stream %q: %d cross-DC links into %s", sc.key, n, dc)
			}
		}
		if strict {
			// Every node with a choice reaches the owner without a cycle.
			for i, c := range row {
				j, steps := i, 0
				for c.OK && !c.Backend && steps <= len(row) {
					j = p.byID[c.Parent.ID]
					c = row[j]
					steps++
				}
				if !c.OK || !c.Backend {
					fail("stream %q: %s does not reach the back end (stuck at %s after %d steps: %s)", sc.key, p.nodes[i].ID, p.nodes[j].ID, steps, c.Reason)
				}
			}
		}
	}
}

func TestChooseInvariantsRandomViews(t *testing.T) {
	t.Parallel() // pure and CPU-bound: the slowest tests of the package
	for _, pc := range propertyCases(t) {
		v, streams := pc.world()
		p := NewPlan(v)
		checkInvariants(t, pc.seed, p, streams, allChoices(p, streams, nil), nil)
	}
}

func TestChooseInvariantsWithAvoid(t *testing.T) {
	t.Parallel() // pure and CPU-bound: the slowest tests of the package
	for _, pc := range propertyCases(t) {
		v, streams := pc.world()
		// The per-node avoid sets defeat the checker's caches; a third
		// of the streams keeps the cost in line with the other tests.
		streams = streams[:34]
		p := NewPlan(v)
		// Each node avoids a deterministic pseudo-random tenth of the
		// mesh, including, at times, its head or the owner.
		avoidOf := func(self string) map[string]bool {
			rng := rand.New(rand.NewSource(pc.seed ^ int64(fnv64a(self))))
			m := map[string]bool{}
			for _, n := range v.Nodes {
				if rng.Intn(10) == 0 {
					m[n.ID] = true
				}
			}
			return m
		}
		memo := map[string]map[string]bool{}
		cached := func(self string) map[string]bool {
			if m, ok := memo[self]; ok {
				return m
			}
			memo[self] = avoidOf(self)
			return memo[self]
		}
		checkInvariants(t, pc.seed, p, streams, allChoices(p, streams, cached), cached)
	}
}

// disruption measures what one departure re-parents.
type disruption struct {
	pairs, changed, changedDirect, notThroughLeaver int
	// downstream counts (node, stream) pairs whose old path went through
	// the leaver: the most a departure could disturb.
	downstream     int
	streamsTouched int
}

// measureLeave compares every remaining node's choices before and after
// node leaver leaves, and checks rule 6: a changed choice had leaver as its
// direct parent, or leaver owned the stream; and in every case leaver was on
// the old path.
func measureLeave(t *testing.T, seed int64, before *Plan, after *Plan, streams []streamCase, old, cur [][]Choice, leaver string) disruption {
	t.Helper()
	fail := seedFailure(t, seed)
	var d disruption
	for s := range streams {
		touched := false
		for i, n := range before.nodes {
			if n.ID == leaver {
				continue
			}
			j, ok := after.byID[n.ID]
			if !ok {
				fail("node %s vanished from the view", n.ID)
				continue
			}
			d.pairs++
			if onPath(before, old[s], i, leaver) {
				d.downstream++
			}
			a, b := old[s][i], cur[s][j]
			if sameChoice(a, b) {
				continue
			}
			touched = true
			d.changed++
			direct := a.OK && !a.Backend && a.Parent.ID == leaver
			if direct {
				d.changedDirect++
			}
			if !direct && a.Owner != leaver {
				fail("stream %q: %s re-parented (%s -> %s) though %s was neither its parent nor the owner",
					streams[s].key, n.ID, a.Reason, b.Reason, leaver)
			}
			if !onPath(before, old[s], i, leaver) {
				d.notThroughLeaver++
				fail("stream %q: %s re-parented though %s was not on its path", streams[s].key, n.ID, leaver)
			}
		}
		if touched {
			d.streamsTouched++
		}
	}
	return d
}

func TestLeaveReparentsOnlyThroughLeaver(t *testing.T) {
	t.Parallel() // pure and CPU-bound: the slowest tests of the package
	for _, pc := range propertyCases(t) {
		// Each departure recomputes the whole world twice; the largest
		// world gets fewer departures to keep the race-enabled run short.
		leaves := 4
		if pc.nodes > 400 {
			leaves = 2
		}
		if testing.Short() {
			leaves = 1
		}
		v, streams := pc.world()
		// Every departure recomputes the world twice; 40 streams keep the
		// race-enabled run short (TestFigures measures all 100).
		streams = streams[:40]
		before := NewPlan(v)
		old := allChoices(before, streams, nil)
		rng := rand.New(rand.NewSource(pc.seed * 7919))
		ids := make([]string, 0, len(v.Nodes))
		for _, n := range before.nodes {
			ids = append(ids, n.ID)
		}
		sort.Strings(ids)
		for k := 0; k < leaves && len(ids) > 0; k++ {
			leaver := ids[rng.Intn(len(ids))]
			// Leaving is seen either as a removal or as a state change.
			for _, after := range []View{without(v, leaver), withState(v, leaver, StateLeft)} {
				ap := NewPlan(after)
				measureLeave(t, pc.seed, before, ap, streams, old, allChoices(ap, streams, nil), leaver)
			}
		}
	}
}
