package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ssemesh/ssemesh/internal/admit"
	"github.com/ssemesh/ssemesh/internal/cfgerr"
	"github.com/ssemesh/ssemesh/internal/clientauth"
	"github.com/ssemesh/ssemesh/internal/iplimit"
	"github.com/ssemesh/ssemesh/internal/meshauth"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// reservedHeaders are set by the node itself on upstream requests, or
// would break them: a back end's headers may not name them.
var reservedHeaders = map[string]string{
	"Last-Event-Id":     "is set by the relay itself",
	"Accept":            "is set by the relay itself",
	"Connection":        "is a hop-by-hop header the HTTP client manages",
	"Content-Length":    "is managed by the HTTP client",
	"Transfer-Encoding": "is managed by the HTTP client",
	"Te":                "is a hop-by-hop header the HTTP client manages",
	"Trailer":           "is a hop-by-hop header the HTTP client manages",
	"Upgrade":           "is a hop-by-hop header the HTTP client manages",
	"X-Ssemesh-Via":     "is set by the node for mesh requests",
	"X-Ssemesh-Auth":    "is set by the node for mesh requests",
}

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
	if err := c.checkAdmin(); err != nil {
		return err
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return &ConfigError{Key: "log.level", Reason: err.Error()}
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return &ConfigError{Key: "log.format", Reason: fmt.Sprintf("want text or json, got %q", c.Log.Format)}
	}
	if err := c.AccessLog.validate(); err != nil {
		return err
	}
	if err := c.checkLimits(); err != nil {
		return err
	}
	if c.Drain < 0 {
		return &ConfigError{Key: "drain", Reason: "must not be negative"}
	}
	if err := c.checkCORS(); err != nil {
		return err
	}
	if err := c.checkTLS(); err != nil {
		return err
	}
	if c.Auth != nil {
		if err := checkAuth("auth", *c.Auth); err != nil {
			return err
		}
	}
	if _, err := parseTrustedProxies(c.TrustedProxies); err != nil {
		return err
	}
	if c.ProxyProtocol && len(c.TrustedProxies) == 0 {
		return &ConfigError{Key: "proxy_protocol", Reason: "needs trusted_proxies: the load balancers whose connections start with a PROXY header (no one else's are read as one)"}
	}
	if err := c.Relay.Validate(); err != nil {
		return cfgerr.Prefix("relay", err)
	}
	names := map[string]bool{}
	mounts := map[string]string{}
	for i := range c.Backends {
		if err := c.checkBackend(i, names, mounts); err != nil {
			return err
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
		d   time.Duration
	}{{"mesh.avoid_for", c.Mesh.AvoidFor.D()}, {"mesh.handoff", c.Mesh.Handoff.D()}, {"mesh.settle", c.Mesh.Settle}} {
		if d.d < 0 {
			return &ConfigError{Key: d.key, Reason: "must not be negative"}
		}
	}
	if err := checkConsulAddress(c.Mesh.Consul.Address); err != nil {
		return err
	}
	if c.Mesh.Enabled() {
		if err := c.checkMesh(); err != nil {
			return err
		}
	}
	return c.checkSecrets()
}

// checkAdmin: a listener anyone on the network can reach needs a token,
// unless the operator says in so many words that it does not.
func (c *Config) checkAdmin() error {
	if c.Admin.Listen == "" {
		return nil
	}
	if err := checkHostPort("admin.listen", c.Admin.Listen); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(c.Admin.Listen)
	if c.Admin.Token == "" && !c.Admin.InsecureNoToken && !isLoopbackHost(host) {
		return &ConfigError{Key: "admin.token", Reason: fmt.Sprintf("required when admin.listen (%q) is not a loopback address: set a token, bind the admin listener to 127.0.0.1, or, on a trusted network only, set admin.insecure_no_token", c.Admin.Listen)}
	}
	return nil
}

func (c *Config) checkLimits() error {
	l := c.Limits
	switch {
	case l.MaxClients < 1:
		return &ConfigError{Key: "limits.max_clients", Reason: "must be at least 1"}
	case l.MaxStreams < 1:
		return &ConfigError{Key: "limits.max_streams", Reason: "must be at least 1"}
	case l.RetryAfter < 0:
		return &ConfigError{Key: "limits.retry_after", Reason: "must not be negative"}
	}
	if err := l.PerIP.limiterConfig().Validate(); err != nil {
		key, reason, _ := strings.Cut(err.Error(), ": ")
		key = map[string]string{"connections": "connections", "rate": "new_streams", "burst": "burst"}[key]
		if key == "" {
			key = "connections"
		}
		return &ConfigError{Key: "limits.per_ip." + key, Reason: reason}
	}
	a := l.Admit
	switch {
	case a.Rate < 0 || math.IsNaN(a.Rate) || math.IsInf(a.Rate, 0):
		return &ConfigError{Key: "limits.admit.rate", Reason: "must be a non-negative number"}
	case a.Burst < 0:
		return &ConfigError{Key: "limits.admit.burst", Reason: "must not be negative"}
	case a.Rate > 0 && a.Burst < 1:
		return &ConfigError{Key: "limits.admit.burst", Reason: "must be at least 1 when a rate is set"}
	case a.MaxWait < 0:
		return &ConfigError{Key: "limits.admit.max_wait", Reason: "must not be negative"}
	}
	return nil
}

// pacerConfig is the admission pacer's configuration.
func (a AdmitLimits) pacerConfig() admit.Config {
	return admit.Config{Rate: a.Rate, Burst: a.Burst, MaxWait: time.Duration(a.MaxWait)}
}

// limiterConfig is the per-address limiter's configuration.
func (p PerIPLimits) limiterConfig() iplimit.Config {
	return iplimit.Config{Connections: p.Connections, Rate: p.NewStreams, Burst: p.Burst}
}

func (c *Config) checkCORS() error {
	wildcard := false
	for i, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			wildcard = true
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			return &ConfigError{Key: fmt.Sprintf("cors.allowed_origins[%d]", i), Reason: fmt.Sprintf("want \"*\" or an origin such as https://news.example, got %q", o)}
		}
	}
	if wildcard && c.CORS.AllowCredentials {
		return &ConfigError{Key: "cors.allow_credentials", Reason: `cannot be combined with allowed_origins "*": any site could read streams with its visitors' cookies; list the origins`}
	}
	return nil
}

// checkBackend validates entry i and fills its mount.
func (c *Config) checkBackend(i int, names map[string]bool, mounts map[string]string) error {
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
	configured := map[string]bool{}
	if !fromConsul {
		u, err := url.Parse(b.URI)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return &ConfigError{Key: key + ".uri", Reason: fmt.Sprintf("want an absolute http or https URL, got %q", b.URI)}
		}
		if u.User != nil {
			return &ConfigError{Key: key + ".uri", Reason: "credentials do not belong in the URI: use credentials.username/password"}
		}
		if u.Fragment != "" {
			return &ConfigError{Key: key + ".uri", Reason: "must not have a fragment (#...)"}
		}
		if b.Prefix && !strings.HasSuffix(u.Path, "/") {
			fixed := *u
			fixed.Path += "/"
			if fixed.RawPath != "" {
				fixed.RawPath += "/"
			}
			return &ConfigError{Key: key + ".uri", Reason: fmt.Sprintf("a prefix mount's uri path must end in '/': the client's path below the mount is appended to it (write %q)", fixed.String())}
		}
		if b.Mount == "" {
			b.Mount = u.Path
			if b.Mount == "" {
				b.Mount = "/"
			}
		}
		configured = queryKeys(u.RawQuery)
	}
	if b.Mount != "" { // else Consul's ssemesh-mount applies
		if !strings.HasPrefix(b.Mount, "/") {
			return &ConfigError{Key: key + ".mount", Reason: fmt.Sprintf("must start with '/', got %q", b.Mount)}
		}
		if err := checkClientPath(b.Mount); err != nil {
			return &ConfigError{Key: key + ".mount", Reason: fmt.Sprintf("%q: %v", b.Mount, err)}
		}
		if strings.HasPrefix(b.Mount, "/_ssemesh") {
			return &ConfigError{Key: key + ".mount", Reason: "paths under /_ssemesh are reserved"}
		}
		if other, dup := mounts[b.Mount]; dup {
			return &ConfigError{Key: key + ".mount", Reason: fmt.Sprintf("%q is already the mount of back end %q", b.Mount, other)}
		}
		mounts[b.Mount] = b.Name
	}
	for h, v := range b.Headers {
		hk := key + ".headers." + h
		if !validHeaderName(h) {
			return &ConfigError{Key: hk, Reason: fmt.Sprintf("%q is not a valid header name", h)}
		}
		if why, ok := reservedHeaders[http.CanonicalHeaderKey(h)]; ok {
			return &ConfigError{Key: hk, Reason: why}
		}
		if !validHeaderValue(v) {
			return &ConfigError{Key: hk, Reason: "the value has a character a header cannot carry (CR, LF, NUL or another control character)"}
		}
	}
	if b.Credentials != nil && b.Credentials.Username == "" {
		return &ConfigError{Key: key + ".credentials.username", Reason: "must not be empty when credentials are given"}
	}
	if b.Credentials != nil && (strings.ContainsAny(b.Credentials.Username, ":\r\n\x00") || strings.ContainsAny(b.Credentials.Password, "\r\n\x00")) {
		return &ConfigError{Key: key + ".credentials", Reason: "username must not contain ':', and neither may contain CR, LF or NUL"}
	}
	seen := map[string]bool{}
	for j, q := range b.QueryParams {
		qk := fmt.Sprintf("%s.query_params[%d]", key, j)
		switch {
		case q == "":
			return &ConfigError{Key: qk, Reason: "must not be empty"}
		case q == lastEventIDParam:
			return &ConfigError{Key: qk, Reason: "lastEventId is the browser's resume point, which the node consumes; it is never part of a stream"}
		case q == clientauth.QueryParam:
			return &ConfigError{Key: qk, Reason: "access_token carries a client's credentials: it never reaches a back end"}
		case configured[q]:
			return &ConfigError{Key: qk, Reason: fmt.Sprintf("%q is set in uri: configured parameters cannot be chosen by clients", q)}
		case seen[q]:
			return &ConfigError{Key: qk, Reason: fmt.Sprintf("%q is listed twice", q)}
		}
		seen[q] = true
	}
	if b.Chained && c.Mesh.Secret == "" {
		return &ConfigError{Key: key + ".chained", Reason: "needs mesh.secret: a chained node proves itself to the next with it"}
	}
	if b.Auth != nil {
		if err := checkAuth(key+".auth", *b.Auth); err != nil {
			return err
		}
	}
	if t := b.TLS; t != nil {
		if u, err := url.Parse(b.URI); b.URI != "" && err == nil && u.Scheme != "https" {
			return &ConfigError{Key: key + ".tls", Reason: "the uri is not https"}
		}
		if t.CA != "" {
			if err := checkCAFile(key+".tls.ca", t.CA); err != nil {
				return err
			}
		}
		if err := checkPairFiles(key+".tls", t.Cert, t.Key, true); err != nil {
			return err
		}
	}
	return nil
}

// checkSecrets validates the mesh secret and requires it in a mesh: without
// it a child node could not be told from a client sending the same
// headers.
func (c *Config) checkSecrets() error {
	m := c.Mesh
	if m.Secret != "" {
		if err := meshauth.CheckSecret(m.Secret); err != nil {
			return &ConfigError{Key: "mesh.secret", Reason: err.Error()}
		}
	}
	for i, s := range m.AcceptSecrets {
		if err := meshauth.CheckSecret(s); err != nil {
			return &ConfigError{Key: fmt.Sprintf("mesh.accept_secrets[%d]", i), Reason: err.Error()}
		}
	}
	if len(m.AcceptSecrets) > 0 && m.Secret == "" {
		return &ConfigError{Key: "mesh.accept_secrets", Reason: "only valid with mesh.secret (accepted secrets only verify; the secret signs)"}
	}
	if m.Enabled() && m.Secret == "" && !m.mutualTLS() {
		return &ConfigError{Key: "mesh.secret", Reason: "required in a mesh without mesh.tls.cert: nodes prove membership to each other with it (generate one with: openssl rand -base64 32; every node of the mesh uses the same)"}
	}
	return nil
}

// mutualTLS reports whether nodes prove membership with client
// certificates.
func (m MeshConfig) mutualTLS() bool { return m.TLS != nil && m.TLS.Cert != "" }

// checkConsulAddress accepts what the Consul client does: host:port, or an
// http, https or unix URL.
func checkConsulAddress(a string) error {
	if a == "" {
		return nil
	}
	bad := &ConfigError{Key: "mesh.consul.address", Reason: fmt.Sprintf("want host:port, http(s)://host:port or unix:///path, got %q", a)}
	if scheme, _, ok := strings.Cut(a, "://"); ok {
		u, err := url.Parse(a)
		switch {
		case err != nil:
			return bad
		case scheme == "unix":
			if u.Path == "" {
				return bad
			}
			return nil
		case scheme != "http" && scheme != "https", u.Host == "", u.Path != "" && u.Path != "/":
			return bad
		}
		if u.Port() != "" {
			if p, err := strconv.Atoi(u.Port()); err != nil || p < 1 || p > 65535 {
				return bad
			}
		}
		return nil
	}
	if err := checkHostPort("mesh.consul.address", a); err != nil {
		return bad
	}
	if h, _, _ := net.SplitHostPort(a); h == "" {
		return bad
	}
	return nil
}

// parseTrustedProxies reads trusted_proxies: IPs or CIDR networks.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, &ConfigError{Key: fmt.Sprintf("trusted_proxies[%d]", i), Reason: fmt.Sprintf("want an IP address or a CIDR network such as 10.0.0.0/8, got %q", s)}
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// isLoopbackHost reports a listener host only this machine can reach.
func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(h, "[]"))
	return err == nil && a.Unmap().IsLoopback()
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
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return &ConfigError{Key: key, Reason: fmt.Sprintf("want host:port, got %q", v)}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return &ConfigError{Key: key, Reason: fmt.Sprintf("bad port in %q", v)}
	}
	return nil
}

// validHeaderName: an RFC 9110 token.
func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// validHeaderValue: no control characters but horizontal tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// checkTLS loads every listener and mesh TLS file once, so that a bad file
// stops the check rather than the first handshake.
func (c *Config) checkTLS() error {
	if c.TLS != nil {
		if err := checkPairFiles("tls", c.TLS.Cert, c.TLS.Key, false); err != nil {
			return err
		}
	}
	if t := c.Admin.TLS; t != nil {
		if c.Admin.Listen == "" {
			return &ConfigError{Key: "admin.tls", Reason: "set without admin.listen"}
		}
		if err := checkPairFiles("admin.tls", t.Cert, t.Key, false); err != nil {
			return err
		}
		if t.ClientCA != "" {
			if err := checkCAFile("admin.tls.client_ca", t.ClientCA); err != nil {
				return err
			}
		}
	}
	if t := c.Mesh.TLS; t != nil {
		if t.CA == "" {
			return &ConfigError{Key: "mesh.tls.ca", Reason: "required: it checks the other nodes' certificates"}
		}
		if err := checkCAFile("mesh.tls.ca", t.CA); err != nil {
			return err
		}
		if err := checkPairFiles("mesh.tls", t.Cert, t.Key, true); err != nil {
			return err
		}
		// Children and peers reach this node over HTTPS.
		if c.TLS == nil {
			return &ConfigError{Key: "tls", Reason: "required with mesh.tls: child nodes ask this node for streams over HTTPS"}
		}
		if c.Admin.Listen != "" && c.Admin.TLS == nil {
			return &ConfigError{Key: "admin.tls", Reason: "required with mesh.tls: peers ask this node's admin listener for the topology over HTTPS"}
		}
	}
	return nil
}

// checkPairFiles checks a certificate and key pair under key (key.cert and
// key.key name the files). optional allows both to be empty.
func checkPairFiles(key, certFile, keyFile string, optional bool) error {
	switch {
	case certFile == "" && keyFile == "" && optional:
		return nil
	case certFile == "":
		return &ConfigError{Key: key + ".cert", Reason: "required with " + key + ".key"}
	case keyFile == "":
		return &ConfigError{Key: key + ".key", Reason: "required with " + key + ".cert"}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return &ConfigError{Key: key + ".cert", Reason: fmt.Sprintf("%s and %s: %v", certFile, keyFile, err)}
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return &ConfigError{Key: key + ".cert", Reason: fmt.Sprintf("%s: %v", certFile, err)}
	}
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return &ConfigError{Key: key + ".cert", Reason: fmt.Sprintf("%s is valid from %s to %s, not now", certFile, leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))}
	}
	return nil
}

// checkCAFile checks that file holds at least one PEM certificate.
func checkCAFile(key, file string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return &ConfigError{Key: key, Reason: err.Error()}
	}
	if !x509.NewCertPool().AppendCertsFromPEM(raw) {
		return &ConfigError{Key: key, Reason: fmt.Sprintf("%s holds no PEM certificate", file)}
	}
	return nil
}

// checkAuth validates an auth block under key.
func checkAuth(key string, a clientauth.Config) error {
	if err := a.Validate(); err != nil {
		sub, reason, ok := strings.Cut(err.Error(), ": ")
		if !ok || strings.ContainsAny(sub, " ,") {
			return &ConfigError{Key: key, Reason: err.Error()}
		}
		return &ConfigError{Key: key + "." + sub, Reason: reason}
	}
	return nil
}
