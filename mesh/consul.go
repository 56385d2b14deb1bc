package mesh

import (
	"context"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/retry"
)

// Service meta keys read from back-end registrations.
const (
	MetaPath   = "ssemesh-path"   // upstream path on the instance's address
	MetaMount  = "ssemesh-mount"  // client-facing path; default the path
	MetaPrefix = "ssemesh-prefix" // "true": mount every path below Mount
	MetaScheme = "ssemesh-scheme" // "http" (default) or "https"
)

// Service meta keys of a node's own registration.
const (
	NodeMetaDC       = "dc"
	NodeMetaTier     = "tier"
	NodeMetaGossip   = "gossip"
	NodeMetaAdmin    = "admin"
	NodeMetaClient   = "client"
	NodeMetaCapacity = "capacity"
)

// consulState is what Consul told this node, guarded by Mesh.mu.
type consulState struct {
	backends map[string]Backend
	remote   map[string][]Member // other data centres' nodes, by DC
	// remoteBackends are back ends registered only in other data centres,
	// by DC; a back end of the node's own DC wins over one of the same name.
	remoteBackends map[string][]Backend
	errs           map[string]error // current error of each query source
	contacted      bool             // a query has succeeded at least once
	// servicesSeen: the service list was read once; pending: back ends
	// listed whose instances were not read yet; remoteSeen: the other data
	// centres were read once. Together they say the view knows every back
	// end (View.BackendsSynced).
	servicesSeen, remoteSeen bool
	pending                  map[string]bool
	down                     bool // an outage is in progress (it was logged)
	// holds keep another data centre's last known nodes and back ends
	// through a restart of its Consul servers, by DC.
	holds map[string]*remoteHold
}

func newConsulState() consulState {
	return consulState{
		backends: make(map[string]Backend),
		remote:   make(map[string][]Member),
		pending:  make(map[string]bool),
		errs:     make(map[string]error),

		remoteBackends: make(map[string][]Backend),
		holds:          make(map[string]*remoteHold),
	}
}

// status reports health for the view: the error of the alphabetically
// first failing source keeps ConsulError stable while an outage lasts.
func (s *consulState) status() (bool, string) {
	if len(s.errs) == 0 {
		return s.contacted, ""
	}
	keys := make([]string, 0, len(s.errs))
	for k := range s.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return false, s.errs[keys[0]].Error()
}

// consulResult records the outcome of one query of source. An outage is
// logged once when it starts, with its cause, and once when it ends. The
// result is dropped when ctx has ended, so a stopped watch cannot leave an
// error (or a success) behind.
func (m *Mesh) consulResult(ctx context.Context, source string, err error) {
	m.mu.Lock()
	if ctx.Err() != nil {
		m.mu.Unlock()
		return
	}
	okBefore, msgBefore := m.cs.status()
	if err != nil {
		m.consulErrors.Add(1)
		m.cs.errs[source] = err
	} else {
		delete(m.cs.errs, source)
		m.cs.contacted = true
	}
	okAfter, msgAfter := m.cs.status()
	startOutage := err != nil && !m.cs.down
	if startOutage {
		m.cs.down = true
	}
	endOutage := m.endOutageLocked()
	m.mu.Unlock()
	switch {
	case startOutage:
		m.log.WithError(err).WithField("source", source).Warn("mesh: consul unreachable; keeping the last known back ends and peers, retrying")
	case endOutage:
		m.log.Info("mesh: consul reachable again")
	case err != nil:
		m.log.WithError(err).WithField("source", source).Debug("mesh: consul query failed")
	}
	if okBefore != okAfter || msgBefore != msgAfter {
		m.markDirty()
	}
}

// clearSource forgets a source's error when its watch is stopped for good.
func (m *Mesh) clearSource(source string) {
	m.mu.Lock()
	_, had := m.cs.errs[source]
	delete(m.cs.errs, source)
	ended := m.endOutageLocked()
	m.mu.Unlock()
	if ended {
		m.log.Info("mesh: consul reachable again")
	}
	if had {
		m.markDirty()
	}
}

// endOutageLocked closes an outage once no source has an error left; the
// caller logs the recovery when it returns true. m.mu must be held.
func (m *Mesh) endOutageLocked() bool {
	if len(m.cs.errs) == 0 && m.cs.down {
		m.cs.down = false
		return true
	}
	return false
}

// nextIndex applies Consul's rules for blocking-query indexes: an index
// that goes backwards (a restarted agent, a snapshot restore) restarts the
// watch from 0, and an index of 0 is never sent back, as it would not block.
func nextIndex(prev, last uint64) uint64 {
	switch {
	case last < prev:
		return 0
	case last == 0:
		return 1
	}
	return last
}

// limiter spaces the queries of one watch by at least min.
type limiter struct {
	min  time.Duration
	last time.Time
}

func (l *limiter) wait(ctx context.Context) bool {
	ok := retry.Sleep(ctx, time.Until(l.last.Add(l.min)))
	l.last = time.Now()
	return ok
}

// watchServices follows the catalog's service list and runs one health
// watch per back end carrying the tag.
func (m *Mesh) watchServices(ctx context.Context) {
	const source = "catalog services"
	cc := m.cfg.Consul
	watches := make(map[string]context.CancelFunc)
	defer func() {
		for _, cancel := range watches {
			cancel()
		}
	}()
	blockingWatch(ctx, m, source, "mesh: consul watch of services", cc.WaitTime, m.consul.Services, func(services map[string][]string) bool {
		wanted := make(map[string]bool)
		for name, tags := range services {
			if name != cc.Service && slices.Contains(tags, cc.Tag) {
				wanted[name] = true
			}
		}
		m.mu.Lock()
		first := !m.cs.servicesSeen
		m.cs.servicesSeen = true
		m.mu.Unlock()
		if first {
			m.markDirty()
		}
		for name, cancel := range watches {
			if wanted[name] {
				continue
			}
			cancel()
			delete(watches, name)
			m.mu.Lock()
			delete(m.cs.backends, name)
			delete(m.cs.pending, name)
			m.mu.Unlock()
			m.clearSource(backendSource(name))
			m.markDirty()
		}
		for name := range wanted {
			if _, ok := watches[name]; ok {
				continue
			}
			m.mu.Lock()
			m.cs.pending[name] = true
			m.mu.Unlock()
			wctx, cancel := context.WithCancel(ctx)
			if !m.main.Go(func(context.Context) { m.watchBackend(wctx, name) }) {
				cancel()
				return false
			}
			watches[name] = cancel
		}
		return true
	})
}

// blockingWatch runs query as a Consul blocking query of this data centre,
// each blocking for at most wait, until ctx ends or apply returns false:
// rate limited to one query per MinQueryInterval, the index carried from
// answer to answer, errors reported under source (what prefixes them) and
// retried with backoff. After an error the index starts over from 0: an
// agent that lost its state while unreachable may never reach the old
// index, and the query would block on it.
func blockingWatch[T any](ctx context.Context, m *Mesh, source, what string, wait time.Duration, query func(context.Context, consulQuery) (T, uint64, error), apply func(T) bool) {
	cc := m.cfg.Consul
	lim := limiter{min: cc.MinQueryInterval}
	bo := m.consulBackoff()
	var idx uint64
	for lim.wait(ctx) {
		v, last, err := query(ctx, consulQuery{DC: cc.Datacenter, Index: idx, Wait: wait})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.consulResult(ctx, source, fmt.Errorf("%s: %w", what, err))
			idx = 0
			if !retry.Sleep(ctx, bo.Next()) {
				return
			}
			continue
		}
		m.consulResult(ctx, source, nil)
		bo.Reset()
		idx = nextIndex(idx, last)
		if !apply(v) {
			return
		}
	}
}

// consulBackoff paces the retries of one Consul loop after errors.
func (m *Mesh) consulBackoff() retry.Backoff {
	return retry.Backoff{Min: m.cfg.Consul.MinQueryInterval, Max: m.cfg.Consul.RetryMax, Jitter: retry.HalfJitter}
}

func backendSource(name string) string { return "backend " + name }

// watchBackend follows the passing instances of one back end until ctx ends.
func (m *Mesh) watchBackend(ctx context.Context, name string) {
	cc := m.cfg.Consul
	source := backendSource(name)
	query := func(ctx context.Context, q consulQuery) ([]*api.ServiceEntry, uint64, error) {
		return m.consul.Passing(ctx, name, cc.Tag, q)
	}
	blockingWatch(ctx, m, source, fmt.Sprintf("mesh: consul watch %q", name), cc.WaitTime, query, func(entries []*api.ServiceEntry) bool {
		m.mu.Lock()
		if ctx.Err() != nil {
			m.mu.Unlock()
			return false
		}
		prev, known := m.cs.backends[name]
		b, ok := m.backendFrom(name, entries, prev, known)
		changed := m.cs.pending[name]
		delete(m.cs.pending, name)
		if ok && !reflect.DeepEqual(prev, b) {
			m.cs.backends[name] = b
			changed = true
		}
		m.mu.Unlock()
		if changed {
			m.markDirty()
		}
		return true
	})
}

// backendFrom turns health entries into a Backend. The mount and options
// come from the instance with the smallest ID, so every node derives the
// same ones; with no passing instance the last known mount is kept, and a
// back end never seen passing is left out (its mount is unknown).
func (m *Mesh) backendFrom(name string, entries []*api.ServiceEntry, prev Backend, known bool) (Backend, bool) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Service.ID < entries[j].Service.ID })
	b := Backend{Name: name, DC: m.cfg.Consul.Datacenter, Instances: []Instance{}}
	first := true
	for _, e := range entries {
		in, mount, prefix, err := instanceFrom(e)
		if err != nil {
			m.log.WithError(err).WithField("backend", name).Warn("mesh: skipping a back-end instance")
			continue
		}
		if first {
			b.Mount, b.Prefix = mount, prefix
			first = false
		} else if mount != b.Mount || prefix != b.Prefix {
			m.log.WithFields(map[string]any{"backend": name, "instance": in.ID}).Debug("mesh: back-end instance disagrees on the mount; using the first instance's")
		}
		b.Instances = append(b.Instances, in)
	}
	if first {
		if !known {
			return Backend{}, false
		}
		b.Mount, b.Prefix = prev.Mount, prev.Prefix
	}
	return b, true
}

func instanceFrom(e *api.ServiceEntry) (Instance, string, bool, error) {
	s := e.Service
	host := s.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	if host == "" || s.Port <= 0 {
		return Instance{}, "", false, fmt.Errorf("mesh: instance %q has no address or port", s.ID)
	}
	scheme := s.Meta[MetaScheme]
	switch scheme {
	case "":
		scheme = "http"
	case "http", "https":
	default:
		return Instance{}, "", false, fmt.Errorf("mesh: instance %q: %s %q: want http or https", s.ID, MetaScheme, scheme)
	}
	path := cleanPath(s.Meta[MetaPath])
	mount := path
	if v := s.Meta[MetaMount]; v != "" {
		mount = cleanPath(v)
	}
	prefix := strings.EqualFold(s.Meta[MetaPrefix], "true")
	return Instance{ID: s.ID, Address: net.JoinHostPort(host, strconv.Itoa(s.Port)), Scheme: scheme, Path: path}, mount, prefix, nil
}

func cleanPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// registerLoop keeps this node registered: it checks every PollInterval and
// registers again when the registration is missing (an agent that
// restarted, or one that was unreachable when the node started).
func (m *Mesh) registerLoop(ctx context.Context) {
	const source = "registration"
	cc := m.cfg.Consul
	bo := m.consulBackoff()
	for {
		wait := cc.PollInterval
		registered, err := m.ensureRegistered(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			m.consulResult(ctx, source, err)
			wait = bo.Next()
		default:
			m.consulResult(ctx, source, nil)
			bo.Reset()
			if registered {
				m.log.WithField("service", cc.Service).Info("mesh: registered in consul")
			}
		}
		if !retry.Sleep(ctx, wait) {
			return
		}
	}
}

// ensureRegistered registers this node unless the agent already has it;
// it reports whether it registered.
func (m *Mesh) ensureRegistered(ctx context.Context) (bool, error) {
	cc := m.cfg.Consul
	host, port, err := splitHostPort(m.cfg.ClientAddr)
	if err != nil {
		return false, fmt.Errorf("mesh.client_addr: %w", err)
	}
	m.mu.Lock()
	capacity := m.cfg.Capacity // SetCapacity changes it
	m.mu.Unlock()
	reg := &api.AgentServiceRegistration{
		ID:      m.cfg.NodeID,
		Name:    cc.Service,
		Address: host,
		Port:    port,
		Meta: map[string]string{
			NodeMetaDC:       m.cfg.DC,
			NodeMetaTier:     strconv.Itoa(m.cfg.Tier),
			NodeMetaGossip:   m.LocalAddr(),
			NodeMetaAdmin:    m.cfg.AdminAddr,
			NodeMetaClient:   m.cfg.ClientAddr,
			NodeMetaCapacity: strconv.Itoa(capacity),
		},
		Check: &api.AgentServiceCheck{
			CheckID:                        checkID(m.cfg.NodeID),
			Name:                           "ssemesh readyz",
			HTTP:                           m.adminScheme() + "://" + m.cfg.AdminAddr + "/readyz",
			TLSSkipVerify:                  m.cfg.AdminTLS, // the check reads a status, not a secret
			Interval:                       cc.CheckInterval.String(),
			Timeout:                        min(cc.CheckInterval, 5*time.Second).String(),
			DeregisterCriticalServiceAfter: cc.DeregisterAfter.String(),
		},
	}
	svc, err := m.consul.AgentService(ctx, m.cfg.NodeID)
	if err != nil {
		return false, fmt.Errorf("mesh: consul: reading own registration: %w", err)
	}
	// A node restarted under the same ID finds its old registration, with
	// the addresses of its previous life: peers would join and dial those.
	// Only a registration that matches this process is left alone.
	if svc != nil && sameRegistration(svc, reg) {
		return false, nil
	}
	if err := m.consul.Register(ctx, reg); err != nil {
		return false, fmt.Errorf("mesh: consul: registering %s as %q: %w", m.cfg.NodeID, cc.Service, err)
	}
	return true, nil
}

// sameRegistration reports whether the agent's copy of this node's service
// says what reg says: name, addresses and every meta key.
func sameRegistration(svc *api.AgentService, reg *api.AgentServiceRegistration) bool {
	if svc.Service != reg.Name || svc.Address != reg.Address || svc.Port != reg.Port {
		return false
	}
	return maps.Equal(svc.Meta, reg.Meta)
}

// checkID names this node's health check in Consul.
func checkID(nodeID string) string { return "ssemesh-readyz-" + nodeID }

// adminScheme is how Consul reaches the admin listener's /readyz.
func (m *Mesh) adminScheme() string {
	if m.cfg.AdminTLS {
		return "https"
	}
	return "http"
}

// deregisterLocked removes this node's registration; lifeMu must be held.
func (m *Mesh) deregisterLocked(ctx context.Context) error {
	if m.consul == nil || m.deregged {
		return nil
	}
	if err := m.consul.Deregister(ctx, m.cfg.NodeID); err != nil {
		return fmt.Errorf("mesh: consul: deregistering %s: %w", m.cfg.NodeID, err)
	}
	m.deregged = true
	return nil
}

// joinFromConsul joins the gossip addresses of this data centre's passing
// nodes that are not live gossip peers yet. The query blocks for at most
// PollInterval, so a failed join is retried that often.
func (m *Mesh) joinFromConsul(ctx context.Context) {
	cc := m.cfg.Consul
	query := func(ctx context.Context, q consulQuery) ([]*api.ServiceEntry, uint64, error) {
		return m.consul.Passing(ctx, cc.Service, "", q)
	}
	blockingWatch(ctx, m, "peers", fmt.Sprintf("mesh: consul watch of peers %q", cc.Service), cc.PollInterval, query, func(entries []*api.ServiceEntry) bool {
		var addrs []string
		m.mu.Lock()
		for _, e := range entries {
			id, addr := e.Service.ID, e.Service.Meta[NodeMetaGossip]
			if id == m.cfg.NodeID || addr == "" {
				continue
			}
			if p, ok := m.peers[id]; ok && p.departed.IsZero() {
				continue
			}
			addrs = append(addrs, addr)
		}
		m.mu.Unlock()
		if len(addrs) > 0 {
			if n, err := m.ml.Join(addrs); err != nil {
				m.log.WithError(err).WithField("joined", n).Debug("mesh: joining peers found in consul")
			}
		}
		return true
	})
}

// watchOtherDCs polls the passing nodes of every other data centre; they
// become members with Source "consul". A data centre that cannot be read
// keeps its last known members.
func (m *Mesh) watchOtherDCs(ctx context.Context) {
	const source = "datacenters"
	cc := m.cfg.Consul
	bo := m.consulBackoff()
	for {
		wait := cc.PollInterval
		dcs, err := m.consul.Datacenters(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			m.consulResult(ctx, source, fmt.Errorf("mesh: consul: listing data centres: %w", err))
			wait = bo.Next()
		default:
			m.consulResult(ctx, source, nil)
			bo.Reset()
			m.refreshDCs(ctx, dcs)
		}
		if !retry.Sleep(ctx, wait) {
			return
		}
	}
}

func (m *Mesh) refreshDCs(ctx context.Context, dcs []string) {
	cc := m.cfg.Consul
	fresh := make(map[string][]Member)
	freshBackends := make(map[string][]Backend)
	for _, dc := range dcs {
		if dc == cc.Datacenter {
			continue
		}
		entries, index, err := m.consul.Passing(ctx, cc.Service, "", consulQuery{DC: dc})
		if ctx.Err() != nil {
			return
		}
		source := "datacenter " + dc
		if err != nil {
			m.consulResult(ctx, source, fmt.Errorf("mesh: consul: nodes of data centre %q: %w", dc, err))
			m.mu.Lock()
			fresh[dc] = m.cs.remote[dc]
			m.mu.Unlock()
			continue
		}
		m.consulResult(ctx, source, nil)
		members := make([]Member, 0, len(entries))
		for _, e := range entries {
			members = append(members, remoteMember(dc, e))
		}
		bs, ok := m.remoteBackendsOf(ctx, dc)
		m.mu.Lock()
		if !ok {
			bs = m.cs.remoteBackends[dc]
		}
		h := m.cs.holds[dc]
		if h == nil {
			h = &remoteHold{}
			m.cs.holds[dc] = h
		}
		members, bs, reset := h.observe(time.Now(), index, m.remoteResetGrace(), members, m.cs.remote[dc], bs, m.cs.remoteBackends[dc])
		m.mu.Unlock()
		if reset {
			m.log.WithFields(logrus.Fields{"dc": dc, "grace": m.remoteResetGrace()}).Warn("mesh: consul of another data centre lost its catalog (its index went back): keeping that data centre's last known nodes and back ends while they register again")
		}
		sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
		sort.SliceStable(bs, func(i, j int) bool { return bs[i].Name < bs[j].Name })
		fresh[dc] = members
		freshBackends[dc] = bs
	}
	m.mu.Lock()
	if !reflect.DeepEqual(freshBackends, m.cs.remoteBackends) {
		m.cs.remoteBackends = freshBackends
		m.mu.Unlock()
		m.markDirty()
		m.mu.Lock()
	}
	for dc := range m.cs.remote {
		if _, ok := fresh[dc]; !ok {
			delete(m.cs.errs, "datacenter "+dc)
		}
	}
	changed := !reflect.DeepEqual(fresh, m.cs.remote) || !m.cs.remoteSeen
	m.cs.remote = fresh
	m.cs.remoteSeen = true
	ended := m.endOutageLocked()
	m.mu.Unlock()
	if ended {
		m.log.Info("mesh: consul reachable again")
	}
	if changed {
		m.markDirty()
	}
}

func remoteMember(dc string, e *api.ServiceEntry) Member {
	s := e.Service
	meta := s.Meta
	mem := Member{
		ID:         s.ID,
		DC:         meta[NodeMetaDC],
		ClientAddr: meta[NodeMetaClient],
		AdminAddr:  meta[NodeMetaAdmin],
		State:      StateAlive,
		Source:     SourceConsul,
	}
	if mem.DC == "" {
		mem.DC = dc
	}
	if mem.ClientAddr == "" {
		host := s.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		mem.ClientAddr = net.JoinHostPort(host, strconv.Itoa(s.Port))
	}
	mem.Tier, _ = strconv.Atoi(meta[NodeMetaTier])
	mem.Capacity, _ = strconv.Atoi(meta[NodeMetaCapacity])
	return mem
}

// remoteBackendsOf lists the back ends registered in another data centre,
// so that nodes of a data centre without back ends still learn the mounts
// (and where the back end lives, which decides the stream's owner).
func (m *Mesh) remoteBackendsOf(ctx context.Context, dc string) ([]Backend, bool) {
	cc := m.cfg.Consul
	q := consulQuery{DC: dc}
	services, _, err := m.consul.Services(ctx, q)
	if err != nil {
		return nil, false
	}
	var out []Backend
	for name, tags := range services {
		if name == cc.Service || !slices.Contains(tags, cc.Tag) {
			continue
		}
		entries, _, err := m.consul.Passing(ctx, name, cc.Tag, q)
		if err != nil {
			return nil, false
		}
		b, ok := m.backendFrom(name, entries, Backend{}, false)
		if !ok {
			continue
		}
		b.DC = dc
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, true
}
