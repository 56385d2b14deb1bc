package node

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/consultest"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/mesh"
	"github.com/ssemesh/ssemesh/topology"
)

// meshSpec places one test node.
type meshSpec struct {
	id     string
	dc     string
	tier   int
	consul string   // agent HTTP address; "" = none
	seeds  []string // gossip seeds
	static []BackendSpec
}

// meshNode starts a node in a mesh with loopback gossip timings.
func meshNode(t *testing.T, s meshSpec, mutate func(*Config)) *Node {
	t.Helper()
	cfg := testConfig(s.static...)
	cfg.NodeID = s.id
	cfg.Mesh.DC = s.dc
	cfg.Mesh.Tier = s.tier
	cfg.Mesh.Gossip.Bind = "127.0.0.1:0"
	cfg.Mesh.Gossip.Seeds = s.seeds
	cfg.Mesh.Gossip.Fast = true
	cfg.Mesh.Secret = testSecret
	cfg.Mesh.Consul.Address = s.consul
	cfg.Mesh.Consul.Datacenter = s.dc
	cfg.Mesh.Settle = 100 * time.Millisecond
	cfg.Mesh.AvoidFor = Duration(5 * time.Second)
	cfg.Mesh.Handoff = Duration(5 * time.Second)
	cfg.Relay.ReadyTimeout = time.Duration(10 * time.Second)
	if mutate != nil {
		mutate(&cfg)
	}
	return startNode(t, cfg)
}

// registerBackend announces a synthetic back end in Consul.
func registerBackend(t *testing.T, c *api.Client, name, addr, path string) {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	p, _ := strconv.Atoi(port)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: name + "-1", Name: name, Address: host, Port: p,
		Tags: []string{"ssemesh"},
		Meta: map[string]string{mesh.MetaPath: path},
	})
	if err != nil {
		t.Fatalf("registering back end %s: %v", name, err)
	}
}

// waitMembers waits until every node sees want alive members.
func waitMembers(t *testing.T, want int, nodes ...*Node) {
	t.Helper()
	ssetest.Eventually(t, "mesh convergence", 20*time.Second, func() bool {
		for _, n := range nodes {
			v := n.MeshView()
			alive := 0
			for _, m := range v.Members {
				if m.State == mesh.StateAlive && !m.Draining {
					alive++
				}
			}
			if alive != want {
				return false
			}
		}
		return true
	})
}

// tree is a started two-tier-plus-leaves mesh with its back end.
type tree struct {
	be     *backend.Backend
	beAddr string
	roots  []*Node
	relays []*Node
	leaves []*Node
}

func (tr *tree) all() []*Node {
	return slices.Concat(tr.roots, tr.relays, tr.leaves)
}

// owner returns the root that holds the stream's back-end connection and
// the other root.
func (tr *tree) owner(t *testing.T) (owner, other *Node) {
	t.Helper()
	for _, r := range tr.roots {
		if upstreamOf(r, streamPath) == "" {
			owner = r
		} else {
			other = r
		}
	}
	if owner == nil || other == nil {
		t.Fatal("no single owner among the roots")
	}
	return owner, other
}

// upstreamOf is the parent node a stream on n uses now ("" = back end).
func upstreamOf(n *Node, key string) string {
	rt := n.routing.lookup(key)
	if rt == nil {
		return "?"
	}
	p, _ := rt.current()
	return p
}

// buildTree starts a back end registered in a real Consul agent and 2
// roots, 2 relays and 4 leaves in dc1 that find each other through Consul.
// mutate, when set, adjusts every node's configuration.
func buildTree(t *testing.T, mutate func(*Config)) (*tree, *consultest.Agent) {
	t.Helper()
	consultest.Require(t)
	agent := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	be, addr := startBackend(t, backend.Config{})
	registerBackend(t, agent.Client(t), "changelog", addr, streamPath)

	tr := &tree{be: be, beAddr: addr}
	spec := func(id string, tier int) meshSpec {
		return meshSpec{id: id, dc: "dc1", tier: tier, consul: agent.HTTPAddr}
	}
	tr.roots = []*Node{meshNode(t, spec("root-a", 0), mutate), meshNode(t, spec("root-b", 0), mutate)}
	seed := []string{tr.roots[0].mesh.LocalAddr()}
	for _, id := range []string{"relay-a", "relay-b"} {
		s := spec(id, 1)
		s.seeds = seed
		tr.relays = append(tr.relays, meshNode(t, s, mutate))
	}
	for _, id := range []string{"leaf-a", "leaf-b", "leaf-c", "leaf-d"} {
		s := spec(id, 2)
		s.seeds = seed
		tr.leaves = append(tr.leaves, meshNode(t, s, mutate))
	}
	waitMembers(t, 8, tr.all()...)
	for _, n := range tr.all() {
		ssetest.Eventually(t, "back end mounted from Consul on "+n.ID(), 10*time.Second, func() bool { return n.findMount(streamPath) != nil })
	}
	return tr, agent
}

// spreadClients connects per clients to every leaf.
func spreadClients(t *testing.T, leaves []*Node, per int) []*ssetest.Client {
	t.Helper()
	var cs []*ssetest.Client
	for _, l := range leaves {
		for i := 0; i < per; i++ {
			cs = append(cs, ssetest.Dial(t, "http://"+l.Addr()+streamPath, nil))
		}
	}
	return cs
}

// expectAll checks every client receives exactly from..to, in order.
func expectAll(t *testing.T, cs []*ssetest.Client, from, to int) {
	t.Helper()
	want := seq(from, to)
	parallel(len(cs), func(i int) {
		got, err := cs[i].TryIDs(len(want), 15*time.Second)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("client %d: got %v (%v), want %d..%d", i, got, err, from, to)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
}

func TestMeshTreeServesOneBackendConnection(t *testing.T) {
	tr, _ := buildTree(t, nil)
	cs := spreadClients(t, tr.leaves, 50)
	for _, l := range tr.leaves {
		ssetest.Eventually(t, "leaf clients attached", 10*time.Second, func() bool { return l.Relay().Clients() == 50 })
	}
	tr.be.Publish(streamPath, 20)
	expectAll(t, cs, 1, 20)
	if st := tr.be.Stats(streamPath); st.Total != 1 || st.Open != 1 {
		t.Fatalf("back end saw %d connections (%d open), want exactly 1", st.Total, st.Open)
	}
	// Leaves take the stream from relays, relays from roots, and exactly
	// one root talks to the back end.
	owners := 0
	for _, r := range tr.roots {
		if upstreamOf(r, streamPath) == "" {
			owners++
		}
	}
	if owners != 1 {
		t.Fatalf("%d roots connect to the back end, want 1", owners)
	}
	for _, l := range tr.leaves {
		if p := upstreamOf(l, streamPath); !strings.HasPrefix(p, "relay-") {
			t.Errorf("leaf %s takes the stream from %q, want a relay", l.ID(), p)
		}
	}
	for _, r := range tr.relays {
		if p := upstreamOf(r, streamPath); p != "" && !strings.HasPrefix(p, "root-") {
			t.Errorf("relay %s takes the stream from %q, want a root", r.ID(), p)
		}
	}

	// Any node reports the whole tree: every node, every edge as the nodes
	// themselves use it, and a tree that passes the topology's invariants.
	rep := tr.leaves[2].TopologyReport(context.Background(), "")
	if len(rep.Nodes) != 8 || len(rep.Unreachable) != 0 {
		t.Fatalf("report has %d nodes, unreachable %v", len(rep.Nodes), rep.Unreachable)
	}
	// Seven edges: leaves, relays and the owner. The other root carries
	// the stream only when someone takes it from there.
	if len(rep.Streams) != 1 || len(rep.Streams[0].Edges) != 7 {
		t.Fatalf("report streams %+v", rep.Streams)
	}
	for _, e := range rep.Streams[0].Edges {
		var child *Node
		for _, n := range tr.all() {
			if n.ID() == e.Child {
				child = n
			}
		}
		if child == nil || upstreamOf(child, streamPath) != e.Parent {
			t.Errorf("edge %s -> %q does not match the node's own upstream", e.Child, e.Parent)
		}
	}
	if errs := topology.Validate(rep); len(errs) > 0 {
		t.Fatalf("report violates the tree's rules: %v", errs)
	}
}

func TestMeshHardKillOfRelayLosesNothing(t *testing.T) {
	tr, _ := buildTree(t, nil)
	cs := spreadClients(t, tr.leaves, 10)
	tr.be.Publish(streamPath, 10)
	expectAll(t, cs, 1, 10)

	// Kill the relay carrying the most leaves.
	victim := busiest(tr.relays, tr.leaves)
	start := time.Now()
	victim.Kill()
	for _, l := range tr.leaves {
		ssetest.Eventually(t, "leaf re-parented", 10*time.Second, func() bool {
			p := upstreamOf(l, streamPath)
			return p != victim.ID() && l.Relay().StreamInfo()[0].State == "live"
		})
	}
	t.Logf("children of %s re-parented within %s", victim.ID(), time.Since(start).Round(time.Millisecond))
	tr.be.Publish(streamPath, 10)
	expectAll(t, cs, 11, 20)
	if st := tr.be.Stats(streamPath); st.Total != 1 {
		t.Fatalf("back end saw %d connections, want 1 (a relay's death must not reach it)", st.Total)
	}
}

func TestMeshOwnerRootTakeover(t *testing.T) {
	tr, _ := buildTree(t, nil)
	cs := spreadClients(t, tr.leaves, 10)
	tr.be.Publish(streamPath, 10)
	expectAll(t, cs, 1, 10)

	owner, other := tr.owner(t)
	start := time.Now()
	owner.Kill()
	ssetest.Eventually(t, "the other root owns the back-end connection", 15*time.Second, func() bool {
		return upstreamOf(other, streamPath) == "" && tr.be.Stats(streamPath).Open == 1
	})
	t.Logf("takeover by %s within %s", other.ID(), time.Since(start).Round(time.Millisecond))
	tr.be.Publish(streamPath, 10)
	expectAll(t, cs, 11, 20)
	st := tr.be.Stats(streamPath)
	if st.Total != 2 || st.Open != 1 {
		t.Fatalf("back end saw %d connections (%d open), want the owner's and the successor's", st.Total, st.Open)
	}
	if st.LastEventIDs[1] != "10" {
		t.Fatalf("successor resumed with Last-Event-ID %q, want 10", st.LastEventIDs[1])
	}
}

func TestForcedLoopIsRefused(t *testing.T) {
	// Two nodes configured as each other's upstream (chained back ends):
	// the request that would close the loop is refused with 508 and the
	// client gets that answer instead of a stream that never starts.
	chained := func(id, uri string) Config {
		c := testConfig(BackendSpec{Name: "loop", URI: uri, Chained: true})
		c.NodeID = id
		c.Mesh.Secret = testSecret
		return c
	}
	a := startNode(t, chained("node-a", "http://127.0.0.1:1"+streamPath))
	b := startNode(t, chained("node-b", "http://"+a.Addr()+streamPath))
	// Point a at b now that b's address is known.
	ms := a.mountList()
	m, _ := newMount(BackendSpec{Name: "loop", URI: "http://" + b.Addr() + streamPath, Mount: streamPath, Chained: true}, nil)
	a.setMounts(append(ms[:0:0], m))

	_, resp, err := ssetest.DialStatus("http://"+a.Addr()+streamPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected {
		t.Fatalf("status %d, want 508", resp.StatusCode)
	}
	if got := b.Relay().Metrics().Snapshot().Refused[codeLoop] + a.Relay().Metrics().Snapshot().Refused[codeLoop]; got == 0 {
		t.Fatal("no node counted a loop refusal")
	}
	ssetest.Eventually(t, "streams released", 5*time.Second, func() bool { return a.Relay().Streams() == 0 && b.Relay().Streams() == 0 })

	// The loop resolves once a takes the stream from the real back end:
	// b's clients are fed through a, and nothing of the refusals lingers.
	be, addr := startBackend(t, backend.Config{})
	m, _ = newMount(BackendSpec{Name: "loop", URI: "http://" + addr + streamPath, Mount: streamPath, Chained: true}, nil)
	a.setMounts([]*mount{m})
	c := ssetest.Dial(t, "http://"+b.Addr()+streamPath, nil)
	ssetest.Eventually(t, "chain b -> a -> back end attached", 5*time.Second, func() bool { return be.Stats(streamPath).Open == 1 })
	be.Publish(streamPath, 3)
	if got := c.IDs(t, 3, 5*time.Second); !slices.Equal(got, seq(1, 3)) {
		t.Fatalf("client of b got %v after the loop was broken", got)
	}
}

func TestConsulBackEndMountPinnedInConfig(t *testing.T) {
	// The node's configuration may pin where a back end found in Consul is
	// mounted, and adds its headers; Consul supplies the instances.
	consultest.Require(t)
	agent := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	be, addr := startBackend(t, backend.Config{})
	registerBackend(t, agent.Client(t), "changelog", addr, streamPath)
	n := meshNode(t, meshSpec{id: "solo", dc: "dc1", tier: 0, consul: agent.HTTPAddr}, func(c *Config) {
		c.Backends = []BackendSpec{{Name: "changelog", Mount: "/pinned/changes"}}
	})
	ssetest.Eventually(t, "back end mounted at the pinned path", 10*time.Second, func() bool { return n.findMount("/pinned/changes") != nil })
	if n.findMount(streamPath) != nil {
		t.Fatalf("back end also mounted at Consul's path %s", streamPath)
	}
	c := ssetest.Dial(t, "http://"+n.Addr()+"/pinned/changes", nil)
	ssetest.Eventually(t, "subscribed upstream", 10*time.Second, func() bool { return be.Stats(streamPath).Open == 1 })
	be.Publish(streamPath, 2)
	if got := c.IDs(t, 2, 5*time.Second); !slices.Equal(got, seq(1, 2)) {
		t.Fatalf("got %v", got)
	}
}

// instanceServer serves a shared back end on its own listener, as one
// instance of a replicated back end, and counts the streams it holds.
type instanceServer struct {
	srv  *http.Server
	addr string
	open atomic.Int32
}

func startInstance(t *testing.T, be http.Handler) *instanceServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	in := &instanceServer{addr: ln.Addr().String()}
	in.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.open.Add(1)
		defer in.open.Add(-1)
		be.ServeHTTP(w, r)
	})}
	go func() { _ = in.srv.Serve(ln) }()
	t.Cleanup(func() { _ = in.srv.Close() })
	return in
}

func TestConsulBackEndInstanceFailover(t *testing.T) {
	// Two instances of one back end (sharing one event log, as replicas of
	// a CMS do) are registered in Consul. When the instance a root reads
	// from dies, the root moves to the other, resuming with Last-Event-ID:
	// clients see every event once.
	consultest.Require(t)
	agent := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	be, _ := startBackend(t, backend.Config{})
	ins := []*instanceServer{startInstance(t, be), startInstance(t, be)}
	for i, in := range ins {
		host, port, _ := strings.Cut(in.addr, ":")
		p, _ := strconv.Atoi(port)
		err := agent.Client(t).Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: "changelog-" + strconv.Itoa(i+1), Name: "changelog", Address: host, Port: p,
			Tags: []string{"ssemesh"}, Meta: map[string]string{mesh.MetaPath: streamPath},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	n := meshNode(t, meshSpec{id: "root", dc: "dc1", tier: 0, consul: agent.HTTPAddr}, nil)
	ssetest.Eventually(t, "both instances known", 10*time.Second, func() bool {
		m := n.findMount(streamPath)
		return m != nil && len(m.instances) == 2
	})
	cs := []*ssetest.Client{ssetest.Dial(t, "http://"+n.Addr()+streamPath, nil), ssetest.Dial(t, "http://"+n.Addr()+streamPath, nil)}
	be.Publish(streamPath, 5)
	expectAll(t, cs, 1, 5)

	var used, other *instanceServer
	for i, in := range ins {
		if in.open.Load() == 1 {
			used, other = in, ins[1-i]
		}
	}
	if used == nil || other.open.Load() != 0 {
		t.Fatalf("open streams per instance: %d, %d; want exactly one", ins[0].open.Load(), ins[1].open.Load())
	}
	_ = used.srv.Close() // the instance dies: listener and connections gone
	ssetest.Eventually(t, "stream moved to the other instance", 10*time.Second, func() bool { return other.open.Load() == 1 })
	be.Publish(streamPath, 5)
	expectAll(t, cs, 6, 10)
	st := be.Stats(streamPath)
	if st.Total != 2 || st.LastEventIDs[1] != "5" {
		t.Fatalf("back end saw %d connections, Last-Event-IDs %v; want 2, the second resuming from 5", st.Total, st.LastEventIDs)
	}
}
