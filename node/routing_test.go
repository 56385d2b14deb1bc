package node

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/mesh"
	"github.com/ssemesh/ssemesh/relay"
)

// Unit tests of routing: parent choice, avoidance and re-parenting, on a
// node whose relay and mesh are fakes (seams.go). Nothing here listens,
// gossips or sleeps in real time.

// fakeRelay is a relay that holds streams without connecting them: a test
// says where each one is connected, and it records the switches asked for.
type fakeRelay struct {
	mu         sync.Mutex
	held       map[string]bool
	live       map[string]string // stream -> parent ("" = back end), when connected
	retargeted []string
}

func newFakeRelay() *fakeRelay {
	return &fakeRelay{held: map[string]bool{}, live: map[string]string{}}
}

func (f *fakeRelay) Has(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[key]
}

func (f *fakeRelay) Keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.held))
	for k := range f.held {
		out = append(out, k)
	}
	return out
}

func (f *fakeRelay) LiveParent(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.live[key]
	return p, ok
}

func (f *fakeRelay) Retarget(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retargeted = append(f.retargeted, key)
}

func (f *fakeRelay) Clients() int { return 0 }

func (f *fakeRelay) Streams() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.held)
}

// connect records that stream key is connected to parent.
func (f *fakeRelay) connect(key, parent string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[key] = true
	f.live[key] = parent
}

// switches returns and forgets the streams retargeted so far, sorted.
func (f *fakeRelay) switches() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.retargeted
	f.retargeted = nil
	sort.Strings(out)
	return out
}

// fakeView publishes the views a test gives it.
type fakeView struct {
	mu      sync.Mutex
	view    *mesh.View
	changed chan struct{}
	loads   int
}

func newFakeView() *fakeView { return &fakeView{changed: make(chan struct{}, 1)} }

func (f *fakeView) View() *mesh.View {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view
}

func (f *fakeView) Changed() <-chan struct{} { return f.changed }
func (f *fakeView) SetServing()              {}

func (f *fakeView) SetCapacity(int) {}

func (f *fakeView) SetLoad(clients, streams int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
}

// publish installs members as the next view and signals it.
func (f *fakeView) publish(members ...mesh.Member) {
	f.mu.Lock()
	v := uint64(1)
	if f.view != nil {
		v = f.view.Version + 1
	}
	f.view = &mesh.View{Version: v, Members: members, Serving: true, BackendsSynced: true}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func member(id string, tier int) mesh.Member {
	return mesh.Member{ID: id, DC: "dc1", Tier: tier, ClientAddr: "10.0.0.1:8080", Capacity: 100, State: mesh.StateAlive}
}

func with(m mesh.Member, f func(*mesh.Member)) mesh.Member {
	f(&m)
	return m
}

// routingNode is a node named self, with one prefix back end mounted at
// /feed/, whose relay and mesh are fakes.
func routingNode(t *testing.T, self string) (*Node, *fakeRelay, *fakeView) {
	t.Helper()
	cfg := testConfig(BackendSpec{Name: "feed", URI: "http://127.0.0.1:1/feed/", Prefix: true})
	cfg.NodeID = self
	cfg.Mesh.AvoidFor = Duration(30 * time.Second)
	n, err := New(cfg, ssetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.relay.Close)
	fr, fm := newFakeRelay(), newFakeView()
	n.streams, n.view, n.routing.streams = fr, fm, fr
	return n, fr, fm
}

// open is a subscriber opening stream key: its route, and the target the
// relay would ask for, recorded as connected.
func open(t *testing.T, n *Node, fr *fakeRelay, key string) (*route, string) {
	t.Helper()
	rt := n.route(key, key, "", "feed", nil)
	tg, err := rt.target(nil)
	if err != nil {
		t.Fatalf("%s: target: %v", key, err)
	}
	fr.connect(key, tg.Parent)
	return rt, tg.Parent
}

func TestChooseParentOnView(t *testing.T) {
	leaf := member("leaf", 2)
	root := member("r0", 0)
	relay1 := member("r1", 1)
	tests := []struct {
		name    string
		self    string
		members []mesh.Member
		want    string // parent ID; "" = the back end
		wantErr string // part of the reason when no choice is possible
	}{
		{"leaf takes the relay", "leaf", []mesh.Member{leaf, relay1, root}, "r1", ""},
		{"relay takes the root", "r1", []mesh.Member{leaf, relay1, root}, "r0", ""},
		{"the only root is the owner", "r0", []mesh.Member{leaf, relay1, root}, "", ""},
		{"a draining relay is skipped", "leaf", []mesh.Member{leaf, with(relay1, func(m *mesh.Member) { m.Draining = true }), root}, "r0", ""},
		{"a dead relay is skipped", "leaf", []mesh.Member{leaf, with(relay1, func(m *mesh.Member) { m.State = mesh.StateDead }), root}, "r0", ""},
		{"a suspect relay is skipped", "leaf", []mesh.Member{leaf, with(relay1, func(m *mesh.Member) { m.State = mesh.StateSuspect }), root}, "r0", ""},
		{"a full relay is skipped", "leaf", []mesh.Member{leaf, with(relay1, func(m *mesh.Member) { m.Clients = m.Capacity }), root}, "r0", ""},
		{"never a peer of the same tier", "leaf", []mesh.Member{leaf, member("leaf2", 2), root}, "r0", ""},
		{"no root", "leaf", []mesh.Member{leaf, relay1}, "", "no live root"},
		{"self not in the view", "leaf", []mesh.Member{relay1, root}, "", "not in the view"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, fr, fm := routingNode(t, tc.self)
			if _, err := n.routing.choose("/feed/a", ""); err != errNoView {
				t.Fatalf("before any view: %v, want errNoView", err)
			}
			fm.publish(tc.members...)
			n.applyView()
			c, err := n.routing.choose("/feed/a", "")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("choice %+v, %v; want an error with %q", c, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Parent.ID; c.Backend && got != "" || !c.Backend && got != tc.want || c.Backend != (tc.want == "") {
				t.Fatalf("choice %+v, want parent %q", c, tc.want)
			}
			// The stream's target follows the choice.
			rt, parent := open(t, n, fr, "/feed/a")
			if parent != tc.want {
				t.Fatalf("target parent %q, want %q", parent, tc.want)
			}
			if p, chosen := rt.current(); !chosen || p != tc.want {
				t.Fatalf("current() = %q, %v", p, chosen)
			}
		})
	}
}

// twoRelays is a data centre with one root and two relays: a leaf has two
// interchangeable parents.
func twoRelays(extra ...mesh.Member) []mesh.Member {
	return append([]mesh.Member{member("leaf", 2), member("r0", 0), member("r1a", 1), member("r1b", 1)}, extra...)
}

func other(p string) string {
	if p == "r1a" {
		return "r1b"
	}
	return "r1a"
}

func TestAvoidUsedThenClearedOnMembershipChange(t *testing.T) {
	tests := []struct {
		name    string
		attempt func(parent string) *relay.Attempt
		scope   avoidScope
	}{
		{"unreachable parent, every stream", func(p string) *relay.Attempt {
			return &relay.Attempt{Target: relay.Target{Parent: p}, Code: relay.CodeUpstreamUnreachable}
		}, avoidParent},
		{"loop refusal, this stream", func(p string) *relay.Attempt {
			return &relay.Attempt{Target: relay.Target{Parent: p}, Status: 508, Code: codeLoop}
		}, avoidStream},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, fr, fm := routingNode(t, "leaf")
			fm.publish(twoRelays()...)
			n.applyView()
			rt, first := open(t, n, fr, "/feed/a")
			if first != "r1a" && first != "r1b" {
				t.Fatalf("parent %q, want a relay", first)
			}
			// A stream whose choice is the same parent, to see the scope.
			var sibling string
			for i := 0; sibling == "" && i < 100; i++ {
				k := fmt.Sprintf("/feed/s%d", i)
				if c, _ := n.routing.choose(k, ""); c.Parent.ID == first {
					sibling = k
				}
			}
			if sibling == "" {
				t.Fatal("no other stream chooses the same parent")
			}

			// The failure moves the stream to the other relay.
			tg, err := rt.target(tc.attempt(first))
			if err != nil || tg.Parent != other(first) {
				t.Fatalf("after a failure of %s: target %q, %v; want %s", first, tg.Parent, err, other(first))
			}
			fr.connect("/feed/a", tg.Parent)
			c, _ := n.routing.choose(sibling, "")
			if sibling := c.Parent.ID == first; sibling != (tc.scope == avoidStream) {
				t.Fatalf("another stream chooses %s: the avoid entry's scope is not %v", c.Parent.ID, tc.scope)
			}

			// A view with the same members (only load changed) keeps the
			// entry, and so the stream stays.
			fm.publish(with(member("leaf", 2), func(m *mesh.Member) { m.Clients = 7 }), member("r0", 0), member("r1a", 1), member("r1b", 1))
			n.applyView()
			if c, _ := n.routing.choose("/feed/a", ""); c.Parent.ID != other(first) {
				t.Fatalf("same membership: choice %s, want %s (still avoided)", c.Parent.ID, other(first))
			}
			if got := fr.switches(); len(got) != 0 {
				t.Fatalf("same membership: retargeted %v", got)
			}

			// A member joins: the entry is cleared, and the stream goes
			// back to the parent it prefers.
			fm.publish(twoRelays(member("leaf2", 2))...)
			n.applyView()
			if c, _ := n.routing.choose("/feed/a", ""); c.Parent.ID != first {
				t.Fatalf("after a membership change: choice %s, want %s again", c.Parent.ID, first)
			}
			if got := fr.switches(); !slices.Equal(got, []string{"/feed/a"}) {
				t.Fatalf("after a membership change: retargeted %v, want [/feed/a]", got)
			}
		})
	}
}

func TestAvoidOffWithZeroAvoidFor(t *testing.T) {
	n, fr, fm := routingNode(t, "leaf")
	n.routing.avoidFor = 0 // mesh.avoid_for: 0s (a restart-only key)
	fm.publish(twoRelays()...)
	n.applyView()
	rt, first := open(t, n, fr, "/feed/a")
	tg, err := rt.target(&relay.Attempt{Target: relay.Target{Parent: first}, Code: relay.CodeUpstreamUnreachable})
	if err != nil || tg.Parent != first {
		t.Fatalf("avoid_for 0s: target %q, %v; want %s kept", tg.Parent, err, first)
	}
}

func TestRerouteRetargetsChangedStreams(t *testing.T) {
	n, fr, fm := routingNode(t, "leaf")
	fm.publish(twoRelays()...)
	n.applyView()
	on := map[string][]string{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("/feed/s%02d", i)
		_, p := open(t, n, fr, k)
		on[p] = append(on[p], k)
	}
	if len(on["r1a"]) == 0 || len(on["r1b"]) == 0 || len(on) != 2 {
		t.Fatalf("streams by parent %v: want both relays used, nothing else", on)
	}
	// A stream that has a route but never asked for a target has nothing
	// to move.
	n.route("/feed/idle", "/feed/idle", "", "feed", nil)
	fr.mu.Lock()
	fr.held["/feed/idle"] = true
	fr.mu.Unlock()

	// The same view again: nothing moves.
	n.applyView()
	if got := fr.switches(); len(got) != 0 {
		t.Fatalf("unchanged view: retargeted %v", got)
	}

	// r1b dies: exactly its streams move; rendezvous keeps r1a's.
	fm.publish(member("leaf", 2), member("r0", 0), member("r1a", 1), with(member("r1b", 1), func(m *mesh.Member) { m.State = mesh.StateDead }))
	n.applyView()
	want := slices.Clone(on["r1b"])
	sort.Strings(want)
	if got := fr.switches(); !slices.Equal(got, want) {
		t.Fatalf("r1b died: retargeted\n %v\nwant %v", got, want)
	}
	for _, k := range on["r1b"] {
		if c, _ := n.routing.choose(k, ""); c.Parent.ID != "r1a" {
			t.Fatalf("%s: choice %s after r1b died, want r1a", k, c.Parent.ID)
		}
		fr.connect(k, "r1a")
	}

	// A stream the relay left where it was (a switch the new parent
	// refused) is asked again; the others are where the plan wants them.
	fr.connect(on["r1a"][0], "r0")
	n.routing.reroute()
	if got := fr.switches(); !slices.Equal(got, []string{on["r1a"][0]}) {
		t.Fatalf("one stream off its choice: retargeted %v, want [%s]", got, on["r1a"][0])
	}
}

// TestAvoidExpiryReroutes follows the mesh for the length of an avoid entry
// on the bubble's clock: the stream moves back to the parent it prefers
// within a second of the entry's expiry, and not before.
func TestAvoidExpiryReroutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, fr, fm := routingNode(t, "leaf")
		fm.publish(twoRelays()...)
		n.applyView()
		<-fm.changed // applied above
		rt, first := open(t, n, fr, "/feed/a")
		tg, err := rt.target(&relay.Attempt{Target: relay.Target{Parent: first}, Code: relay.CodeUpstreamUnreachable})
		if err != nil || tg.Parent != other(first) {
			t.Fatalf("after a failure: target %q, %v", tg.Parent, err)
		}
		fr.connect("/feed/a", tg.Parent)

		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.followMesh()
		}()
		defer func() {
			close(n.stop)
			n.wg.Wait()
		}()

		time.Sleep(29*time.Second + 500*time.Millisecond)
		synctest.Wait()
		if got := fr.switches(); len(got) != 0 {
			t.Fatalf("before the entry expired: retargeted %v", got)
		}
		if c, _ := n.routing.choose("/feed/a", ""); c.Parent.ID != other(first) {
			t.Fatalf("before the entry expired: choice %s", c.Parent.ID)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := fr.switches(); !slices.Equal(got, []string{"/feed/a"}) {
			t.Fatalf("after the entry expired: retargeted %v, want [/feed/a]", got)
		}
		if c, _ := n.routing.choose("/feed/a", ""); c.Parent.ID != first {
			t.Fatalf("after the entry expired: choice %s, want %s", c.Parent.ID, first)
		}
		fm.mu.Lock()
		loads := fm.loads
		fm.mu.Unlock()
		if loads < 29 {
			t.Fatalf("load reported %d times in 30 s, want every second", loads)
		}
	})
}

// TestAvoidListExpiry runs avoid entries out on the bubble's clock.
func TestAvoidListExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAvoidList()
		l.add("p1", "/a", avoidStream, time.Now().Add(10*time.Second))
		l.add("p2", "", avoidParent, time.Now().Add(20*time.Second))
		steps := []struct {
			after   time.Duration
			expired bool
			want    []string // avoided for /a
		}{
			{0, false, []string{"p1", "p2"}},
			{10*time.Second - time.Millisecond, false, []string{"p1", "p2"}},
			{time.Millisecond, true, []string{"p2"}},
			{5 * time.Second, false, []string{"p2"}},
			{5 * time.Second, true, nil},
			{time.Hour, false, nil},
		}
		for i, s := range steps {
			time.Sleep(s.after)
			if got := l.expire(time.Now()); got != s.expired {
				t.Fatalf("step %d: expire = %v, want %v", i, got, s.expired)
			}
			var got []string
			for p := range l.set("/a", time.Now()) {
				got = append(got, p)
			}
			sort.Strings(got)
			if !slices.Equal(got, s.want) {
				t.Fatalf("step %d: avoided %v, want %v", i, got, s.want)
			}
		}
	})
}
