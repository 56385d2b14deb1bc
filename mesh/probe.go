package mesh

import (
	"context"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// Suspicion comes from this node's own probes, sent through memberlist's
// public Ping (a ping message on the gossip port, answered by the member's
// memberlist with an ack).
//
// memberlist tells no delegate when it suspects a member: EventDelegate
// hears joins, metadata updates and departures, PingDelegate only the
// probes that were answered, AliveDelegate only alive messages; the State
// of the Nodes it hands out is never set. Its own round-robin probe reaches
// a given member only once per pass over the whole pool, too: in a pool of
// 40 nodes probing every second, a parent that stops answering may go
// unprobed for 40 s, while what the routing of this node needs to know is
// whether the members it may take as parents answer now.
//
// So every probe interval the node pings the members of lower tiers (its
// candidate parents), at most probeParents of them per round in turn, and
// one other member in turn, so that every member's state is checked now
// and then. Two unanswered pings in a row make a member suspect (one lost
// UDP packet does not); one answer, from these pings or from memberlist's
// own probe (NotifyPingComplete), or new metadata from the member clears
// it. memberlist's own failure detection (suspicion timeout, then dead)
// is unchanged.
const (
	probeParents = 8 // candidate parents pinged per round
	probeOthers  = 1 // other members pinged per round
	suspectAfter = 2 // unanswered pings in a row
)

// pinger is what the prober needs from memberlist.
type pinger interface {
	Ping(node string, addr net.Addr) (time.Duration, error)
}

// probeTarget is one member to ping this round.
type probeTarget struct {
	name string
	addr net.Addr
}

// prober picks the members to ping each round; its cursors rotate through
// the candidates when there are more than one round takes. Only probeLoop
// uses it.
type prober struct {
	parents, others int // rotation cursors
}

// targets picks this round's members from the live peers: candidate
// parents (tier below self) first, then the others, each list in name
// order and rotated between rounds.
func (p *prober) targets(self int, peers map[string]*peer) []probeTarget {
	var parents, others []string
	for name, pr := range peers {
		if !pr.departed.IsZero() || pr.addr == "" || pr.state != memberlist.StateAlive {
			continue
		}
		if pr.meta.Tier < self {
			parents = append(parents, name)
		} else {
			others = append(others, name)
		}
	}
	slices.Sort(parents)
	slices.Sort(others)
	var out []probeTarget
	pick := func(names []string, n int, cursor *int) {
		if len(names) == 0 {
			return
		}
		n = min(n, len(names))
		for i := range n {
			name := names[(*cursor+i)%len(names)]
			addr, err := net.ResolveUDPAddr("udp", peers[name].addr)
			if err != nil {
				continue
			}
			out = append(out, probeTarget{name: name, addr: addr})
		}
		*cursor = (*cursor + n) % len(names)
	}
	pick(parents, probeParents, &p.parents)
	pick(others, probeOthers, &p.others)
	return out
}

// probeLoop pings the round's members every interval until ctx ends.
func (m *Mesh) probeLoop(ctx context.Context, ping pinger, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var p prober
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		targets := p.targets(m.cfg.Tier, m.peers)
		m.mu.Unlock()
		answered := make([]bool, len(targets))
		var wg sync.WaitGroup
		for i, tg := range targets {
			// Each ping waits at most memberlist's ProbeTimeout, shorter
			// than the interval, so the round ends before the next tick.
			wg.Go(func() {
				_, err := ping.Ping(tg.name, tg.addr)
				answered[i] = err == nil
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			return // a ping cut short by shutdown says nothing
		}
		for i, tg := range targets {
			m.noteProbe(tg.name, answered[i])
		}
	}
}

// noteProbe records the outcome of one ping of a member.
func (m *Mesh) noteProbe(name string, answered bool) {
	m.mu.Lock()
	p, ok := m.peers[name]
	if !ok || !p.departed.IsZero() {
		m.mu.Unlock()
		return
	}
	changed := false
	if answered {
		p.misses = 0
		changed, p.suspect = p.suspect, false
	} else {
		p.misses++
		if p.misses >= suspectAfter && !p.suspect {
			p.suspect, changed = true, true
		}
	}
	suspect, tier := p.suspect, p.meta.Tier
	m.mu.Unlock()
	if !changed {
		return
	}
	l := m.log.WithFields(logrus.Fields{"peer": name, "tier": tier})
	if suspect {
		l.WithField("unanswered", suspectAfter).Info("mesh: member does not answer pings: suspect")
	} else {
		l.Info("mesh: suspect member answers again")
	}
	m.markDirty()
}
