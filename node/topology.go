package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ssemesh/ssemesh/internal/meshauth"
	"github.com/ssemesh/ssemesh/topology"
)

// Report scopes: what one admin request gathers.
const (
	scopeLocal = "local" // this node only
	scopeDC    = "dc"    // every node of this node's data centre
	scopeMesh  = "mesh"  // the data centre plus one node per other data centre
)

// self describes this node as the topology sees it.
func (n *Node) self() topology.Node {
	state := topology.StateAlive
	if !n.ready.Load() {
		state = topology.StateDraining
	}
	return topology.Node{
		ID:         n.cfg.NodeID,
		DC:         n.cfg.Mesh.DC,
		Tier:       n.cfg.Mesh.Tier,
		ClientAddr: n.advertised(n.Addr()),
		AdminAddr:  n.advertised(n.AdminAddr()),
		Clients:    n.relay.Clients(),
		Capacity:   n.live().cfg.Limits.MaxClients,
		Streams:    n.relay.Streams(),
		State:      state,
	}
}

// localEdge is one stream's edge as this node reports it, with what the
// merge needs to compute lag against the parent.
type localEdge struct {
	topology.StreamEdge
	Stream   string    `json:"stream"`
	Backend  string    `json:"backend"`
	LastAt   time.Time `json:"lastAt"`
	EventsIn uint64    `json:"eventsIn"`
}

// localState is what this node alone knows: itself and its edges.
type localState struct {
	Node  topology.Node `json:"node"`
	Edges []localEdge   `json:"edges"`
}

func (n *Node) localState() localState {
	ls := localState{Node: n.self()}
	for _, s := range n.relay.StreamInfo() {
		parent := ""
		if rt := n.routing.lookup(s.Key); rt != nil {
			parent, _ = rt.current()
		}
		e := localEdge{
			StreamEdge: topology.StreamEdge{Child: n.cfg.NodeID, Parent: parent, LastEventID: s.LastEventID},
			Stream:     s.Key,
			Backend:    n.backendName(s.Key),
			LastAt:     s.LastAt,
			EventsIn:   s.EventsIn,
		}
		if age := time.Since(s.Opened).Seconds(); age > 0 {
			e.EventsPerSec = float64(s.EventsIn) / age
		}
		ls.Edges = append(ls.Edges, e)
	}
	return ls
}

// backendName names the back end serving a stream key.
func (n *Node) backendName(key string) string {
	path, _, _ := strings.Cut(key, "?")
	if m := n.findMount(path); m != nil {
		return m.spec.Name
	}
	return ""
}

// gathered is the raw material of a report: node states and their edges.
type gathered struct {
	States      []localState `json:"states"`
	Unreachable []unreached  `json:"unreachable,omitempty"`
}

type unreached struct {
	Node topology.Node `json:"node"`
	Err  string        `json:"error"`
}

// gather collects local states for scope: this node, its data centre's
// members (through their admin APIs) and, for scopeMesh, one reachable node
// of every other data centre asked for its own data centre.
func (n *Node) gather(ctx context.Context, scope string) gathered {
	g := gathered{States: []localState{n.localState()}}
	if scope == scopeLocal || n.mesh == nil {
		return g
	}
	v := n.mesh.View()
	tv := topologyView(v)
	var mu sync.Mutex
	var wg sync.WaitGroup
	ask := func(peer topology.Node, s string) bool {
		var got gathered
		err := n.fetchJSON(ctx, peer.AdminAddr, gatherPath+"?scope="+s, &got)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			g.Unreachable = append(g.Unreachable, unreached{Node: peer, Err: err.Error()})
			return false
		}
		g.States = append(g.States, got.States...)
		g.Unreachable = append(g.Unreachable, got.Unreachable...)
		return true
	}
	others := map[string][]topology.Node{}
	for _, m := range tv.Nodes {
		switch {
		case m.ID == n.cfg.NodeID:
		case m.DC == n.cfg.Mesh.DC:
			if m.State == topology.StateLeft || m.State == topology.StateUnreachable {
				mu.Lock()
				g.Unreachable = append(g.Unreachable, unreached{Node: m, Err: "node is " + string(m.State)})
				mu.Unlock()
				continue
			}
			wg.Add(1)
			go func(m topology.Node) { defer wg.Done(); ask(m, scopeLocal) }(m)
		case scope == scopeMesh:
			others[m.DC] = append(others[m.DC], m)
		}
	}
	for dc, peers := range others {
		wg.Add(1)
		go func(dc string, peers []topology.Node) {
			defer wg.Done()
			// One reachable node speaks for its data centre; try them in
			// order until one answers.
			for _, p := range peers {
				if ask(p, scopeDC) {
					return
				}
			}
		}(dc, peers)
	}
	wg.Wait()
	return g
}

// gatherPath is where peers ask each other for their part of the report.
const gatherPath = "/v1/topology/gather"

// fetchJSON GETs an admin path of a peer. The request proves this node's
// mesh membership; the admin token stays on this node, whatever admin
// address a peer advertises.
func (n *Node) fetchJSON(ctx context.Context, addr, path string, v any) error {
	if addr == "" {
		return fmt.Errorf("no admin address")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.tls.scheme()+"://"+addr+path, nil)
	if err != nil {
		return err
	}
	if n.live().signer != nil {
		req.Header.Set(meshauth.Header, n.live().signer.Sign(meshauth.PurposeAdmin, requestTarget(req), ""))
	}
	resp, err := n.peerClient.Do(req)
	if err != nil {
		return fmt.Errorf("asking %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("asking %s: status %d", addr, resp.StatusCode)
	}
	// A peer's report is bounded: a node that answers without end must not
	// exhaust this one.
	return json.NewDecoder(io.LimitReader(resp.Body, maxGatherBytes)).Decode(v)
}

// maxGatherBytes bounds one peer's part of the topology report.
const maxGatherBytes = 64 << 20

// TopologyReport is the whole mesh as this node can see it, all data
// centres, narrowed to one stream when stream is not empty. Nodes that could
// not be asked are listed as unreachable, never dropped.
func (n *Node) TopologyReport(ctx context.Context, stream string) topology.Report {
	return n.buildReport(n.gather(ctx, scopeMesh), stream)
}

func (n *Node) buildReport(g gathered, stream string) topology.Report {
	r := topology.Report{GeneratedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	nodes := map[string]*topology.NodeReport{}
	add := func(nd topology.Node, reachable bool, err string) {
		if prev, ok := nodes[nd.ID]; ok && prev.Reachable {
			return
		}
		nodes[nd.ID] = &topology.NodeReport{Node: nd, Reachable: reachable, Error: err}
	}
	if n.mesh != nil {
		// Membership first, so nodes nobody could ask still appear.
		for _, m := range topologyView(n.mesh.View()).Nodes {
			add(m, false, "not asked")
		}
	}
	type key struct{ stream, node string }
	edges := map[key]localEdge{}
	streams := map[string]string{}
	for _, ls := range g.States {
		if prev, ok := nodes[ls.Node.ID]; ok && prev.State != topology.StateAlive && ls.Node.State == topology.StateAlive {
			ls.Node.State = prev.State // this node's view of a peer wins over the peer's own claim
		}
		add(ls.Node, true, "")
		for _, e := range ls.Edges {
			if stream != "" && e.Stream != stream {
				continue
			}
			edges[key{e.Stream, e.Child}] = e
			streams[e.Stream] = e.Backend
		}
	}
	for _, u := range g.Unreachable {
		if prev, ok := nodes[u.Node.ID]; ok && prev.Reachable {
			continue
		}
		add(u.Node, false, u.Err)
		r.Unreachable = append(r.Unreachable, u.Node.ID)
	}
	for _, nr := range nodes {
		if !nr.Reachable && nr.Error == "not asked" {
			r.Unreachable = append(r.Unreachable, nr.ID)
		}
		r.Nodes = append(r.Nodes, *nr)
	}
	sort.Slice(r.Nodes, func(i, j int) bool { return r.Nodes[i].ID < r.Nodes[j].ID })
	sort.Strings(r.Unreachable)
	r.Unreachable = compactStrings(r.Unreachable)

	plan := n.routing.plan.Load()
	for s, backend := range streams {
		sr := topology.StreamReport{Stream: s, Backend: backend, Edges: []topology.StreamEdge{}}
		if plan != nil {
			dc := ""
			if m := n.findMount(strings.SplitN(s, "?", 2)[0]); m != nil {
				dc = m.dc
			}
			if o, ok := plan.Owner(s, dc); ok {
				sr.Owner = o.ID
			}
		}
		for k, e := range edges {
			if k.stream != s {
				continue
			}
			if p, ok := edges[key{s, e.Parent}]; ok && e.Parent != "" {
				e.LagEvents = idLag(p.LastEventID, e.LastEventID)
				if e.LastEventID != p.LastEventID && !p.LastAt.IsZero() && !e.LastAt.IsZero() {
					e.LagMs = float64(p.LastAt.Sub(e.LastAt).Microseconds()) / 1000
				}
			}
			if e.Parent == "" && sr.Owner == "" {
				sr.Owner = e.Child
			}
			sr.Edges = append(sr.Edges, e.StreamEdge)
		}
		sort.Slice(sr.Edges, func(i, j int) bool { return sr.Edges[i].Child < sr.Edges[j].Child })
		r.Streams = append(r.Streams, sr)
	}
	sort.Slice(r.Streams, func(i, j int) bool { return r.Streams[i].Stream < r.Streams[j].Stream })
	return r
}

// idLag is how many events a child is behind when ids are integers (the
// usual change-log case); 0 when they are not comparable.
func idLag(parent, child string) int64 {
	p, err1 := strconv.ParseInt(parent, 10, 64)
	c, err2 := strconv.ParseInt(child, 10, 64)
	if err1 != nil || err2 != nil || p < c {
		return 0
	}
	return p - c
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// gatherHandler serves /v1/topology/gather?scope=local|dc for peers.
func (n *Node) gatherHandler(w http.ResponseWriter, r *http.Request) {
	scope := r.URL.Query().Get("scope")
	if scope != scopeLocal && scope != scopeDC {
		n.renderError(w, r, &httpError{Status: http.StatusBadRequest, Code: "bad_request", Message: "scope must be local or dc"})
		return
	}
	writeJSON(w, http.StatusOK, n.gather(r.Context(), scope))
}
