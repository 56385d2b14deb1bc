package node

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/meshauth"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/mesh"
)

// Tests of nodes in a mesh joined by gossip seeds on loopback, without
// Consul: every node has the same static back ends, and the tiers make the
// tree.

// chainNode places one node of a gossip-only mesh.
type chainNode struct {
	id   string
	tier int
}

// startMesh starts the nodes in order, each seeded with the first one's
// gossip address, and waits until every node sees all of them.
func startMesh(t *testing.T, nodes []chainNode, backends []BackendSpec, mutate func(*Config)) []*Node {
	t.Helper()
	var out []*Node
	var seeds []string
	for _, c := range nodes {
		n := meshNode(t, meshSpec{id: c.id, dc: "dc1", tier: c.tier, seeds: seeds, static: backends}, mutate)
		if seeds == nil {
			seeds = []string{n.GossipAddr()}
		}
		out = append(out, n)
	}
	waitMembers(t, len(nodes), out...)
	return out
}

func TestForgedAncestryDoesNotTakeParentsAway(t *testing.T) {
	// One request with an ancestry header naming the leaf's parents used
	// to make the leaf avoid every parent for every stream.
	be, addr := startBackend(t, backend.Config{})
	feeds := BackendSpec{Name: "feeds", URI: "http://" + addr + "/f/", Mount: "/f/", Prefix: true}
	nodes := startMesh(t, []chainNode{{"root-a", 0}, {"root-b", 0}, {"leaf", 1}}, []BackendSpec{feeds}, nil)
	leaf := nodes[2]
	base := "http://" + leaf.Addr()

	forged := ssetest.Dial(t, base+"/f/one", http.Header{ViaHeader: {"root-a,root-b,leaf"}})
	be.Publish("/f/one", 1)
	if got := forged.IDs(t, 1, 5*time.Second); got[0] != "1" {
		t.Fatalf("the forging client got %v", got)
	}
	legit := ssetest.Dial(t, base+"/f/two", nil)
	be.Publish("/f/two", 1)
	if got := legit.IDs(t, 1, 5*time.Second); got[0] != "1" {
		t.Fatalf("a client of another stream got %v", got)
	}
	if avoided := leaf.routing.avoid.set("/f/two", time.Now()); len(avoided) > 0 {
		t.Fatalf("the leaf avoids %v after a client's forged ancestry", avoided)
	}
	for _, n := range nodes[:2] {
		if n.Relay().Metrics().Snapshot().Refused[codeLoop] != 0 {
			t.Fatalf("%s refused a loop: the forged ancestry reached it", n.ID())
		}
	}
	if leaf.Relay().ChildClients() != 0 {
		t.Fatalf("the leaf counts %d child nodes among its clients", leaf.Relay().ChildClients())
	}
}

func TestChildWithAnotherSecretIsRefused(t *testing.T) {
	be, addr := startBackend(t, backend.Config{})
	cl := BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath}
	root := meshNode(t, meshSpec{id: "root", dc: "dc1", tier: 0, static: []BackendSpec{cl}}, nil)
	leaf := meshNode(t, meshSpec{id: "leaf", dc: "dc1", tier: 1, seeds: []string{root.GossipAddr()}, static: []BackendSpec{cl}},
		func(c *Config) { c.Mesh.Secret = "another-mesh-secret-0123456789abcdef" })
	waitMembers(t, 2, root, leaf)
	st, code, _ := status(t, "http://"+leaf.Addr()+streamPath, nil)
	if st == http.StatusOK {
		t.Fatal("a leaf with another secret got the stream through the root")
	}
	if got := root.Relay().Metrics().Snapshot().Refused[codeMeshAuth]; got == 0 {
		t.Fatalf("the root did not refuse the leaf's credentials (leaf answered %d %s)", st, code)
	}
	if be.Stats(streamPath).Total != 0 {
		t.Fatalf("the back end served %d connections for a refused child", be.Stats(streamPath).Total)
	}
}

func TestAdminTokenNeverLeavesTheNode(t *testing.T) {
	// The mesh-wide report asks every peer's advertised admin address.
	// Peers prove membership with the mesh secret; the admin token stays
	// on the node that was asked, whatever address a member advertises.
	const token = "admin-token-of-node-a"
	evil := newRecorder(t, nil)
	a := meshNode(t, meshSpec{id: "a", dc: "dc1", tier: 0}, func(c *Config) { c.Admin.Token = token })
	b := meshNode(t, meshSpec{id: "b", dc: "dc1", tier: 1, seeds: []string{a.GossipAddr()}}, func(c *Config) { c.Admin.Token = "another-token" })
	// A gossip member whose admin address is the recorder (same host as
	// its gossip, so it passes the address check).
	m, err := mesh.New(mesh.Config{NodeID: "stranger", DC: "dc1", Tier: 2, ClientAddr: evil.addr, AdminAddr: evil.addr,
		Gossip: mesh.GossipConfig{Bind: "127.0.0.1:0", Seeds: []string{a.GossipAddr()}, Fast: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	waitMembers(t, 3, a, b)

	req, _ := http.NewRequest(http.MethodGet, "http://"+a.AdminAddr()+"/v1/nodes", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var nodes nodesView
	err = json.NewDecoder(resp.Body).Decode(&nodes)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/nodes: %d %v", resp.StatusCode, err)
	}
	reachable := map[string]bool{}
	for _, nr := range nodes.Nodes {
		reachable[nr.ID] = nr.Reachable
	}
	if !reachable["b"] {
		t.Fatalf("peer b (another admin token) did not answer a's mesh-signed request: %+v", nodes.Nodes)
	}
	reqs := evil.requests()
	if len(reqs) == 0 {
		t.Fatal("the stranger's admin address was never asked: the test proves nothing")
	}
	for _, r := range reqs {
		if auth := r.Header.Get("Authorization"); auth != "" {
			t.Fatalf("the stranger got Authorization %q", auth)
		}
		if r.Header.Get(meshauth.Header) == "" {
			t.Fatalf("the request to a peer carries no mesh proof")
		}
		for _, v := range r.Header {
			if strings.Contains(strings.Join(v, ","), token) {
				t.Fatalf("the admin token left the node in %v", r.Header)
			}
		}
	}
}

func TestTransparencyThroughAChain(t *testing.T) {
	// The transparency table through a root, a relay and a leaf: one case's
	// ordinary outcomes (a close between events, an unterminated block)
	// must not take a parent away from the other cases' streams.
	cases := transparencyCases()
	up := newScriptUpstream(t, cases)
	upAddr := up.Addr()
	script := BackendSpec{Name: "script", URI: "http://" + upAddr + "/n/", Mount: "/n", Prefix: true}
	nodes := startMesh(t, []chainNode{{"root", 0}, {"relay", 1}, {"leaf", 2}}, []BackendSpec{script}, nil)
	t.Run("cases", func(t *testing.T) { playTransparency(t, cases, up, upAddr, nodes[2].Addr()) })
	for _, n := range nodes {
		if avoided := n.routing.avoid.set("", time.Now()); len(avoided) > 0 {
			t.Errorf("%s avoids %v for every stream after the table", n.ID(), avoided)
		}
	}
}

func TestEndStatesThroughAChain(t *testing.T) {
	// Every end state through root, relay and leaf is the one a single node
	// gives, and a direct EventSource's; none makes a node avoid a parent.
	cases := append(endStateCases(),
		endStateCase{"unreachable", nil, false}, // the upstream of /single and /chain is closed for this one
	)
	up := newEndStateUpstream(t, cases)
	up.cases[len(cases)-1].answer = func(w http.ResponseWriter, _ *http.Request) {
		// A connection the upstream drops without an answer, every time.
		hj, _, _ := http.NewResponseController(w).Hijack()
		if hj != nil {
			hj.Close()
		}
	}
	upAddr := up.Addr()
	one := 1
	spec := func(name string) BackendSpec {
		return BackendSpec{Name: name, URI: "http://" + upAddr + "/" + name + "/", Mount: "/" + name, Prefix: true}
	}
	single := startNode(t, func() Config {
		c := testConfig(spec("single"))
		c.Relay.ConnectRetries = one
		return c
	}())
	nodes := startMesh(t, []chainNode{{"root", 0}, {"relay", 1}, {"leaf", 2}}, []BackendSpec{spec("chain")},
		func(c *Config) { c.Relay.ConnectRetries = one })
	got := playEndStates(t, up, upAddr, map[string]*Node{"single": single, "chain": nodes[2]})
	compareWithDirect(t, up, upAddr, got)
	for i, tc := range cases {
		if got["chain"][i] != got["single"][i] {
			t.Errorf("%s: through a chain %s, through one node %s", tc.name, got["chain"][i], got["single"][i])
		}
	}
	for _, n := range nodes {
		if avoided := n.routing.avoid.set("", time.Now()); len(avoided) > 0 {
			t.Errorf("%s avoids %v for every stream after the end states", n.ID(), avoided)
		}
	}
	// And the chain still serves a new stream at once.
	if o, err := fetchOutcome("http://" + nodes[2].Addr() + "/chain/7"); err != nil || !o.open {
		t.Fatalf("a new stream through the chain after the end states: %v %v", o, err)
	}
}
