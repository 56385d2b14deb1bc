package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/ssemesh/ssemesh/mesh"
	"github.com/ssemesh/ssemesh/topology"
)

// advertised is the address peers dial for one of this node's listeners.
func (n *Node) advertised(bound string) string {
	host := n.cfg.Mesh.Advertise
	if host == "" {
		if h, _, err := net.SplitHostPort(n.cfg.Mesh.Gossip.Advertise); err == nil {
			host = h
		}
	}
	return advertiseAddr(bound, host, privateIPv4)
}

// advertiseAddr replaces bound's host with host, or, when host is empty and
// bound is on every interface, with the machine's private address: a peer
// dialling 0.0.0.0 or [::] reaches itself, not this node.
func advertiseAddr(bound, host string, private func() (string, error)) string {
	h, port, err := net.SplitHostPort(bound)
	if err != nil || bound == "" {
		return bound
	}
	if host == "" {
		ip := net.ParseIP(h)
		if h != "" && (ip == nil || !ip.IsUnspecified()) {
			return bound
		}
		p, err := private()
		if err != nil {
			return bound
		}
		host = p
	}
	return net.JoinHostPort(host, port)
}

// privateIPv4 is the address advertised for a listener on every interface:
// the machine's first private IPv4 address (memberlist's choice for gossip
// bound to every interface), else its first other non-loopback IPv4 unicast
// address.
func privateIPv4() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("listing interface addresses: %w", err)
	}
	other := ""
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil {
			continue
		}
		if ipn.IP.IsPrivate() {
			return ipn.IP.String(), nil
		}
		if other == "" && ipn.IP.IsGlobalUnicast() {
			other = ipn.IP.String()
		}
	}
	if other != "" {
		return other, nil
	}
	return "", errors.New("no non-loopback IPv4 address on any interface: set mesh.advertise")
}

// meshConfig is the mesh package's configuration for this node, with the
// addresses peers dial.
func (c *Config) meshConfig(nodeID, clientAddr, adminAddr string) mesh.Config {
	mc := c.Mesh
	return mesh.Config{
		NodeID:     nodeID,
		DC:         mc.DC,
		Tier:       mc.Tier,
		ClientAddr: clientAddr,
		AdminAddr:  adminAddr,
		AdminTLS:   c.Admin.TLS != nil,
		Capacity:   c.Limits.MaxClients,
		Gossip: mesh.GossipConfig{
			Bind:            mc.Gossip.Bind,
			Advertise:       mc.Gossip.Advertise,
			Seeds:           mc.Gossip.Seeds,
			Key:             mc.Gossip.Key,
			AcceptKeys:      mc.Gossip.AcceptKeys,
			InsecureNoKey:   mc.Gossip.InsecureNoKey,
			AllowedNetworks: mc.Gossip.AllowedNetworks,
			Fast:            mc.Gossip.Fast,
		},
		Consul: mesh.ConsulConfig{
			Address:    mc.Consul.Address,
			Token:      mc.Consul.Token,
			Datacenter: mc.Consul.Datacenter,
			Tag:        mc.Consul.Tag,
		},
		Settle: mc.Settle.D(),
	}
}

// meshKeys maps the mesh package's names for settings the node derives to
// the node configuration's keys.
var meshKeys = map[string]string{
	"mesh.node_id":     "node_id",
	"mesh.client_addr": "listen",
	"mesh.admin_addr":  "admin.listen",
	"mesh.capacity":    "limits.max_clients",
}

var meshKeyRE = regexp.MustCompile(`(mesh\.[a-z_.]+(?:\[\d+\])?): (.*)$`)

// meshConfigError turns a mesh validation error into a ConfigError naming
// the node's key.
func meshConfigError(err error) error {
	m := meshKeyRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &ConfigError{Key: "mesh", Reason: err.Error()}
	}
	key := m[1]
	if k, ok := meshKeys[key]; ok {
		key = k
	}
	return &ConfigError{Key: key, Reason: m[2]}
}

// checkMesh validates the mesh settings before anything starts. Addresses
// are the ones the node will advertise; a port chosen at start (0) stands in
// as 1.
func (c *Config) checkMesh() error {
	id := c.NodeID
	if id == "" {
		h, _ := os.Hostname()
		id = h + "-" + portOf(c.Listen)
	}
	host := c.Mesh.Advertise
	if host == "" {
		if h, _, err := net.SplitHostPort(c.Mesh.Gossip.Advertise); err == nil {
			host = h
		}
	}
	var unreachable error
	addr := func(key, bound string) string {
		a := advertiseAddr(bound, host, privateIPv4)
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			return a
		}
		if ip := net.ParseIP(h); (h == "" || ip != nil && ip.IsUnspecified()) && unreachable == nil {
			_, perr := privateIPv4()
			unreachable = &ConfigError{Key: "mesh.advertise", Reason: fmt.Sprintf("%s %q is on every interface and no address to advertise was found (%v)", key, bound, perr)}
		}
		if p == "0" {
			a = net.JoinHostPort(h, "1")
		}
		return a
	}
	mc := c.meshConfig(id, addr("listen", c.Listen), addr("admin.listen", c.Admin.Listen))
	if unreachable != nil {
		return unreachable
	}
	if err := mesh.CheckConfig(mc); err != nil {
		return meshConfigError(err)
	}
	return nil
}

// startMesh joins gossip and Consul and starts following the view. It runs
// once the listeners are up, since their addresses are what peers dial.
func (n *Node) startMesh() error {
	mcfg := n.cfg.meshConfig(n.cfg.NodeID, n.advertised(n.Addr()), n.advertised(n.AdminAddr()))
	mcfg.Logger = n.log
	// Back ends come from Consul: take no children before they are known,
	// or a child that switches here early is answered 404.
	mcfg.Warmup = n.cfg.Mesh.Consul.Address != ""
	m, err := mesh.New(mcfg)
	if err != nil {
		return meshConfigError(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		return fmt.Errorf("node: starting mesh: %w", err)
	}
	n.mesh = m
	n.applyView()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.followMesh()
	}()
	return nil
}

// warmupLimit bounds how long a node in a mesh with Consul waits for its
// back ends before it takes children anyway (Consul may be unreachable).
const warmupLimit = 10 * time.Second

// followMesh applies every new view and reports this node's load, until
// shutdown begins.
func (n *Node) followMesh() {
	load := time.NewTicker(time.Second)
	defer load.Stop()
	warmup := time.NewTimer(warmupLimit)
	defer warmup.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-warmup.C:
			if v := n.mesh.View(); !v.Serving && n.ready.Load() {
				n.log.WithField("after", warmupLimit).Warn("back ends in Consul not all read yet: taking children with what is known")
				n.mesh.SetServing()
			}
		case <-n.mesh.Changed():
			n.applyView()
		case <-load.C:
			n.mesh.SetLoad(n.relay.Clients(), n.relay.Streams())
			n.pruneRoutes()
			if n.avoid.expire(time.Now()) {
				// A parent avoided after a failure or a refusal is a
				// candidate again: the plan may prefer it.
				n.reroute()
			}
		}
	}
}

// topologyView turns the mesh's members into the topology's nodes.
func topologyView(v *mesh.View) topology.View {
	tv := topology.View{Nodes: make([]topology.Node, 0, len(v.Members))}
	for _, m := range v.Members {
		st := topology.StateAlive
		switch m.State {
		case mesh.StateSuspect:
			st = topology.StateSuspect
		case mesh.StateDraining:
			st = topology.StateDraining
		case mesh.StateLeft:
			st = topology.StateLeft
		case mesh.StateDead:
			st = topology.StateUnreachable
		}
		if m.Draining && st == topology.StateAlive {
			st = topology.StateDraining
		}
		tv.Nodes = append(tv.Nodes, topology.Node{
			ID: m.ID, DC: m.DC, Tier: m.Tier,
			ClientAddr: m.ClientAddr, AdminAddr: m.AdminAddr,
			Clients: m.Clients, Capacity: m.Capacity, Streams: m.Streams,
			State: st,
		})
	}
	return tv
}

// applyView installs a new view: the plan every stream's target is chosen
// from, the mounts of back ends found in Consul, and a make-before-break
// switch for every stream whose upstream changed.
func (n *Node) applyView() {
	v := n.mesh.View()
	if v == nil {
		return
	}
	tv := topologyView(v)
	n.plan.Store(topology.NewPlan(tv))
	n.updateMounts(v.Backends)
	if !v.Serving && v.BackendsSynced {
		n.mesh.SetServing()
	}
	n.forgetAvoidOnChange(tv)
	n.reroute()
}

// forgetAvoidOnChange clears the avoided parents when membership changed.
// An avoid entry works around what the view did not know yet: a parent that
// died, or one that could not serve because its own parent died. Once the
// view knows, the plan routes around the dead node by itself, and keeping
// the entries would only keep streams off healthy parents (a root that
// answered 502 while the owner was dying is the new owner a moment later).
// A parent that still fails is avoided again at its next failure.
func (n *Node) forgetAvoidOnChange(v topology.View) {
	ids := make([]string, 0, len(v.Nodes))
	for _, m := range v.Nodes {
		ids = append(ids, m.ID+"="+string(m.State))
	}
	sort.Strings(ids)
	sig := strings.Join(ids, ",")
	if sig == n.members {
		return
	}
	n.members = sig
	if k := n.avoid.clear(); k > 0 {
		n.log.WithField("entries", k).Info("membership changed: avoided parents are candidates again")
	}
}

// reroute moves every stream whose chosen upstream differs from the one it
// uses, make-before-break.
func (n *Node) reroute() {
	n.routesMu.Lock()
	routes := make([]*route, 0, len(n.routes))
	for _, rt := range n.routes {
		routes = append(routes, rt)
	}
	n.routesMu.Unlock()
	for _, rt := range routes {
		cur, chosen := rt.current()
		if !chosen {
			continue
		}
		m := n.findMount(rt.path)
		if m == nil {
			continue
		}
		c, err := n.choose(rt.key, m.dc)
		if err != nil {
			continue // keep what works until the view offers something
		}
		next := ""
		if !c.Backend {
			next = c.Parent.ID
		}
		if next != cur {
			n.log.WithFields(map[string]any{"stream": rt.key, "from": orBackend(cur), "to": orBackend(next)}).Info("re-parenting stream")
			n.relay.Retarget(rt.key)
		}
	}
}

func orBackend(id string) string {
	if id == "" {
		return "back end"
	}
	return id
}

// updateMounts records the back ends Consul announces and rebuilds the
// mount table.
func (n *Node) updateMounts(found []mesh.Backend) {
	n.mountsMu.Lock()
	defer n.mountsMu.Unlock()
	n.consulFound = found
	n.rebuildMountsLocked()
}

// rebuildMountsLocked merges the back ends announced in Consul with the
// configured ones in force. Configuration supplies headers, credentials
// and TLS by name and may pin the mount; Consul supplies instances, mount
// and data centre. n.mountsMu is held.
func (n *Node) rebuildMountsLocked() {
	backends := n.live().cfg.Backends
	byName := map[string]BackendSpec{}
	var ms []*mount
	for _, b := range backends {
		byName[b.Name] = b
	}
	seen := map[string]bool{}
	for _, fb := range n.consulFound {
		spec := byName[fb.Name]
		spec.Name = fb.Name
		if spec.Mount == "" {
			// Not pinned in the configuration: Consul's ssemesh-mount.
			spec.Mount, spec.Prefix = fb.Mount, fb.Prefix
		}
		spec.DC = fb.DC
		spec.URI = ""
		tc, err := n.tls.upstreamFor(spec)
		if err != nil {
			n.log.WithError(err).WithField("backend", fb.Name).Warn("back end from Consul ignored")
			continue
		}
		m, err := newMount(spec, tc)
		if err != nil {
			n.log.WithError(err).WithField("backend", fb.Name).Warn("back end from Consul ignored")
			continue
		}
		for _, in := range fb.Instances {
			u, err := url.Parse(in.URL())
			if err != nil || u.Host != in.Address {
				n.log.WithField("backend", fb.Name).WithField("instance", in.ID).Warn("back-end instance from Consul ignored: its address and path do not make a URL")
				continue
			}
			m.addInstance(u)
		}
		seen[fb.Name] = true
		ms = append(ms, m)
	}
	var rest []BackendSpec
	for _, b := range backends {
		if !seen[b.Name] {
			rest = append(rest, b)
		}
	}
	static, err := n.staticMounts(rest)
	if err != nil {
		// Checked when the configuration was accepted; a TLS file that
		// broke since keeps the back end out until it is fixed.
		n.log.WithError(err).Warn("configured back end left out")
	}
	n.setMounts(append(ms, static...))
}

// leaveMesh announces draining and leaves gossip and Consul, then waits
// (bounded by Mesh.Handoff) for child nodes to move to other parents, so
// they switch make-before-break instead of being cut.
func (n *Node) leaveMesh(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := n.mesh.SetDraining(lctx)
	cancel()
	if err != nil {
		n.log.WithError(err).Warn("leaving the mesh")
	}
	deadline := time.NewTimer(n.cfg.Mesh.Handoff.D())
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n.relay.ChildClients() > 0 {
		select {
		case <-tick.C:
		case <-deadline.C:
			n.log.WithField("children", n.relay.ChildClients()).Warn("child nodes still attached after the handoff period")
			return
		case <-ctx.Done():
			return
		}
	}
}

// Kill stops the node the way a crash would, for fault drills and tests:
// no draining, no goodbye to the mesh, every connection cut at once.
func (n *Node) Kill() {
	n.stopOnce.Do(func() {
		n.ready.Store(false)
		close(n.stop)
		n.stopTLS()
		if n.mesh != nil {
			_ = n.mesh.Abandon()
		}
		_ = n.srv.Close()
		if n.adminSrv != nil {
			_ = n.adminSrv.Close()
		}
		n.relay.Close()
		n.live().auth.close()
		n.wg.Wait()
	})
}

// MeshView is the node's current mesh view (nil outside a mesh).
func (n *Node) MeshView() *mesh.View {
	if n.mesh == nil {
		return nil
	}
	return n.mesh.View()
}

// GossipAddr is the address peers join this node's gossip at ("" outside a
// mesh).
func (n *Node) GossipAddr() string {
	if n.mesh == nil {
		return ""
	}
	return n.mesh.LocalAddr()
}
