package node

import (
	"errors"
	"fmt"
	"net"
)

// advertiseHost is the host advertised for the client and admin listeners:
// mesh.advertise, else the host of mesh.gossip.advertise; "" leaves each
// listener's own host (or the machine's private address, see
// advertiseAddr).
func (m MeshConfig) advertiseHost() string {
	if m.Advertise != "" {
		return m.Advertise
	}
	if h, _, err := net.SplitHostPort(m.Gossip.Advertise); err == nil {
		return h
	}
	return ""
}

// advertised is the address peers dial for one of this node's listeners.
func (n *Node) advertised(bound string) string {
	return advertiseAddr(bound, n.cfg.Mesh.advertiseHost(), privateIPv4)
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

// checkedAdvertise is the address the listener bound at bound (under key)
// will be advertised at, as the check before start sees it: a port chosen
// at start (0) stands in as 1. It fails when the listener is on every
// interface and no address to advertise is found, since peers could not
// reach it.
func checkedAdvertise(key, bound, host string, private func() (string, error)) (string, error) {
	a := advertiseAddr(bound, host, private)
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return a, nil // the mesh's check names it
	}
	if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
		_, perr := private()
		return a, &ConfigError{Key: "mesh.advertise", Reason: fmt.Sprintf("%s %q is on every interface and no address to advertise was found (%v)", key, bound, perr)}
	}
	if p == "0" {
		a = net.JoinHostPort(h, "1")
	}
	return a, nil
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
	return pickIPv4(addrs)
}

// pickIPv4 is privateIPv4's choice among the interface addresses.
func pickIPv4(addrs []net.Addr) (string, error) {
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
