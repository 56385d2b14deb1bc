package node

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
	"github.com/ssemesh/ssemesh/topology"
)

// Unit tests of the router alone: no node, no relay, no mesh; routes are
// made by hand and the relay is fakeRelay (routing_test.go).

func tnode(id string, tier int, st topology.State) topology.Node {
	return topology.Node{ID: id, DC: "dc1", Tier: tier, ClientAddr: "10.0.0.1:8080", Capacity: 100, State: st}
}

// testRouter is the router of node "leaf" with every path mounted in dc1
// except those under /gone/.
func testRouter(t *testing.T) (*router, *fakeRelay) {
	fr := newFakeRelay()
	mountDC := func(path string) (string, bool) {
		if len(path) >= 6 && path[:6] == "/gone/" {
			return "", false
		}
		return "", true
	}
	return newRouter("leaf", fr, 30*time.Second, mountDC, ssetest.Logger(t)), fr
}

// openRoute makes the route of stream key connected to parent.
func openRoute(r *router, fr *fakeRelay, key, parent string, chosen bool) *route {
	fr.connect(key, parent)
	if !chosen {
		fr.mu.Lock()
		delete(fr.live, key)
		fr.mu.Unlock()
	}
	return r.get(key, func() *route {
		return &route{r: r, key: key, path: key, parent: parent, chosen: chosen}
	})
}

// TestRouterReroutesWhatTheViewMoves applies views to a router holding
// streams on known parents and checks which streams it re-parents: those
// whose choice differs from where they are, never one not chosen yet or
// whose back end is no longer mounted.
func TestRouterReroutesWhatTheViewMoves(t *testing.T) {
	r, fr := testRouter(t)
	view := topology.View{Nodes: []topology.Node{
		tnode("leaf", 2, topology.StateAlive), tnode("r1a", 1, topology.StateAlive),
		tnode("r1b", 1, topology.StateAlive), tnode("r0", 0, topology.StateAlive),
	}}
	r.plan.Store(topology.NewPlan(view))
	var onA, onB []string
	for i := range 20 {
		key := fmt.Sprintf("/s/%d", i)
		c, err := r.choose(key, "")
		if err != nil {
			t.Fatal(err)
		}
		openRoute(r, fr, key, c.Parent.ID, true)
		if c.Parent.ID == "r1a" {
			onA = append(onA, key)
		} else {
			onB = append(onB, key)
		}
	}
	if len(onA) == 0 || len(onB) == 0 {
		t.Fatalf("streams not spread over both relays: %v / %v", onA, onB)
	}
	openRoute(r, fr, "/s/misplaced", "r0", true)
	openRoute(r, fr, "/s/unchosen", "r0", false)
	openRoute(r, fr, "/gone/x", "r0", true)

	r.apply(view)
	if got, want := fr.switches(), []string{"/s/misplaced"}; !slices.Equal(got, want) {
		t.Fatalf("same view: re-parented %v, want %v", got, want)
	}
	c, _ := r.choose("/s/misplaced", "")
	fr.connect("/s/misplaced", c.Parent.ID) // the switch took place
	if c.Parent.ID == "r1a" {
		onA = append(onA, "/s/misplaced")
	}

	view.Nodes[1].State = topology.StateUnreachable // r1a
	r.apply(view)
	got := fr.switches()
	want := slices.Clone(onA)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("r1a unreachable: re-parented %v, want exactly r1a's streams %v", got, want)
	}
}

// TestRouterAvoidEntriesFollowMembership: entries survive a view whose
// membership is the same (load changes), are dropped when a member's state
// changes, and a stream's entries go when the relay no longer holds it.
func TestRouterAvoidEntriesFollowMembership(t *testing.T) {
	r, fr := testRouter(t)
	view := topology.View{Nodes: []topology.Node{
		tnode("leaf", 2, topology.StateAlive), tnode("r1a", 1, topology.StateAlive), tnode("r0", 0, topology.StateAlive),
	}}
	r.apply(view)
	rt := openRoute(r, fr, "/s/a", "r1a", true)
	refused := &relay.Attempt{Target: relay.Target{Parent: "r1a"}, Code: codeMaxClients}
	rt.noteFailure(refused)
	if c, _ := r.choose("/s/a", ""); c.Parent.ID != "r0" {
		t.Fatalf("after r1a refused /s/a as full: chose %q, want r0", c.Parent.ID)
	}
	if c, _ := r.choose("/s/b", ""); c.Parent.ID != "r1a" {
		t.Fatalf("a stream-scoped refusal moved /s/b to %q", c.Parent.ID)
	}

	view.Nodes[1].Clients = 50 // load only
	r.apply(view)
	if c, _ := r.choose("/s/a", ""); c.Parent.ID != "r0" {
		t.Fatalf("a load change cleared the avoid entry: chose %q", c.Parent.ID)
	}
	view.Nodes[1].State = topology.StateDraining
	r.apply(view)
	view.Nodes[1].State = topology.StateAlive
	r.apply(view)
	if c, _ := r.choose("/s/a", ""); c.Parent.ID != "r1a" {
		t.Fatalf("membership changed: /s/a still avoids r1a (chose %q)", c.Parent.ID)
	}

	rt.noteFailure(refused)
	fr.mu.Lock()
	delete(fr.held, "/s/a")
	fr.mu.Unlock()
	r.prune()
	if r.lookup("/s/a") != nil {
		t.Fatal("prune kept the route of a stream the relay no longer holds")
	}
	if avoided := r.avoid.set("/s/a", time.Now()); len(avoided) != 0 {
		t.Fatalf("prune kept the stream's avoid entries: %v", avoided)
	}
}

// TestRouterExpiryOnAFakeClock: a parent avoided for every stream comes
// back when its entry runs out, and not before.
func TestRouterExpiryOnAFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, fr := testRouter(t)
		r.apply(topology.View{Nodes: []topology.Node{
			tnode("leaf", 2, topology.StateAlive), tnode("r1a", 1, topology.StateAlive), tnode("r0", 0, topology.StateAlive),
		}})
		rt := openRoute(r, fr, "/s/a", "r1a", true)
		rt.noteFailure(&relay.Attempt{Target: relay.Target{Parent: "r1a"}, Code: relay.CodeUpstreamUnreachable})
		fr.connect("/s/a", "r0")
		time.Sleep(30*time.Second - time.Millisecond)
		r.expire(time.Now())
		if got := fr.switches(); len(got) != 0 {
			t.Fatalf("re-parented %v before the entry ran out", got)
		}
		time.Sleep(time.Millisecond)
		r.expire(time.Now())
		if got := fr.switches(); !slices.Equal(got, []string{"/s/a"}) {
			t.Fatalf("entry ran out: re-parented %v, want [/s/a] back to r1a", got)
		}
	})
}

// TestRouterReplacesARouteOfAClosedStream: a route is reused while the
// relay holds its stream and made anew once it does not.
func TestRouterReplacesARouteOfAClosedStream(t *testing.T) {
	r, fr := testRouter(t)
	first := openRoute(r, fr, "/s/a", "r1a", true)
	if again := r.get("/s/a", func() *route { return &route{r: r, key: "/s/a"} }); again != first {
		t.Fatal("a held stream's route was replaced")
	}
	fr.mu.Lock()
	delete(fr.held, "/s/a")
	fr.mu.Unlock()
	if again := r.get("/s/a", func() *route { return &route{r: r, key: "/s/a"} }); again == first {
		t.Fatal("the route of a stream the relay closed was reused")
	}
}

// TestRouterTriesAvoidedParentsRatherThanNone: with every candidate
// avoided (as across a partition), the stream is offered one of them
// again instead of no parent until an entry expires.
func TestRouterTriesAvoidedParentsRatherThanNone(t *testing.T) {
	r, fr := testRouter(t)
	r.apply(topology.View{Nodes: []topology.Node{
		tnode("leaf", 2, topology.StateAlive), tnode("r1a", 1, topology.StateAlive), tnode("r0", 0, topology.StateAlive),
	}})
	rt := openRoute(r, fr, "/s/a", "r1a", true)
	rt.noteFailure(&relay.Attempt{Target: relay.Target{Parent: "r1a"}, Code: relay.CodeUpstreamIdle})
	if c, err := r.choose("/s/a", ""); err != nil || c.Parent.ID != "r0" {
		t.Fatalf("r1a avoided: chose %q, %v; want r0", c.Parent.ID, err)
	}
	rt.noteFailure(&relay.Attempt{Target: relay.Target{Parent: "r0"}, Code: relay.CodeUpstreamUnreachable})
	c, err := r.choose("/s/a", "")
	if err != nil || (c.Parent.ID != "r1a" && c.Parent.ID != "r0") {
		t.Fatalf("every parent avoided: chose %q, %v; want one of them again", c.Parent.ID, err)
	}
	if !strings.Contains(c.Reason, "every candidate avoided") {
		t.Fatalf("reason %q does not say the candidates were all avoided", c.Reason)
	}
}
