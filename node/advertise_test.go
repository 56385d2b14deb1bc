package node

import (
	"errors"
	"net"
	"testing"
)

func TestAdvertiseAddr(t *testing.T) {
	private := func() (string, error) { return "10.1.2.3", nil }
	none := func() (string, error) { return "", errors.New("no private address") }
	cases := []struct {
		name, bound, host string
		private           func() (string, error)
		want              string
	}{
		{"specific address kept", "192.168.1.5:8080", "", private, "192.168.1.5:8080"},
		{"loopback kept", "127.0.0.1:8080", "", private, "127.0.0.1:8080"},
		{"IPv4 any becomes private", "0.0.0.0:8080", "", private, "10.1.2.3:8080"},
		{"IPv6 any becomes private", "[::]:8080", "", private, "10.1.2.3:8080"},
		{"empty host becomes private", ":8080", "", private, "10.1.2.3:8080"},
		{"configured host wins", "0.0.0.0:8080", "edge-1.example", private, "edge-1.example:8080"},
		{"configured host over a specific bind", "127.0.0.1:9090", "10.9.9.9", private, "10.9.9.9:9090"},
		{"IPv6 host bracketed", "0.0.0.0:8080", "fd00::1", private, "[fd00::1]:8080"},
		{"no private address: bound kept", "0.0.0.0:8080", "", none, "0.0.0.0:8080"},
		{"no listener", "", "", private, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := advertiseAddr(c.bound, c.host, c.private); got != c.want {
				t.Fatalf("advertiseAddr(%q, %q) = %q, want %q", c.bound, c.host, got, c.want)
			}
		})
	}
}

func TestAdvertiseValidation(t *testing.T) {
	for _, c := range []struct {
		host string
		ok   bool
	}{
		{"10.0.0.5", true}, {"fd00::5", true}, {"node-1.dc1.example", true},
		{"0.0.0.0", false}, {"::", false}, {"10.0.0.5:8080", false}, {"http://x", false},
	} {
		cfg := testConfig(BackendSpec{Name: "b", URI: "http://127.0.0.1:1/s"})
		cfg.Mesh.Advertise = c.host
		err := cfg.Validate()
		if (err == nil) != c.ok {
			t.Errorf("mesh.advertise %q: err %v, want ok=%v", c.host, err, c.ok)
		}
		var ce *ConfigError
		if err != nil && (!errors.As(err, &ce) || ce.Key != "mesh.advertise") {
			t.Errorf("mesh.advertise %q: error %v does not name the key", c.host, err)
		}
	}
}

func TestAdvertiseHost(t *testing.T) {
	for _, c := range []struct {
		name, advertise, gossip, want string
	}{
		{"nothing set", "", "", ""},
		{"mesh.advertise", "edge-1.example", "10.0.0.9:7946", "edge-1.example"},
		{"gossip advertise host", "", "10.0.0.9:7946", "10.0.0.9"},
		{"gossip advertise IPv6", "", "[fd00::9]:7946", "fd00::9"},
		{"gossip advertise without port is ignored", "", "10.0.0.9", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var m MeshConfig
			m.Advertise, m.Gossip.Advertise = c.advertise, c.gossip
			if got := m.advertiseHost(); got != c.want {
				t.Fatalf("advertiseHost() = %q, want %q", got, c.want)
			}
		})
	}
}

func TestCheckedAdvertise(t *testing.T) {
	private := func() (string, error) { return "10.1.2.3", nil }
	none := func() (string, error) { return "", errors.New("no private address") }
	for _, c := range []struct {
		name, bound, host string
		private           func() (string, error)
		want              string
		wantErr           string // "" = no error
	}{
		{"specific address", "192.168.1.5:8080", "", none, "192.168.1.5:8080", ""},
		{"port chosen at start stands in as 1", "127.0.0.1:0", "", none, "127.0.0.1:1", ""},
		{"every interface, private found", "0.0.0.0:8080", "", private, "10.1.2.3:8080", ""},
		{"every interface, host given", "[::]:0", "edge-1.example", none, "edge-1.example:1", ""},
		{"every interface, nothing to advertise", "0.0.0.0:8080", "", none, "0.0.0.0:8080",
			`listen "0.0.0.0:8080" is on every interface and no address to advertise was found (no private address)`},
		{"empty host, nothing to advertise", ":8080", "", none, ":8080",
			`listen ":8080" is on every interface and no address to advertise was found (no private address)`},
		{"no listener", "", "", none, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := checkedAdvertise("listen", c.bound, c.host, c.private)
			if got != c.want {
				t.Errorf("address %q, want %q", got, c.want)
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case c.wantErr != "":
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Key != "mesh.advertise" || ce.Reason != c.wantErr {
					t.Fatalf("error %v, want mesh.advertise: %s", err, c.wantErr)
				}
			}
		})
	}
}

func TestPickIPv4(t *testing.T) {
	ipnet := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	for _, c := range []struct {
		name  string
		addrs []net.Addr
		want  string // "" = an error
	}{
		{"first private wins", []net.Addr{ipnet("127.0.0.1/8"), ipnet("203.0.113.7/24"), ipnet("10.0.0.5/8"), ipnet("192.168.1.2/24")}, "10.0.0.5"},
		{"public when no private", []net.Addr{ipnet("127.0.0.1/8"), ipnet("203.0.113.7/24"), ipnet("198.51.100.1/24")}, "203.0.113.7"},
		{"IPv6 skipped", []net.Addr{ipnet("fd00::1/64"), ipnet("172.16.0.4/12")}, "172.16.0.4"},
		{"not an IPNet skipped", []net.Addr{&net.IPAddr{IP: net.ParseIP("10.9.9.9")}, ipnet("192.168.7.7/24")}, "192.168.7.7"},
		{"loopback and link-local only", []net.Addr{ipnet("127.0.0.1/8"), ipnet("169.254.1.1/16"), ipnet("::1/128")}, ""},
		{"none", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := pickIPv4(c.addrs)
			if c.want == "" {
				if err == nil {
					t.Fatalf("pickIPv4 = %q, want an error", got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("pickIPv4 = %q, %v, want %q", got, err, c.want)
			}
		})
	}
}
