package mesh

import (
	"context"
	"encoding/base64"
	"fmt"
	"log"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/ssetest"
)

var (
	testKey1 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	testKey2 = base64.StdEncoding.EncodeToString([]byte("fedcba9876543210"))
	testKey3 = base64.StdEncoding.EncodeToString([]byte("another-24-byte-key-here"))
)

func TestValidateGossipSecurity(t *testing.T) {
	tests := []struct {
		name   string
		gossip GossipConfig
		want   string // error prefix; "" = valid
	}{
		{"default bind without key", GossipConfig{},
			`mesh.gossip.key: required when gossip binds to a non-loopback address ("0.0.0.0:7946"): set a key (openssl rand -base64 32), bind gossip to loopback, or, on a trusted network only, set mesh.gossip.insecure_no_key`},
		{"all IPv4 without key", GossipConfig{Bind: "0.0.0.0:7946"}, "mesh.gossip.key: required"},
		{"all IPv6 without key", GossipConfig{Bind: "[::]:7946"}, "mesh.gossip.key: required"},
		{"empty host without key", GossipConfig{Bind: ":7946"}, "mesh.gossip.key: required"},
		{"private IP without key", GossipConfig{Bind: "10.1.2.3:7946"}, "mesh.gossip.key: required"},
		{"DNS name without key", GossipConfig{Bind: "gossip.internal:7946"}, "mesh.gossip.key: required"},
		{"non-loopback with insecure_no_key", GossipConfig{Bind: "0.0.0.0:7946", InsecureNoKey: true}, ""},
		{"default bind with insecure_no_key", GossipConfig{InsecureNoKey: true}, ""},
		{"non-loopback with key", GossipConfig{Bind: "10.1.2.3:7946", Key: testKey1}, ""},
		{"default bind with key", GossipConfig{Key: testKey1}, ""},
		{"127.0.0.1 without key", GossipConfig{Bind: "127.0.0.1:7946"}, ""},
		{"127.3.4.5 without key", GossipConfig{Bind: "127.3.4.5:0"}, ""},
		{"::1 without key", GossipConfig{Bind: "[::1]:7946"}, ""},
		{"localhost without key", GossipConfig{Bind: "localhost:7946"}, ""},
		{"accept keys without key", GossipConfig{Bind: "127.0.0.1:0", AcceptKeys: []string{testKey2}}, "mesh.gossip.accept_keys: "},
		{"accept keys with key", GossipConfig{Key: testKey1, AcceptKeys: []string{testKey2, testKey3}}, ""},
		{"accept key not base64", GossipConfig{Key: testKey1, AcceptKeys: []string{testKey2, "!!"}}, "mesh.gossip.accept_keys[1]: not base64"},
		{"accept key wrong size", GossipConfig{Key: testKey1, AcceptKeys: []string{base64.StdEncoding.EncodeToString([]byte("short"))}}, "mesh.gossip.accept_keys[0]: must decode to 16, 24 or 32 bytes"},
		{"bad key before accept keys", GossipConfig{Key: "!!", AcceptKeys: []string{testKey2}}, "mesh.gossip.key: not base64"},
		{"bad CIDR", GossipConfig{Bind: "127.0.0.1:0", AllowedNetworks: []string{"127.0.0.0/8", "10.0.0.1"}}, "mesh.gossip.allowed_networks[1]: "},
		{"valid CIDRs", GossipConfig{Bind: "127.0.0.1:0", AllowedNetworks: []string{"127.0.0.0/8", "::1/128"}}, ""},
		{"own bind outside allowed networks", GossipConfig{Bind: "127.0.0.1:0", AllowedNetworks: []string{"10.0.0.0/8"}}, "mesh.gossip.allowed_networks: this node's own gossip address 127.0.0.1"},
		{"own advertise outside allowed networks", GossipConfig{Key: testKey1, Advertise: "10.1.1.1:7946", AllowedNetworks: []string{"192.168.0.0/16"}}, "mesh.gossip.allowed_networks: this node's own gossip address 10.1.1.1"},
		{"unspecified bind, allowed networks", GossipConfig{Key: testKey1, AllowedNetworks: []string{"192.168.0.0/16"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "n1")
			cfg.Gossip = tc.gossip
			check := func(what string, err error) {
				t.Helper()
				switch {
				case tc.want == "" && err != nil:
					t.Fatalf("%s: want valid, got %v", what, err)
				case tc.want != "" && err == nil:
					t.Fatalf("%s: want error %q, got nil", what, tc.want)
				case tc.want != "" && !strings.HasPrefix(fieldError(err), tc.want):
					t.Fatalf("%s: want error starting %q, got %s", what, tc.want, fieldError(err))
				}
			}
			check("CheckConfig", CheckConfig(cfg))
			// Validate alone, without defaults, judges an empty bind by
			// the default it will get.
			check("Validate", cfg.Validate())
			_, err := New(cfg)
			if tc.want != "" && err == nil {
				t.Fatalf("New accepted an invalid config")
			}
			if tc.want == "" && err != nil {
				t.Fatalf("New: %v", err)
			}
		})
	}
}

func TestAdmitMember(t *testing.T) {
	v4 := net.ParseIP("10.0.0.5").To4()
	mapped := net.ParseIP("10.0.0.5") // 16-byte IPv4-mapped form
	v6 := net.ParseIP("fd00::5")
	meta := func(client, admin string) []byte {
		b, err := encodeMeta(nodeMeta{ID: "p", DC: "dc1", ClientAddr: client, AdminAddr: admin})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		addr  net.IP
		meta  []byte
		keyed bool
		want  string // error substring; "" = admitted
	}{
		{"own IP", v4, meta("10.0.0.5:8080", "10.0.0.5:8081"), false, ""},
		{"own IP, no admin", v4, meta("10.0.0.5:8080", ""), false, ""},
		{"mapped gossip address", mapped, meta("10.0.0.5:8080", ""), false, ""},
		{"mapped client host", v4, meta("[::ffff:10.0.0.5]:8080", ""), false, ""},
		{"IPv6", v6, meta("[fd00::5]:8080", "[fd00::5%eth0]:8081"), false, ""},
		{"other client IP", v4, meta("10.9.9.9:8080", ""), false, `client address "10.9.9.9:8080": host 10.9.9.9 is not the member's gossip address 10.0.0.5`},
		{"other client IP with key", v4, meta("10.9.9.9:8080", ""), true, "is not the member's gossip address"},
		{"other admin IP", v4, meta("10.0.0.5:8080", "10.9.9.9:8081"), false, `admin address "10.9.9.9:8081"`},
		{"unspecified client host", v4, meta("0.0.0.0:8080", ""), false, "host 0.0.0.0 is not"},
		{"IPv6 client for IPv4 member", v4, meta("[fd00::5]:8080", ""), false, "is not the member's gossip address"},
		{"DNS client without key", v4, meta("node.example:8080", ""), false, `host "node.example" is a DNS name, accepted only when gossip has a key`},
		{"DNS admin without key", v4, meta("10.0.0.5:8080", "node.example:8081"), false, "admin address"},
		{"DNS names with key", v4, meta("node.example:8080", "admin.example:8081"), true, ""},
		{"empty client host", v4, meta(":8080", ""), true, "has no host"},
		{"no client address", v4, meta("", ""), true, "not host:port"},
		{"unreadable metadata", v4, []byte("{nope"), true, "decoding node metadata"},
		{"no metadata", v4, nil, true, "decoding node metadata"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := admitMember(&memberlist.Node{Name: "p", Addr: tc.addr, Port: 7946, Meta: tc.meta}, tc.keyed)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("want admitted, got %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("want refused (%q), got admitted", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
		})
	}
}

func TestRefusalLogBounded(t *testing.T) {
	var r refusalLog
	t0 := time.Unix(1000, 0)
	if !r.allow("x", t0) || r.allow("x", t0.Add(59*time.Second)) || !r.allow("x", t0.Add(61*time.Second)) {
		t.Fatal("want one line per name per minute")
	}
	for i := range refusalLogMax {
		r.allow(fmt.Sprint("n", i), t0.Add(90*time.Second))
	}
	if len(r.last) != refusalLogMax {
		t.Fatalf("%d names recorded, want %d", len(r.last), refusalLogMax)
	}
	if r.allow("late", t0.Add(100*time.Second)) {
		t.Fatal("a new name was logged while the record is full of recent names")
	}
	if !r.allow("x", t0.Add(125*time.Second)) {
		t.Fatal("a known name was not logged after a minute")
	}
	if !r.allow("later", t0.Add(200*time.Second)) || len(r.last) != 1 {
		t.Fatalf("stale names not pruned: %d recorded", len(r.last))
	}
}

func TestNotifyAliveLogsRefusalsRateLimited(t *testing.T) {
	buf := &ssetest.LockedBuffer{}
	l := logrus.New()
	l.SetOutput(buf)
	cfg := testConfig(t, "a")
	cfg.Logger = l
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := &gossipDelegate{m: m}
	forged, _ := encodeMeta(nodeMeta{ID: "f", DC: "dc1", ClientAddr: "10.9.9.9:8080"})
	loop := net.ParseIP("127.0.0.1").To4()
	for _, name := range []string{"f", "f", "f", "g"} {
		if err := d.NotifyAlive(&memberlist.Node{Name: name, Addr: loop, Port: 1, Meta: forged}); err == nil {
			t.Fatalf("forged member %s admitted", name)
		}
	}
	if n := strings.Count(buf.String(), "refusing a gossip member"); n != 2 {
		t.Fatalf("%d refusal lines for 4 refusals of 2 members, want 2:\n%s", n, buf.String())
	}
	// This node itself is never refused (its own alive message has to be
	// processed for memberlist to start).
	if err := d.NotifyAlive(&memberlist.Node{Name: "a", Addr: loop, Port: 1, Meta: forged}); err != nil {
		t.Fatalf("own alive refused: %v", err)
	}
}

func TestGossipKeyRotation(t *testing.T) {
	ca := testConfig(t, "a")
	ca.Gossip.Key, ca.Gossip.AcceptKeys = testKey1, []string{testKey2}
	a := startMesh(t, ca)
	cb := testConfig(t, "b")
	cb.Gossip.Key, cb.Gossip.AcceptKeys = testKey2, []string{testKey1}
	cb.Gossip.Seeds = []string{a.LocalAddr()}
	b := startMesh(t, cb)
	awaitView(t, a, 10*time.Second, "b alive across keys", allAlive("a", "b"))
	awaitView(t, b, 10*time.Second, "a alive across keys", allAlive("a", "b"))

	cc := testConfig(t, "c")
	cc.Gossip.Key = testKey3
	c := startMesh(t, cc)
	if n, err := c.ml.Join([]string{a.LocalAddr()}); err == nil || n != 0 {
		t.Fatalf("join with a key a does not accept: want an error and 0 joined, got %d, %v", n, err)
	}
	if _, ok := a.View().Member("c"); ok {
		t.Fatalf("a admitted c:\n%s", dumpView(a.View()))
	}
	if got := c.ml.NumMembers(); got != 1 || len(c.View().Members) != 1 {
		t.Fatalf("c sees others (%d gossip members):\n%s", got, dumpView(c.View()))
	}
}

// rawDelegate gives a bare memberlist node fixed metadata, so a test can
// gossip whatever a hostile member might.
type rawDelegate struct{ meta []byte }

func (d *rawDelegate) NodeMeta(int) []byte                 { return d.meta }
func (d *rawDelegate) NotifyMsg([]byte)                    {}
func (d *rawDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d *rawDelegate) LocalState(bool) []byte              { return nil }
func (d *rawDelegate) MergeRemoteState(buf []byte, _ bool) {}

// startRawMember starts a bare memberlist node on 127.0.0.1 that gossips
// nm (its ID is the node name) and joins seed.
func startRawMember(t *testing.T, nm nodeMeta, key string, seed string) *memberlist.Memberlist {
	t.Helper()
	meta, err := encodeMeta(nm)
	if err != nil {
		t.Fatal(err)
	}
	conf := memberlist.DefaultLANConfig()
	conf.Name = nm.ID
	conf.Label = gossipLabel
	conf.BindAddr, conf.BindPort, conf.AdvertisePort = "127.0.0.1", 0, 0
	conf.ProbeInterval, conf.ProbeTimeout = fastProbeInterval, fastProbeTimeout
	conf.GossipInterval = fastGossipInterval
	conf.TCPTimeout = time.Second
	if key != "" {
		if conf.SecretKey, err = decodeKey(key); err != nil {
			t.Fatal(err)
		}
	}
	conf.Delegate = &rawDelegate{meta: meta}
	conf.Logger = log.New(&logWriter{log: ssetest.BufferedLogger(t, logrus.DebugLevel).WithField("raw", nm.ID)}, "", 0)
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatalf("raw member %s: %v", nm.ID, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	// A refused member still completes its join: the seed answers the
	// push-pull and only ignores what it says about itself.
	if _, err := ml.Join([]string{seed}); err != nil {
		t.Fatalf("raw member %s joining %s: %v", nm.ID, seed, err)
	}
	return ml
}

func TestGossipRefusesForgedAddresses(t *testing.T) {
	a := startMesh(t, testConfig(t, "a")) // no key, 127.0.0.1
	forged := []nodeMeta{
		{ID: "forged-client", ClientAddr: "10.9.9.9:8080"},
		{ID: "forged-admin", ClientAddr: "127.0.0.1:8080", AdminAddr: "10.9.9.9:8081"},
		{ID: "other-loopback", ClientAddr: "127.0.0.2:8080"},
		{ID: "unspecified", ClientAddr: "0.0.0.0:8080"},
		{ID: "dns-name", ClientAddr: "node.example:8080"},
	}
	for _, nm := range forged {
		nm.DC, nm.Tier = "dc1", 0
		startRawMember(t, nm, "", a.LocalAddr())
	}
	// Honest members joined after the forged ones: once a lists them, the
	// forged members' alive messages have long been processed.
	startRawMember(t, nodeMeta{ID: "honest", DC: "dc1", ClientAddr: "127.0.0.1:18090", AdminAddr: "127.0.0.1:18091"}, "", a.LocalAddr())
	startRawMember(t, nodeMeta{ID: "honest-mapped", DC: "dc1", ClientAddr: "[::ffff:127.0.0.1]:18092"}, "", a.LocalAddr())
	v := awaitView(t, a, 10*time.Second, "honest members alive", allAlive("a", "honest", "honest-mapped"))
	for _, nm := range forged {
		if m, ok := v.Member(nm.ID); ok {
			t.Errorf("a lists %s (client %q, admin %q): %+v", nm.ID, nm.ClientAddr, nm.AdminAddr, m)
		}
	}
	if len(v.Members) != 3 {
		t.Errorf("want a and the two honest members:\n%s", dumpView(v))
	}
	if m, _ := v.Member("honest"); m.ClientAddr != "127.0.0.1:18090" || m.AdminAddr != "127.0.0.1:18091" {
		t.Errorf("honest member: %+v", m)
	}
}

func TestGossipDNSNameNeedsKey(t *testing.T) {
	ca := testConfig(t, "a")
	ca.Gossip.Key = testKey1
	a := startMesh(t, ca)
	startRawMember(t, nodeMeta{ID: "named", DC: "dc1", ClientAddr: "node.example:8080", AdminAddr: "node.example:8081"}, testKey1, a.LocalAddr())
	v := awaitView(t, a, 10*time.Second, "member with DNS names alive", allAlive("a", "named"))
	if m, _ := v.Member("named"); m.ClientAddr != "node.example:8080" {
		t.Fatalf("named member: %+v", m)
	}
	// Without a key the same member is refused (TestGossipRefusesForgedAddresses).
}

func TestGossipAllowedNetworks(t *testing.T) {
	ca := testConfig(t, "a")
	ca.Gossip.AllowedNetworks = []string{"127.0.0.1/32"}
	a := startMesh(t, ca)
	// c has no restriction: a relay that tells a about members outside.
	cc := testConfig(t, "c")
	cc.Gossip.Seeds = []string{a.LocalAddr()}
	c := startMesh(t, cc)
	awaitView(t, a, 10*time.Second, "c alive", allAlive("a", "c"))

	// b gossips from 127.0.0.2 and advertises its own address, so only
	// the network rule can refuse it. memberlist still answers its
	// push-pull (the join "succeeds"), but a ignores what b says about
	// itself, and so does it when c relays b's alive message.
	cb := testConfig(t, "b")
	cb.ClientAddr, cb.AdminAddr = "127.0.0.2:18080", "127.0.0.2:18081"
	cb.Gossip.Bind = "127.0.0.2:0"
	b := startMesh(t, cb)
	if n, err := b.ml.Join([]string{a.LocalAddr()}); err != nil {
		t.Logf("b joining a directly: %d, %v", n, err)
	}
	if n, err := b.ml.Join([]string{c.LocalAddr()}); err != nil || n != 1 {
		t.Fatalf("b joining c: %d, %v", n, err)
	}
	awaitView(t, c, 10*time.Second, "b alive at c", func(v *View) bool { return memberState(v, "b") == StateAlive })

	// d joins through c after b: once a lists d, c has gossiped b to a too.
	cd := testConfig(t, "d")
	cd.Gossip.Seeds = []string{c.LocalAddr()}
	startMesh(t, cd)
	v := awaitView(t, a, 10*time.Second, "d alive", allAlive("a", "c", "d"))
	if m, ok := v.Member("b"); ok {
		t.Fatalf("a lists b from 127.0.0.2: %+v\n%s", m, dumpView(v))
	}
}

func TestStartRefusesOwnAddressOutsideAllowedNetworks(t *testing.T) {
	// With an unspecified bind the own address is known only once
	// memberlist picked it; memberlist would then run without its local
	// node (and panic in LocalNode), so Start must refuse.
	cfg := testConfig(t, "a")
	cfg.Gossip.Bind = "[::]:0"
	cfg.Gossip.InsecureNoKey = true
	cfg.Gossip.AllowedNetworks = []string{"127.0.0.1/32"}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(context.Background())
	if err == nil {
		_ = m.Shutdown()
		t.Fatal("Start accepted an own address outside the allowed networks")
	}
	if !strings.Contains(err.Error(), "mesh.gossip.allowed_networks: this node's own gossip address :: is outside") {
		t.Fatalf("Start: %v", err)
	}
	if err := m.Shutdown(); err != nil {
		t.Fatalf("Shutdown after a failed start: %v", err)
	}
}

func TestInstanceURLKeepsItsHost(t *testing.T) {
	tests := []struct {
		in   Instance
		want string
	}{
		{Instance{Address: "10.0.0.5:8080", Scheme: "http", Path: "/feed"}, "http://10.0.0.5:8080/feed"},
		{Instance{Address: "10.0.0.5:8080", Scheme: "https", Path: "/feed?key=k"}, "https://10.0.0.5:8080/feed?key=k"},
		{Instance{Address: "10.0.0.5:8080", Scheme: "http", Path: "@evil.example:9000/x"}, "http://10.0.0.5:8080/@evil.example:9000/x"},
		{Instance{Address: "10.0.0.5:8080", Scheme: "http", Path: ""}, "http://10.0.0.5:8080/"},
	}
	for _, tc := range tests {
		if got := tc.in.URL(); got != tc.want {
			t.Errorf("%+v.URL() = %s, want %s", tc.in, got, tc.want)
		}
	}
}
