package node

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ssemesh/ssemesh/relay"
)

// Config is a node's whole configuration: the YAML file's shape, with flags
// applied on top by the command.
type Config struct {
	Listen   string         `yaml:"listen"`
	Admin    AdminConfig    `yaml:"admin"`
	Log      LogConfig      `yaml:"log"`
	Limits   LimitsConfig   `yaml:"limits"`
	CORS     CORSConfig     `yaml:"cors"`
	Relay    RelayConfig    `yaml:"relay"`
	Drain    Duration       `yaml:"drain"` // shutdown: clients are closed spread over this period
	Backends []BackendSpec  `yaml:"backends"`
	Mesh     MeshConfig     `yaml:"mesh"`
	NodeID   string         `yaml:"node_id"`
	Extra    map[string]any `yaml:",inline"` // rejected by Validate with the key's name
}

// AdminConfig is the operator's listener.
type AdminConfig struct {
	Listen string `yaml:"listen"`
	Token  string `yaml:"token"` // bearer token for everything but health; empty = open
	// MetricsOpen lets /metrics be scraped without the token.
	MetricsOpen bool `yaml:"metrics_open"`
	// Pprof serves /debug/pprof behind the token (default true).
	Pprof *bool `yaml:"pprof"`
	// AllowedHosts are extra names accepted in the Host header (DNS names
	// peers or operators use for this node's admin listener).
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// PprofEnabled reports whether /debug/pprof is served.
func (a AdminConfig) PprofEnabled() bool { return a.Pprof == nil || *a.Pprof }

// LogConfig selects logrus level and format.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// LimitsConfig bounds what one node accepts.
type LimitsConfig struct {
	MaxClients int `yaml:"max_clients"`
	MaxStreams int `yaml:"max_streams"`
	// RetryAfter is the Retry-After (seconds) sent with a 503 refusal.
	RetryAfter int `yaml:"retry_after"`
}

// CORSConfig lets browser pages on other origins open streams.
type CORSConfig struct {
	AllowedOrigins   []string `yaml:"allowed_origins"` // "*" allows any
	AllowCredentials bool     `yaml:"allow_credentials"`
}

// RelayConfig mirrors relay.Config with YAML names; zero fields keep defaults.
type RelayConfig struct {
	MaxEventBytes  int      `yaml:"max_event_bytes"`
	RingEvents     int      `yaml:"ring_events"`
	RingBytes      int64    `yaml:"ring_bytes"`
	RingAge        Duration `yaml:"ring_age"`
	Linger         Duration `yaml:"linger"`
	Heartbeat      Duration `yaml:"heartbeat"`
	ClientLagBytes int64    `yaml:"client_lag_bytes"`
	WriteTimeout   Duration `yaml:"write_timeout"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	ReadyTimeout   Duration `yaml:"ready_timeout"`
	IdleTimeout    Duration `yaml:"idle_timeout"`
	BackoffMin     Duration `yaml:"backoff_min"`
	BackoffMax     Duration `yaml:"backoff_max"`
	ConnectRetries *int     `yaml:"connect_retries"`
	CatchUpTimeout Duration `yaml:"catch_up_timeout"`
	GapEvent       string   `yaml:"gap_event"`
	DrainRetry     Duration `yaml:"drain_retry"`
}

// BackendSpec is one SSE back end and where clients find it on this node.
type BackendSpec struct {
	Name        string            `yaml:"name"`
	URI         string            `yaml:"uri"`
	Mount       string            `yaml:"mount"`  // default: the uri's path
	Prefix      bool              `yaml:"prefix"` // every path below mount is its own stream
	Headers     map[string]string `yaml:"headers"`
	Credentials *Credentials      `yaml:"credentials"`
	// DC is the back end's data centre, so the stream's owner is a root
	// near it; back ends found in Consul carry theirs.
	DC string `yaml:"dc"`
}

// Credentials are the node's own login upstream (HTTP Basic).
type Credentials struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// MeshConfig places the node in the mesh (used when the mesh is enabled).
type MeshConfig struct {
	DC   string `yaml:"dc"`
	Tier int    `yaml:"tier"`
	// Advertise is the host (IP or DNS name) peers and Consul use to reach
	// this node's client and admin listeners, on the ports they are bound
	// to. Default: the host of gossip.advertise when set; otherwise the
	// listener's own host, or the machine's private IPv4 address when the
	// listener is bound to every interface (0.0.0.0, [::] or no host).
	Advertise string       `yaml:"advertise"`
	Gossip    GossipConfig `yaml:"gossip"`
	Consul    ConsulConfig `yaml:"consul"`
	// Settle coalesces membership flaps before streams are re-parented.
	Settle Duration `yaml:"settle"`
	// AvoidFor is how long a parent that failed or refused (508) is
	// skipped for.
	AvoidFor Duration `yaml:"avoid_for"`
	// Handoff bounds how long shutdown waits for child nodes to re-parent
	// before it closes the remaining clients.
	Handoff Duration `yaml:"handoff"`
}

// Enabled reports whether the node joins a mesh at all.
func (m MeshConfig) Enabled() bool { return m.Gossip.Bind != "" || m.Consul.Address != "" }

// GossipConfig is the memberlist side of the mesh.
type GossipConfig struct {
	Bind      string   `yaml:"bind"`
	Advertise string   `yaml:"advertise"`
	Seeds     []string `yaml:"seeds"`
	Key       string   `yaml:"key"`
	// Fast uses loopback test timings: failures detected in about 3 s.
	Fast bool `yaml:"fast"`
}

// ConsulConfig is the Consul side of the mesh.
type ConsulConfig struct {
	Address    string `yaml:"address"`
	Token      string `yaml:"token"`
	Datacenter string `yaml:"datacenter"`
	Tag        string `yaml:"tag"`
}

// Duration reads "15s"-style YAML values.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as \"15s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. \"500ms\", \"15s\", \"2m\")", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// DefaultConfig is the embedded default: one node, loopback, no back end.
func DefaultConfig() Config {
	return Config{
		Listen: "127.0.0.1:8080",
		Admin:  AdminConfig{Listen: "127.0.0.1:9090"},
		Log:    LogConfig{Level: "info", Format: "text"},
		Limits: LimitsConfig{MaxClients: 19000, MaxStreams: 10000, RetryAfter: 5},
		Drain:  Duration(10 * time.Second),
		Mesh: MeshConfig{
			DC:       "dc1",
			Settle:   Duration(200 * time.Millisecond),
			AvoidFor: Duration(30 * time.Second),
			Handoff:  Duration(10 * time.Second),
		},
	}
}

// ConfigError names the key a configuration problem is about.
type ConfigError struct {
	Key    string
	Reason string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Reason) }

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// Interpolate replaces ${VAR} and ${VAR:-default} with values from lookup;
// $$ is a literal $. A ${VAR} that is unset and has no default is an error
// naming its line, since a silently empty credential is worse than none.
// Comment lines (first non-blank character '#') are left as they are, so a
// commented-out setting cannot stop the node.
func Interpolate(src []byte, lookup func(string) (string, bool)) ([]byte, error) {
	out := make([]byte, 0, len(src))
	for i, line := range bytes.SplitAfter(src, []byte("\n")) {
		if t := bytes.TrimLeft(line, " \t"); len(t) > 0 && t[0] == '#' {
			out = append(out, line...)
			continue
		}
		missing := ""
		line = envRef.ReplaceAllFunc(line, func(m []byte) []byte {
			if string(m) == "$$" {
				return []byte("$")
			}
			sub := envRef.FindSubmatch(m)
			name := string(sub[1])
			if v, ok := lookup(name); ok && (v != "" || sub[2] == nil) {
				return []byte(v)
			}
			if sub[2] != nil {
				return sub[3]
			}
			if missing == "" {
				missing = name
			}
			return m
		})
		if missing != "" {
			return nil, &ConfigError{Key: "line " + strconv.Itoa(i+1), Reason: fmt.Sprintf("environment variable %s is not set and has no default (write ${%s:-default})", missing, missing)}
		}
		out = append(out, line...)
	}
	return out, nil
}

// LoadConfig reads a YAML file over the defaults, interpolating the
// environment through lookup. Unknown keys are errors.
func LoadConfig(path string, lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: reading %s: %w", path, err)
	}
	return ParseConfig(raw, lookup)
}

// ParseConfig is LoadConfig for bytes already read.
func ParseConfig(raw []byte, lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	src, err := Interpolate(raw, lookup)
	if err != nil {
		return cfg, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, &ConfigError{Key: "yaml", Reason: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	return cfg, nil
}

// ParseBackendFlag reads "name=uri" (the --backend flag).
func ParseBackendFlag(v string) (BackendSpec, error) {
	name, uri, ok := strings.Cut(v, "=")
	if !ok || name == "" || uri == "" {
		return BackendSpec{}, &ConfigError{Key: "--backend", Reason: fmt.Sprintf("want name=uri, got %q", v)}
	}
	return BackendSpec{Name: name, URI: uri}, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Validate fills derived defaults (mounts) and names the first bad key.
func (c *Config) Validate() error {
	if len(c.Extra) > 0 {
		keys := make([]string, 0, len(c.Extra))
		for k := range c.Extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return &ConfigError{Key: keys[0], Reason: "unknown key"}
	}
	if err := checkHostPort("listen", c.Listen); err != nil {
		return err
	}
	if c.Admin.Listen != "" {
		if err := checkHostPort("admin.listen", c.Admin.Listen); err != nil {
			return err
		}
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return &ConfigError{Key: "log.level", Reason: err.Error()}
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return &ConfigError{Key: "log.format", Reason: fmt.Sprintf("want text or json, got %q", c.Log.Format)}
	}
	if c.Limits.MaxClients < 1 {
		return &ConfigError{Key: "limits.max_clients", Reason: "must be at least 1"}
	}
	if c.Limits.MaxStreams < 1 {
		return &ConfigError{Key: "limits.max_streams", Reason: "must be at least 1"}
	}
	if c.Limits.RetryAfter < 0 {
		return &ConfigError{Key: "limits.retry_after", Reason: "must not be negative"}
	}
	if c.Drain < 0 {
		return &ConfigError{Key: "drain", Reason: "must not be negative"}
	}
	for i, o := range c.CORS.AllowedOrigins {
		if o != "*" {
			if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
				return &ConfigError{Key: fmt.Sprintf("cors.allowed_origins[%d]", i), Reason: fmt.Sprintf("want \"*\" or an origin such as https://news.example, got %q", o)}
			}
		}
	}
	if _, err := c.RelayConfig(); err != nil {
		return &ConfigError{Key: strings.SplitN(err.Error(), ":", 2)[0], Reason: strings.TrimSpace(strings.SplitN(err.Error(), ":", 2)[1])}
	}
	names := map[string]bool{}
	mounts := map[string]string{}
	for i := range c.Backends {
		b := &c.Backends[i]
		key := fmt.Sprintf("backends[%d]", i)
		if !nameRE.MatchString(b.Name) {
			return &ConfigError{Key: key + ".name", Reason: fmt.Sprintf("want 1-64 letters, digits, '.', '_' or '-', got %q", b.Name)}
		}
		if names[b.Name] {
			return &ConfigError{Key: key + ".name", Reason: fmt.Sprintf("duplicate back end %q", b.Name)}
		}
		names[b.Name] = true
		// An entry without uri in a node that asks Consul names a back end
		// found there: it adds headers and credentials, and may pin the
		// mount; Consul supplies the instances.
		fromConsul := b.URI == "" && c.Mesh.Consul.Address != ""
		if !fromConsul {
			u, err := url.Parse(b.URI)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return &ConfigError{Key: key + ".uri", Reason: fmt.Sprintf("want an absolute http or https URL, got %q", b.URI)}
			}
			if u.User != nil {
				return &ConfigError{Key: key + ".uri", Reason: "credentials do not belong in the URI: use credentials.username/password"}
			}
			if b.Mount == "" {
				b.Mount = u.Path
				if b.Mount == "" {
					b.Mount = "/"
				}
			}
		}
		if b.Mount != "" { // else Consul's ssemesh-mount applies
			if !strings.HasPrefix(b.Mount, "/") {
				return &ConfigError{Key: key + ".mount", Reason: fmt.Sprintf("must start with '/', got %q", b.Mount)}
			}
			if strings.HasPrefix(b.Mount, "/_ssemesh") {
				return &ConfigError{Key: key + ".mount", Reason: "paths under /_ssemesh are reserved"}
			}
			if other, dup := mounts[b.Mount]; dup {
				return &ConfigError{Key: key + ".mount", Reason: fmt.Sprintf("%q is already the mount of back end %q", b.Mount, other)}
			}
			mounts[b.Mount] = b.Name
		}
		for h := range b.Headers {
			if strings.EqualFold(h, "Last-Event-ID") || strings.EqualFold(h, "Accept") {
				return &ConfigError{Key: key + ".headers." + h, Reason: "is set by the relay itself"}
			}
		}
		if b.Credentials != nil && b.Credentials.Username == "" {
			return &ConfigError{Key: key + ".credentials.username", Reason: "must not be empty when credentials are given"}
		}
	}
	if c.Mesh.Tier < 0 {
		return &ConfigError{Key: "mesh.tier", Reason: "must be >= 0"}
	}
	if a := c.Mesh.Advertise; a != "" && !advertisable(a) {
		return &ConfigError{Key: "mesh.advertise", Reason: fmt.Sprintf("want a host name or an IP address peers can reach, without port, got %q", a)}
	}
	for _, d := range []struct {
		key string
		d   Duration
	}{{"mesh.avoid_for", c.Mesh.AvoidFor}, {"mesh.handoff", c.Mesh.Handoff}, {"mesh.settle", c.Mesh.Settle}} {
		if d.d < 0 {
			return &ConfigError{Key: d.key, Reason: "must not be negative"}
		}
	}
	if c.Mesh.Enabled() {
		return c.checkMesh()
	}
	return nil
}

// advertisable reports whether host is something a peer can dial: an IP
// address other than the unspecified one, or a host name.
func advertisable(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		return !ip.IsUnspecified()
	}
	return !strings.ContainsAny(host, ":/ ")
}

func checkHostPort(key, v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return &ConfigError{Key: key, Reason: fmt.Sprintf("want host:port, got %q", v)}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return &ConfigError{Key: key, Reason: fmt.Sprintf("bad port in %q", v)}
	}
	_ = host
	return nil
}

// RelayConfig applies the file's relay section over relay defaults.
func (c *Config) RelayConfig() (relay.Config, error) {
	r := relay.DefaultConfig()
	rc := c.Relay
	setInt := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	setI64 := func(dst *int64, v int64) {
		if v != 0 {
			*dst = v
		}
	}
	setD := func(dst *time.Duration, v Duration) {
		if v != 0 {
			*dst = v.D()
		}
	}
	setInt(&r.MaxEventBytes, rc.MaxEventBytes)
	setInt(&r.RingEvents, rc.RingEvents)
	setI64(&r.RingBytes, rc.RingBytes)
	setD(&r.RingAge, rc.RingAge)
	setD(&r.Linger, rc.Linger)
	setD(&r.Heartbeat, rc.Heartbeat)
	setI64(&r.ClientLagBytes, rc.ClientLagBytes)
	setD(&r.WriteTimeout, rc.WriteTimeout)
	setD(&r.ConnectTimeout, rc.ConnectTimeout)
	setD(&r.ReadyTimeout, rc.ReadyTimeout)
	setD(&r.IdleTimeout, rc.IdleTimeout)
	setD(&r.BackoffMin, rc.BackoffMin)
	setD(&r.BackoffMax, rc.BackoffMax)
	if rc.ConnectRetries != nil {
		r.ConnectRetries = *rc.ConnectRetries
	}
	setD(&r.CatchUpTimeout, rc.CatchUpTimeout)
	if rc.GapEvent != "" {
		r.GapEvent = rc.GapEvent
	}
	setD(&r.DrainRetry, rc.DrainRetry)
	return r, r.Validate()
}
