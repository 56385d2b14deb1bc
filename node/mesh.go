package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
	"github.com/ssemesh/ssemesh/mesh"
)

// meshRuntime is the mesh section with its runtime fields filled from the
// node's own settings: its ID, the addresses peers dial, whether the admin
// listener speaks HTTPS, and its capacity.
func (c *Config) meshRuntime(nodeID, clientAddr, adminAddr string) mesh.Config {
	mc := c.Mesh.Config
	mc.NodeID = nodeID
	mc.ClientAddr, mc.AdminAddr = clientAddr, adminAddr
	mc.AdminTLS = c.Admin.TLS != nil
	mc.Capacity = c.Limits.MaxClients
	return mc
}

// meshRuntimeKeys name the mesh's runtime fields by the node's keys they
// are filled from.
var meshRuntimeKeys = map[string]string{
	mesh.KeyNodeID:     "node_id",
	mesh.KeyClientAddr: "listen",
	mesh.KeyAdminAddr:  "admin.listen",
	mesh.KeyCapacity:   "limits.max_clients",
}

// meshError names a mesh configuration error by the node's key: a key of
// the mesh section under mesh., a runtime field by the key it came from.
func meshError(err error) error {
	var e *cfgerr.Error
	if errors.As(err, &e) {
		if k, ok := meshRuntimeKeys[e.Key]; ok {
			return &ConfigError{Key: k, Reason: e.Reason}
		}
	}
	return cfgerr.Prefix("mesh", err)
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
	host := c.Mesh.advertiseHost()
	client, err := checkedAdvertise("listen", c.Listen, host, privateIPv4)
	if err != nil {
		return err
	}
	admin, err := checkedAdvertise("admin.listen", c.Admin.Listen, host, privateIPv4)
	if err != nil {
		return err
	}
	if err := mesh.CheckConfig(c.meshRuntime(id, client, admin)); err != nil {
		return meshError(err)
	}
	return nil
}

// startMesh joins gossip and Consul and starts following the view. It runs
// once the listeners are up, since their addresses are what peers dial.
func (n *Node) startMesh() error {
	mcfg := n.cfg.meshRuntime(n.cfg.NodeID, n.advertised(n.Addr()), n.advertised(n.AdminAddr()))
	mcfg.Logger = n.log
	if mcfg.Consul.Address != "" && n.cfg.Admin.TLS != nil && n.cfg.Admin.TLS.ClientCA != "" {
		n.log.Warn("admin.tls.client_ca requires a client certificate on /readyz, and Consul's health check of this node shows none unless its agent presents one (Consul's enable_agent_tls_for_checks, with a certificate from client_ca): otherwise Consul sees this node as critical, and peers and other data centres do not find it there")
	}
	// Back ends come from Consul: take no children before they are known,
	// or a child that switches here early is answered 404.
	mcfg.Warmup = n.cfg.Mesh.Consul.Address != ""
	m, err := mesh.New(mcfg)
	if err != nil {
		return meshError(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		return fmt.Errorf("node: starting mesh: %w", err)
	}
	n.mesh, n.view = m, m
	n.applyView()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.followMesh()
	}()
	return nil
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
		if !n.end() {
			return
		}
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
