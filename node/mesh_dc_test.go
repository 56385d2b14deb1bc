package node

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/consultest"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/topology"
)

// pacer publishes one event at a time on a back-end stream at a steady
// rate, as live traffic would, until stopped.
type pacer struct {
	cancel context.CancelFunc
	done   chan struct{}
	last   atomic.Int64
}

// startPacer starts publishing on path every interval. The test owns the
// goroutine: stop (also run at cleanup) ends it and waits for it.
func startPacer(t testing.TB, be *backend.Backend, path string, every time.Duration) *pacer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &pacer{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				p.last.Store(be.Publish(path, 1))
			}
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop ends publishing and returns the id of the last event published.
func (p *pacer) stop() int {
	p.cancel()
	<-p.done
	return int(p.last.Load())
}

// httpStatus is the status of a GET, 0 when nothing answered.
func httpStatus(url string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// memberDC is the data centre n's view places member id in ("" if unknown).
func memberDC(n *Node, id string) string {
	for _, m := range n.MeshView().Members {
		if m.ID == id {
			return m.DC
		}
	}
	return ""
}

// nodeByID finds a node among nodes.
func nodeByID(nodes []*Node, id string) *Node {
	for _, n := range nodes {
		if n.ID() == id {
			return n
		}
	}
	return nil
}

// reportNode finds a node in a report.
func reportNode(r topology.Report, id string) (topology.NodeReport, bool) {
	for _, n := range r.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return topology.NodeReport{}, false
}

// twoDCs is a mesh over two data centres joined through Consul's WAN: the
// back end and the roots in dc1, relays and leaves only in dc2.
type twoDCs struct {
	be       *backend.Backend
	beAddr   string
	a1, a2   *consultest.Agent
	dc1, dc2 []*Node
	leaves   []*Node // dc2's leaves, where clients connect
}

func (m *twoDCs) all() []*Node { return slices.Concat(m.dc1, m.dc2) }

// buildTwoDCs starts two WAN-joined Consul agents, a back end registered in
// dc1, dc1's 2 roots and a relay, and dc2's 2 relays (tier 1) and 2 leaves
// (tier 2). Gossip stays inside each data centre; the data centres see each
// other only through Consul's catalog. dc2's nodes carry the back end as
// static configuration pinned to dc1 (see TestMeshRemoteDCLearnsMount for
// discovery alone).
func buildTwoDCs(t *testing.T) *twoDCs {
	t.Helper()
	consultest.Require(t)
	m := &twoDCs{}
	m.a1 = consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	m.a2 = consultest.Start(t, consultest.Options{Datacenter: "dc2", JoinWAN: []string{m.a1.SerfWANAddr}})
	consultest.WaitWAN(t, m.a1, "dc1", "dc2")
	consultest.WaitWAN(t, m.a2, "dc1", "dc2")
	m.be, m.beAddr = startBackend(t, backend.Config{})
	registerBackend(t, m.a1.Client(t), "changelog", m.beAddr, streamPath)

	static := BackendSpec{Name: "changelog", URI: "http://" + m.beAddr + streamPath, Mount: streamPath, DC: "dc1"}
	place := func(id, dc string, tier int, a *consultest.Agent, seeds []string) *Node {
		s := meshSpec{id: id, dc: dc, tier: tier, consul: a.HTTPAddr, seeds: seeds}
		if dc == "dc2" {
			s.static = []BackendSpec{static}
		}
		return meshNode(t, s, func(c *Config) { c.Mesh.Handoff = Duration(handoffForCleanup) })
	}
	rootA := place("root-a", "dc1", 0, m.a1, nil)
	seed1 := []string{rootA.GossipAddr()}
	m.dc1 = []*Node{rootA, place("root-b", "dc1", 0, m.a1, seed1), place("relay-a", "dc1", 1, m.a1, seed1)}
	relayX := place("relay-x", "dc2", 1, m.a2, nil)
	seed2 := []string{relayX.GossipAddr()}
	m.dc2 = []*Node{relayX, place("relay-y", "dc2", 1, m.a2, seed2)}
	m.leaves = []*Node{place("leaf-x", "dc2", 2, m.a2, seed2), place("leaf-y", "dc2", 2, m.a2, seed2)}
	m.dc2 = append(m.dc2, m.leaves...)

	// Every node sees its own data centre through gossip and the other
	// through Consul's catalog once the other's health checks pass.
	waitMembers(t, 7, m.all()...)
	for _, n := range m.all() {
		ssetest.Eventually(t, "back end mounted on "+n.ID(), 10*time.Second, func() bool { return n.findMount(streamPath) != nil })
	}
	return m
}

func TestMeshTwoDataCentres(t *testing.T) {
	m := buildTwoDCs(t)

	// Discovery alone should tell dc2 about dc1's back end; the static
	// spec keeps the rest of the test meaningful when it does not.
	for _, n := range m.dc2 {
		_, ok := ssetest.Poll(10*time.Second, 10*time.Millisecond, func() bool {
			for _, b := range n.MeshView().Backends {
				if b.Name == "changelog" && b.DC == "dc1" {
					return true
				}
			}
			return false
		})
		if !ok {
			t.Errorf("%s never learned back end changelog of dc1 from Consul (view backends %+v)", n.ID(), n.MeshView().Backends)
		}
		if mt := n.findMount(streamPath); mt == nil || mt.dc != "dc1" {
			t.Errorf("%s mounts %s with back-end DC %v, want dc1", n.ID(), streamPath, mt)
		}
	}

	cs := spreadClients(t, m.leaves, 20)
	for _, l := range m.leaves {
		ssetest.Eventually(t, "clients attached to "+l.ID(), 10*time.Second, func() bool { return l.Relay().Clients() == 20 })
	}
	m.be.Publish(streamPath, 20)
	expectAll(t, cs, 1, 20)

	if st := m.be.Stats(streamPath); st.Total != 1 || st.Open != 1 {
		t.Fatalf("back end saw %d connections (%d open), want exactly 1 for both data centres", st.Total, st.Open)
	}
	// Exactly one dc2 node crosses into dc1: the gateway. Every other dc2
	// node that carries the stream takes it inside dc2.
	var crossing []string
	gateway := ""
	for _, n := range m.dc2 {
		p := upstreamOf(n, streamPath)
		switch {
		case p == "?":
			continue // carries no stream
		case p == "":
			t.Errorf("dc2 node %s connects to the back end itself", n.ID())
		case memberDC(n, p) == "dc1":
			crossing = append(crossing, n.ID()+"->"+p)
			gateway = n.ID()
		case memberDC(n, p) != "dc2":
			t.Errorf("dc2 node %s takes the stream from %q of unknown DC %q", n.ID(), p, memberDC(n, p))
		}
	}
	if len(crossing) != 1 {
		t.Fatalf("cross-DC links %v, want exactly one", crossing)
	}
	for _, l := range m.leaves {
		if p := upstreamOf(l, streamPath); memberDC(l, p) != "dc2" {
			t.Errorf("leaf %s takes the stream from %q in %q, want a dc2 relay", l.ID(), p, memberDC(l, p))
		}
	}
	owner := ""
	for _, r := range m.dc1[:2] {
		if upstreamOf(r, streamPath) == "" {
			owner = r.ID()
		}
	}
	if owner == "" {
		t.Fatal("no dc1 root holds the back-end connection")
	}

	// A leaf of dc2 reports both data centres: every node, and edges as
	// the nodes themselves use them.
	rep := m.leaves[0].TopologyReport(context.Background(), "")
	if len(rep.Nodes) != 7 || len(rep.Unreachable) != 0 {
		t.Fatalf("report has %d nodes (%+v), unreachable %v; want 7 and none", len(rep.Nodes), rep.Nodes, rep.Unreachable)
	}
	for _, nr := range rep.Nodes {
		if !nr.Reachable || nr.State != topology.StateAlive {
			t.Errorf("report node %s: reachable %v state %s, want reachable and alive", nr.ID, nr.Reachable, nr.State)
		}
		if n := nodeByID(m.all(), nr.ID); n == nil || nr.DC != memberDC(m.leaves[0], nr.ID) {
			t.Errorf("report node %s in %q is not a node of the mesh", nr.ID, nr.DC)
		}
	}
	if len(rep.Streams) != 1 || rep.Streams[0].Owner != owner {
		t.Fatalf("report streams %+v, want one owned by %s", rep.Streams, owner)
	}
	children := map[string]bool{}
	for _, e := range rep.Streams[0].Edges {
		children[e.Child] = true
		n := nodeByID(m.all(), e.Child)
		if n == nil || upstreamOf(n, streamPath) != e.Parent {
			t.Errorf("edge %s -> %q does not match the node's own upstream", e.Child, e.Parent)
		}
	}
	for _, id := range []string{owner, "leaf-x", "leaf-y", gateway} {
		if !children[id] {
			t.Errorf("report has no edge for %s (edges %+v)", id, rep.Streams[0].Edges)
		}
	}
	if errs := topology.Validate(rep); len(errs) > 0 {
		t.Fatalf("report violates the tree's rules: %v", errs)
	}

	// A dead node stays in the report, marked, instead of vanishing.
	victim := nodeByID(m.dc1, "relay-a")
	victim.Kill()
	var last topology.Report
	_, ok := ssetest.Poll(15*time.Second, 10*time.Millisecond, func() bool {
		last = m.leaves[1].TopologyReport(context.Background(), "")
		nr, found := reportNode(last, victim.ID())
		return found && !nr.Reachable && nr.State != topology.StateAlive && slices.Contains(last.Unreachable, victim.ID())
	})
	if !ok {
		nr, found := reportNode(last, victim.ID())
		t.Fatalf("killed %s in report: found %v, %+v; unreachable %v", victim.ID(), found, nr, last.Unreachable)
	}
	if len(last.Nodes) != 7 {
		t.Errorf("report after the kill has %d nodes, want all 7", len(last.Nodes))
	}
	if errs := topology.Validate(last); len(errs) > 0 {
		t.Errorf("report after the kill violates the tree's rules: %v", errs)
	}
	// relay-a carried nothing: the stream flows on untouched.
	m.be.Publish(streamPath, 10)
	expectAll(t, cs, 21, 30)
	if st := m.be.Stats(streamPath); st.Total != 1 {
		t.Fatalf("back end saw %d connections, want 1", st.Total)
	}
}

// TestMeshRemoteDCLearnsMount checks discovery without configuration: a
// node of a data centre without back ends finds one registered in another
// data centre, with that data centre, and serves it.
func TestMeshRemoteDCLearnsMount(t *testing.T) {
	consultest.Require(t)
	a1 := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	a2 := consultest.Start(t, consultest.Options{Datacenter: "dc2", JoinWAN: []string{a1.SerfWANAddr}})
	consultest.WaitWAN(t, a2, "dc1", "dc2")
	be, addr := startBackend(t, backend.Config{})
	registerBackend(t, a1.Client(t), "changelog", addr, streamPath)

	root := meshNode(t, meshSpec{id: "root-a", dc: "dc1", tier: 0, consul: a1.HTTPAddr}, nil)
	leaf := meshNode(t, meshSpec{id: "leaf-x", dc: "dc2", tier: 2, consul: a2.HTTPAddr}, nil)
	waitMembers(t, 2, root, leaf)
	_, ok := ssetest.Poll(15*time.Second, 10*time.Millisecond, func() bool {
		mt := leaf.findMount(streamPath)
		return mt != nil && mt.dc == "dc1"
	})
	if !ok {
		t.Fatalf("dc2 node never mounted %s of dc1 from Consul alone; view back ends %+v", streamPath, leaf.MeshView().Backends)
	}
	c := ssetest.Dial(t, "http://"+leaf.Addr()+streamPath, nil)
	ssetest.Eventually(t, "client attached", 10*time.Second, func() bool { return leaf.Relay().Clients() == 1 })
	be.Publish(streamPath, 5)
	expectAll(t, []*ssetest.Client{c}, 1, 5)
	if p := upstreamOf(leaf, streamPath); p != root.ID() {
		t.Fatalf("dc2 leaf takes the stream from %q, want the dc1 root", p)
	}
	if st := be.Stats(streamPath); st.Total != 1 {
		t.Fatalf("back end saw %d connections, want 1", st.Total)
	}
}

// handoffForCleanup bounds the handoff wait of nodes these tests do not
// drain on purpose: a parent notices a departed child only on its next
// write, so an idle parent would otherwise wait the whole handoff at
// cleanup (see TestMeshIdleHandoffEndsWhenChildrenLeave).
const handoffForCleanup = 1500 * time.Millisecond
