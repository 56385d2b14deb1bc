package node

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
	"github.com/ssemesh/ssemesh/mesh"
)

func TestMeshError(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"section key", cfgerr.New("dc", "required"), "config: mesh.dc: required"},
		{"nested key", cfgerr.Prefix("gossip", cfgerr.New("key", "not base64")), "config: mesh.gossip.key: not base64"},
		{"node id", cfgerr.New(mesh.KeyNodeID, "required"), "config: node_id: required"},
		{"client address", cfgerr.New(mesh.KeyClientAddr, "bad"), "config: listen: bad"},
		{"admin address", cfgerr.New(mesh.KeyAdminAddr, "bad"), "config: admin.listen: bad"},
		{"capacity", cfgerr.New(mesh.KeyCapacity, "bad"), "config: limits.max_clients: bad"},
		{"wrapped by New", fmt.Errorf("mesh: invalid config: %w", cfgerr.New("tier", "too high")), "config: mesh.tier: too high"},
		{"untyped", errors.New("consul: boom"), "config: mesh: consul: boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := meshError(c.err)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("%v: not a ConfigError", err)
			}
			if err.Error() != c.want {
				t.Fatalf("got %q, want %q", err.Error(), c.want)
			}
		})
	}
}

// TestMeshSectionIsMeshConfig: the mesh section decodes into mesh.Config
// itself, the node's own keys beside it, and the runtime fields are not
// read from the file.
func TestMeshSectionIsMeshConfig(t *testing.T) {
	raw := `
mesh:
  dc: eu-1
  tier: 2
  settle: 50ms
  advertise: edge-1.example
  avoid_for: 0s
  handoff: 3s
  gossip:
    bind: 127.0.0.1:7946
    advertise: 10.0.0.9:7946
    seeds: [10.0.0.1:7946]
    key: k
    accept_keys: [a]
    insecure_no_key: true
    allowed_networks: [10.0.0.0/8]
    fast: true
  consul:
    address: 127.0.0.1:8500
    token: tok
    datacenter: eu
    tag: sse
`
	cfg, err := ParseConfig([]byte(raw), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := mesh.Config{
		DC: "eu-1", Tier: 2, Settle: 50 * time.Millisecond,
		Gossip: mesh.GossipConfig{Bind: "127.0.0.1:7946", Advertise: "10.0.0.9:7946", Seeds: []string{"10.0.0.1:7946"},
			Key: "k", AcceptKeys: []string{"a"}, InsecureNoKey: true, AllowedNetworks: []string{"10.0.0.0/8"}, Fast: true},
		Consul: mesh.ConsulConfig{Address: "127.0.0.1:8500", Token: "tok", Datacenter: "eu", Tag: "sse"},
	}
	if !reflect.DeepEqual(cfg.Mesh.Config, want) {
		t.Fatalf("mesh section:\n got %+v\nwant %+v", cfg.Mesh.Config, want)
	}
	if cfg.Mesh.Advertise != "edge-1.example" || cfg.Mesh.AvoidFor != 0 || cfg.Mesh.Handoff.D() != 3*time.Second {
		t.Fatalf("node's mesh keys: %+v", cfg.Mesh)
	}

	// Absent keys keep the defaults.
	def, err := ParseConfig([]byte("mesh: {tier: 1}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if def.Mesh.DC != "dc1" || def.Mesh.Settle != mesh.DefaultSettle || def.Mesh.AvoidFor.D() != 30*time.Second || def.Mesh.Tier != 1 {
		t.Fatalf("defaults: %+v", def.Mesh)
	}

	// Runtime fields and tunables the file does not offer are unknown keys.
	for _, k := range []string{"node_id", "client_addr", "admin_addr", "capacity", "warmup", "retain", "logger"} {
		_, err := ParseConfig([]byte("mesh: {"+k+": x}\n"), nil)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != "mesh."+k {
			t.Errorf("mesh.%s accepted or misnamed: %v", k, err)
		}
	}

	// The runtime fields come from the node's settings.
	mc := cfg.meshRuntime("n1", "10.0.0.9:8080", "10.0.0.9:9090")
	if mc.NodeID != "n1" || mc.ClientAddr != "10.0.0.9:8080" || mc.AdminAddr != "10.0.0.9:9090" || mc.Capacity != cfg.Limits.MaxClients || mc.AdminTLS {
		t.Fatalf("runtime fields: %+v", mc)
	}
	if mc.DC != "eu-1" || mc.Gossip.Key != "k" {
		t.Fatalf("runtime copy lost the file's settings: %+v", mc)
	}
}
