package node

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/relay"
	"github.com/ssemesh/ssemesh/topology"
)

// route is what the node knows about one stream beyond the relay: where its
// upstream is now and which back-end instance it last used. Every node keys
// a stream by the client's path and query, so a child asks its parent for
// exactly the key its own clients asked for.
type route struct {
	n       *Node
	key     string
	path    string
	query   string
	backend string   // mount name
	via     []string // ancestry of the request that opened the stream

	mu       sync.Mutex
	parent   string // current parent node ID; "" = the back end
	instance int    // back-end instance index, advanced on failure
	chosen   bool
}

// route returns the stream's route, creating it for the first subscriber.
// A route left from a stream the relay no longer holds is replaced: its
// ancestry and back end belong to the request that opened the old stream,
// and reusing them would refuse a chain that is no longer a loop.
func (n *Node) route(key, path, query, backend string, via []string) *route {
	open := n.streams.Has(key)
	n.routesMu.Lock()
	defer n.routesMu.Unlock()
	rt := n.routes[key]
	if rt == nil || !open {
		rt = &route{n: n, key: key, path: path, query: query, backend: backend, via: via}
		n.routes[key] = rt
	}
	return rt
}

// pruneRoutes forgets routes of streams the relay no longer holds.
func (n *Node) pruneRoutes() {
	open := map[string]bool{}
	for _, k := range n.streams.Keys() {
		open[k] = true
	}
	n.routesMu.Lock()
	for k := range n.routes {
		if !open[k] {
			delete(n.routes, k)
			n.avoid.forgetStream(k)
		}
	}
	n.routesMu.Unlock()
}

// target is the stream's relay.TargetFunc: the back end for a node outside
// a mesh or for the stream's owner, the chosen parent otherwise.
func (rt *route) target(prev *relay.Attempt) (relay.Target, error) {
	n := rt.n
	if prev != nil {
		rt.noteFailure(prev)
	}
	m := n.findMount(rt.path)
	if m == nil {
		return relay.Target{}, fmt.Errorf("back end %s is no longer mounted", rt.backend)
	}
	if n.view == nil {
		return rt.backendTarget(m)
	}
	c, err := n.choose(rt.key, m.dc)
	if err != nil {
		return relay.Target{}, err
	}
	rt.mu.Lock()
	rt.chosen = true
	if c.Backend {
		rt.parent = ""
		rt.mu.Unlock()
		return rt.backendTarget(m)
	}
	rt.parent = c.Parent.ID
	rt.mu.Unlock()
	u, err := parentURL(n.tls.scheme(), c.Parent.ClientAddr, rt.key)
	if err != nil {
		return relay.Target{}, fmt.Errorf("parent %s: %w", c.Parent.ID, err)
	}
	return relay.Target{
		URL:      u.String(),
		Label:    fmt.Sprintf("node %s (%s)", c.Parent.ID, c.Parent.ClientAddr),
		Parent:   c.Parent.ID,
		Fallback: true,
		Hide:     hideFromParent,
		Prepare:  rt.sign,
		TLS:      n.tls.meshFor(c.Parent.ClientAddr),
	}, nil
}

// noteFailure steers away from what failed: a parent, for this stream or
// for all, when the failure was the parent's own; the next back-end
// instance when an instance failed.
func (rt *route) noteFailure(a *relay.Attempt) {
	n := rt.n
	if a.Target.Parent == "" {
		if instanceFailed(a) {
			rt.mu.Lock()
			rt.instance++ // fail over to the next back-end instance
			rt.mu.Unlock()
		}
		return
	}
	scope := classify(a)
	if scope == avoidNone || n.cfg.Mesh.AvoidFor <= 0 {
		return
	}
	if n.avoid.add(a.Target.Parent, rt.key, scope, time.Now().Add(n.cfg.Mesh.AvoidFor.D())) {
		what := "every stream"
		if scope == avoidStream {
			what = "this stream"
		}
		n.log.WithFields(logrus.Fields{"parent": a.Target.Parent, "stream": rt.key, "for": n.cfg.Mesh.AvoidFor.D(), "scope": what, "code": a.Code, "reason": a.Reason}).Warn("avoiding parent")
	}
}

// sign adds the ancestry and the mesh proof to a request to a parent or a
// chained back end.
func (rt *route) sign(req *http.Request) { rt.n.signStream(req, rt.via) }

func (rt *route) backendTarget(m *mount) (relay.Target, error) {
	if len(m.instances) == 0 {
		return relay.Target{}, fmt.Errorf("back end %s has no passing instance", m.spec.Name)
	}
	rt.mu.Lock()
	i := rt.instance
	rt.mu.Unlock()
	u, err := m.upstreamURL(i, rt.path, rt.query)
	if err != nil {
		return relay.Target{}, err
	}
	t := relay.Target{URL: u.String(), Header: m.header, Label: redactURL(u), TLS: m.tls, Version: m.version}
	if len(m.instances) > 1 {
		t.Fallback, t.Hide = true, hideFromInstance
	}
	if m.spec.Chained {
		// Another ssemesh node, chained by configuration: it may refuse a
		// loop, and counts this node as a child.
		t.Prepare = rt.sign
	}
	return t, nil
}

// current reports the parent the stream uses now ("" = back end) and
// whether a choice was made at all: the relay's live connection when there
// is one (a switch the new parent refused leaves the stream on the old),
// else the last choice.
func (rt *route) current() (string, bool) {
	if p, live := rt.n.streams.LiveParent(rt.key); live {
		return p, true
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.parent, rt.chosen
}

var errNoView = errors.New("mesh view not ready yet")

// choose asks the topology for the stream's upstream on the current view.
func (n *Node) choose(key, backendDC string) (topology.Choice, error) {
	plan := n.plan.Load()
	if plan == nil {
		return topology.Choice{}, errNoView
	}
	c := plan.Choose(n.cfg.NodeID, key, backendDC, n.avoid.set(key, time.Now()))
	if !c.OK {
		return c, errors.New(c.Reason)
	}
	return c, nil
}

// findMount returns the mount serving path: exact mounts, or the longest
// prefix mount on a path boundary.
func (n *Node) findMount(path string) *mount {
	for _, m := range n.mountList() {
		if m.matches(path) {
			return m
		}
	}
	return nil
}

// mountList is the current mount table, longest mount first.
func (n *Node) mountList() []*mount {
	if p := n.mounts.Load(); p != nil {
		return *p
	}
	return nil
}

// setMounts publishes a new mount table.
func (n *Node) setMounts(ms []*mount) {
	sort.SliceStable(ms, func(i, j int) bool { return len(ms[i].spec.Mount) > len(ms[j].spec.Mount) })
	n.mounts.Store(&ms)
}
