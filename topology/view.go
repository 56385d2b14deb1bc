// Package topology decides, from a snapshot of the mesh, where every node
// takes every stream from, and builds and checks the tree report that the
// admin API shows.
//
// Everything here is a pure function of its arguments: no network, no clock,
// no goroutines, no logging. Every node of the mesh evaluates the same
// functions on (ideally) the same view, so the functions must be
// deterministic: map iteration order, slice order of View.Nodes and the
// platform never influence a result. See docs/topology.md for the algorithm
// and its invariants.
package topology

// State is a node's membership state as the mesh layer reports it.
type State string

// Membership states. Only StateAlive nodes are chosen as parents or owners;
// StateDraining nodes stand in as a data centre's gateway when nothing in
// that data centre is alive.
const (
	StateAlive       State = "alive"
	StateSuspect     State = "suspect"
	StateDraining    State = "draining"
	StateLeft        State = "left"
	StateUnreachable State = "unreachable"
)

// Node is one mesh member as seen in a view.
type Node struct {
	ID string `json:"id"`
	DC string `json:"dc"`
	// Tier 0 is a root (talks to back ends); higher tiers are further from
	// the back end.
	Tier       int    `json:"tier"`
	ClientAddr string `json:"clientAddr"`
	AdminAddr  string `json:"adminAddr"`
	Clients    int    `json:"clients"`
	// Capacity is the client limit; 0 means unlimited.
	Capacity int   `json:"capacity"`
	Streams  int   `json:"streams"`
	State    State `json:"state"`
}

// Full reports whether the node has reached its client capacity. Full nodes
// are skipped when a parent is picked among interchangeable candidates.
func (n Node) Full() bool {
	return n.Capacity > 0 && n.Clients >= n.Capacity
}

// Alive reports whether the node is in StateAlive.
func (n Node) Alive() bool { return n.State == StateAlive }

// View is an immutable snapshot of the mesh membership.
type View struct {
	// Nodes lists every known member. IDs are unique; when an ID appears
	// twice the first entry is used so that all callers agree.
	Nodes []Node
}
