package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
)

// Mesh is one node's membership. Create it with New, run it with Start and
// stop it with Shutdown (after SetDraining for a graceful exit).
type Mesh struct {
	cfg Config
	log logrus.FieldLogger
	key []byte
	// acceptKeys decrypt gossip besides key (GossipConfig.AcceptKeys).
	acceptKeys [][]byte

	consulErrors atomic.Uint64
	refusedAlive atomic.Uint64 // gossip alive messages refused by NotifyAlive

	// main owns the goroutines that run until Shutdown; part owns those
	// that announce this node (seed joins, Consul peer joins, registration)
	// and stop as soon as the node drains, so it is not re-announced.
	main, part *group

	dirty   chan struct{} // 1-buffered: state changed, a view is due
	changed chan struct{} // 1-buffered: a new view was published
	loadCh  chan struct{} // 1-buffered: own load changed, push it
	view    atomic.Pointer[View]

	// lifeMu serialises lifecycle steps and every memberlist call that
	// announces this node, so no update is sent after the leave.
	lifeMu   sync.Mutex
	ml       *memberlist.Memberlist
	started  bool
	left     bool // left gossip (SetDraining)
	stopped  bool
	deregged bool
	// gossipAddr is LocalAddr, fixed at Start; atomic so LocalAddr never
	// waits behind a gossip push holding lifeMu.
	gossipAddr atomic.Pointer[string]

	consul consulAPI // nil without Consul
	// tweakGossip, when set (by tests), adjusts memberlist's configuration
	// last, before Start creates the gossip layer.
	tweakGossip func(*memberlist.Config)

	mu       sync.Mutex // guards the fields below; never held over a memberlist call
	peers    map[string]*peer
	clients  int
	streams  int
	draining bool
	warming  bool // Config.Warmup until SetServing: announced as draining
	// startedAt is when Start ran (set before the loops start).
	startedAt time.Time
	cs        consulState
	version   uint64
}

// peer is a gossip member other than this node, copied from memberlist's
// events (memberlist's own node structs are not safe to read later).
type peer struct {
	addr     string // gossip address, host:port
	meta     nodeMeta
	state    memberlist.NodeStateType
	suspect  bool
	misses   int       // unanswered pings in a row (probe.go)
	departed time.Time // when it left or died
}

// CheckConfig validates cfg as New would, after applying defaults, without
// starting anything: for configuration checks before a node starts.
func CheckConfig(cfg Config) error {
	cfg = cfg.withDefaults()
	return cfg.Validate()
}

// New validates cfg and prepares a Mesh; nothing runs until Start.
func New(cfg Config) (*Mesh, error) { return newMesh(cfg, nil) }

// newMesh is New with the Consul API given; nil means a client of
// cfg.Consul.Address when that is set.
func newMesh(cfg Config, consul consulAPI) (*Mesh, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mesh: invalid config: %w", err)
	}
	m := &Mesh{
		cfg: cfg,
		log: cfg.Logger.WithFields(logrus.Fields{
			"component": "mesh",
			"node":      cfg.NodeID,
		}),
		main:    newGroup(),
		part:    newGroup(),
		dirty:   make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		loadCh:  make(chan struct{}, 1),
		peers:   make(map[string]*peer),
		cs:      newConsulState(),
		warming: cfg.Warmup,
	}
	// Validate decoded the keys already.
	if cfg.Gossip.Key != "" {
		m.key, _ = decodeKey(cfg.Gossip.Key)
	}
	for _, s := range cfg.Gossip.AcceptKeys {
		k, _ := decodeKey(s)
		m.acceptKeys = append(m.acceptKeys, k)
	}
	switch {
	case consul != nil:
		m.consul = consul
	case cfg.Consul.Address != "":
		c, err := newConsulClient(cfg.Consul)
		if err != nil {
			return nil, err
		}
		m.consul = c
	}
	m.publish()
	return m, nil
}

// Start creates the gossip layer and starts joining (seeds, and this data
// centre's nodes found in Consul), the Consul watches and the
// self-registration. It returns once gossip is listening; joins continue in
// the background with retries. ctx bounds only the start itself: the Mesh
// runs until Shutdown.
func (m *Mesh) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mesh: start: %w", err)
	}
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.started || m.stopped {
		return errors.New("mesh: start: already started or shut down")
	}
	conf, err := m.memberlistConfig()
	if err != nil {
		return err
	}
	ml, err := memberlist.Create(conf)
	if err != nil {
		return fmt.Errorf("mesh: starting gossip on %s: %w", m.cfg.Gossip.Bind, err)
	}
	if len(conf.CIDRsAllowed) > 0 && ml.NumMembers() == 0 {
		// memberlist refused this node's own address (it is outside the
		// allowed networks); it would run without a local node.
		own := "?"
		if d, ok := conf.Alive.(*gossipDelegate); ok {
			if p := d.self.Load(); p != nil {
				own = *p
			}
		}
		_ = ml.Shutdown()
		return fmt.Errorf("mesh: starting gossip: mesh.gossip.allowed_networks: this node's own gossip address %s is outside the allowed networks %v", own, m.cfg.Gossip.AllowedNetworks)
	}
	m.ml = ml
	m.started = true
	addr := ml.LocalNode().Address()
	m.gossipAddr.Store(&addr)
	m.log.WithField("gossip", addr).Info("mesh: gossip up")
	if bindHost, _, _ := net.SplitHostPort(m.cfg.Gossip.Bind); m.key == nil && !isLoopbackHost(bindHost) {
		// Validate lets this through only with InsecureNoKey.
		m.log.WithField("bind", m.cfg.Gossip.Bind).Warn("mesh: gossip has no key (mesh.gossip.insecure_no_key) on a non-loopback address: it is neither encrypted nor authenticated, and any host that reaches the port can join as any tier")
	}

	m.startedAt = time.Now()
	m.main.Go(m.publishLoop)
	m.main.Go(m.loadLoop)
	m.part.Go(m.reclaimJoin)
	m.part.Go(func(ctx context.Context) { m.probeLoop(ctx, ml, conf.ProbeInterval) })
	if len(m.cfg.Gossip.Seeds) > 0 {
		m.part.Go(m.seedLoop)
	}
	if m.consul != nil {
		m.main.Go(m.watchServices)
		m.main.Go(m.watchOtherDCs)
		m.part.Go(m.registerLoop)
		m.part.Go(m.joinFromConsul)
	}
	m.markDirty()
	return nil
}

// View returns the current snapshot. It is never nil and never changes.
func (m *Mesh) View() *View { return m.view.Load() }

// Changed signals, coalesced over Config.Settle, that View has a new
// snapshot. It is 1-buffered: a reader that was busy still sees one signal.
func (m *Mesh) Changed() <-chan struct{} { return m.changed }

// LocalAddr is the gossip address peers reach this node at (the actual
// port when Gossip.Bind asked for port 0); empty before Start.
func (m *Mesh) LocalAddr() string {
	if p := m.gossipAddr.Load(); p != nil {
		return *p
	}
	return ""
}

// SetLoad records this node's client and stream counts. They appear in the
// local view at once and are gossiped at most once per Config.MetaInterval.
func (m *Mesh) SetLoad(clients, streams int) {
	m.mu.Lock()
	same := m.clients == clients && m.streams == streams
	m.clients, m.streams = clients, streams
	m.mu.Unlock()
	if same {
		return
	}
	m.announceLoad()
}

// SetCapacity changes the client count this node announces it accepts
// (limits.max_clients, changed by a reload). Peers see it with the next
// load push, other data centres once the registration in Consul is
// renewed (at its next check, as it no longer matches).
func (m *Mesh) SetCapacity(capacity int) {
	if capacity < 0 {
		capacity = 0
	}
	m.mu.Lock()
	same := m.cfg.Capacity == capacity
	m.cfg.Capacity = capacity
	m.mu.Unlock()
	if same {
		return
	}
	m.announceLoad()
}

// announceLoad shows a change of this node's metadata in the local view
// and has loadLoop gossip it.
func (m *Mesh) announceLoad() {
	m.markDirty()
	select {
	case m.loadCh <- struct{}{}:
	default:
	}
}

// SetServing ends the warm-up (Config.Warmup): the node announces itself
// alive and takes children from now on. Calling it again does nothing.
func (m *Mesh) SetServing() {
	m.mu.Lock()
	was := m.warming
	m.warming = false
	m.mu.Unlock()
	if !was {
		return
	}
	m.log.Info("mesh: warm-up done: taking children")
	m.markDirty()
	select {
	case m.loadCh <- struct{}{}: // gossip the new metadata
	default:
	}
}

// SetDraining marks this node draining, pushes that to its peers, leaves
// gossip and deregisters from Consul, so children re-parent before the node
// closes its clients. The node keeps serving its view until Shutdown. ctx
// bounds the leave and deregistration; calling it again does nothing.
func (m *Mesh) SetDraining(ctx context.Context) error {
	m.mu.Lock()
	m.draining = true
	m.mu.Unlock()
	m.markDirty()

	// Stop announcing first: a registration loop must not re-register, nor
	// a join loop rejoin, after the leave.
	m.part.Stop()

	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if !m.started || m.stopped || m.left {
		return nil
	}
	var errs []error
	timeout := m.cfg.LeaveTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	if err := m.leaveLocked(timeout); err != nil {
		errs = append(errs, err)
	}
	if err := m.deregisterLocked(ctx); err != nil {
		errs = append(errs, err)
	}
	m.log.Info("mesh: draining: left gossip")
	return errors.Join(errs...)
}

// Shutdown stops every goroutine and the gossip layer and waits for them.
// If SetDraining was not called it still leaves gossip and deregisters, each
// bounded by Config.LeaveTimeout. It is safe to call more than once.
func (m *Mesh) Shutdown() error {
	return m.shutdown(true)
}

// ConsulErrors counts failed Consul requests since start.
func (m *Mesh) ConsulErrors() uint64 { return m.consulErrors.Load() }

// RefusedMembers counts gossip alive messages refused because the member's
// advertised addresses did not match its gossip address (or its metadata
// was unreadable).
func (m *Mesh) RefusedMembers() uint64 { return m.refusedAlive.Load() }

// Abandon stops the mesh the way a crash would: no draining announcement,
// no gossip leave, no deregistration; peers must detect the failure. It is
// for fault drills and tests of failure detection.
func (m *Mesh) Abandon() error { return m.shutdown(false) }

// shutdown with graceful false stops without leave or deregistration, as a
// crash would; peers then detect the failure.
func (m *Mesh) shutdown(graceful bool) error {
	m.part.Stop()
	m.lifeMu.Lock()
	if m.stopped {
		m.lifeMu.Unlock()
		return nil
	}
	m.stopped = true
	var errs []error
	if m.started && graceful {
		if err := m.leaveLocked(m.cfg.LeaveTimeout); err != nil {
			errs = append(errs, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.LeaveTimeout)
		if err := m.deregisterLocked(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	m.lifeMu.Unlock()
	// The load pusher takes lifeMu, so the main goroutines are stopped
	// without holding it; stopped already keeps it from pushing again.
	m.main.Stop()
	if m.ml != nil {
		if err := m.ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("mesh: stopping gossip: %w", err))
		}
	}
	return errors.Join(errs...)
}

// leaveLocked gossips the draining flag, then leaves. Peers take a member
// whose last metadata says draining for one that left rather than died, so
// the flag must go out first. lifeMu must be held.
func (m *Mesh) leaveLocked(timeout time.Duration) error {
	if m.left {
		return nil
	}
	m.mu.Lock()
	wasDraining := m.draining
	m.draining = true
	m.mu.Unlock()
	if !wasDraining {
		m.markDirty()
	}
	var errs []error
	if err := m.ml.UpdateNode(timeout); err != nil {
		errs = append(errs, fmt.Errorf("mesh: announcing draining: %w", err))
	}
	if err := m.ml.Leave(timeout); err != nil {
		errs = append(errs, fmt.Errorf("mesh: leaving gossip: %w", err))
	}
	m.left = true
	return errors.Join(errs...)
}

// markDirty asks the publisher for a new view.
func (m *Mesh) markDirty() {
	select {
	case m.dirty <- struct{}{}:
	default:
	}
}

// publishLoop turns bursts of changes into one view: it waits for the state
// to be quiet for Settle, but never longer than four Settles in all, so a
// constantly flapping member cannot starve readers.
func (m *Mesh) publishLoop(ctx context.Context) {
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.dirty:
		case <-expiry.C:
		}
		deadline := time.Now().Add(4 * m.cfg.Settle)
		quiet := time.NewTimer(m.cfg.Settle)
	settle:
		for {
			select {
			case <-ctx.Done():
				quiet.Stop()
				return
			case <-m.dirty:
				quiet.Reset(min(m.cfg.Settle, max(time.Until(deadline), 0)))
			case <-quiet.C:
				break settle
			}
		}
		if next := m.publish(); !next.IsZero() {
			expiry.Reset(max(time.Until(next), time.Millisecond))
		}
	}
}

// publish builds a view from the current state and publishes it when it
// differs from the current one. It returns when the next retained member
// expires (zero if none).
func (m *Mesh) publish() time.Time {
	now := time.Now()
	m.mu.Lock()
	v, next := m.buildLocked(now)
	if old := m.view.Load(); old != nil {
		v.Version = old.Version
		if reflect.DeepEqual(old, v) {
			m.mu.Unlock()
			return next
		}
	}
	m.version++
	v.Version = m.version
	m.view.Store(v)
	m.mu.Unlock()
	m.log.WithFields(logrus.Fields{"version": v.Version, "members": len(v.Members), "backends": len(v.Backends)}).Debug("mesh: view published")
	select {
	case m.changed <- struct{}{}:
	default:
	}
	return next
}

func (m *Mesh) buildLocked(now time.Time) (*View, time.Time) {
	var next time.Time
	// The node sees itself as draining only when it is: while it warms up,
	// peers see it draining (they send no children yet), but its own plan
	// already counts it, so that the moment peers switch to it, it agrees
	// it is their parent (or the stream's owner).
	self := m.cfg.metaFor(m.clients, m.streams, m.draining)
	members := []Member{memberFromMeta(self, stateOf(memberlist.StateAlive, false, m.draining), SourceGossip)}
	seen := map[string]bool{self.ID: true}
	for name, p := range m.peers {
		if !p.departed.IsZero() {
			exp := p.departed.Add(m.cfg.Retain)
			if !now.Before(exp) {
				delete(m.peers, name)
				continue
			}
			if next.IsZero() || exp.Before(next) {
				next = exp
			}
		}
		seen[name] = true
		members = append(members, memberFromMeta(p.meta, stateOf(p.state, p.suspect, p.meta.Draining), SourceGossip))
	}
	for _, dcm := range m.cs.remote {
		for _, r := range dcm {
			if !seen[r.ID] {
				seen[r.ID] = true
				members = append(members, r)
			}
		}
	}
	sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })

	backends := make([]Backend, 0, len(m.cs.backends))
	for _, b := range m.cs.backends {
		b.Instances = slices.Clone(b.Instances)
		backends = append(backends, b)
	}
	// Back ends registered only in other data centres; when several data
	// centres register one name, the first in lexical order wins, so every
	// node resolves it alike.
	dcs := make([]string, 0, len(m.cs.remoteBackends))
	for dc := range m.cs.remoteBackends {
		dcs = append(dcs, dc)
	}
	sort.Strings(dcs)
	for _, dc := range dcs {
		for _, b := range m.cs.remoteBackends[dc] {
			if _, local := m.cs.backends[b.Name]; local || slices.ContainsFunc(backends, func(x Backend) bool { return x.Name == b.Name }) {
				continue
			}
			b.Instances = slices.Clone(b.Instances)
			backends = append(backends, b)
		}
	}
	sort.Slice(backends, func(i, j int) bool { return backends[i].Name < backends[j].Name })

	v := &View{Members: members, Backends: backends, Serving: !m.warming && !m.draining}
	if m.consul != nil {
		v.ConsulOK, v.ConsulError = m.cs.status()
		v.BackendsSynced = m.cs.servicesSeen && m.cs.remoteSeen && len(m.cs.pending) == 0
	}
	return v, next
}

func stateOf(s memberlist.NodeStateType, suspect, draining bool) MemberState {
	switch {
	case s == memberlist.StateDead:
		return StateDead
	case s == memberlist.StateLeft:
		return StateLeft
	case suspect:
		return StateSuspect
	case draining:
		return StateDraining
	}
	return StateAlive
}

func memberFromMeta(nm nodeMeta, st MemberState, source string) Member {
	return Member{
		ID: nm.ID, DC: nm.DC, Tier: nm.Tier,
		ClientAddr: nm.ClientAddr, AdminAddr: nm.AdminAddr,
		Clients: nm.Clients, Capacity: nm.Capacity, Streams: nm.Streams,
		Draining: nm.Draining, State: st, Source: source,
	}
}

// group owns a set of goroutines: it starts them with its context, refuses
// new ones once stopping began, and Stop waits for all of them.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	done   bool
}

func newGroup() *group {
	ctx, cancel := context.WithCancel(context.Background())
	return &group{ctx: ctx, cancel: cancel}
}

// Go runs fn in a goroutine unless the group is stopping.
func (g *group) Go(fn func(ctx context.Context)) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn(g.ctx)
	}()
	return true
}

// Stop cancels the group's context and waits for its goroutines.
func (g *group) Stop() {
	g.mu.Lock()
	g.done = true
	g.cancel()
	g.mu.Unlock()
	g.wg.Wait()
}
