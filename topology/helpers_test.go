package topology

import (
	"fmt"
	"math/rand"
	"testing"
)

// genOpts shapes a random view.
type genOpts struct {
	nodes int
	dcs   []string
	// allAlive disables random states and capacities, for figures that
	// measure the steady state.
	allAlive bool
	// rootlessDC, when set, gets no tier-0 nodes.
	rootlessDC string
}

// randomView builds a view with tiers 0..3 spread like a real tree (few
// roots, many leaves), random states and some full nodes.
func randomView(rng *rand.Rand, o genOpts) View {
	v := View{Nodes: make([]Node, 0, o.nodes)}
	for i := 0; i < o.nodes; i++ {
		dc := o.dcs[rng.Intn(len(o.dcs))]
		tier := pickTier(rng)
		if dc == o.rootlessDC && tier == 0 {
			tier = 1
		}
		n := Node{
			ID:         fmt.Sprintf("%s-t%d-%04d", dc, tier, i),
			DC:         dc,
			Tier:       tier,
			ClientAddr: fmt.Sprintf("127.0.0.1:%d", 20000+i),
			AdminAddr:  fmt.Sprintf("127.0.0.1:%d", 40000+i),
			State:      StateAlive,
		}
		if !o.allAlive {
			n.State = pickState(rng)
			if rng.Intn(2) == 0 {
				n.Capacity = 100
				n.Clients = rng.Intn(130)
			}
		}
		v.Nodes = append(v.Nodes, n)
	}
	rng.Shuffle(len(v.Nodes), func(i, j int) { v.Nodes[i], v.Nodes[j] = v.Nodes[j], v.Nodes[i] })
	return v
}

func pickTier(rng *rand.Rand) int {
	switch x := rng.Intn(100); {
	case x < 6:
		return 0
	case x < 26:
		return 1
	case x < 60:
		return 2
	default:
		return 3
	}
}

func pickState(rng *rand.Rand) State {
	switch x := rng.Intn(100); {
	case x < 80:
		return StateAlive
	case x < 85:
		return StateSuspect
	case x < 90:
		return StateDraining
	case x < 95:
		return StateLeft
	default:
		return StateUnreachable
	}
}

type streamCase struct {
	key       string
	backendDC string
}

func randomStreams(rng *rand.Rand, n int, dcs []string) []streamCase {
	out := make([]streamCase, n)
	for i := range out {
		bdc := ""
		// Mostly a known DC, sometimes unknown or one without nodes.
		switch x := rng.Intn(10); {
		case x < 7:
			bdc = dcs[rng.Intn(len(dcs))]
		case x < 9:
			bdc = ""
		default:
			bdc = "dc-without-nodes"
		}
		out[i] = streamCase{
			key:       fmt.Sprintf("changelog /webservice/escenic/changelog/sse?publication=%d&seq=%d", i, rng.Intn(1e6)),
			backendDC: bdc,
		}
	}
	return out
}

// allChoices computes every node's choice for every stream, indexed
// [stream][node index in p.nodes].
func allChoices(p *Plan, streams []streamCase, avoid func(self string) map[string]bool) [][]Choice {
	out := make([][]Choice, len(streams))
	for s, sc := range streams {
		row := make([]Choice, len(p.nodes))
		for i, n := range p.nodes {
			var av map[string]bool
			if avoid != nil {
				av = avoid(n.ID)
			}
			row[i] = p.Choose(n.ID, sc.key, sc.backendDC, av)
		}
		out[s] = row
	}
	return out
}

// without returns v minus the node id.
func without(v View, id string) View {
	out := View{Nodes: make([]Node, 0, len(v.Nodes))}
	for _, n := range v.Nodes {
		if n.ID != id {
			out.Nodes = append(out.Nodes, n)
		}
	}
	return out
}

// withState returns v with node id set to state st.
func withState(v View, id string, st State) View {
	out := View{Nodes: append([]Node(nil), v.Nodes...)}
	for i := range out.Nodes {
		if out.Nodes[i].ID == id {
			out.Nodes[i].State = st
		}
	}
	return out
}

// sameChoice compares the parts of a choice a node acts upon.
func sameChoice(a, b Choice) bool {
	return a.OK == b.OK && a.Backend == b.Backend && a.Parent.ID == b.Parent.ID
}

// onPath reports whether id lies on the upstream path of node i (excluding
// i itself) in one stream's choices.
func onPath(p *Plan, row []Choice, i int, id string) bool {
	for steps := 0; steps <= len(p.nodes); steps++ {
		c := row[i]
		if !c.OK || c.Backend {
			return false
		}
		if c.Parent.ID == id {
			return true
		}
		i = p.byID[c.Parent.ID]
	}
	return false
}

// refWinner is an independent rendezvous reference for stream-wide roles
// (owner, gateway): the highest weight, ties to the lower ID, over an
// explicit candidate list.
func refWinner(stream string, ids []string) string {
	return refPick(keyHash(stream), ids)
}

// refChildWinner is the reference for the parent child picks among ids.
func refChildWinner(stream, child string, ids []string) string {
	return refPick(childHash(keyHash(stream), keyHash(child)), ids)
}

func refPick(key uint64, ids []string) string {
	best, bestW := "", uint64(0)
	for i, id := range ids {
		w := weight(key, keyHash(id))
		if i == 0 || w > bestW || (w == bestW && id < best) {
			best, bestW = id, w
		}
	}
	return best
}

// seedFailure prefixes failures with the seed so a failing case can be
// replayed.
func seedFailure(t *testing.T, seed int64) func(format string, args ...any) {
	t.Helper()
	return func(format string, args ...any) {
		t.Helper()
		t.Errorf("seed %d: "+format, append([]any{seed}, args...)...)
	}
}

// headOf returns the node through which stream enters data centre dc (the
// owner in the owner's data centre, the gateway elsewhere), or the zero
// Node when there is no owner or dc has no live (or draining) node.
func headOf(p *Plan, stream, backendDC, dc string) Node {
	hs := keyHash(stream)
	o := p.owner(hs, backendDC)
	if o < 0 {
		return Node{}
	}
	if h := p.head(hs, o, dc); h >= 0 {
		return p.nodes[h].Node
	}
	return Node{}
}
