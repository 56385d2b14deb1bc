package mesh

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/sirupsen/logrus"
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

// GossipConfig configures memberlist gossip inside a data centre.
type GossipConfig struct {
	// Bind is the host:port memberlist listens on (UDP and TCP); port 0
	// picks a free port, see Mesh.LocalAddr.
	Bind string
	// Advertise is the host:port peers use to reach this node; empty means
	// the bind address (or memberlist's choice of a private address when
	// bound to 0.0.0.0).
	Advertise string
	// Seeds are gossip addresses joined at start and whenever this node
	// finds itself alone.
	Seeds []string
	// Key is a base64 AES key (16, 24 or 32 bytes) that encrypts and
	// authenticates all gossip; nodes with another key cannot join. It is
	// required when Bind is not a loopback address (see InsecureNoKey):
	// without it anyone who reaches the port can join as any tier and
	// advertise addresses that peers then send clients and streams to.
	Key string
	// AcceptKeys are further base64 AES keys (same rules as Key) that are
	// accepted when decrypting gossip but never used to encrypt. They let
	// the key be rotated without downtime: add the new key here on every
	// node, then make it Key (keeping the old one here), then drop the old
	// one. Requires Key.
	AcceptKeys []string
	// InsecureNoKey allows gossip without Key on a non-loopback Bind. Such
	// gossip is neither encrypted nor authenticated: any host that reaches
	// the port can join as any tier. Only for trusted, isolated networks;
	// Start logs a warning when it is in effect.
	InsecureNoKey bool
	// AllowedNetworks optionally restricts membership to these CIDR
	// networks ("10.0.0.0/8", "fd00::/8"; IPv4 and IPv6 are listed
	// separately): memberlist drops alive messages sent from other sources
	// and refuses members announcing an address outside them, whoever
	// relays it. A second fence next to Key (or the only one with
	// InsecureNoKey); it is no firewall: memberlist still answers pings and
	// state exchanges from anywhere. This node's own gossip address must be
	// inside. Empty allows every address.
	AllowedNetworks []string
	// Fast shortens probe, suspicion and gossip intervals for tests and
	// demos on loopback: a member that stops answering is marked suspect
	// within about 0.5 s and dead about 1-2 s later (under 3 s in total).
	Fast bool
}

// ConsulConfig configures Consul discovery and self-registration.
type ConsulConfig struct {
	// Address of the Consul agent's HTTP API; empty disables Consul.
	Address string
	// Token is the ACL token sent with every request.
	Token string
	// Datacenter is the Consul data centre of this node; default Config.DC.
	Datacenter string
	// Tag marks the Consul services that are SSE back ends.
	Tag string
	// Service is the name this node registers under and looks for peers by.
	Service string
	// CheckInterval is the interval of the /readyz HTTP check.
	CheckInterval time.Duration
	// DeregisterAfter lets Consul drop this node's registration when its
	// check has been critical this long (a node that crashed).
	DeregisterAfter time.Duration
	// PollInterval paces what has no blocking query: the other data
	// centres, the registration check, and the wait of the peer query.
	// Default 5s, or 1s with Gossip.Fast.
	PollInterval time.Duration
	// MinQueryInterval is the least time between two queries of one watch,
	// so a flapping service cannot make a watch spin.
	MinQueryInterval time.Duration
	// WaitTime bounds one blocking query.
	WaitTime time.Duration
	// RetryMax caps the jittered backoff after errors.
	RetryMax time.Duration
}

// Config configures a Mesh.
type Config struct {
	// NodeID names this node in gossip and Consul; unique in the mesh.
	NodeID string
	// DC is this node's data centre.
	DC string
	// Tier is the node's tier: 0 for roots, higher further from back ends.
	Tier int
	// ClientAddr and AdminAddr are advertised host:port of the listeners.
	ClientAddr, AdminAddr string
	// AdminTLS says the admin listener speaks HTTPS, for Consul's check.
	AdminTLS bool
	// Capacity is the client count the node accepts; 0 means unlimited.
	Capacity int

	Gossip GossipConfig
	Consul ConsulConfig

	// Warmup makes the node announce itself draining (take no children)
	// until SetServing is called, so children do not switch to a node that
	// does not know its back ends yet.
	Warmup bool

	// Settle is the quiet period that coalesces membership flaps into one
	// view; a burst never delays a view by more than four times Settle.
	Settle time.Duration
	// Retain is how long members that left or died stay in the view with
	// their final state before they are dropped.
	Retain time.Duration
	// MetaInterval is the least time between two gossip pushes of this
	// node's load (SetLoad).
	MetaInterval time.Duration
	// LeaveTimeout bounds the gossip leave broadcast in SetDraining and
	// Shutdown.
	LeaveTimeout time.Duration

	Logger logrus.FieldLogger
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

// Validate reports the first invalid setting, naming its configuration key.
// Zero values that have a default are valid.
func (c *Config) Validate() error {
	if err := checkName("mesh.node_id", c.NodeID, maxIDLen); err != nil {
		return err
	}
	if err := checkName("mesh.dc", c.DC, maxDCLen); err != nil {
		return err
	}
	if c.Tier < 0 || c.Tier > maxTier {
		return fmt.Errorf("mesh.tier: must be >= 0 and <= %d, got %d", maxTier, c.Tier)
	}
	if c.Capacity < 0 {
		return fmt.Errorf("mesh.capacity: must be >= 0 (0 means unlimited), got %d", c.Capacity)
	}
	if c.ClientAddr == "" {
		return errors.New("mesh.client_addr: required")
	}
	if err := checkAddr("mesh.client_addr", c.ClientAddr, false); err != nil {
		return err
	}
	if c.AdminAddr != "" {
		if err := checkAddr("mesh.admin_addr", c.AdminAddr, false); err != nil {
			return err
		}
	}
	if c.Gossip.Bind != "" {
		if err := checkAddr("mesh.gossip.bind", c.Gossip.Bind, true); err != nil {
			return err
		}
	}
	if c.Gossip.Advertise != "" {
		if err := checkAddr("mesh.gossip.advertise", c.Gossip.Advertise, false); err != nil {
			return err
		}
	}
	for i, s := range c.Gossip.Seeds {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fmt.Errorf("mesh.gossip.seeds[%d]: %q is not host:port: %w", i, s, err)
		}
	}
	if err := c.Gossip.validateSecurity(); err != nil {
		return err
	}
	if c.Consul.Address != "" {
		if c.AdminAddr == "" {
			return errors.New("mesh.admin_addr: required when mesh.consul.address is set (Consul checks /readyz on it)")
		}
		if c.Consul.Datacenter != "" {
			if err := checkName("mesh.consul.datacenter", c.Consul.Datacenter, maxDCLen); err != nil {
				return err
			}
		}
	}
	durations := []struct {
		key string
		d   time.Duration
	}{
		{"mesh.consul.check_interval", c.Consul.CheckInterval},
		{"mesh.consul.deregister_after", c.Consul.DeregisterAfter},
		{"mesh.consul.poll_interval", c.Consul.PollInterval},
		{"mesh.consul.min_query_interval", c.Consul.MinQueryInterval},
		{"mesh.consul.wait_time", c.Consul.WaitTime},
		{"mesh.consul.retry_max", c.Consul.RetryMax},
		{"mesh.settle", c.Settle},
		{"mesh.retain", c.Retain},
		{"mesh.meta_interval", c.MetaInterval},
		{"mesh.leave_timeout", c.LeaveTimeout},
	}
	for _, d := range durations {
		if d.d < 0 {
			return fmt.Errorf("%s: must be >= 0, got %s", d.key, d.d)
		}
	}
	if c.Consul.CheckInterval > 0 && c.Consul.CheckInterval < time.Second {
		// Consul itself refuses check intervals below one second.
		return fmt.Errorf("mesh.consul.check_interval: must be >= 1s, got %s", c.Consul.CheckInterval)
	}
	// Belt and braces over the field limits: the metadata must fit even
	// with every counter at its maximum.
	worst := c.metaFor(int(^uint(0)>>1), int(^uint(0)>>1), true)
	worst.Capacity = int(^uint(0) >> 1)
	b, err := encodeMeta(worst)
	if err != nil {
		return fmt.Errorf("mesh: encoding node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("mesh.node_id: node metadata would be %d bytes, over the %d-byte gossip limit; shorten the node id, dc or addresses", len(b), memberlist.MetaMaxSize)
	}
	return nil
}

// checkName accepts the characters that are safe in gossip names, Consul
// service IDs and URLs alike, so no escaping can grow the metadata.
func checkName(key, v string, maxLen int) error {
	if v == "" {
		return fmt.Errorf("%s: required", key)
	}
	if len(v) > maxLen {
		return fmt.Errorf("%s: at most %d bytes, got %d", key, maxLen, len(v))
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%s: %q has %q; use letters, digits, '-', '_' and '.'", key, v, r)
		}
	}
	return nil
}

func checkAddr(key, v string, portZeroOK bool) error {
	if len(v) > maxAddrLen {
		return fmt.Errorf("%s: at most %d bytes, got %d", key, maxAddrLen, len(v))
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", key, v, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (p == 0 && !portZeroOK) {
		return fmt.Errorf("%s: %q has an invalid port", key, v)
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':' || r == '%' || r == '_') {
			return fmt.Errorf("%s: host %q has %q", key, host, r)
		}
	}
	return nil
}

// validateSecurity checks the key, the accepted keys, the allowed networks,
// and that gossip is not open to the network without a key.
func (g *GossipConfig) validateSecurity() error {
	if g.Key != "" {
		if _, err := decodeKey(g.Key); err != nil {
			return fmt.Errorf("mesh.gossip.key: %w", err)
		}
	}
	if len(g.AcceptKeys) > 0 && g.Key == "" {
		return errors.New("mesh.gossip.accept_keys: only valid with mesh.gossip.key (accepted keys only decrypt; the key encrypts)")
	}
	for i, k := range g.AcceptKeys {
		if _, err := decodeKey(k); err != nil {
			return fmt.Errorf("mesh.gossip.accept_keys[%d]: %w", i, err)
		}
	}
	bind := g.Bind
	if bind == "" {
		bind = DefaultGossipBind
	}
	bindHost, _, err := net.SplitHostPort(bind)
	if err != nil {
		return fmt.Errorf("mesh.gossip.bind: %q is not host:port: %w", bind, err)
	}
	if g.Key == "" && !g.InsecureNoKey && !isLoopbackHost(bindHost) {
		return fmt.Errorf("mesh.gossip.key: required when gossip binds to a non-loopback address (%q): set a key (openssl rand -base64 32), bind gossip to loopback, or, on a trusted network only, set mesh.gossip.insecure_no_key", bind)
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
		return fmt.Errorf("mesh.gossip.allowed_networks: this node's own gossip address %s (%s) is outside the allowed networks %v", ip, key, g.AllowedNetworks)
	}
	return nil
}

// allowedNetworks parses AllowedNetworks; nil when empty.
func (g *GossipConfig) allowedNetworks() ([]net.IPNet, error) {
	var nets []net.IPNet
	for i, s := range g.AllowedNetworks {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("mesh.gossip.allowed_networks[%d]: %q is not a CIDR network such as 10.0.0.0/8: %w", i, s, err)
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
