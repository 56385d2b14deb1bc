package node

import (
	"errors"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/relay"
	"github.com/ssemesh/ssemesh/topology"
)

// router decides where each stream's upstream is: it holds the streams'
// routes, the plan of the latest mesh view and the parents to avoid, and
// re-parents streams when the choice changes. It reaches the relay only
// through streamRelay and the mount table only through mountDC, so its
// decisions are unit-tested without a node (router_test.go).
type router struct {
	self     string
	log      logrus.FieldLogger
	streams  streamRelay
	avoidFor time.Duration
	// mountDC is the data centre of the back end mounted at path, and
	// whether one is.
	mountDC func(path string) (string, bool)

	plan  atomic.Pointer[topology.Plan]
	avoid *avoidList

	mu     sync.Mutex
	routes map[string]*route

	// members is the membership the avoid entries were made under; see
	// apply. Only the goroutine applying views touches it.
	members string
}

func newRouter(self string, streams streamRelay, avoidFor time.Duration, mountDC func(string) (string, bool), log logrus.FieldLogger) *router {
	return &router{
		self: self, log: log, streams: streams, avoidFor: avoidFor, mountDC: mountDC,
		avoid:  newAvoidList(),
		routes: map[string]*route{},
	}
}

// get returns stream key's route, made by create for the first subscriber.
// A route left from a stream the relay no longer holds is replaced: its
// ancestry and back end belong to the request that opened the old stream,
// and reusing them would refuse a chain that is no longer a loop.
func (r *router) get(key string, create func() *route) *route {
	open := r.streams.Has(key)
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.routes[key]
	if rt == nil || !open {
		rt = create()
		r.routes[key] = rt
	}
	return rt
}

// lookup returns stream key's route, or nil.
func (r *router) lookup(key string) *route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes[key]
}

// all returns every route.
func (r *router) all() []*route {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*route, 0, len(r.routes))
	for _, rt := range r.routes {
		out = append(out, rt)
	}
	return out
}

// prune forgets routes (and avoid entries) of streams the relay no longer
// holds.
func (r *router) prune() {
	open := map[string]bool{}
	for _, k := range r.streams.Keys() {
		open[k] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.routes {
		if !open[k] {
			delete(r.routes, k)
			r.avoid.forgetStream(k)
		}
	}
}

var errNoView = errors.New("mesh view not ready yet")

// choose asks the topology for the stream's upstream on the current view.
func (r *router) choose(key, backendDC string) (topology.Choice, error) {
	plan := r.plan.Load()
	if plan == nil {
		return topology.Choice{}, errNoView
	}
	avoid := r.avoid.set(key, time.Now())
	c := plan.Choose(r.self, key, backendDC, avoid)
	if !c.OK && len(avoid) > 0 {
		// Every candidate failed lately (as across a partition between
		// data centres): trying one of them again beats waiting with none
		// until an entry expires, long after the network may have healed.
		// The relay's backoff paces these attempts.
		if again := plan.Choose(r.self, key, backendDC, nil); again.OK {
			again.Reason += " (every candidate avoided: trying again)"
			return again, nil
		}
	}
	if !c.OK {
		return c, errors.New(c.Reason)
	}
	return c, nil
}

// noteParentFailure avoids the parent of a failed attempt on stream key,
// for that stream or for all, when the failure was the parent's own.
func (r *router) noteParentFailure(key string, a *relay.Attempt) {
	scope := classify(a)
	if scope == avoidNone || r.avoidFor <= 0 {
		return
	}
	if r.avoid.add(a.Target.Parent, key, scope, time.Now().Add(r.avoidFor)) {
		what := "every stream"
		if scope == avoidStream {
			what = "this stream"
		}
		r.log.WithFields(logrus.Fields{"parent": a.Target.Parent, "stream": key, "for": r.avoidFor, "scope": what, "code": a.Code, "reason": a.Reason}).Warn("avoiding parent")
	}
}

// apply installs the plan of a new view, forgets the avoided parents when
// membership changed, and re-parents the streams whose choice changed.
//
// An avoid entry works around what the view did not know yet: a parent
// that died, or one that could not serve because its own parent died. Once
// the view knows, the plan routes around the dead node by itself, and
// keeping the entries would only keep streams off healthy parents (a root
// that answered 502 while the owner was dying is the new owner a moment
// later). A parent that still fails is avoided again at its next failure.
func (r *router) apply(v topology.View) {
	r.plan.Store(topology.NewPlan(v))
	ids := make([]string, 0, len(v.Nodes))
	for _, m := range v.Nodes {
		ids = append(ids, m.ID+"="+string(m.State))
	}
	sort.Strings(ids)
	if sig := strings.Join(ids, ","); sig != r.members {
		r.members = sig
		if k := r.avoid.clear(); k > 0 {
			r.log.WithField("entries", k).Info("membership changed: avoided parents are candidates again")
		}
	}
	r.reroute()
}

// expire drops the avoid entries that ran out at now; the streams steered
// away from those parents may move back.
func (r *router) expire(now time.Time) {
	if r.avoid.expire(now) {
		r.reroute()
	}
}

// reroute moves every stream whose chosen upstream differs from the one it
// uses, make-before-break.
func (r *router) reroute() {
	for _, rt := range r.all() {
		cur, chosen := rt.current()
		if !chosen {
			continue
		}
		dc, ok := r.mountDC(rt.path)
		if !ok {
			continue
		}
		c, err := r.choose(rt.key, dc)
		if err != nil {
			continue // keep what works until the view offers something
		}
		next := ""
		if !c.Backend {
			next = c.Parent.ID
		}
		if next != cur {
			r.log.WithFields(logrus.Fields{"stream": rt.key, "from": orBackend(cur), "to": orBackend(next)}).Info("re-parenting stream")
			r.streams.Retarget(rt.key)
		}
	}
}

func orBackend(id string) string {
	if id == "" {
		return "back end"
	}
	return id
}
