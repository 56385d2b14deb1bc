package node

import (
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/ssemesh/ssemesh/relay"
)

// route is what the node knows about one stream beyond the relay: where its
// upstream is now and which back-end instance it last used. Every node keys
// a stream by the client's path and query, so a child asks its parent for
// exactly the key its own clients asked for.
type route struct {
	n       *Node
	r       *router
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

// route returns the stream's route, creating it for the first subscriber
// (router.get).
func (n *Node) route(key, path, query, backend string, via []string) *route {
	return n.routing.get(key, func() *route {
		return &route{n: n, r: n.routing, key: key, path: path, query: query, backend: backend, via: via}
	})
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
	c, err := rt.r.choose(rt.key, m.dc)
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
	if a.Target.Parent == "" {
		if instanceFailed(a) {
			rt.mu.Lock()
			rt.instance++ // fail over to the next back-end instance
			rt.mu.Unlock()
		}
		return
	}
	rt.r.noteParentFailure(rt.key, a)
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
	if p, live := rt.r.streams.LiveParent(rt.key); live {
		return p, true
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.parent, rt.chosen
}

// mountDC is the data centre of the back end mounted at path (router).
func (n *Node) mountDC(path string) (string, bool) {
	if m := n.findMount(path); m != nil {
		return m.dc, true
	}
	return "", false
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
