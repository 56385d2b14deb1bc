package node

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
	"github.com/ssemesh/ssemesh/internal/clientauth"
	"github.com/ssemesh/ssemesh/mesh"
	"github.com/ssemesh/ssemesh/relay"
)

// Config is a node's whole configuration: the YAML file's shape, with flags
// applied on top by the command.
type Config struct {
	Listen   string        `yaml:"listen"`
	Admin    AdminConfig   `yaml:"admin"`
	Log      LogConfig     `yaml:"log"`
	Limits   LimitsConfig  `yaml:"limits"`
	CORS     CORSConfig    `yaml:"cors"`
	Relay    relay.Config  `yaml:"relay"`
	Drain    Duration      `yaml:"drain"` // shutdown: clients are closed spread over this period
	Backends []BackendSpec `yaml:"backends"`
	Mesh     MeshConfig    `yaml:"mesh"`
	NodeID   string        `yaml:"node_id"`
	// TrustedProxies are the addresses (IPs or CIDR networks) of load
	// balancers in front of the node: for a request from one of them, the
	// client is the nearest untrusted address in X-Forwarded-For. The
	// client address is what per-client limits count.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ProxyProtocol makes the trusted proxies' connections start with a
	// PROXY protocol header (v1 or v2, as HAProxy and AWS NLB send it),
	// which names the client; connections from other addresses are read
	// as they are. Restart to change.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// ExposeMounts lists the mounts in the body of a 404; off by default,
	// since the list tells a stranger what the node fronts.
	ExposeMounts bool `yaml:"expose_mounts"`
	// TLS serves the client listener over HTTPS (HTTP/1.1 and HTTP/2);
	// absent, it is plain HTTP.
	TLS *TLSFiles `yaml:"tls"`
	// Auth decides who may read a stream, for every back end without an
	// auth of its own; absent, anyone who reaches a mount may.
	Auth *clientauth.Config `yaml:"auth"`
	// AccessLog writes one line per client stream when it ends.
	AccessLog AccessLogConfig `yaml:"access_log"`
	Extra     map[string]any  `yaml:",inline"` // rejected by Validate with the key's name
}

// TLSFiles is a certificate and its key, PEM files re-read when they
// change.
type TLSFiles struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// AdminTLS is the admin listener's certificate, and optionally the CA its
// clients must present a certificate from.
type AdminTLS struct {
	TLSFiles `yaml:",inline"`
	ClientCA string `yaml:"client_ca"`
}

// MeshTLS makes node-to-node requests HTTPS: CA checks the other nodes'
// certificates; Cert and Key, when set, are this node's client certificate,
// which proves its membership to parents and peers (mutual TLS).
type MeshTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// UpstreamTLS is how a node checks an HTTPS back end and proves itself to
// it.
type UpstreamTLS struct {
	CA         string `yaml:"ca"`          // default: the system's roots
	ServerName string `yaml:"server_name"` // default: the uri's host
	Cert       string `yaml:"cert"`        // client certificate, optional
	Key        string `yaml:"key"`
	// InsecureSkipVerify accepts any certificate: anyone on the path can
	// then read the stream and the node's credentials. Logged at start.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// AdminConfig is the operator's listener.
type AdminConfig struct {
	Listen string `yaml:"listen"`
	Token  string `yaml:"token"` // bearer token for everything but health; empty = open
	// MetricsOpen lets /metrics be scraped without the token.
	MetricsOpen bool `yaml:"metrics_open"`
	// Pprof serves /debug/pprof behind the token (default false: profiles
	// show the node's internals and cost CPU).
	Pprof *bool `yaml:"pprof"`
	// InsecureNoToken lets the admin listener run without a token on an
	// address other than loopback. Anyone who reaches it then reads the
	// topology and every stream.
	InsecureNoToken bool `yaml:"insecure_no_token"`
	// TLS serves the admin listener over HTTPS.
	TLS *AdminTLS `yaml:"tls"`
	// AllowedHosts are extra names accepted in the Host header (DNS names
	// peers or operators use for this node's admin listener).
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// PprofEnabled reports whether /debug/pprof is served.
func (a AdminConfig) PprofEnabled() bool { return a.Pprof != nil && *a.Pprof }

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
	// PerIP bounds one client address (an IPv6 /64 counts as one).
	PerIP PerIPLimits `yaml:"per_ip"`
	// Admit paces new subscribers node-wide (a reconnect storm).
	Admit AdmitLimits `yaml:"admit"`
}

// AdmitLimits pace the admission of new subscribers: Rate per second with
// Burst at once; a request waits up to MaxWait for its turn. Rate 0 admits
// at once. Child nodes are not paced.
type AdmitLimits struct {
	Rate    float64  `yaml:"rate"`
	Burst   int      `yaml:"burst"`
	MaxWait Duration `yaml:"max_wait"`
}

// PerIPLimits bound what one client address may take; 0 is no limit.
// Child nodes that prove mesh membership are not counted.
type PerIPLimits struct {
	// Connections is the most streams one address holds open at once.
	Connections int `yaml:"connections"`
	// NewStreams is how many upstream requests per second one address may
	// cause on average (opening a stream not open yet, or fetching history
	// older than the buffer), and Burst how many at once.
	NewStreams float64 `yaml:"new_streams"`
	Burst      int     `yaml:"burst"`
}

// CORSConfig lets browser pages on other origins open streams.
type CORSConfig struct {
	AllowedOrigins   []string `yaml:"allowed_origins"` // "*" allows any
	AllowCredentials bool     `yaml:"allow_credentials"`
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
	// QueryParams are the client query parameters that are part of a
	// stream's identity and are passed upstream. Others are dropped:
	// each distinct query would otherwise be a stream, and an upstream
	// connection, of its own.
	QueryParams []string `yaml:"query_params"`
	// Chained marks a back end that is another ssemesh node (chained by
	// configuration rather than found in the mesh): requests to it carry
	// this node's mesh credentials and ancestry, so it can refuse a loop
	// and count this node as a child. A plain back end gets neither.
	Chained bool `yaml:"chained"`
	// TLS sets how an https back end is checked (its CA, the name it
	// answers to) and the node's client certificate for it.
	TLS *UpstreamTLS `yaml:"tls"`
	// Auth decides who may read this back end's streams, in place of the
	// top-level auth.
	Auth *clientauth.Config `yaml:"auth"`
}

// Credentials are the node's own login upstream (HTTP Basic).
type Credentials struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// MeshConfig places the node in the mesh (used when the mesh is enabled).
// The mesh package's own section (dc, tier, settle, gossip, consul) is
// embedded with its YAML keys; the node adds what it does with the mesh:
// the advertised host, avoiding and handing off parents, and proving
// membership. mesh.Config's runtime fields (node ID, advertised addresses,
// capacity) are not read from the file: startMesh fills them.
type MeshConfig struct {
	mesh.Config `yaml:",inline"`
	// Advertise is the host (IP or DNS name) peers and Consul use to reach
	// this node's client and admin listeners, on the ports they are bound
	// to. Default: the host of gossip.advertise when set; otherwise the
	// listener's own host, or the machine's private IPv4 address when the
	// listener is bound to every interface (0.0.0.0, [::] or no host).
	Advertise string `yaml:"advertise"`
	// AvoidFor is how long a parent that failed or refused (508) is
	// skipped for.
	AvoidFor Duration `yaml:"avoid_for"`
	// Handoff bounds how long shutdown waits for child nodes to re-parent
	// before it closes the remaining clients.
	Handoff Duration `yaml:"handoff"`
	// Secret is shared by the nodes of a mesh: a node proves membership
	// to its parents (and to peers asked for the topology) with an HMAC
	// under it. Required in a mesh. AcceptSecrets are further secrets
	// accepted but never used to sign, for rotating it.
	Secret        string   `yaml:"secret"`
	AcceptSecrets []string `yaml:"accept_secrets"`
	// TLS makes node-to-node requests HTTPS, and with a client
	// certificate, mutual TLS proves membership instead of (or beside)
	// the secret.
	TLS *MeshTLS `yaml:"tls"`
}

// Enabled reports whether the node joins a mesh at all.
func (m MeshConfig) Enabled() bool { return m.Gossip.Bind != "" || m.Consul.Address != "" }

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
		Limits: LimitsConfig{MaxClients: 19000, MaxStreams: 10000, RetryAfter: 5,
			PerIP: PerIPLimits{Connections: 1000, NewStreams: 10, Burst: 50},
			Admit: AdmitLimits{Rate: 0, Burst: 500, MaxWait: Duration(30 * time.Second)}},
		Drain: Duration(10 * time.Second),
		Relay: relay.DefaultConfig(),
		Mesh: MeshConfig{
			Config:   mesh.Config{DC: "dc1", Settle: mesh.DefaultSettle},
			AvoidFor: Duration(30 * time.Second),
			Handoff:  Duration(10 * time.Second),
		},
	}
}

// ConfigError names the key a configuration problem is about, by its path
// in the YAML file.
type ConfigError = cfgerr.Error

// ConfigErrors is several problems found in one pass over a file.
type ConfigErrors = cfgerr.List

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// InterpolateValue replaces ${VAR} and ${VAR:-default} in one value with
// values from lookup; $$ is a literal $. It returns the first variable that
// is unset and has no default, if any, since a silently empty credential is
// worse than none.
func InterpolateValue(v string, lookup func(string) (string, bool)) (string, string) {
	missing := ""
	out := envRef.ReplaceAllStringFunc(v, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := envRef.FindStringSubmatch(m)
		name := sub[1]
		hasDefault := sub[2] != ""
		if val, ok := lookup(name); ok && (val != "" || !hasDefault) {
			return val
		}
		if hasDefault {
			return sub[3]
		}
		if missing == "" {
			missing = name
		}
		return m
	})
	return out, missing
}

// LoadConfig reads a YAML file over the defaults, interpolating the
// environment through lookup. Unknown keys are errors.
func LoadConfig(path string, lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	raw, err := os.ReadFile(path)
	if err != nil {
		return cfg, &ConfigError{Key: "--config", Reason: fmt.Sprintf("reading %s: %v", path, errors.Unwrap(err))}
	}
	return ParseConfig(raw, lookup)
}

// ParseConfig is LoadConfig for bytes already read.
func ParseConfig(raw []byte, lookup func(string) (string, bool)) (Config, error) {
	cfg := DefaultConfig()
	protected, refs := protectRefs(raw)
	var doc yaml.Node
	if err := yaml.Unmarshal(protected, &doc); err != nil {
		return cfg, &ConfigError{Key: "yaml", Reason: refs.restore(strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	if err := checkDocument(&doc, refs, lookup); err != nil {
		return cfg, err
	}
	if len(doc.Content) == 0 {
		return cfg, nil
	}
	if err := doc.Decode(&cfg); err != nil {
		return cfg, &ConfigError{Key: "yaml", Reason: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	return cfg, nil
}

// SecretEnv names the environment variables a node takes its secrets from
// when the configuration file leaves them empty: a container's secret or a
// unit's credentials, rather than the file or the command line, where
// other users of the machine could read them.
var SecretEnv = []struct {
	Name string
	slot func(*Config) *string
}{
	{"SSEMESH_MESH_SECRET", func(c *Config) *string { return &c.Mesh.Secret }},
	{"SSEMESH_GOSSIP_KEY", func(c *Config) *string { return &c.Mesh.Gossip.Key }},
	{"SSEMESH_ADMIN_TOKEN", func(c *Config) *string { return &c.Admin.Token }},
}

// ApplySecretEnv fills the secrets the file left empty from lookup (the
// environment, which only the command reads). A value in the file wins;
// an empty variable counts as unset.
func ApplySecretEnv(cfg *Config, lookup func(string) (string, bool)) {
	for _, e := range SecretEnv {
		if v, ok := lookup(e.Name); ok && v != "" && *e.slot(cfg) == "" {
			*e.slot(cfg) = v
		}
	}
}

// ParseBackendFlag reads "name=uri" (the --backend flag).
func ParseBackendFlag(v string) (BackendSpec, error) {
	name, uri, ok := strings.Cut(v, "=")
	if !ok || name == "" || uri == "" {
		return BackendSpec{}, &ConfigError{Key: "--backend", Reason: fmt.Sprintf("want name=uri, got %q", v)}
	}
	return BackendSpec{Name: name, URI: uri}, nil
}
