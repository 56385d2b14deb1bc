package mesh

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
)

// Field limits keep the worst-case node metadata (every counter at its
// maximum, draining set) inside memberlist's 512-byte limit with room to
// spare; TestMetaMaxSize encodes exactly that worst case.
const (
	maxIDLen   = 64
	maxDCLen   = 32
	maxAddrLen = 100
	maxTier    = 255
)

// Defaults applied by New to zero-valued fields.
const (
	DefaultGossipBind       = "0.0.0.0:7946"
	DefaultConsulTag        = "ssemesh"
	DefaultConsulService    = "ssemesh"
	DefaultCheckInterval    = 10 * time.Second
	DefaultDeregisterAfter  = time.Minute
	DefaultPollInterval     = 5 * time.Second
	DefaultMinQueryInterval = time.Second
	DefaultWaitTime         = time.Minute
	DefaultRetryMax         = 10 * time.Second
	DefaultSettle           = 200 * time.Millisecond
	DefaultRetain           = time.Minute
	DefaultMetaInterval     = time.Second
	DefaultLeaveTimeout     = 5 * time.Second
)

// GossipConfig configures memberlist gossip inside a data centre: the
// `mesh.gossip` section of a node's configuration file.
type GossipConfig struct {
	// Bind is the host:port memberlist listens on (UDP and TCP); port 0
	// picks a free port, see Mesh.LocalAddr.
	Bind string `yaml:"bind"`
	// Advertise is the host:port peers use to reach this node; empty means
	// the bind address (or memberlist's choice of a private address when
	// bound to 0.0.0.0).
	Advertise string `yaml:"advertise"`
	// Seeds are gossip addresses joined at start and whenever this node
	// finds itself alone.
	Seeds []string `yaml:"seeds"`
	// Key is a base64 AES key (16, 24 or 32 bytes) that encrypts and
	// authenticates all gossip; nodes with another key cannot join. It is
	// required when Bind is not a loopback address (see InsecureNoKey):
	// without it anyone who reaches the port can join as any tier and
	// advertise addresses that peers then send clients and streams to.
	Key string `yaml:"key"`
	// AcceptKeys are further base64 AES keys (same rules as Key) that are
	// accepted when decrypting gossip but never used to encrypt. They let
	// the key be rotated without downtime: add the new key here on every
	// node, then make it Key (keeping the old one here), then drop the old
	// one. Requires Key.
	AcceptKeys []string `yaml:"accept_keys"`
	// InsecureNoKey allows gossip without Key on a non-loopback Bind. Such
	// gossip is neither encrypted nor authenticated: any host that reaches
	// the port can join as any tier. Only for trusted, isolated networks;
	// Start logs a warning when it is in effect.
	InsecureNoKey bool `yaml:"insecure_no_key"`
	// AllowedNetworks optionally restricts membership to these CIDR
	// networks ("10.0.0.0/8", "fd00::/8"; IPv4 and IPv6 are listed
	// separately): memberlist drops alive messages sent from other sources
	// and refuses members announcing an address outside them, whoever
	// relays it. A second fence next to Key (or the only one with
	// InsecureNoKey); it is no firewall: memberlist still answers pings and
	// state exchanges from anywhere. This node's own gossip address must be
	// inside. Empty allows every address.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// Fast shortens probe, suspicion and gossip intervals for tests and
	// demos on loopback: a member that stops answering is marked suspect
	// within about 0.5 s and dead about 1-2 s later (under 3 s in total).
	Fast bool `yaml:"fast"`
}

// ConsulConfig configures Consul discovery and self-registration: the
// `mesh.consul` section of a node's configuration file (the timings are
// not in the file).
type ConsulConfig struct {
	// Address of the Consul agent's HTTP API; empty disables Consul.
	Address string `yaml:"address"`
	// Token is the ACL token sent with every request.
	Token string `yaml:"token"`
	// Datacenter is the Consul data centre of this node; default Config.DC.
	Datacenter string `yaml:"datacenter"`
	// Tag marks the Consul services that are SSE back ends.
	Tag string `yaml:"tag"`
	// Service is the name this node registers under and looks for peers by.
	Service string `yaml:"-"`
	// CheckInterval is the interval of the /readyz HTTP check.
	CheckInterval time.Duration `yaml:"-"`
	// DeregisterAfter lets Consul drop this node's registration when its
	// check has been critical this long (a node that crashed).
	DeregisterAfter time.Duration `yaml:"-"`
	// PollInterval paces what has no blocking query: the other data
	// centres, the registration check, and the wait of the peer query.
	// Default 5s, or 1s with Gossip.Fast.
	PollInterval time.Duration `yaml:"-"`
	// MinQueryInterval is the least time between two queries of one watch,
	// so a flapping service cannot make a watch spin.
	MinQueryInterval time.Duration `yaml:"-"`
	// WaitTime bounds one blocking query.
	WaitTime time.Duration `yaml:"-"`
	// RetryMax caps the jittered backoff after errors.
	RetryMax time.Duration `yaml:"-"`
}

// Config configures a Mesh. It is the `mesh` section of a node's
// configuration file: the fields with a yaml tag are read from it, where a
// key that is absent or zero takes the default New applies (a zero settle
// is the default settle). The fields tagged `yaml:"-"` are not in the
// file: the runtime fields (NodeID, ClientAddr, AdminAddr, AdminTLS,
// Capacity, Warmup, Logger) are filled by the program that runs the mesh
// from its own settings, and the remaining tunables by tests.
type Config struct {
	// NodeID names this node in gossip and Consul; unique in the mesh.
	NodeID string `yaml:"-"`
	// DC is this node's data centre.
	DC string `yaml:"dc"`
	// Tier is the node's tier: 0 for roots, higher further from back ends.
	Tier int `yaml:"tier"`
	// ClientAddr and AdminAddr are advertised host:port of the listeners.
	ClientAddr string `yaml:"-"`
	AdminAddr  string `yaml:"-"`
	// AdminTLS says the admin listener speaks HTTPS, for Consul's check.
	AdminTLS bool `yaml:"-"`
	// Capacity is the client count the node accepts; 0 means unlimited.
	Capacity int `yaml:"-"`

	Gossip GossipConfig `yaml:"gossip"`
	Consul ConsulConfig `yaml:"consul"`

	// Warmup makes the node announce itself draining (take no children)
	// until SetServing is called, so children do not switch to a node that
	// does not know its back ends yet.
	Warmup bool `yaml:"-"`

	// Settle is the quiet period that coalesces membership flaps into one
	// view; a burst never delays a view by more than four times Settle.
	Settle time.Duration `yaml:"settle"`
	// Retain is how long members that left or died stay in the view with
	// their final state before they are dropped.
	Retain time.Duration `yaml:"-"`
	// MetaInterval is the least time between two gossip pushes of this
	// node's load (SetLoad).
	MetaInterval time.Duration `yaml:"-"`
	// LeaveTimeout bounds the gossip leave broadcast in SetDraining and
	// Shutdown.
	LeaveTimeout time.Duration `yaml:"-"`

	Logger logrus.FieldLogger `yaml:"-"`
}

// withDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Gossip.Bind == "" {
		c.Gossip.Bind = DefaultGossipBind
	}
	if c.Consul.Tag == "" {
		c.Consul.Tag = DefaultConsulTag
	}
	if c.Consul.Service == "" {
		c.Consul.Service = DefaultConsulService
	}
	if c.Consul.Datacenter == "" {
		c.Consul.Datacenter = c.DC
	}
	def(&c.Consul.CheckInterval, DefaultCheckInterval)
	def(&c.Consul.DeregisterAfter, DefaultDeregisterAfter)
	if c.Gossip.Fast {
		def(&c.Consul.PollInterval, time.Second)
		def(&c.Consul.RetryMax, 2*time.Second)
	}
	def(&c.Consul.PollInterval, DefaultPollInterval)
	def(&c.Consul.MinQueryInterval, DefaultMinQueryInterval)
	def(&c.Consul.WaitTime, DefaultWaitTime)
	def(&c.Consul.RetryMax, DefaultRetryMax)
	def(&c.Settle, DefaultSettle)
	def(&c.Retain, DefaultRetain)
	def(&c.MetaInterval, DefaultMetaInterval)
	def(&c.LeaveTimeout, DefaultLeaveTimeout)
	if c.Logger == nil {
		l := logrus.New()
		l.SetOutput(discard{})
		c.Logger = l
	}
	return c
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Validate reports the first invalid setting as a *cfgerr.Error whose key
// is relative to the mesh section (gossip.key, consul.check_interval); the
// program that embeds the section prefixes it (cfgerr.Prefix). A reason
// that points at another key names it by its path in ssemesh's file. The
// runtime fields, which have no key in the file, are named by the Key
// constants, for the embedding program to name by its own keys. Zero
// values that have a default are valid.
func (c *Config) Validate() error {
	if err := checkName(KeyNodeID, c.NodeID, maxIDLen); err != nil {
		return err
	}
	if err := checkName("dc", c.DC, maxDCLen); err != nil {
		return err
	}
	if c.Tier < 0 || c.Tier > maxTier {
		return cfgerr.New("tier", "must be >= 0 and <= %d, got %d", maxTier, c.Tier)
	}
	if c.Capacity < 0 {
		return cfgerr.New(KeyCapacity, "must be >= 0 (0 means unlimited), got %d", c.Capacity)
	}
	if c.ClientAddr == "" {
		return cfgerr.New(KeyClientAddr, "required")
	}
	if err := checkAddr(KeyClientAddr, c.ClientAddr, false); err != nil {
		return err
	}
	if c.AdminAddr != "" {
		if err := checkAddr(KeyAdminAddr, c.AdminAddr, false); err != nil {
			return err
		}
	}
	if err := c.Gossip.Validate(); err != nil {
		return cfgerr.Prefix("gossip", err)
	}
	if c.Consul.Address != "" {
		if c.AdminAddr == "" {
			return cfgerr.New(KeyAdminAddr, "required when mesh.consul.address is set (Consul checks /readyz on it)")
		}
		if c.Consul.Datacenter != "" {
			if err := checkName("consul.datacenter", c.Consul.Datacenter, maxDCLen); err != nil {
				return err
			}
		}
	}
	durations := []struct {
		key string
		d   time.Duration
	}{
		{"consul.check_interval", c.Consul.CheckInterval},
		{"consul.deregister_after", c.Consul.DeregisterAfter},
		{"consul.poll_interval", c.Consul.PollInterval},
		{"consul.min_query_interval", c.Consul.MinQueryInterval},
		{"consul.wait_time", c.Consul.WaitTime},
		{"consul.retry_max", c.Consul.RetryMax},
		{"settle", c.Settle},
		{"retain", c.Retain},
		{"meta_interval", c.MetaInterval},
		{"leave_timeout", c.LeaveTimeout},
	}
	for _, d := range durations {
		if d.d < 0 {
			return cfgerr.New(d.key, "must be >= 0, got %s", d.d)
		}
	}
	if c.Consul.CheckInterval > 0 && c.Consul.CheckInterval < time.Second {
		// Consul itself refuses check intervals below one second.
		return cfgerr.New("consul.check_interval", "must be >= 1s, got %s", c.Consul.CheckInterval)
	}
	// Belt and braces over the field limits: the metadata must fit even
	// with every counter at its maximum.
	worst := c.metaFor(int(^uint(0)>>1), int(^uint(0)>>1), true)
	worst.Capacity = int(^uint(0) >> 1)
	b, err := encodeMeta(worst)
	if err != nil {
		return cfgerr.New("", "encoding node metadata: %v", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return cfgerr.New(KeyNodeID, "node metadata would be %d bytes, over the %d-byte gossip limit; shorten the node id, dc or addresses", len(b), memberlist.MetaMaxSize)
	}
	return nil
}

// Keys of the runtime fields in Validate's errors. They have no place in
// the configuration file: the program fills them from its own settings
// and names them by its own keys.
const (
	KeyNodeID     = "node_id"
	KeyClientAddr = "client_addr"
	KeyAdminAddr  = "admin_addr"
	KeyCapacity   = "capacity"
)

// checkName accepts the characters that are safe in gossip names, Consul
// service IDs and URLs alike, so no escaping can grow the metadata.
func checkName(key, v string, maxLen int) error {
	if v == "" {
		return cfgerr.New(key, "required")
	}
	if len(v) > maxLen {
		return cfgerr.New(key, "at most %d bytes, got %d", maxLen, len(v))
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return cfgerr.New(key, "%q has %q; use letters, digits, '-', '_' and '.'", v, r)
		}
	}
	return nil
}

func checkAddr(key, v string, portZeroOK bool) error {
	if len(v) > maxAddrLen {
		return cfgerr.New(key, "at most %d bytes, got %d", maxAddrLen, len(v))
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return cfgerr.New(key, "%q is not host:port: %v", v, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !portZeroOK) {
		return cfgerr.New(key, "%q has an invalid port", v)
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':' || r == '%' || r == '_') {
			return cfgerr.New(key, "host %q has %q", host, r)
		}
	}
	return nil
}

// Validate checks the gossip section: its addresses, the key, the accepted
// keys, the allowed networks, and that gossip is not open to the network
// without a key. Keys in its errors are relative to the section.
func (g *GossipConfig) Validate() error {
	if g.Bind != "" {
		if err := checkAddr("bind", g.Bind, true); err != nil {
			return err
		}
	}
	if g.Advertise != "" {
		if err := checkAddr("advertise", g.Advertise, false); err != nil {
			return err
		}
	}
	for i, s := range g.Seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return cfgerr.New(fmt.Sprintf("seeds[%d]", i), "%q is not host:port: %v", s, err)
		}
	}
	if g.Key != "" {
		if _, err := decodeKey(g.Key); err != nil {
			return cfgerr.New("key", "%v", err)
		}
	}
	if len(g.AcceptKeys) > 0 && g.Key == "" {
		return cfgerr.New("accept_keys", "only valid with mesh.gossip.key (accepted keys only decrypt; the key encrypts)")
	}
	for i, k := range g.AcceptKeys {
		if _, err := decodeKey(k); err != nil {
			return cfgerr.New(fmt.Sprintf("accept_keys[%d]", i), "%v", err)
		}
	}
	bind := g.Bind
	if bind == "" {
		bind = DefaultGossipBind
	}
	bindHost, _, err := net.SplitHostPort(bind)
	if err != nil {
		return cfgerr.New("bind", "%q is not host:port: %v", bind, err)
	}
	if g.Key == "" && !g.InsecureNoKey && !isLoopbackHost(bindHost) {
		return cfgerr.New("key", "required when gossip binds to a non-loopback address (%q): set a key (openssl rand -base64 32), bind gossip to loopback, or, on a trusted network only, set mesh.gossip.insecure_no_key", bind)
	}
	nets, err := g.allowedNetworks()
	if err != nil {
		return err
	}
	// When this node's own gossip address is known before start, it must
	// be allowed too: memberlist would refuse the node its own membership.
	own := bindHost
	if g.Advertise != "" {
		own, _, _ = net.SplitHostPort(g.Advertise)
	}
	if ip := net.ParseIP(own); len(nets) > 0 && ip != nil && !ip.IsUnspecified() && !ipInNets(ip, nets) {
		key := "mesh.gossip.bind"
		if g.Advertise != "" {
			key = "mesh.gossip.advertise"
		}
		return cfgerr.New("allowed_networks", "this node's own gossip address %s (%s) is outside the allowed networks %v", ip, key, g.AllowedNetworks)
	}
	return nil
}

// allowedNetworks parses AllowedNetworks; nil when empty.
func (g *GossipConfig) allowedNetworks() ([]net.IPNet, error) {
	var nets []net.IPNet
	for i, s := range g.AllowedNetworks {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, cfgerr.New(fmt.Sprintf("allowed_networks[%d]", i), "%q is not a CIDR network such as 10.0.0.0/8: %v", s, err)
		}
		nets = append(nets, *n)
	}
	return nets, nil
}

func ipInNets(ip net.IP, nets []net.IPNet) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// isLoopbackHost reports whether a bind host is reachable only from this
// machine: an IP literal in 127.0.0.0/8 or ::1, or the name "localhost".
// An empty host, an unspecified address, any other IP and any other name
// count as reachable from the network.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true // memberlistConfig binds it as 127.0.0.1
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func decodeKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("must decode to 16, 24 or 32 bytes, got %d", len(k))
}
