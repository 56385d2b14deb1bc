package node

import (
	"context"
	"strings"
	"time"

	"github.com/ssemesh/ssemesh/topology"
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
		ClientAddr: n.Addr(),
		AdminAddr:  n.AdminAddr(),
		Clients:    n.relay.Clients(),
		Capacity:   n.cfg.Limits.MaxClients,
		Streams:    n.relay.Streams(),
		State:      state,
	}
}

// localReport is what this node alone knows: itself and the edge of every
// stream it carries. The mesh-wide report merges these from every node.
func (n *Node) localReport() topology.Report {
	r := topology.Report{GeneratedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	r.Nodes = []topology.NodeReport{{Node: n.self(), Reachable: true}}
	for _, s := range n.relay.StreamInfo() {
		e := topology.StreamEdge{Child: n.cfg.NodeID, LastEventID: s.LastEventID}
		r.Streams = append(r.Streams, topology.StreamReport{Stream: s.Key, Backend: n.backendName(s.Key), Edges: []topology.StreamEdge{e}})
	}
	return r
}

// backendName names the back end serving a stream key.
func (n *Node) backendName(key string) string {
	path, _, _ := strings.Cut(key, "?")
	if m := n.findMount(path); m != nil {
		return m.spec.Name
	}
	return ""
}

// TopologyReport is the mesh as this node can see it, narrowed to one
// stream when stream is not empty.
func (n *Node) TopologyReport(ctx context.Context, stream string) topology.Report {
	r := n.localReport()
	if stream != "" {
		kept := r.Streams[:0]
		for _, s := range r.Streams {
			if s.Stream == stream {
				kept = append(kept, s)
			}
		}
		r.Streams = kept
	}
	return r
}
