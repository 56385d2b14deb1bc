package node

import (
	"errors"
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
