package mesh

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/retry"
)

// gossipLabel is prefixed to every gossip packet, so an ssemesh node that
// is pointed at another memberlist cluster (Consul's serf port, say) is
// refused instead of merging with it.
const gossipLabel = "ssemesh"

// Fast timings: probes every 250 ms, suspicion of 0.75-2.25 s on a
// three-node cluster (SuspicionMult x ProbeInterval, up to
// SuspicionMaxTimeoutMult times that without confirmations). A member that
// stops answering is suspect within about 0.5 s and dead within about 3 s.
const (
	fastProbeInterval  = 250 * time.Millisecond
	fastProbeTimeout   = 200 * time.Millisecond
	fastGossipInterval = 50 * time.Millisecond
	fastPushPull       = 5 * time.Second
	fastRejoin         = time.Second
	fastReclaim        = time.Second
	reclaimAfter       = 10 * time.Second
	rejoinInterval     = 10 * time.Second
	seedRetryMin       = 200 * time.Millisecond // first wait after a failed seed join
)

func (m *Mesh) memberlistConfig() (*memberlist.Config, error) {
	conf := memberlist.DefaultLANConfig()
	conf.Name = m.cfg.NodeID
	conf.Label = gossipLabel
	host, port, err := splitHostPort(m.cfg.Gossip.Bind)
	if err != nil {
		return nil, fmt.Errorf("mesh.gossip.bind: %w", err)
	}
	if strings.EqualFold(host, "localhost") {
		// memberlist takes a host it cannot parse as an IP for every
		// interface; Validate counts "localhost" as loopback, so make it so.
		host = "127.0.0.1"
	}
	conf.BindAddr, conf.BindPort, conf.AdvertisePort = host, port, port
	if m.cfg.Gossip.Advertise != "" {
		host, port, err := splitHostPort(m.cfg.Gossip.Advertise)
		if err != nil {
			return nil, fmt.Errorf("mesh.gossip.advertise: %w", err)
		}
		conf.AdvertiseAddr, conf.AdvertisePort = host, port
	}
	// A node restarted with the same ID on another address (a rescheduled
	// container) may take its name back once the old one is known dead.
	conf.DeadNodeReclaimTime = reclaimAfter
	if m.cfg.Gossip.Fast {
		conf.ProbeInterval = fastProbeInterval
		conf.ProbeTimeout = fastProbeTimeout
		conf.SuspicionMult = 3
		conf.SuspicionMaxTimeoutMult = 3
		conf.GossipInterval = fastGossipInterval
		conf.GossipToTheDeadTime = 2 * time.Second
		conf.PushPullInterval = fastPushPull
		conf.TCPTimeout = time.Second
		conf.DeadNodeReclaimTime = fastReclaim
	}
	if m.key != nil {
		// The key encrypts; it and the accepted keys decrypt.
		kr, err := memberlist.NewKeyring(m.acceptKeys, m.key)
		if err != nil {
			return nil, fmt.Errorf("mesh.gossip.key: %w", err)
		}
		conf.Keyring = kr
	}
	nets, err := m.cfg.Gossip.allowedNetworks()
	if err != nil {
		return nil, err
	}
	if len(nets) > 0 {
		// memberlist drops alive messages sent from other sources and
		// refuses members announcing addresses outside these networks.
		conf.CIDRsAllowed = nets
	}
	d := &gossipDelegate{m: m}
	conf.Delegate = d
	conf.Events = d
	conf.Ping = d
	conf.Alive = d
	conf.Logger = log.New(&logWriter{log: m.log.WithField("subsystem", "memberlist")}, "", 0)
	if m.tweakGossip != nil {
		m.tweakGossip(conf)
	}
	return conf, nil
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port: %w", s, err)
	}
	return h, port, nil
}

// gossipDelegate adapts memberlist's callbacks. memberlist calls the event
// methods with its node lock held, so they only copy and signal.
type gossipDelegate struct {
	m *Mesh
	// self is this node's gossip IP as memberlist announced it.
	self atomic.Pointer[string]
	// refusals rate-limits the warnings of NotifyAlive (admission.go).
	refusals refusalLog
}

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	m := d.m
	m.mu.Lock()
	nm := m.cfg.metaFor(m.clients, m.streams, m.draining || m.warming)
	m.mu.Unlock()
	b, err := encodeMeta(nm)
	if err == nil && len(b) <= limit {
		return b
	}
	// Validate rules this out; dropping the counters keeps the node
	// reachable rather than letting memberlist panic.
	m.log.WithField("limit", limit).Error("mesh: node metadata over the gossip limit; sending it without load")
	nm.Clients, nm.Streams, nm.Capacity = 0, 0, 0
	b, _ = encodeMeta(nm)
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *gossipDelegate) NotifyMsg([]byte)                           {}
func (d *gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(join bool) []byte                { return nil }
func (d *gossipDelegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *gossipDelegate) NotifyJoin(n *memberlist.Node)   { d.m.notePeer(n, false) }
func (d *gossipDelegate) NotifyUpdate(n *memberlist.Node) { d.m.notePeer(n, false) }
func (d *gossipDelegate) NotifyLeave(n *memberlist.Node)  { d.m.notePeer(n, true) }

func (d *gossipDelegate) AckPayload() []byte { return nil }

// NotifyPingComplete is memberlist's own probe of the member answered:
// evidence that clears a suspicion (probe.go).
func (d *gossipDelegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	d.m.noteProbe(other.Name, true)
}

// notePeer copies a member from a memberlist event.
func (m *Mesh) notePeer(n *memberlist.Node, gone bool) {
	if n.Name == m.cfg.NodeID {
		return
	}
	nm, err := decodeMeta(bytes.Clone(n.Meta))
	if err != nil {
		m.log.WithError(err).WithField("peer", n.Name).Warn("mesh: ignoring a gossip member with unreadable metadata")
		return
	}
	// The gossip name is authoritative: a member cannot claim another ID.
	nm.ID = n.Name
	m.mu.Lock()
	p := m.peers[n.Name]
	if p == nil {
		p = &peer{}
		m.peers[n.Name] = p
	}
	p.meta = nm
	p.addr = n.Address()
	if gone {
		// memberlist does not tell a leave from a death (the State of the
		// node it passes is never updated). A node leaves only through
		// leaveLocked, which gossips the draining flag first; a member
		// that was suspected, or never announced draining, died.
		p.state = memberlist.StateDead
		if nm.Draining && !p.suspect {
			p.state = memberlist.StateLeft
		}
		p.departed = time.Now()
	} else {
		p.state = memberlist.StateAlive
		p.departed = time.Time{}
	}
	p.suspect, p.misses = false, 0
	state := p.state
	m.mu.Unlock()
	m.log.WithFields(logrus.Fields{"peer": n.Name, "state": stateOf(state, false, nm.Draining)}).Debug("mesh: gossip member changed")
	m.markDirty()
}

// logWriter routes memberlist's log lines into logrus at debug level.
type logWriter struct {
	log logrus.FieldLogger
}

func (w *logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		level, msg := "", line
		if strings.HasPrefix(line, "[") {
			if i := strings.Index(line, "] "); i > 0 {
				level, msg = line[1:i], line[i+2:]
			}
		}
		w.log.WithField("level_memberlist", level).Debug(msg)
	}
	return len(p), nil
}

// aliveGossipPeers counts peers that are not known to have left or died.
func (m *Mesh) aliveGossipPeers() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, p := range m.peers {
		if p.departed.IsZero() {
			n++
		}
	}
	return n
}

// reclaimJoin repeats the join a few times in the first moments after
// start. A node restarted under its old ID on another address is refused
// ("conflicting address") by peers that still hold the old address as dead,
// until DeadNodeReclaimTime has passed since they marked it dead, which may
// be after this node started; without a new join they would take it back
// only at their next push-pull, up to PushPullInterval later. Each attempt
// is one push-pull with every known peer.
func (m *Mesh) reclaimJoin(ctx context.Context) {
	reclaim := m.reclaimTime()
	for _, at := range []time.Duration{reclaim / 2, reclaim, 2 * reclaim, 4 * reclaim} {
		if !retry.Sleep(ctx, time.Until(m.startedAt.Add(at+reclaim/4))) {
			return
		}
		// Addresses as copied in notePeer: memberlist's own node structs
		// change under its lock and must not be read here.
		var addrs []string
		m.mu.Lock()
		for _, p := range m.peers {
			if p.departed.IsZero() && p.addr != "" {
				addrs = append(addrs, p.addr)
			}
		}
		m.mu.Unlock()
		if len(addrs) == 0 {
			continue
		}
		if _, err := m.ml.Join(addrs); err != nil {
			m.log.WithError(err).Debug("mesh: repeated join")
		}
	}
}

// reclaimTime is memberlist's DeadNodeReclaimTime as configured.
func (m *Mesh) reclaimTime() time.Duration {
	if m.cfg.Gossip.Fast {
		return fastReclaim
	}
	return reclaimAfter
}

// seedLoop joins the seeds whenever this node has no live peer: at start,
// and again after a partition or a restart of the whole data centre.
func (m *Mesh) seedLoop(ctx context.Context) {
	bo := retry.Backoff{Min: seedRetryMin, Max: m.cfg.Consul.RetryMax, Jitter: retry.HalfJitter}
	every := rejoinInterval
	if m.cfg.Gossip.Fast {
		every = fastRejoin
	}
	var failures retry.Failures
	for {
		wait := every
		if m.aliveGossipPeers() == 0 {
			n, err := m.ml.Join(m.cfg.Gossip.Seeds)
			switch {
			case err != nil && n == 0:
				if count, log := failures.Add(); log {
					m.log.WithError(err).WithField("failures", count).Warn("mesh: joining gossip seeds failed; retrying")
				}
				wait = bo.Next()
			default:
				if failures.Reset() > 0 {
					m.log.WithField("joined", n).Info("mesh: joined gossip seeds")
				} else {
					m.log.WithField("joined", n).Debug("mesh: joined gossip seeds")
				}
				bo.Reset()
			}
		}
		if !retry.Sleep(ctx, wait) {
			return
		}
	}
}

// loadLoop pushes load changes to peers, at most once per MetaInterval.
func (m *Mesh) loadLoop(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.loadCh:
		}
		if !retry.Sleep(ctx, time.Until(last.Add(m.cfg.MetaInterval))) {
			return
		}
		last = time.Now()
		m.lifeMu.Lock()
		if !m.left && !m.stopped {
			if err := m.ml.UpdateNode(m.cfg.LeaveTimeout); err != nil {
				m.log.WithError(err).Debug("mesh: gossiping load")
			}
		}
		m.lifeMu.Unlock()
	}
}
