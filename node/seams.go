package node

import "github.com/ssemesh/ssemesh/mesh"

// streamRelay is what routing needs from the relay: which streams it
// holds, where each is connected now, a make-before-break switch, and the
// load the node gossips. *relay.Relay is the one in production; routing
// tests use a fake.
type streamRelay interface {
	// Has reports whether the relay holds stream key.
	Has(key string) bool
	// Keys are the streams the relay holds.
	Keys() []string
	// LiveParent is the parent node a stream is connected to now ("" =
	// the back end), and whether it is connected at all.
	LiveParent(key string) (string, bool)
	// Retarget asks a stream for its target again and switches to it,
	// make-before-break.
	Retarget(key string)
	// Clients and Streams are the load gossiped to peers.
	Clients() int
	Streams() int
}

// meshView is what following the mesh needs from it: the current view, a
// signal when it changes, and this node's own announcements. *mesh.Mesh is
// the one in production; routing tests use a fake.
type meshView interface {
	View() *mesh.View
	Changed() <-chan struct{}
	SetServing()
	SetLoad(clients, streams int)
	// SetCapacity announces a new limits.max_clients after a reload.
	SetCapacity(capacity int)
}
