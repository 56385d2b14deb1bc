package node

import (
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted, err := parseTrustedProxies([]string{"10.0.0.0/8", "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		remote string
		xff    []string
		want   string
	}{
		{"direct client", "203.0.113.5:4000", nil, "203.0.113.5"},
		{"direct client claiming another address", "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"through a trusted proxy", "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"the client's own claims are left of the proxy's entry", "10.1.2.3:4000", []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"two trusted proxies", "192.0.2.7:4000", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"several headers are one list", "10.1.2.3:4000", []string{"6.6.6.6", "198.51.100.1"}, "198.51.100.1"},
		{"trusted proxy without the header", "10.1.2.3:4000", nil, "10.1.2.3"},
		{"only trusted hops", "10.1.2.3:4000", []string{"10.0.0.1"}, "10.0.0.1"},
		{"junk after a valid hop", "10.1.2.3:4000", []string{"junk, 10.0.0.1"}, "10.0.0.1"},
		{"IPv4-mapped IPv6 peer", "[::ffff:203.0.113.5]:4000", nil, "203.0.113.5"},
		{"IPv6 client through the proxy", "10.1.2.3:4000", []string{"2001:db8::1"}, "2001:db8::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientAddr(tc.remote, tc.xff, trusted); got != netip.MustParseAddr(tc.want) {
				t.Fatalf("clientAddr = %s, want %s", got, tc.want)
			}
		})
	}
}
