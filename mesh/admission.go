package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// Refusals are logged at most once per member name per refusalLogEvery;
// the record of names is bounded by refusalLogMax.
const (
	refusalLogEvery = time.Minute
	refusalLogMax   = 1000
)

// NotifyAlive admits or refuses a gossip member each time memberlist
// processes an alive message for it (a join, a push-pull, a refutation, a
// metadata update). A refused message is ignored by memberlist: a new member
// never appears in the view, and a known one keeps its last admitted
// metadata.
//
// memberlist does not expose the packet source of an alive message (alive
// messages are relayed by third parties), so the check binds a member's
// service addresses to the gossip address it announces instead: the host of
// its ClientAddr and AdminAddr must be that gossip IP. A member can thus
// only point peers at the host it gossips from, which it must really answer
// probes on to stay alive. DNS names cannot be checked that way and are
// accepted only when gossip has a key: then only key holders can join at
// all, and they are trusted to name their hosts. Without a key the check
// still stops a member from sending clients and streams to a third host.
//
// memberlist calls this from its goroutines with its node lock held: it only
// decodes and compares, and never calls memberlist.
func (d *gossipDelegate) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name == d.m.cfg.NodeID {
		own := net.IP(peer.Addr).String()
		d.self.Store(&own)
		return nil
	}
	err := admitMember(peer, d.m.key != nil)
	if err != nil {
		d.m.refusedAlive.Add(1)
	}
	if err != nil && d.refusals.allow(peer.Name, time.Now()) {
		d.m.log.WithError(err).WithFields(logrus.Fields{
			"peer":        peer.Name,
			"peer_gossip": net.JoinHostPort(net.IP(peer.Addr).String(), strconv.Itoa(int(peer.Port))),
		}).Warn("mesh: refusing a gossip member (further refusals of it are not logged for a minute)")
	}
	return err
}

// admitMember checks a member's metadata against its gossip address; keyed
// tells whether this mesh's gossip is authenticated by a key.
func admitMember(peer *memberlist.Node, keyed bool) error {
	nm, err := decodeMeta(peer.Meta)
	if err != nil {
		return err
	}
	gossipIP, ok := netip.AddrFromSlice(peer.Addr)
	if !ok {
		return fmt.Errorf("mesh: gossip address %v is not an IP address", peer.Addr)
	}
	gossipIP = gossipIP.Unmap()
	if err := checkServiceAddr(nm.ClientAddr, gossipIP, keyed); err != nil {
		return fmt.Errorf("mesh: client address %q: %w", nm.ClientAddr, err)
	}
	if nm.AdminAddr != "" {
		if err := checkServiceAddr(nm.AdminAddr, gossipIP, keyed); err != nil {
			return fmt.Errorf("mesh: admin address %q: %w", nm.AdminAddr, err)
		}
	}
	return nil
}

// checkServiceAddr accepts a host:port whose host is gossipIP, or, when
// keyed, a DNS name.
func checkServiceAddr(addr string, gossipIP netip.Addr, keyed bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("not host:port: %w", err)
	}
	if host == "" {
		return errors.New("has no host")
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.WithZone("").Unmap() != gossipIP {
			return fmt.Errorf("host %s is not the member's gossip address %s", ip, gossipIP)
		}
		return nil
	}
	if !keyed {
		return fmt.Errorf("host %q is a DNS name, accepted only when gossip has a key (mesh.gossip.key); without one, advertise the IP address the member gossips from (%s)", host, gossipIP)
	}
	return nil
}

// refusalLog rate-limits refusal warnings per member name. It has its own
// mutex: it is used under memberlist's lock, never with Mesh.mu.
type refusalLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// allow reports whether a refusal of name may be logged now, and records it.
func (r *refusalLog) allow(name string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.last[name]; ok && now.Sub(t) < refusalLogEvery {
		return false
	}
	if r.last == nil {
		r.last = make(map[string]time.Time)
	}
	if _, ok := r.last[name]; !ok && len(r.last) >= refusalLogMax {
		for n, t := range r.last {
			if now.Sub(t) >= refusalLogEvery {
				delete(r.last, n)
			}
		}
		if len(r.last) >= refusalLogMax {
			// A flood of distinct names within a minute: stay bounded and
			// quiet rather than log every one.
			return false
		}
	}
	r.last[name] = now
	return true
}
