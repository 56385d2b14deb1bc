package certs

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ssemesh/ssemesh/internal/certs/certstest"
)

// TestRotationKeepsConnections rotates a listener's certificate under 50
// open connections that keep exchanging data: none is dropped, they keep
// the certificate they were set up with, and new connections get the new
// one.
func TestRotationKeepsConnections(t *testing.T) {
	const conns = 50
	ca := certstest.NewCA(t, "ca")
	certFile, keyFile := serverPair(t, ca)
	oldSerial := certstest.ReadCert(t, certFile).SerialNumber
	p, err := LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, ServerConfig(p, nil, tls.NoClientCert))

	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = mustDial(t, addr, "", trustingClient(ca))
		if got := clients[i].serial(); got.Cmp(oldSerial) != 0 {
			t.Fatalf("client %d got serial %x, want %x", i, got, oldSerial)
		}
	}

	// Every client exchanges data in a loop while the files are rotated.
	stop := make(chan struct{})
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.ping(fmt.Sprintf("client %d message %d", i, n)); err != nil {
					errs <- fmt.Errorf("client %d during rotation: %w", i, err)
					return
				}
			}
		}()
	}

	newCert, newKey := serverPair(t, ca)
	newSerial := certstest.ReadCert(t, newCert).SerialNumber
	certstest.CopyPair(t, newCert, newKey, certFile, keyFile)
	changed, err := p.Reload()
	if !changed || err != nil {
		t.Fatalf("reload: changed=%v err=%v", changed, err)
	}
	if got := mustDial(t, addr, "", trustingClient(ca)).serial(); got.Cmp(newSerial) != 0 {
		t.Errorf("new connection got serial %x, want the new %x", got, newSerial)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// After the rotation, each old connection still works, on its old
	// certificate.
	for i, c := range clients {
		if err := c.ping("after rotation"); err != nil {
			t.Errorf("client %d after rotation: %v", i, err)
		}
		if got := c.serial(); got.Cmp(oldSerial) != 0 {
			t.Errorf("client %d now reports serial %x, want its original %x", i, got, oldSerial)
		}
	}
}

// TestClientCARotation swaps the CA that checks client certificates under a
// running listener: the next handshakes follow the new CA, session tickets
// from before do not bypass it, and connections set up before stay up.
func TestClientCARotation(t *testing.T) {
	serverCA, caA, caB := certstest.NewCA(t, "server-ca"), certstest.NewCA(t, "client-ca-a"), certstest.NewCA(t, "client-ca-b")
	pair := loadPair(t, serverCA, certstest.Options{DNSNames: []string{"localhost"}})
	roots := loadCA(t, serverCA.CertPEM())
	clientCAFile := filepath.Join(t.TempDir(), "client-ca.pem")
	certstest.WriteFileAtomic(t, clientCAFile, caA.CertPEM())
	clientCAs, err := LoadCA(clientCAFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig(pair, clientCAs, tls.RequireAndVerifyClientCert)
	cfg.NextProtos = []string{"h2", "http/1.1"} // the caller's part; must reach every handshake
	addr := startServer(t, cfg)

	clientA := loadPair(t, caA, certstest.Options{Client: true, URIs: []string{"ssemesh://node/leaf-a"}})
	clientB := loadPair(t, caB, certstest.Options{Client: true, URIs: []string{"ssemesh://node/leaf-b"}})
	dialAs := func(p *Pair, cache tls.ClientSessionCache) (*client, error) {
		c := ClientConfig(roots, p, "localhost", false)
		c.NextProtos = []string{"h2"}
		c.ClientSessionCache = cache
		return dial(t, addr, "", c)
	}
	cacheA := tls.NewLRUClientSessionCache(4)

	// Before: A is accepted (and named), B refused.
	a, err := dialAs(clientA, cacheA)
	if err != nil {
		t.Fatalf("client of CA A before the rotation: %v", err)
	}
	if a.peer != "leaf-a" {
		t.Errorf("server named the peer %q, want leaf-a", a.peer)
	}
	if got := a.conn.ConnectionState().NegotiatedProtocol; got != "h2" {
		t.Errorf("negotiated %q, want the caller's h2", got)
	}
	if c, err := dialAs(clientA, cacheA); err != nil || !c.conn.ConnectionState().DidResume {
		t.Fatalf("second connection of A: err=%v, want a resumed session (else the ticket test below proves nothing)", err)
	}
	if _, err := dialAs(clientB, nil); err == nil {
		t.Fatal("client of CA B accepted before the rotation")
	}

	certstest.WriteFileAtomic(t, clientCAFile, caB.CertPEM())
	if changed, err := clientCAs.Reload(); !changed || err != nil {
		t.Fatalf("reload of the client CA: changed=%v err=%v", changed, err)
	}

	// After: B is accepted, A refused, even with a ticket from before.
	b, err := dialAs(clientB, nil)
	if err != nil {
		t.Fatalf("client of CA B after the rotation: %v", err)
	}
	if b.peer != "leaf-b" {
		t.Errorf("server named the peer %q, want leaf-b", b.peer)
	}
	if _, err := dialAs(clientA, nil); err == nil {
		t.Error("client of CA A accepted after the rotation")
	}
	if _, err := dialAs(clientA, cacheA); err == nil {
		t.Error("client of CA A accepted after the rotation by resuming a session")
	}
	if err := a.ping("still here"); err != nil {
		t.Errorf("A's connection from before the rotation: %v", err)
	}
}

// TestServerConfigWithHTTPServer is the listener as a node uses it: an
// http.Server with mutual TLS, the caller's NextProtos reaching the
// per-handshake config (h2 negotiated) and the handler naming the peer.
func TestServerConfigWithHTTPServer(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	cas := loadCA(t, ca.CertPEM())
	cfg := ServerConfig(loadPair(t, ca, certstest.Options{DNSNames: []string{"localhost"}}), cas, tls.RequireAndVerifyClientCert)
	cfg.NextProtos = []string{"h2", "http/1.1"}
	srv := &http.Server{
		TLSConfig: cfg,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name, _ := PeerName(*r.TLS)
			io.WriteString(w, name)
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})

	child := loadPair(t, ca, certstest.Options{Client: true, Server: true, URIs: []string{"ssemesh://node/relay-2"}})
	tr := &http.Transport{TLSClientConfig: ClientConfig(cas, child, "localhost", false), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: ioTimeout}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 || string(body) != "relay-2" {
		t.Fatalf("got %s naming the peer %q, want HTTP/2 naming relay-2", resp.Proto, body)
	}
}

func TestClientConfig(t *testing.T) {
	caA, caB := certstest.NewCA(t, "ca-a"), certstest.NewCA(t, "ca-b")
	rootsA, rootsB := loadCA(t, caA.CertPEM()), loadCA(t, caB.CertPEM())
	direct := startServer(t, ServerConfig(loadPair(t, caA, certstest.Options{
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
	}), nil, tls.NoClientCert))
	viaIntermediate := startServer(t, ServerConfig(loadPair(t, caA.Intermediate(t, "intermediate"), certstest.Options{
		DNSNames: []string{"localhost"},
	}), nil, tls.NoClientCert))

	tests := []struct {
		name     string
		addr     string
		cfg      *tls.Config
		sni      string   // ServerName filled in from the address, as tls.Dial does
		refusals []string // nil: accepted
	}{
		{"right name", direct, ClientConfig(rootsA, nil, "localhost", false), "", nil},
		{"name from the connection", direct, ClientConfig(rootsA, nil, "", false), "localhost", nil},
		{"IP given as the server name", direct, ClientConfig(rootsA, nil, "127.0.0.1", false), "", nil},
		{"intermediate sent by the server", viaIntermediate, ClientConfig(rootsA, nil, "localhost", false), "", nil},
		{"wrong name", direct, ClientConfig(rootsA, nil, "other.example", false), "", []string{`"other.example"`, "not other.example"}},
		{"wrong name from the connection", direct, ClientConfig(rootsA, nil, "", false), "other.example", []string{`"other.example"`}},
		{"no name at all", direct, ClientConfig(rootsA, nil, "", false), "", []string{"no server name"}},
		{"unknown CA", direct, ClientConfig(rootsB, nil, "localhost", false), "", []string{"unknown authority"}},
		{"system roots do not know a test CA", direct, ClientConfig(nil, nil, "localhost", false), "", []string{"unknown authority"}},
		{"insecure skips everything", direct, ClientConfig(rootsB, nil, "other.example", true), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dial(t, tt.addr, tt.sni, tt.cfg)
			if tt.refusals == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantErr(t, err, tt.refusals...)
		})
	}
}

// TestClientConfigRootsRotation rotates the roots a client checks servers
// with: one config, the next handshake follows the file.
func TestClientConfigRootsRotation(t *testing.T) {
	caA, caB := certstest.NewCA(t, "ca-a"), certstest.NewCA(t, "ca-b")
	serverA := startServer(t, ServerConfig(loadPair(t, caA, certstest.Options{DNSNames: []string{"localhost"}}), nil, tls.NoClientCert))
	serverB := startServer(t, ServerConfig(loadPair(t, caB, certstest.Options{DNSNames: []string{"localhost"}}), nil, tls.NoClientCert))
	rootsFile := filepath.Join(t.TempDir(), "roots.pem")
	certstest.WriteFileAtomic(t, rootsFile, caA.CertPEM())
	roots, err := LoadCA(rootsFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ClientConfig(roots, nil, "localhost", false)
	check := func(stage string, wantA, wantB bool) {
		t.Helper()
		for _, s := range []struct {
			name, addr string
			want       bool
		}{{"A", serverA, wantA}, {"B", serverB, wantB}} {
			_, err := dial(t, s.addr, "", cfg)
			if (err == nil) != s.want {
				t.Errorf("%s: server of CA %s accepted=%v (err=%v), want %v", stage, s.name, err == nil, err, s.want)
			}
		}
	}
	check("before", true, false)
	certstest.WriteFileAtomic(t, rootsFile, caB.CertPEM())
	if changed, err := roots.Reload(); !changed || err != nil {
		t.Fatalf("reload: changed=%v err=%v", changed, err)
	}
	check("after", false, true)
}

// TestBuildersDoNotWeaken checks the versions and suites of every config
// the builders make, and that a TLS 1.1 client is refused.
func TestBuildersDoNotWeaken(t *testing.T) {
	ca := certstest.NewCA(t, "ca")
	pair := loadPair(t, ca, certstest.Options{DNSNames: []string{"localhost"}})
	cas := loadCA(t, ca.CertPEM())
	server := ServerConfig(pair, cas, tls.VerifyClientCertIfGiven)
	perHandshake, err := server.GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*tls.Config{
		"server":               ServerConfig(pair, nil, tls.NoClientCert),
		"server with CAs":      server,
		"server per handshake": perHandshake,
		"client system roots":  ClientConfig(nil, pair, "localhost", false),
		"client with roots":    ClientConfig(cas, pair, "localhost", false),
	} {
		if c.MinVersion != tls.VersionTLS12 || c.CipherSuites != nil || c.MaxVersion != 0 || c.CurvePreferences != nil {
			t.Errorf("%s: MinVersion %x, MaxVersion %x, suites %v, curves %v: want 1.2, Go's defaults", name, c.MinVersion, c.MaxVersion, c.CipherSuites, c.CurvePreferences)
		}
	}
	if ClientConfig(nil, nil, "localhost", false).InsecureSkipVerify {
		t.Error("client with system roots skips verification")
	}
	if perHandshake.ClientCAs == nil || perHandshake.GetCertificate == nil || perHandshake.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Error("per-handshake config lost the CAs, the certificate or the client auth")
	}

	addr := startServer(t, ServerConfig(pair, nil, tls.NoClientCert))
	old := trustingClient(ca)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := dial(t, addr, "", old); err == nil {
		t.Error("a TLS 1.1 client was accepted")
	}
}

func TestPeerName(t *testing.T) {
	uris := func(ss ...string) []*url.URL {
		var out []*url.URL
		for _, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, u)
		}
		return out
	}
	tests := []struct {
		name     string
		leaf     *x509.Certificate // nil: no certificate
		verified bool
		want     string
		wantOK   bool
	}{
		{"node URI", &x509.Certificate{URIs: uris("ssemesh://node/leaf-7"), DNSNames: []string{"leaf-7.example"}}, true, "leaf-7", true},
		{"node URI after another scheme", &x509.Certificate{URIs: uris("spiffe://example/x", "ssemesh://node/root-a")}, true, "root-a", true},
		{"first node URI wins", &x509.Certificate{URIs: uris("ssemesh://node/a", "ssemesh://node/b")}, true, "a", true},
		{"other URI schemes fall back to DNS", &x509.Certificate{URIs: uris("spiffe://example/x"), DNSNames: []string{"relay-1.example", "x"}}, true, "relay-1.example", true},
		{"ssemesh URI of another shape is skipped", &x509.Certificate{URIs: uris("ssemesh://peer/x", "ssemesh://node/", "ssemesh://node/a/b", "ssemesh://node/x?y=1"), DNSNames: []string{"dns"}}, true, "dns", true},
		{"common name last", &x509.Certificate{Subject: pkix.Name{CommonName: "cn-node"}}, true, "cn-node", true},
		{"no name", &x509.Certificate{}, true, "", false},
		{"certificate not verified", &x509.Certificate{URIs: uris("ssemesh://node/leaf-7")}, false, "", false},
		{"no certificate", nil, false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cs tls.ConnectionState
			if tt.leaf != nil {
				cs.PeerCertificates = []*x509.Certificate{tt.leaf}
				if tt.verified {
					cs.VerifiedChains = [][]*x509.Certificate{{tt.leaf}}
				}
			}
			got, ok := PeerName(cs)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("PeerName = %q, %v; want %q, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// loadPair issues a certificate from ca and loads it.
func loadPair(t *testing.T, ca *certstest.CA, opts certstest.Options) *Pair {
	t.Helper()
	certFile, keyFile := ca.Issue(t, opts)
	p, err := LoadPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// loadCA writes content to a CA file and loads it.
func loadCA(t *testing.T, content []byte) *CAFile {
	t.Helper()
	file := filepath.Join(t.TempDir(), "ca.pem")
	certstest.WriteFileAtomic(t, file, content)
	c, err := LoadCA(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
