package mesh

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestGossipConvergesAndPropagatesLoad(t *testing.T) {
	a := startMesh(t, testConfig(t, "a"))
	seeds := []string{a.LocalAddr()}
	cb := testConfig(t, "b")
	cb.Tier, cb.ClientAddr, cb.AdminAddr, cb.Capacity = 0, "127.0.0.1:28080", "127.0.0.1:28081", 500
	cb.Gossip.Seeds = seeds
	b := startMesh(t, cb)
	cc := testConfig(t, "c")
	cc.DC = "dc1"
	cc.Gossip.Seeds = seeds
	c := startMesh(t, cc)

	for _, m := range []*Mesh{a, b, c} {
		v := awaitView(t, m, 10*time.Second, "three alive members", allAlive("a", "b", "c"))
		if len(v.Members) != 3 {
			t.Fatalf("%s: want 3 members, got %d:\n%s", m.cfg.NodeID, len(v.Members), dumpView(v))
		}
		for i, id := range []string{"a", "b", "c"} {
			if v.Members[i].ID != id || v.Members[i].Source != SourceGossip {
				t.Fatalf("%s: members not sorted gossip members:\n%s", m.cfg.NodeID, dumpView(v))
			}
		}
		if v.ConsulOK || v.ConsulError != "" {
			t.Errorf("%s: consul not configured, want ConsulOK=false and no error, got %v %q", m.cfg.NodeID, v.ConsulOK, v.ConsulError)
		}
	}
	got, _ := a.View().Member("b")
	want := Member{ID: "b", DC: "dc1", Tier: 0, ClientAddr: "127.0.0.1:28080", AdminAddr: "127.0.0.1:28081",
		Capacity: 500, State: StateAlive, Source: SourceGossip}
	if got != want {
		t.Fatalf("a's view of b:\n got %+v\nwant %+v", got, want)
	}

	before := a.View()
	beforeCopy := *before
	beforeCopy.Members = append([]Member(nil), before.Members...)

	b.SetLoad(42, 7)
	if m, _ := b.View().Member("b"); m.Clients != 0 {
		// the local view is republished after Settle, never mutated
		t.Fatalf("b's published view was mutated in place: %+v", m)
	}
	awaitView(t, b, 5*time.Second, "own load", func(v *View) bool {
		m, _ := v.Member("b")
		return m.Clients == 42 && m.Streams == 7
	})
	v := awaitView(t, a, 5*time.Second, "b's load gossiped", func(v *View) bool {
		m, _ := v.Member("b")
		return m.Clients == 42 && m.Streams == 7
	})
	if v.Version <= before.Version {
		t.Errorf("version did not increase: %d -> %d", before.Version, v.Version)
	}
	if before.Version != beforeCopy.Version || before.Members[1] != beforeCopy.Members[1] {
		t.Errorf("an old view changed after publication")
	}
}

func TestGossipDrainingThenLeftThenDropped(t *testing.T) {
	ca := testConfig(t, "a")
	ca.Retain = 1500 * time.Millisecond
	a := startMesh(t, ca)
	cb := testConfig(t, "b")
	cb.Gossip.Seeds = []string{a.LocalAddr()}
	b := startMesh(t, cb)
	awaitView(t, a, 10*time.Second, "b alive", allAlive("a", "b"))

	if err := b.SetDraining(context.Background()); err != nil {
		t.Fatalf("SetDraining: %v", err)
	}
	if m, _ := awaitView(t, b, 2*time.Second, "self draining", func(v *View) bool {
		return memberState(v, "b") == StateDraining
	}).Member("b"); !m.Draining {
		t.Fatalf("b's own entry not marked draining: %+v", m)
	}
	v := awaitView(t, a, 5*time.Second, "b left", func(v *View) bool { return memberState(v, "b") == StateLeft })
	leftAt := time.Now()
	if m, _ := v.Member("b"); !m.Draining {
		t.Errorf("b left without its draining flag reaching a: %+v", m)
	}
	// Calling it again is a no-op, not an error (memberlist would panic on
	// a second leave after shutdown).
	if err := b.SetDraining(context.Background()); err != nil {
		t.Fatalf("second SetDraining: %v", err)
	}
	awaitView(t, a, 5*time.Second, "b dropped after Retain", func(v *View) bool {
		_, ok := v.Member("b")
		return !ok
	})
	if since := time.Since(leftAt); since < time.Second {
		t.Errorf("b dropped %s after leaving, before Retain (1.5s)", since)
	}
}

func TestGossipDetectsFailure(t *testing.T) {
	ca := testConfig(t, "a")
	a := startMesh(t, ca)
	seeds := []string{a.LocalAddr()}
	cb := testConfig(t, "b")
	cb.Gossip.Seeds = seeds
	b := startMesh(t, cb)
	cc := testConfig(t, "c")
	cc.Gossip.Seeds = seeds
	c, err := New(cc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	awaitView(t, a, 10*time.Second, "all alive", allAlive("a", "b", "c"))
	awaitView(t, b, 10*time.Second, "all alive", allAlive("a", "b", "c"))

	// A crash: no leave, no goodbye.
	killed := time.Now()
	if err := c.shutdown(false); err != nil {
		t.Fatalf("crash c: %v", err)
	}
	var sawSuspect time.Duration
	v := awaitView(t, a, 8*time.Second, "c dead", func(v *View) bool {
		st := memberState(v, "c")
		if st == StateSuspect && sawSuspect == 0 {
			sawSuspect = time.Since(killed)
		}
		return st == StateDead
	})
	dead := time.Since(killed)
	t.Logf("c suspect after %s, dead after %s", sawSuspect, dead)
	if sawSuspect == 0 {
		t.Errorf("c went dead without being suspect first")
	}
	// The Fast timings promise about 3 s; the bound leaves room for the
	// race detector on a loaded machine.
	if dead > 6*time.Second {
		t.Errorf("failure detection took %s", dead)
	}
	if memberState(v, "a") != StateAlive || memberState(v, "b") != StateAlive {
		t.Errorf("survivors not alive:\n%s", dumpView(v))
	}
	awaitView(t, b, 5*time.Second, "c dead at b", func(v *View) bool { return memberState(v, "c") == StateDead })
}

func TestGossipEncryptionKey(t *testing.T) {
	key1 := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	key2 := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	ca := testConfig(t, "a")
	ca.Gossip.Key = key1
	a := startMesh(t, ca)
	cb := testConfig(t, "b")
	cb.Gossip.Key = key1
	cb.Gossip.Seeds = []string{a.LocalAddr()}
	b := startMesh(t, cb)
	awaitView(t, a, 10*time.Second, "b joined with the same key", allAlive("a", "b"))
	_ = b

	for _, tc := range []struct{ name, key string }{
		{"other key", key2},
		{"no key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "x")
			cfg.Gossip.Key = tc.key
			x := startMesh(t, cfg)
			n, err := x.ml.Join([]string{a.LocalAddr()})
			if err == nil || n != 0 {
				t.Fatalf("join with %s: want an error and 0 joined, got %d, %v", tc.name, n, err)
			}
			if _, ok := a.View().Member("x"); ok {
				t.Fatalf("a admitted x:\n%s", dumpView(a.View()))
			}
			if len(x.View().Members) != 1 {
				t.Fatalf("x sees others:\n%s", dumpView(x.View()))
			}
		})
	}
}

func TestMetaMaxSize(t *testing.T) {
	host := strings.Repeat("h", maxAddrLen-len(":65535"))
	cfg := testConfig(t, strings.Repeat("n", maxIDLen))
	cfg.DC = strings.Repeat("d", maxDCLen)
	cfg.Tier = maxTier
	cfg.ClientAddr = host + ":65535"
	cfg.AdminAddr = host + ":65534"
	cfg.Capacity = int(^uint(0) >> 1)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("maximal config rejected: %v", err)
	}
	worst := cfg.metaFor(cfg.Capacity, cfg.Capacity, true)
	b, err := encodeMeta(worst)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worst-case metadata: %d bytes", len(b))
	if len(b) > memberlist.MetaMaxSize {
		t.Fatalf("worst-case metadata is %d bytes, over %d", len(b), memberlist.MetaMaxSize)
	}
	back, err := decodeMeta(b)
	if err != nil || back != worst {
		t.Fatalf("round trip: %+v, %v", back, err)
	}

	// Gossip carries it intact. The addresses are DNS names, which peers
	// accept only from key holders.
	cfg.Gossip.Key = testKey1
	big := startMesh(t, cfg)
	small := testConfig(t, "s")
	small.Gossip.Key = testKey1
	small.Gossip.Seeds = []string{big.LocalAddr()}
	s := startMesh(t, small)
	big.SetLoad(cfg.Capacity, cfg.Capacity)
	v := awaitView(t, s, 10*time.Second, "maximal member with full load", func(v *View) bool {
		m, ok := v.Member(cfg.NodeID)
		return ok && m.Clients == cfg.Capacity && m.State == StateAlive
	})
	m, _ := v.Member(cfg.NodeID)
	want := memberFromMeta(worst, StateAlive, SourceGossip)
	want.Draining = false
	if m != want {
		t.Fatalf("maximal member:\n got %+v\nwant %+v", m, want)
	}
}

func TestValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantKey string // "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no node id", func(c *Config) { c.NodeID = "" }, "mesh.node_id: required"},
		{"node id too long", func(c *Config) { c.NodeID = long(maxIDLen + 1) }, "mesh.node_id: at most"},
		{"node id bad char", func(c *Config) { c.NodeID = "a b" }, "mesh.node_id:"},
		{"no dc", func(c *Config) { c.DC = "" }, "mesh.dc: required"},
		{"dc too long", func(c *Config) { c.DC = long(maxDCLen + 1) }, "mesh.dc: at most"},
		{"negative tier", func(c *Config) { c.Tier = -1 }, "mesh.tier: must be >= 0"},
		{"tier too high", func(c *Config) { c.Tier = maxTier + 1 }, "mesh.tier:"},
		{"negative capacity", func(c *Config) { c.Capacity = -1 }, "mesh.capacity:"},
		{"no client addr", func(c *Config) { c.ClientAddr = "" }, "mesh.client_addr: required"},
		{"client addr no port", func(c *Config) { c.ClientAddr = "127.0.0.1" }, "mesh.client_addr:"},
		{"client addr port 0", func(c *Config) { c.ClientAddr = "127.0.0.1:0" }, "mesh.client_addr:"},
		{"client addr too long", func(c *Config) { c.ClientAddr = long(maxAddrLen) + ":1" }, "mesh.client_addr: at most"},
		{"admin addr quote", func(c *Config) { c.AdminAddr = `a"b:1` }, "mesh.admin_addr:"},
		{"bind port 0 ok", func(c *Config) { c.Gossip.Bind = "127.0.0.1:0" }, ""},
		{"bad bind", func(c *Config) { c.Gossip.Bind = "nope" }, "mesh.gossip.bind:"},
		{"bad advertise", func(c *Config) { c.Gossip.Advertise = "1.2.3.4:0" }, "mesh.gossip.advertise:"},
		{"bad seed", func(c *Config) { c.Gossip.Seeds = []string{"127.0.0.1:1", "x"} }, "mesh.gossip.seeds[1]:"},
		{"key not base64", func(c *Config) { c.Gossip.Key = "!!" }, "mesh.gossip.key:"},
		{"key wrong size", func(c *Config) { c.Gossip.Key = base64.StdEncoding.EncodeToString([]byte("short")) }, "mesh.gossip.key:"},
		{"consul without admin", func(c *Config) { c.Consul.Address = "127.0.0.1:8500"; c.AdminAddr = "" }, "mesh.admin_addr: required"},
		{"check interval too short", func(c *Config) { c.Consul.CheckInterval = 100 * time.Millisecond }, "mesh.consul.check_interval:"},
		{"negative settle", func(c *Config) { c.Settle = -time.Second }, "mesh.settle:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "n1")
			tc.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tc.wantKey == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.wantKey != "" && err == nil:
				t.Fatalf("want error %q, got nil", tc.wantKey)
			case tc.wantKey != "" && !strings.HasPrefix(fieldError(err), tc.wantKey):
				t.Fatalf("want error starting %q, got %s", tc.wantKey, fieldError(err))
			}
			if tc.wantKey != "" {
				if _, err := New(cfg); err == nil {
					t.Fatalf("New accepted an invalid config")
				}
			}
		})
	}
}

func TestNextIndex(t *testing.T) {
	tests := []struct{ prev, last, want uint64 }{
		{0, 0, 1},
		{0, 5, 5},
		{5, 5, 5},
		{5, 9, 9},
		{9, 3, 0},
		{9, 0, 0},
	}
	for _, tc := range tests {
		if got := nextIndex(tc.prev, tc.last); got != tc.want {
			t.Errorf("nextIndex(%d, %d) = %d, want %d", tc.prev, tc.last, got, tc.want)
		}
	}
}

func TestChangedCoalescesBursts(t *testing.T) {
	cfg := testConfig(t, "a")
	cfg.Settle = 200 * time.Millisecond
	a := startMesh(t, cfg)
	v0 := awaitView(t, a, 5*time.Second, "started", func(v *View) bool { return len(v.Members) == 1 })
	// Drain a signal left from start so the count below is exact.
	select {
	case <-a.Changed():
	default:
	}
	v0 = a.View()
	for i := 1; i <= 20; i++ {
		a.SetLoad(i, i)
	}
	v := awaitView(t, a, 5*time.Second, "final load", func(v *View) bool {
		m, _ := v.Member("a")
		return m.Clients == 20
	})
	if v.Version != v0.Version+1 {
		t.Fatalf("a burst of 20 load changes published %d views, want 1", v.Version-v0.Version)
	}
	if m, _ := v0.Member("a"); m.Clients != 0 {
		t.Fatalf("old view mutated: %+v", m)
	}
}

func TestWarmupAnnouncesDrainingUntilServing(t *testing.T) {
	// A warming node takes no children: peers see it draining. Its own
	// view counts it alive, so it agrees to be a parent the moment peers
	// switch to it.
	m1 := startMesh(t, testConfig(t, "n1"))
	c2 := testConfig(t, "n2")
	c2.Gossip.Seeds = []string{m1.LocalAddr()}
	c2.Warmup = true
	m2 := startMesh(t, c2)
	awaitView(t, m1, 10*time.Second, "n2 seen draining while it warms up", func(v *View) bool { return memberState(v, "n2") == StateDraining })
	if v := m2.View(); memberState(v, "n2") != StateAlive || v.Serving {
		t.Fatalf("warming node's own view: state %s, serving %v; want alive, not serving", memberState(v, "n2"), v.Serving)
	}
	m2.SetServing()
	awaitView(t, m1, 10*time.Second, "n2 alive once serving", allAlive("n1", "n2"))
	awaitView(t, m2, 10*time.Second, "n2 serving", func(v *View) bool { return v.Serving })
}
