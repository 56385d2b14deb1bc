package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/certs"
)

// tlsReloadEvery is how often TLS files are checked for changes; SIGHUP
// and a reload request check them at once.
const tlsReloadEvery = 10 * time.Second

// tlsState is every TLS setting of a node, built from its files. The files
// are re-read when they change, without dropping connections: handshakes
// after a change use the new certificate or CA, established connections
// keep theirs.
type tlsState struct {
	watcher *certs.Watcher
	// client and admin serve the listeners; nil serves plain HTTP.
	client, admin *tls.Config
	// meshPair is this node's client certificate for parents and peers;
	// meshCA checks their certificates, and children's. meshCA is nil
	// without mesh.tls.
	meshPair *certs.Pair
	meshCA   *certs.CAFile
	// meshHosts holds the client configuration for each parent or peer
	// host: a certificate is checked against the host it is dialled at,
	// which crypto/tls does not pass on for IP addresses.
	meshHosts sync.Map // host -> *tls.Config
	// upstream caches the client configuration of each back-end TLS
	// setting, so that back ends with the same settings, and a back end
	// kept by a reload, share one connection pool.
	mu       sync.Mutex
	upstream map[upstreamKey]*tls.Config
	log      logrus.FieldLogger
}

type upstreamKey struct {
	tls        UpstreamTLS
	serverName string
}

// newTLSState loads every file the configuration names.
func newTLSState(cfg Config, log logrus.FieldLogger) (*tlsState, error) {
	st := &tlsState{watcher: certs.NewWatcher(tlsReloadEvery, log.WithField("component", "tls")), upstream: map[upstreamKey]*tls.Config{}, log: log}
	pair := func(key, certFile, keyFile string) (*certs.Pair, error) {
		if certFile == "" {
			return nil, nil
		}
		p, err := certs.LoadPair(certFile, keyFile, log)
		if err != nil {
			return nil, &ConfigError{Key: key, Reason: err.Error()}
		}
		st.watcher.Add(p)
		return p, nil
	}
	ca := func(key, file string) (*certs.CAFile, error) {
		if file == "" {
			return nil, nil
		}
		c, err := certs.LoadCA(file, log)
		if err != nil {
			return nil, &ConfigError{Key: key, Reason: err.Error()}
		}
		st.watcher.Add(c)
		return c, nil
	}
	if t := cfg.Mesh.TLS; t != nil {
		var err error
		if st.meshCA, err = ca("mesh.tls.ca", t.CA); err != nil {
			return nil, err
		}
		if st.meshPair, err = pair("mesh.tls.cert", t.Cert, t.Key); err != nil {
			return nil, err
		}
	}
	if t := cfg.TLS; t != nil {
		p, err := pair("tls.cert", t.Cert, t.Key)
		if err != nil {
			return nil, err
		}
		auth := tls.NoClientCert
		if st.meshCA != nil {
			// Child nodes may prove membership with a certificate;
			// browsers send none and are not asked to choose one.
			auth = tls.VerifyClientCertIfGiven
		}
		st.client = certs.ServerConfig(p, st.meshCA, auth)
		// Set here, not left to http.Server: with a client CA the
		// handshake uses a per-connection copy of this configuration.
		st.client.NextProtos = []string{"h2", "http/1.1"}
	}
	if t := cfg.Admin.TLS; t != nil {
		p, err := pair("admin.tls.cert", t.Cert, t.Key)
		if err != nil {
			return nil, err
		}
		clientCA, err := ca("admin.tls.client_ca", t.ClientCA)
		if err != nil {
			return nil, err
		}
		switch {
		case clientCA != nil:
			st.admin = certs.ServerConfig(p, clientCA, tls.RequireAndVerifyClientCert)
		case st.meshCA != nil:
			st.admin = certs.ServerConfig(p, st.meshCA, tls.VerifyClientCertIfGiven)
		default:
			st.admin = certs.ServerConfig(p, nil, tls.NoClientCert)
		}
		st.admin.NextProtos = []string{"h2", "http/1.1"}
	}
	return st, nil
}

// upstreamFor is the client configuration for back end b; nil when b has
// no TLS settings (the system's roots then check an https back end).
func (st *tlsState) upstreamFor(b BackendSpec) (*tls.Config, error) {
	t := b.TLS
	if t == nil {
		return nil, nil
	}
	k := upstreamKey{tls: *t, serverName: t.ServerName}
	if k.serverName == "" && b.URI != "" {
		if u, err := url.Parse(b.URI); err == nil {
			k.serverName = u.Hostname()
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if c, ok := st.upstream[k]; ok {
		return c, nil
	}
	key := "backends." + b.Name + ".tls"
	var roots *certs.CAFile
	if t.CA != "" {
		c, err := certs.LoadCA(t.CA, st.log)
		if err != nil {
			return nil, &ConfigError{Key: key + ".ca", Reason: err.Error()}
		}
		st.watcher.Add(c)
		roots = c
	}
	var pair *certs.Pair
	if t.Cert != "" {
		p, err := certs.LoadPair(t.Cert, t.Key, st.log)
		if err != nil {
			return nil, &ConfigError{Key: key + ".cert", Reason: err.Error()}
		}
		st.watcher.Add(p)
		pair = p
	}
	if t.InsecureSkipVerify {
		st.log.WithField("backend", b.Name).Warn("backends[].tls.insecure_skip_verify is set: the back end's certificate is not checked; anyone on the path can read the stream and the node's credentials")
	}
	c := certs.ClientConfig(roots, pair, k.serverName, t.InsecureSkipVerify)
	st.upstream[k] = c
	return c, nil
}

// run re-reads changed files until ctx ends.
func (st *tlsState) run(ctx context.Context) { st.watcher.Run(ctx) }

// reload re-reads every file now.
func (st *tlsState) reload() error { return st.watcher.ReloadAll() }

// scheme is what node-to-node URLs use.
func (st *tlsState) scheme() string {
	if st.meshCA != nil {
		return "https"
	}
	return "http"
}

// meshFor is the client configuration for a parent or peer at addr
// (host:port): its certificate must name that host, as node certificates
// name the addresses nodes advertise. nil without mesh.tls.
func (st *tlsState) meshFor(addr string) *tls.Config {
	if st.meshCA == nil {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if c, ok := st.meshHosts.Load(host); ok {
		return c.(*tls.Config)
	}
	c, _ := st.meshHosts.LoadOrStore(host, certs.ClientConfig(st.meshCA, st.meshPair, host, false))
	return c.(*tls.Config)
}

// dialPeer dials a peer's admin listener over TLS with meshFor.
func (st *tlsState) dialPeer(ctx context.Context, network, addr string) (net.Conn, error) {
	raw, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, st.meshFor(addr))
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

// meshPeer reports the node a request's verified client certificate names,
// when the certificate was issued by the mesh's CA.
func (st *tlsState) meshPeer(r *http.Request) (string, bool) {
	if st.meshCA == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", false
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	// The listener may trust more CAs than the mesh's (admin client_ca):
	// membership is the mesh CA's word only.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: st.meshCA.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", false
	}
	return certs.PeerName(*r.TLS)
}

// errPeerName is a mesh certificate whose node name is not the one the
// request claims.
func errPeerName(cert, claimed string) error {
	return fmt.Errorf("the mesh certificate names node %q, the ancestry ends with %q", cert, claimed)
}
