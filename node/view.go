package node

import (
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
			n.routing.prune()
			// A parent avoided after a failure or a refusal is a
			// candidate again when its entry runs out: the plan may
			// prefer it.
			n.routing.expire(time.Now())
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
	n.updateMounts(v.Backends)
	if !v.Serving && v.BackendsSynced {
		n.view.SetServing()
	}
	n.routing.apply(topologyView(v))
}
