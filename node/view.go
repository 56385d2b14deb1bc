package node

import (
	"sort"
	"strings"
	"time"

	"github.com/ssemesh/ssemesh/mesh"
	"github.com/ssemesh/ssemesh/topology"
)

// warmupLimit bounds how long a node in a mesh with Consul waits for its
// back ends before it takes children anyway (Consul may be unreachable).
const warmupLimit = 10 * time.Second

// followMesh applies every new view and reports this node's load, until
// shutdown begins.
func (n *Node) followMesh() {
	load := time.NewTicker(time.Second)
	defer load.Stop()
	warmup := time.NewTimer(warmupLimit)
	defer warmup.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-warmup.C:
			if v := n.view.View(); !v.Serving && n.ready.Load() {
				n.log.WithField("after", warmupLimit).Warn("back ends in Consul not all read yet: taking children with what is known")
				n.view.SetServing()
			}
		case <-n.view.Changed():
			n.applyView()
		case <-load.C:
			n.view.SetLoad(n.streams.Clients(), n.streams.Streams())
			n.pruneRoutes()
			if n.avoid.expire(time.Now()) {
				// A parent avoided after a failure or a refusal is a
				// candidate again: the plan may prefer it.
				n.reroute()
			}
		}
	}
}

// topologyView turns the mesh's members into the topology's nodes.
func topologyView(v *mesh.View) topology.View {
	tv := topology.View{Nodes: make([]topology.Node, 0, len(v.Members))}
	for _, m := range v.Members {
		st := topology.StateAlive
		switch m.State {
		case mesh.StateSuspect:
			st = topology.StateSuspect
		case mesh.StateDraining:
			st = topology.StateDraining
		case mesh.StateLeft:
			st = topology.StateLeft
		case mesh.StateDead:
			st = topology.StateUnreachable
		}
		if m.Draining && st == topology.StateAlive {
			st = topology.StateDraining
		}
		tv.Nodes = append(tv.Nodes, topology.Node{
			ID: m.ID, DC: m.DC, Tier: m.Tier,
			ClientAddr: m.ClientAddr, AdminAddr: m.AdminAddr,
			Clients: m.Clients, Capacity: m.Capacity, Streams: m.Streams,
			State: st,
		})
	}
	return tv
}

// applyView installs a new view: the plan every stream's target is chosen
// from, the mounts of back ends found in Consul, and a make-before-break
// switch for every stream whose upstream changed.
func (n *Node) applyView() {
	v := n.view.View()
	if v == nil {
		return
	}
	tv := topologyView(v)
	n.plan.Store(topology.NewPlan(tv))
	n.updateMounts(v.Backends)
	if !v.Serving && v.BackendsSynced {
		n.view.SetServing()
	}
	n.forgetAvoidOnChange(tv)
	n.reroute()
}

// forgetAvoidOnChange clears the avoided parents when membership changed.
// An avoid entry works around what the view did not know yet: a parent that
// died, or one that could not serve because its own parent died. Once the
// view knows, the plan routes around the dead node by itself, and keeping
// the entries would only keep streams off healthy parents (a root that
// answered 502 while the owner was dying is the new owner a moment later).
// A parent that still fails is avoided again at its next failure.
func (n *Node) forgetAvoidOnChange(v topology.View) {
	ids := make([]string, 0, len(v.Nodes))
	for _, m := range v.Nodes {
		ids = append(ids, m.ID+"="+string(m.State))
	}
	sort.Strings(ids)
	sig := strings.Join(ids, ",")
	if sig == n.members {
		return
	}
	n.members = sig
	if k := n.avoid.clear(); k > 0 {
		n.log.WithField("entries", k).Info("membership changed: avoided parents are candidates again")
	}
}

// reroute moves every stream whose chosen upstream differs from the one it
// uses, make-before-break.
func (n *Node) reroute() {
	n.routesMu.Lock()
	routes := make([]*route, 0, len(n.routes))
	for _, rt := range n.routes {
		routes = append(routes, rt)
	}
	n.routesMu.Unlock()
	for _, rt := range routes {
		cur, chosen := rt.current()
		if !chosen {
			continue
		}
		m := n.findMount(rt.path)
		if m == nil {
			continue
		}
		c, err := n.choose(rt.key, m.dc)
		if err != nil {
			continue // keep what works until the view offers something
		}
		next := ""
		if !c.Backend {
			next = c.Parent.ID
		}
		if next != cur {
			n.log.WithFields(map[string]any{"stream": rt.key, "from": orBackend(cur), "to": orBackend(next)}).Info("re-parenting stream")
			n.streams.Retarget(rt.key)
		}
	}
}

func orBackend(id string) string {
	if id == "" {
		return "back end"
	}
	return id
}
