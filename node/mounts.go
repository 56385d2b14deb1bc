package node

import (
	"net/url"

	"github.com/ssemesh/ssemesh/mesh"
)

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
