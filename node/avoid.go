package node

import (
	"sync"
	"time"

	"github.com/ssemesh/ssemesh/relay"
)

// avoidScope is how much of a parent one failed request takes away.
type avoidScope int

const (
	avoidNone   avoidScope = iota // the stream's own outcome: keep the parent
	avoidStream                   // the parent cannot serve this stream now
	avoidParent                   // the parent itself is failing
)

// Codes a parent node answers with about itself. Anything else it answers
// (an upstream's status, 204, content type, a redirect, "unreachable") is
// the stream's outcome relayed from above and says nothing about the
// parent.
var parentCodes = map[string]avoidScope{
	relay.CodeShuttingDown: avoidParent, // draining: it takes no children
	codeMeshAuth:           avoidParent, // it does not take this node as a member
	codeLoop:               avoidStream, // this stream would loop through it
	codeMaxClients:         avoidStream, // full now; gossip will say so too
	codeMaxStreams:         avoidStream,
	codeIPConnections:      avoidStream,
	codeIPNewStreams:       avoidStream,
	codeIPTable:            avoidStream,
}

// classify decides what a failed attempt on a parent node means. A
// transport failure or a parent gone silent is the parent's; a refusal is
// the parent's only when its code says so; the end of a stream that
// delivered, or anything the parent relays, is not: one stream ending must
// not take a parent away from every other stream.
func classify(a *relay.Attempt) avoidScope {
	if a.Target.Parent == "" {
		return avoidNone
	}
	switch {
	case a.Code == relay.CodeUpstreamUnreachable && a.Status == 0:
		return avoidParent
	case a.Code == relay.CodeUpstreamIdle:
		return avoidParent
	}
	return parentCodes[a.Code]
}

// hideFromParent picks the refusals of a parent node that are its own
// (transport, or a code of parentCodes) or say it has no upstream yet:
// the stream asks for a target again instead of failing its subscribers.
func hideFromParent(e *relay.Error) bool {
	if e.Code == relay.CodeUpstreamUnreachable && e.Upstream == 0 {
		return true
	}
	if e.Code == relay.CodeNoUpstream {
		// The parent is still the right one; its own upstream will come.
		return true
	}
	_, own := parentCodes[e.Code]
	return own
}

// hideFromInstance picks the failures of one back-end instance among
// several: no answer, or a gateway error.
func hideFromInstance(e *relay.Error) bool {
	switch e.Upstream {
	case 0, 502, 503, 504:
		return true
	}
	return false
}

// instanceFailed reports an attempt that says the back-end instance itself
// is failing (no answer, a gateway status, silence), so the next attempt
// goes to the next instance. A stream the instance closed, or a refusal
// that is the stream's answer, stays where it is.
func instanceFailed(a *relay.Attempt) bool {
	switch {
	case a.Code == relay.CodeUpstreamUnreachable && a.Status == 0, a.Code == relay.CodeUpstreamIdle:
		return true
	case a.Status == 502, a.Status == 503, a.Status == 504:
		return true
	}
	return false
}

// avoidList is the set of parents to skip, for a while, for every stream
// or for one.
type avoidList struct {
	mu     sync.Mutex
	whole  map[string]time.Time   // parent -> until
	stream map[avoidKey]time.Time // (parent, stream) -> until
}

type avoidKey struct{ parent, stream string }

func newAvoidList() *avoidList {
	return &avoidList{whole: map[string]time.Time{}, stream: map[avoidKey]time.Time{}}
}

// add avoids parent (for stream, or for all when scope is avoidParent)
// until then. It reports whether the entry is new, for the log.
func (l *avoidList) add(parent, stream string, scope avoidScope, until time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch scope {
	case avoidParent:
		_, had := l.whole[parent]
		l.whole[parent] = until
		return !had
	case avoidStream:
		k := avoidKey{parent, stream}
		_, had := l.stream[k]
		l.stream[k] = until
		return !had
	}
	return false
}

// set is the parents stream must skip at now.
func (l *avoidList) set(stream string, now time.Time) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.whole))
	for id, until := range l.whole {
		if now.Before(until) {
			out[id] = true
		}
	}
	for k, until := range l.stream {
		if k.stream == stream && now.Before(until) {
			out[k.parent] = true
		}
	}
	return out
}

// expire drops entries that ran out and reports whether any did: streams
// steered away from those parents may move back.
func (l *avoidList) expire(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	expired := false
	for id, until := range l.whole {
		if !now.Before(until) {
			delete(l.whole, id)
			expired = true
		}
	}
	for k, until := range l.stream {
		if !now.Before(until) {
			delete(l.stream, k)
			expired = true
		}
	}
	return expired
}

// forgetStream drops the entries of a stream the node no longer holds.
func (l *avoidList) forgetStream(stream string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.stream {
		if k.stream == stream {
			delete(l.stream, k)
		}
	}
}

// clear drops every entry and returns how many there were.
func (l *avoidList) clear() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.whole) + len(l.stream)
	clear(l.whole)
	clear(l.stream)
	return n
}
