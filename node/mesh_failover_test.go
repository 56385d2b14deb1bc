package node

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/mesh"
	"github.com/ssemesh/ssemesh/topology"
)

// publisher publishes one event on a stream every interval while a failover
// runs, so that the failover happens with traffic in flight.
type publisher struct {
	be   *backend.Backend
	path string
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	last int
}

// startPublisher publishes at most max events, one per interval, until Stop.
func startPublisher(t *testing.T, be *backend.Backend, path string, every time.Duration, max int) *publisher {
	p := &publisher{be: be, path: path, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; i < max; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			id := be.Publish(path, 1)
			p.mu.Lock()
			p.last = int(id)
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.Stop() })
	return p
}

// Stop ends publishing and returns the id of the last event published.
func (p *publisher) Stop() int {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// childrenOf lists the nodes whose upstream for the stream is parent.
func childrenOf(parent string, nodes []*Node) []*Node {
	var out []*Node
	for _, n := range nodes {
		if upstreamOf(n, streamPath) == parent {
			out = append(out, n)
		}
	}
	return out
}

// busiest is the node among candidates carrying the most of nodes.
func busiest(candidates, nodes []*Node) *Node {
	var best *Node
	for _, c := range candidates {
		if best == nil || len(childrenOf(c.ID(), nodes)) > len(childrenOf(best.ID(), nodes)) {
			best = c
		}
	}
	return best
}

// gapsAndSwitches sums announced gaps and make-before-break switches.
func gapsAndSwitches(nodes []*Node) (gaps, switches uint64) {
	for _, n := range nodes {
		s := n.Relay().Metrics().Snapshot()
		gaps += s.Gaps
		switches += s.Reparents
	}
	return gaps, switches
}

func TestMeshGracefulRelayLeave(t *testing.T) {
	// A relay that shuts down hands its children over before it closes
	// anything: it goes unready, announces draining over gossip and leaves
	// Consul; its child nodes switch make-before-break and the relay stops
	// waiting as soon as the last one has gone, not at the end of the
	// handoff period. Its own clients are closed with a retry hint and
	// resume elsewhere with Last-Event-ID.
	const handoff = 30 * time.Second
	tr, _ := buildTree(t, func(c *Config) {
		c.Mesh.Handoff = Duration(handoff)
		c.Drain = Duration(500 * time.Millisecond)
		c.Relay.DrainRetry = time.Duration(200 * time.Millisecond)
	})
	cs := spreadClients(t, tr.leaves, 5)
	victim := busiest(tr.relays, tr.leaves)
	moved := childrenOf(victim.ID(), tr.leaves)
	if len(moved) == 0 {
		t.Fatal("no leaf takes the stream from a relay")
	}
	direct := make([]*ssetest.Client, 3)
	for i := range direct {
		direct[i] = ssetest.Dial(t, "http://"+victim.Addr()+streamPath, nil)
	}
	ssetest.Eventually(t, "direct clients attached", 10*time.Second, func() bool { return victim.Relay().Clients() == 3+len(moved) })
	tr.be.Publish(streamPath, 10)
	expectAll(t, append(slices.Clone(cs), direct...), 1, 10)

	// The stream is idle while the relay leaves: nothing is written that
	// would reveal a departed child, so the relay must watch for it.
	ready := "http://" + victim.AdminAddr() + "/readyz"
	start := time.Now()
	movedAt := make(chan time.Duration, 1)
	go func() {
		// Record when the last child has moved, for the figures.
		for time.Since(start) < handoff {
			all := true
			for _, l := range moved {
				if upstreamOf(l, streamPath) == victim.ID() {
					all = false
				}
			}
			if all {
				movedAt <- time.Since(start)
				return
			}
			time.Sleep(2 * time.Millisecond) // sampling interval, not synchronisation
		}
		close(movedAt)
	}()
	shut := make(chan error, 1)
	go func() { shut <- victim.Shutdown(context.Background()) }()
	// Readiness goes first: Consul's check and load balancers stop sending.
	ssetest.Eventually(t, "readyz 503 while leaving", 5*time.Second, func() bool {
		resp, err := http.Get(ready)
		if err != nil {
			return true // already closed: it was unready before that
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	took := time.Since(start)
	t.Logf("graceful leave of %s: %d child nodes moved within %s, shutdown took %s", victim.ID(), len(moved), (<-movedAt).Round(time.Millisecond), took.Round(time.Millisecond))
	if took >= handoff {
		t.Fatalf("shutdown took %s: it waited out the handoff period instead of seeing its children leave", took)
	}
	for _, l := range moved {
		if p := upstreamOf(l, streamPath); p == victim.ID() || !strings.HasPrefix(p, "relay-") {
			t.Errorf("leaf %s takes the stream from %q after %s left, want the other relay", l.ID(), p, victim.ID())
		}
	}

	// The relay's own clients had everything and get a retry hint with the
	// close; each resumes on a leaf from where it stopped.
	resumed := make([]*ssetest.Client, len(direct))
	for i, c := range direct {
		evs := c.ExpectEnd(t, 10*time.Second)
		var ids []string
		retry := false
		for _, ev := range evs {
			if ev.HasData {
				ids = append(ids, ev.ID)
			}
			if ev.Retry >= 0 {
				retry = true
			}
		}
		if !retry {
			t.Errorf("direct client %d: no retry hint before the close", i)
		}
		if len(ids) != 0 {
			t.Fatalf("direct client %d got %v after the first ten, want nothing", i, ids)
		}
		resumed[i] = ssetest.Dial(t, "http://"+tr.leaves[i].Addr()+streamPath, http.Header{"Last-Event-ID": {"10"}})
	}

	tr.be.Publish(streamPath, 10)
	expectAll(t, append(slices.Clone(cs), resumed...), 11, 20)
	if gaps, switches := gapsAndSwitches(tr.leaves); gaps != 0 || switches < uint64(len(moved)) {
		t.Errorf("leaves announced %d gaps and made %d switches; want 0 gaps and at least %d switches", gaps, switches, len(moved))
	}
	if st := tr.be.Stats(streamPath); st.Total != 1 {
		t.Errorf("back end saw %d connections, want 1: a relay's leave must not reach it", st.Total)
	}
}

func TestMeshNewRelayTakesChildrenWithoutLoss(t *testing.T) {
	// A relay that joins wins some leaves by rendezvous hashing; they move
	// to it make-before-break: no gap, no duplicate, no failed upstream.
	tr, agent := buildTree(t, nil)
	cs := spreadClients(t, tr.leaves, 5)
	tr.be.Publish(streamPath, 5)
	expectAll(t, cs, 1, 5)

	// Pick a relay name that the current plan would hand at least one leaf.
	v := topologyView(tr.leaves[0].MeshView())
	var newID string
	var winners []string
	for i := 0; i < 50 && newID == ""; i++ {
		id := "relay-new-" + strconv.Itoa(i)
		tv := v
		tv.Nodes = append(slices.Clone(v.Nodes), topology.Node{ID: id, DC: "dc1", Tier: 1, ClientAddr: "127.0.0.1:1", Capacity: 1000, State: topology.StateAlive})
		plan := topology.NewPlan(tv)
		for _, l := range tr.leaves {
			if c := plan.Choose(l.ID(), streamPath, "dc1", nil); c.OK && !c.Backend && c.Parent.ID == id {
				winners = append(winners, l.ID())
			}
		}
		if len(winners) > 0 {
			newID = id
		}
	}
	if newID == "" {
		t.Fatal("no relay name in 50 takes a leaf: rendezvous hashing is not spreading")
	}
	errsBefore := upstreamErrors(tr.leaves)
	pub := startPublisher(t, tr.be, streamPath, 20*time.Millisecond, 1000)
	nr := meshNode(t, meshSpec{id: newID, dc: "dc1", tier: 1, consul: agent.HTTPAddr, seeds: []string{tr.roots[0].GossipAddr()}}, nil)
	for _, l := range tr.leaves {
		if slices.Contains(winners, l.ID()) {
			ssetest.Eventually(t, "leaf "+l.ID()+" moved to "+newID, 15*time.Second, func() bool {
				return upstreamOf(l, streamPath) == newID && nr.Relay().ChildClients() > 0
			})
		}
	}
	last := pub.Stop()
	expectAll(t, cs, 6, last)
	if gaps, switches := gapsAndSwitches(tr.leaves); gaps != 0 || switches < uint64(len(winners)) {
		t.Errorf("leaves announced %d gaps and made %d switches; want 0 gaps, at least %d switches", gaps, switches, len(winners))
	}
	if after := upstreamErrors(tr.leaves); after != errsBefore {
		t.Errorf("leaves counted %d upstream errors during a planned move (before: %d)", after, errsBefore)
	}
}

// upstreamErrors sums the nodes' failed upstream attempts.
func upstreamErrors(nodes []*Node) uint64 {
	var n uint64
	for _, node := range nodes {
		for _, v := range node.Relay().Metrics().Snapshot().UpstreamErrors {
			n += v
		}
	}
	return n
}

func TestMeshRootRestartCycle(t *testing.T) {
	// Kill the owning root, let the other take over, then start the owner
	// again under the same ID (new ports; its old Consul registration still
	// names the old ones). Ownership returns to it, since rendezvous
	// hashing is stable, and the back end sees one connection per owner and
	// never two for longer than a switch.
	tr, agent := buildTree(t, nil)
	cs := spreadClients(t, tr.leaves, 5)
	tr.be.Publish(streamPath, 5)
	expectAll(t, cs, 1, 5)

	owner, other := tr.owner(t)
	pub := startPublisher(t, tr.be, streamPath, 20*time.Millisecond, 2000)
	cw := watchConns(t, tr.be, streamPath)
	start := time.Now()
	cw.mark("owner killed")
	owner.Kill()
	ssetest.Eventually(t, "the other root owns the back-end connection", 15*time.Second, func() bool {
		return upstreamOf(other, streamPath) == "" && tr.be.Stats(streamPath).Open == 1
	})
	t.Logf("takeover by %s within %s", other.ID(), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	cw.mark("owner restarts under its ID")
	back := meshNode(t, meshSpec{id: owner.ID(), dc: "dc1", tier: 0, consul: agent.HTTPAddr, seeds: []string{other.GossipAddr()}}, nil)
	ssetest.Eventually(t, "ownership returns to the restarted root", 30*time.Second, func() bool {
		return upstreamOf(back, streamPath) == "" && upstreamOf(other, streamPath) == back.ID() && tr.be.Stats(streamPath).Open == 1
	})
	t.Logf("ownership back at %s within %s of its restart", back.ID(), time.Since(start).Round(time.Millisecond))
	// Nodes that avoided the dead root after their connection to it failed
	// take it back as a parent once the avoid period ends.
	nodes := append(slices.Clone(tr.relays), tr.leaves...)
	nodes = append(nodes, other, back)
	ssetest.Eventually(t, "every node back on its planned parent", 30*time.Second, func() bool {
		for _, n := range nodes {
			if !onPlan(n) {
				return false
			}
		}
		return true
	})
	svc, _, err := agent.Client(t).Agent().Service(back.ID(), nil)
	if err != nil || svc.Meta[mesh.NodeMetaClient] != back.Addr() {
		t.Errorf("Consul registration of the restarted root: %+v (%v), want client address %s", svc, err, back.Addr())
	}

	last := pub.Stop()
	expectAll(t, cs, 6, last)
	changes := cw.Stop()
	for _, c := range changes {
		t.Logf("back end %+8.3fs: open %d, total %d %s", c.at.Seconds(), c.open, c.total, c.what)
	}
	// Two connections at once happen only inside a make-before-break
	// switch, which holds both for one upstream handshake.
	var samples []connChange
	for _, c := range changes {
		if c.what == "" {
			samples = append(samples, c)
		}
	}
	for i, c := range samples {
		if c.open > 2 {
			t.Errorf("back end held %d connections at %s", c.open, c.at)
		}
		if c.open == 2 && i+1 < len(samples) && samples[i+1].at-c.at > 2*time.Second {
			t.Errorf("back end held two connections for %s", samples[i+1].at-c.at)
		}
	}
	// Besides the three owners' connections, a root may fetch history for
	// a child that resumes from an id older than its fresh buffer: a short
	// request each (to the back end or to the other root), counted by the
	// relay.
	var catchUps int
	for _, r := range []*Node{other, back} {
		catchUps += int(r.Relay().Metrics().Snapshot().CatchUps)
	}
	st := tr.be.Stats(streamPath)
	if st.Total < 3 || st.Total > 3+catchUps || st.Open != 1 {
		t.Fatalf("back end saw %d connections (%d open) over the cycle, want 3 (owner, successor, owner again) plus at most the roots' %d catch-up fetches, 1 open", st.Total, st.Open, catchUps)
	}
	for i, id := range st.LastEventIDs[1:] {
		if id == "" {
			t.Errorf("connection %d opened without Last-Event-ID", i+2)
		}
	}
}

func TestMeshSurvivesConsulOutage(t *testing.T) {
	// The Consul agent goes away for 30 s. The mesh keeps serving from its
	// last view; when the agent is back (having loaded a back end an
	// operator registered while it was down), every node picks it up.
	tr, agent := buildTree(t, nil)
	cs := spreadClients(t, tr.leaves, 5)
	tr.be.Publish(streamPath, 5)
	expectAll(t, cs, 1, 5)

	// The test agent keeps its catalogue in memory; definition files bring
	// the back ends back at its restart, as a real agent's config would.
	host, port, _ := strings.Cut(tr.beAddr, ":")
	p, _ := strconv.Atoi(port)
	agent.WriteService(t, &api.AgentServiceRegistration{
		ID: "changelog-1", Name: "changelog", Address: host, Port: p,
		Tags: []string{"ssemesh"}, Meta: map[string]string{mesh.MetaPath: streamPath},
	})

	pub := startPublisher(t, tr.be, streamPath, 50*time.Millisecond, 2000)
	agent.Stop()
	for _, n := range tr.all() {
		ssetest.Eventually(t, "outage noticed by "+n.ID(), 15*time.Second, func() bool { return !n.MeshView().ConsulOK })
	}
	// Clients keep getting events while Consul is down, and a new client
	// on any leaf is served from the last known view.
	outageStart := time.Now()
	late := ssetest.Dial(t, "http://"+tr.leaves[3].Addr()+streamPath, nil)
	first, err := strconv.Atoi(late.Next(t, 10*time.Second).ID)
	if err != nil {
		t.Fatalf("late client: %v", err)
	}
	const liveblog = "/live/blog/sse"
	agent.WriteService(t, &api.AgentServiceRegistration{
		ID: "liveblog-1", Name: "liveblog", Address: host, Port: p,
		Tags: []string{"ssemesh"}, Meta: map[string]string{mesh.MetaPath: liveblog},
	})
	// Hold the outage for 30 s in all; the late client must see every
	// event, each within a few seconds, for the whole of it.
	want := first + 1
	for time.Since(outageStart) < 30*time.Second {
		if id := late.Next(t, 5*time.Second).ID; id != strconv.Itoa(want) {
			t.Fatalf("late client got id %s during the outage, want %d", id, want)
		}
		want++
	}
	for _, n := range tr.all() {
		if !n.ready.Load() {
			t.Fatalf("node %s went unready during the Consul outage", n.ID())
		}
	}
	agent.Restart(t)
	restarted := time.Now()
	for _, n := range tr.all() {
		ssetest.Eventually(t, n.ID()+" mounts the back end registered during the outage", 60*time.Second, func() bool {
			v := n.MeshView()
			return v.ConsulOK && n.findMount(liveblog) != nil
		})
	}
	t.Logf("every node mounted %s within %s of the agent's restart", liveblog, time.Since(restarted).Round(time.Millisecond))
	lb := ssetest.Dial(t, "http://"+tr.leaves[0].Addr()+liveblog, nil)
	ssetest.Eventually(t, "liveblog subscriber attached", 10*time.Second, func() bool { return tr.be.Stats(liveblog).Open == 1 })
	tr.be.Publish(liveblog, 3)
	if got := lb.IDs(t, 3, 10*time.Second); !slices.Equal(got, seq(1, 3)) {
		t.Fatalf("liveblog client got %v", got)
	}

	last := pub.Stop()
	expectAll(t, cs, 6, last)
	expectAll(t, []*ssetest.Client{late}, want, last)
	if st := tr.be.Stats(streamPath); st.Total != 1 {
		t.Errorf("back end saw %d connections for %s across the outage, want 1", st.Total, streamPath)
	}
}

// lastID is the id of the newest event published so far.
func (p *publisher) lastID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// onPlan reports whether the node's stream uses the parent its current plan
// chooses when nothing is avoided.
func onPlan(n *Node) bool {
	plan := n.routing.plan.Load()
	if plan == nil {
		return false
	}
	c := plan.Choose(n.ID(), streamPath, "dc1", nil)
	want := ""
	if !c.Backend {
		want = c.Parent.ID
	}
	return c.OK && upstreamOf(n, streamPath) == want
}

// connWatch samples a stream's back-end connection counts and keeps every
// change, for the figures in docs/topology.md and the two-connection bound.
type connWatch struct {
	be      *backend.Backend
	path    string
	t0      time.Time
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	changes []connChange
}

type connChange struct {
	at          time.Duration
	open, total int
	what        string
}

func watchConns(t *testing.T, be *backend.Backend, path string) *connWatch {
	w := &connWatch{be: be, path: path, t0: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		prev := connChange{open: -1}
		for {
			st := be.Stats(path)
			if st.Open != prev.open || st.Total != prev.total {
				prev = connChange{at: time.Since(w.t0), open: st.Open, total: st.Total}
				w.mu.Lock()
				w.changes = append(w.changes, prev)
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { w.Stop() })
	return w
}

// mark records an event of the test on the timeline.
func (w *connWatch) mark(what string) {
	st := w.be.Stats(w.path)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.changes = append(w.changes, connChange{at: time.Since(w.t0), open: st.Open, total: st.Total, what: "(" + what + ")"})
}

// Stop ends sampling and returns the timeline.
func (w *connWatch) Stop() []connChange {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.changes)
}

func TestMeshAvoidedParentIsTakenBackAfterAvoidPeriod(t *testing.T) {
	// A leaf that avoided its planned parent (after a failure or refusal)
	// goes back to it once the avoid period is over, make-before-break,
	// though nothing in the membership changed.
	const avoidFor = 2 * time.Second
	tr, _ := buildTree(t, func(c *Config) { c.Mesh.AvoidFor = Duration(avoidFor) })
	cs := spreadClients(t, tr.leaves, 3)
	tr.be.Publish(streamPath, 5)
	expectAll(t, cs, 1, 5)

	leaf := tr.leaves[0]
	planned := upstreamOf(leaf, streamPath)
	if !strings.HasPrefix(planned, "relay-") {
		t.Fatalf("leaf takes the stream from %q, want a relay", planned)
	}
	pub := startPublisher(t, tr.be, streamPath, 20*time.Millisecond, 1000)
	leaf.routing.avoid.add(planned, streamPath, avoidParent, time.Now().Add(avoidFor))
	leaf.routing.reroute()
	ssetest.Eventually(t, "leaf moved off the avoided parent", 10*time.Second, func() bool {
		p := upstreamOf(leaf, streamPath)
		return p != planned && strings.HasPrefix(p, "relay-")
	})
	moved := time.Now()
	ssetest.Eventually(t, "leaf back on its planned parent", 10*avoidFor, func() bool { return upstreamOf(leaf, streamPath) == planned })
	if back := time.Since(moved); back < avoidFor/2 {
		t.Fatalf("leaf returned after %s, before the avoid period (%s) was over", back, avoidFor)
	}
	last := pub.Stop()
	expectAll(t, cs, 6, last)
	if gaps, _ := gapsAndSwitches(tr.leaves); gaps != 0 {
		t.Fatalf("%d gaps announced", gaps)
	}
}
