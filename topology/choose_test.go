package topology

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

const testStream = "changelog /webservice/escenic/changelog/sse?x=1"

func node(id, dc string, tier int) Node {
	return Node{ID: id, DC: dc, Tier: tier, State: StateAlive}
}

func withNode(n Node, f func(*Node)) Node { f(&n); return n }

func full(n Node) Node {
	return withNode(n, func(n *Node) { n.Capacity, n.Clients = 10, 10 })
}

func state(n Node, s State) Node { return withNode(n, func(n *Node) { n.State = s }) }

// winnerOf names the stream-wide rendezvous winner (owner, gateway) among
// ids for testStream, so that expectations do not hard-code hash outcomes.
func winnerOf(ids ...string) string { return refWinner(testStream, ids) }

// pickOf names the parent child picks among ids for testStream.
func pickOf(child string, ids ...string) string { return refChildWinner(testStream, child, ids) }

func TestChoose(t *testing.T) {
	oneDC := []Node{
		node("r1", "dc1", 0), node("r2", "dc1", 0),
		node("m1", "dc1", 1), node("m2", "dc1", 1),
		node("l1", "dc1", 2),
	}
	owner1 := winnerOf("r1", "r2")
	other1 := map[string]string{"r1": "r2", "r2": "r1"}[owner1]

	twoDC := append(append([]Node(nil), oneDC...),
		node("s1", "dc2", 0), node("s2", "dc2", 0), node("s3", "dc2", 0),
		node("x1", "dc2", 1),
	)
	gw2 := winnerOf("s1", "s2", "s3")
	gwRootless := winnerOf("y1", "y2")

	tests := []struct {
		name      string
		nodes     []Node
		self      string
		backendDC string
		avoid     map[string]bool
		// want is the expected parent ID; "backend" for the owner,
		// "" for no choice.
		want      string
		wantOwner string
		crossDC   bool
		reason    string // substring of Reason
	}{
		{name: "single root owns", nodes: []Node{node("r", "dc1", 0)}, self: "r", backendDC: "dc1", want: "backend", wantOwner: "r"},
		{name: "owner is rendezvous winner", nodes: oneDC, self: owner1, backendDC: "dc1", want: "backend", wantOwner: owner1},
		{name: "other root takes from owner", nodes: oneDC, self: other1, backendDC: "dc1", want: owner1, wantOwner: owner1},
		{name: "leaf prefers relays over roots", nodes: oneDC, self: "l1", backendDC: "dc1", want: pickOf("l1", "m1", "m2"), wantOwner: owner1},
		{name: "relay takes from roots", nodes: oneDC, self: "m1", backendDC: "dc1", want: pickOf("m1", "r1", "r2"), wantOwner: owner1},
		{
			name:  "full relays are skipped",
			nodes: []Node{node("r1", "dc1", 0), full(node("m1", "dc1", 1)), full(node("m2", "dc1", 1)), node("l1", "dc1", 2)},
			self:  "l1", backendDC: "dc1", want: "r1", wantOwner: "r1",
		},
		{
			name:  "unlimited capacity is never full",
			nodes: []Node{node("r1", "dc1", 0), withNode(node("m1", "dc1", 1), func(n *Node) { n.Clients = 1e6 }), node("l1", "dc1", 2)},
			self:  "l1", backendDC: "dc1", want: "m1", wantOwner: "r1",
		},
		{
			name:  "suspect draining left unreachable relays are skipped",
			nodes: []Node{node("r1", "dc1", 0), state(node("m1", "dc1", 1), StateSuspect), state(node("m2", "dc1", 1), StateDraining), state(node("m3", "dc1", 1), StateLeft), state(node("m4", "dc1", 1), StateUnreachable), node("l1", "dc1", 2)},
			self:  "l1", backendDC: "dc1", want: "r1", wantOwner: "r1",
		},
		{
			name:  "full owner still feeds the other roots",
			nodes: []Node{full(node("r1", "dc1", 0)), state(node("r2", "dc1", 0), StateDraining)},
			self:  "r2", backendDC: "dc1", want: "r1", wantOwner: "r1",
		},
		{
			name:  "draining root is replaced as owner",
			nodes: []Node{state(node("r1", "dc1", 0), StateDraining), node("r2", "dc1", 0)},
			self:  "r1", backendDC: "dc1", want: "r2", wantOwner: "r2",
		},
		{
			name:  "avoided relay is skipped",
			nodes: []Node{node("r1", "dc1", 0), node("m1", "dc1", 1), node("m2", "dc1", 1), node("l1", "dc1", 2)},
			self:  "l1", backendDC: "dc1", avoid: map[string]bool{"m1": true}, want: "m2", wantOwner: "r1",
		},
		{
			name:  "avoiding every lower node of the head leaves nothing",
			nodes: []Node{node("r1", "dc1", 0), node("r2", "dc1", 0)},
			self:  "r2", backendDC: "dc1", avoid: map[string]bool{"r1": true}, wantOwner: "r1", reason: "avoided",
		},
		{
			name:  "no live root anywhere",
			nodes: []Node{state(node("r1", "dc1", 0), StateSuspect), node("m1", "dc1", 1)},
			self:  "m1", backendDC: "dc1", reason: "no live root",
		},
		{name: "self not in view", nodes: oneDC, self: "ghost", backendDC: "dc1", reason: "not in the view"},
		{
			name:  "back end DC without roots uses the first DC with roots by name",
			nodes: []Node{node("c", "dc-c", 0), node("a", "dc-a", 0), node("m", "dc-b", 1)},
			self:  "m", backendDC: "dc-b", want: "a", wantOwner: "a", crossDC: true,
		},
		{
			name:  "back end DC with roots keeps the owner there",
			nodes: []Node{node("a", "dc-a", 0), node("c", "dc-c", 0), node("m", "dc-a", 1)},
			self:  "m", backendDC: "dc-c", want: "a", wantOwner: "c",
		},
		{
			name:  "back end DC unknown to the mesh uses the first DC with roots by name",
			nodes: []Node{node("a", "dc-a", 0), node("c", "dc-c", 0), node("m", "dc-b", 1)},
			self:  "m", backendDC: "dc-z", want: "a", wantOwner: "a", crossDC: true,
		},
		{
			name:  "gateway root links to the owner",
			nodes: twoDC, self: gw2, backendDC: "dc1", want: owner1, wantOwner: owner1, crossDC: true,
		},
		{
			name:  "other roots take from their DC's gateway",
			nodes: twoDC, self: map[string]string{"s1": "s2", "s2": "s3", "s3": "s1"}[gw2], backendDC: "dc1", want: gw2, wantOwner: owner1,
		},
		{
			name:  "relay in the gateway's DC stays inside",
			nodes: twoDC, self: "x1", backendDC: "dc1", want: pickOf("x1", "s1", "s2", "s3"), wantOwner: owner1,
		},
		{
			name: "rootless DC: gateway is on its lowest tier and takes from the owner's nearest lower tier",
			nodes: []Node{node("r1", "dc1", 0), node("m1", "dc1", 1), node("m2", "dc1", 1),
				node("y1", "dc2", 2), node("y2", "dc2", 2), node("z1", "dc2", 3)},
			self: gwRootless, backendDC: "dc1", want: pickOf(gwRootless, "m1", "m2"), wantOwner: "r1", crossDC: true,
		},
		{
			name:  "rootless DC: a same-tier peer takes from the gateway",
			nodes: []Node{node("r1", "dc1", 0), node("y1", "dc2", 2), node("y2", "dc2", 2)},
			self:  map[string]string{"y1": "y2", "y2": "y1"}[gwRootless], backendDC: "dc1", want: gwRootless, wantOwner: "r1",
		},
		{
			name:  "gateway avoiding the owner takes another root of the owner's DC",
			nodes: []Node{node("r1", "dc1", 0), node("r2", "dc1", 0), node("m1", "dc1", 1), node("s1", "dc2", 0)},
			self:  "s1", backendDC: "dc1", avoid: map[string]bool{owner1: true}, want: other1, wantOwner: owner1, crossDC: true,
		},
		{
			name:  "gateway with nothing usable in the owner's DC",
			nodes: []Node{node("r1", "dc1", 0), node("s1", "dc2", 0)},
			self:  "s1", backendDC: "dc1", avoid: map[string]bool{"r1": true}, wantOwner: "r1", reason: "no usable node",
		},
		{
			name:  "DC with only draining nodes keeps one link through a draining gateway",
			nodes: []Node{node("r1", "dc1", 0), state(node("d1", "dc2", 1), StateDraining), state(node("d2", "dc2", 2), StateDraining)},
			self:  "d2", backendDC: "dc1", want: "d1", wantOwner: "r1",
		},
		{
			name:  "suspect node in a DC with nothing live has no way in",
			nodes: []Node{node("r1", "dc1", 0), state(node("q1", "dc2", 1), StateSuspect)},
			self:  "q1", backendDC: "dc1", wantOwner: "r1", reason: "no live node",
		},
		{
			name:  "draining root below an alive relay takes from the relay gateway",
			nodes: []Node{node("r1", "dc1", 0), state(node("q0", "dc2", 0), StateDraining), node("q1", "dc2", 1)},
			self:  "q0", backendDC: "dc1", want: "q1", wantOwner: "r1",
		},
		{
			name:  "unknown back-end DC spreads owners over all roots",
			nodes: []Node{node("a1", "dc-a", 0), node("b1", "dc-b", 0)},
			self:  winnerOf("a1", "b1"), backendDC: "", want: "backend", wantOwner: winnerOf("a1", "b1"),
		},
		{
			name:  "duplicate IDs: the first entry wins",
			nodes: []Node{node("r1", "dc1", 0), node("l1", "dc1", 2), state(node("l1", "dc1", 2), StateLeft), node("m1", "dc1", 1), state(node("m1", "dc1", 1), StateLeft)},
			self:  "l1", backendDC: "dc1", want: "m1", wantOwner: "r1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := View{Nodes: tc.nodes}
			got := Choose(v, tc.self, testStream, tc.backendDC, tc.avoid)
			if planned := NewPlan(v).Choose(tc.self, testStream, tc.backendDC, tc.avoid); planned != got {
				t.Fatalf("Plan.Choose = %+v, Choose = %+v", planned, got)
			}
			gotParent := ""
			switch {
			case got.OK && got.Backend:
				gotParent = "backend"
			case got.OK:
				gotParent = got.Parent.ID
			}
			if gotParent != tc.want {
				t.Errorf("parent = %q (%s), want %q", gotParent, got.Reason, tc.want)
			}
			if got.Owner != tc.wantOwner {
				t.Errorf("owner = %q, want %q", got.Owner, tc.wantOwner)
			}
			if got.CrossDC != tc.crossDC {
				t.Errorf("CrossDC = %v, want %v", got.CrossDC, tc.crossDC)
			}
			if tc.want == "" && got.OK {
				t.Errorf("OK = true, want false")
			}
			if got.Reason == "" || !strings.Contains(got.Reason, tc.reason) {
				t.Errorf("reason %q does not mention %q", got.Reason, tc.reason)
			}
		})
	}
}

func TestChooseIgnoresNodeOrder(t *testing.T) {
	v, streams := propertyCase{seed: 99, nodes: 120}.world()
	rev := View{Nodes: make([]Node, len(v.Nodes))}
	for i, n := range v.Nodes {
		rev.Nodes[len(v.Nodes)-1-i] = n
	}
	a, b := NewPlan(v), NewPlan(rev)
	for _, sc := range streams[:20] {
		for _, n := range v.Nodes {
			ca, cb := a.Choose(n.ID, sc.key, sc.backendDC, nil), b.Choose(n.ID, sc.key, sc.backendDC, nil)
			if ca != cb {
				t.Fatalf("stream %q node %s: %+v with one order, %+v with the reverse", sc.key, n.ID, ca, cb)
			}
		}
	}
}

// TestLoadSpread checks rule 7. Each of M picks (the streams of one child,
// the children of one stream, or owners) lands on one of N parents by
// rendezvous hashing; if the weights behave as independent uniform draws, a
// parent's count is Binomial(M, 1/N) with mean M/N and standard deviation
// sqrt(M/N*(1-1/N)). Every count must lie within 5 standard deviations (the
// chance that any of N=10 honest counts misses that is below 6e-6), which
// for M=10,000 and N=10 means max/mean <= 1.15.
func TestLoadSpread(t *testing.T) {
	t.Parallel() // pure and CPU-bound: the slowest tests of the package
	const streams = 10000
	tests := []struct {
		name    string
		parents int
		// chooser returns the ID the load lands on for stream key s.
		setup func(parents int) (View, func(p *Plan, s string) string)
	}{
		{
			name: "leaf over relays", parents: 10,
			setup: func(parents int) (View, func(*Plan, string) string) {
				v := View{Nodes: []Node{node("root", "dc1", 0), node("leaf", "dc1", 2)}}
				for i := 0; i < parents; i++ {
					v.Nodes = append(v.Nodes, node(fmt.Sprintf("relay-%02d", i), "dc1", 1))
				}
				return v, func(p *Plan, s string) string { return p.Choose("leaf", s, "dc1", nil).Parent.ID }
			},
		},
		{
			// One hot stream: its children spread over the parents
			// instead of all landing on one relay.
			name: "children of one stream over relays", parents: 10,
			setup: func(parents int) (View, func(*Plan, string) string) {
				v := View{Nodes: []Node{node("root", "dc1", 0)}}
				for i := 0; i < parents; i++ {
					v.Nodes = append(v.Nodes, node(fmt.Sprintf("relay-%02d", i), "dc1", 1))
				}
				for i := 0; i < streams; i++ {
					v.Nodes = append(v.Nodes, node(fmt.Sprintf("leaf-%05d", i), "dc1", 2))
				}
				next := 0
				return v, func(p *Plan, _ string) string {
					leaf := fmt.Sprintf("leaf-%05d", next)
					next++
					return p.Choose(leaf, testStream, "dc1", nil).Parent.ID
				}
			},
		},
		{
			name: "owners over roots", parents: 10,
			setup: func(parents int) (View, func(*Plan, string) string) {
				var v View
				for i := 0; i < parents; i++ {
					v.Nodes = append(v.Nodes, node(fmt.Sprintf("root-%02d", i), "dc1", 0))
				}
				return v, func(p *Plan, s string) string { o, _ := p.Owner(s, "dc1"); return o.ID }
			},
		},
		{
			name: "relay over 3 roots", parents: 3,
			setup: func(parents int) (View, func(*Plan, string) string) {
				v := View{Nodes: []Node{node("relay", "dc1", 1)}}
				for i := 0; i < parents; i++ {
					v.Nodes = append(v.Nodes, node(fmt.Sprintf("root-%02d", i), "dc1", 0))
				}
				return v, func(p *Plan, s string) string { return p.Choose("relay", s, "dc1", nil).Parent.ID }
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, pick := tc.setup(tc.parents)
			p := NewPlan(v)
			counts := map[string]int{}
			for i := 0; i < streams; i++ {
				counts[pick(p, fmt.Sprintf("feed /live-center/feed/%d?lang=en", i))]++
			}
			if len(counts) != tc.parents {
				t.Fatalf("load landed on %d parents, want %d: %v", len(counts), tc.parents, counts)
			}
			mean := float64(streams) / float64(tc.parents)
			sd := math.Sqrt(mean * (1 - 1/float64(tc.parents)))
			maxC := 0
			for id, c := range counts {
				if math.Abs(float64(c)-mean) > 5*sd {
					t.Errorf("%s carries %d streams, mean %.0f, 5 sd = %.0f", id, c, mean, 5*sd)
				}
				maxC = max(maxC, c)
			}
			t.Logf("%d picks over %d parents: max/mean %.3f (bound %.3f)", streams, tc.parents, float64(maxC)/mean, 1+5*sd/mean)
		})
	}
}
