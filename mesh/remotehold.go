package mesh

import "time"

// remoteResetGraceMin bounds from below how long the members and back ends
// of another data centre are kept after its Consul servers lost their
// catalog. Nodes register again within a check interval or two of the
// servers' return; the drill in test/netns measures about 11 s.
const remoteResetGraceMin = 30 * time.Second

// remoteHold keeps what a data centre's catalog listed before its Consul
// servers restarted empty. A restart is told by the catalog's index going
// backwards: a live catalog's index only grows. Without the hold, every
// member of that data centre would leave this node's view until it has
// registered again, and streams opened meanwhile would find no parent.
// A member that leaves a catalog whose index grows has really gone (its
// check failed or it deregistered) and is not held.
type remoteHold struct {
	index    uint64 // the catalog's index at the last read
	until    time.Time
	members  []Member
	backends []Backend
}

// remoteResetGrace is how long a hold lasts.
func (m *Mesh) remoteResetGrace() time.Duration {
	if g := 3 * m.cfg.Consul.PollInterval; g > remoteResetGraceMin {
		return g
	}
	return remoteResetGraceMin
}

// observe records a read of the catalog at index, listing members and
// backends, and returns what the view should hold for the data centre:
// the read, plus what a hold still keeps. prevMembers and prevBackends are
// what the view held before this read. reset reports a hold that started.
func (h *remoteHold) observe(now time.Time, index uint64, grace time.Duration, members, prevMembers []Member, backends, prevBackends []Backend) (outMembers []Member, outBackends []Backend, reset bool) {
	if h.index > 0 && index < h.index {
		h.until = now.Add(grace)
		h.members = append([]Member(nil), prevMembers...)
		h.backends = append([]Backend(nil), prevBackends...)
		reset = true
	}
	h.index = index
	if !now.Before(h.until) {
		h.members, h.backends = nil, nil
		return members, backends, reset
	}
	outMembers = append([]Member(nil), members...)
	listed := make(map[string]bool, len(members))
	for _, mem := range members {
		listed[mem.ID] = true
	}
	missing := false
	for _, mem := range h.members {
		if !listed[mem.ID] {
			outMembers = append(outMembers, mem)
			missing = true
		}
	}
	outBackends = append([]Backend(nil), backends...)
	have := make(map[string]bool, len(backends))
	for _, b := range backends {
		have[b.Name] = true
	}
	for _, b := range h.backends {
		if !have[b.Name] {
			outBackends = append(outBackends, b)
			missing = true
		}
	}
	if !missing {
		// Everything is back: the hold has done its job.
		h.until = time.Time{}
		h.members, h.backends = nil, nil
	}
	return outMembers, outBackends, reset
}
