package node

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientAddr is the address per-client limits count for r: the peer
// address, or, when the peer is a trusted proxy, the nearest address in
// X-Forwarded-For that is not one. Entries left of that are the client's
// own claims and are never read.
func (n *Node) clientAddr(r *http.Request) netip.Addr {
	return clientAddr(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), n.live().trusted)
}

func clientAddr(remote string, xff []string, trusted []netip.Prefix) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	peer = peer.Unmap().WithZone("")
	if !isTrusted(peer, trusted) {
		return peer
	}
	// Several X-Forwarded-For headers form one list, in order.
	hops := strings.Split(strings.Join(xff, ","), ",")
	last := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			// A hop a trusted proxy would not write: the nearest
			// address known is the answer.
			return last
		}
		a = a.Unmap().WithZone("")
		if !isTrusted(a, trusted) {
			return a
		}
		last = a
	}
	return last
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
