package node

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/certs/certstest"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

var loopbackIP = []net.IP{net.ParseIP("127.0.0.1")}

// tlsClient is an HTTP client that trusts ca and speaks HTTP/2 (h2) or
// HTTP/1.1 only.
func tlsClient(ca *certstest.CA, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:  h2,
		DisableCompression: true,
	}
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	return &http.Client{Transport: tr}
}

// httpsNode starts a node whose client listener serves TLS with a
// certificate from ca for 127.0.0.1.
func httpsNode(t *testing.T, ca *certstest.CA, mutate func(*Config)) (*backend.Backend, *Node, string, string) {
	t.Helper()
	certFile, keyFile := ca.Issue(t, certstest.Options{IPs: loopbackIP})
	be, n, _ := oneBackend(t, backend.Config{}, func(c *Config) {
		c.TLS = &TLSFiles{Cert: certFile, Key: keyFile}
		if mutate != nil {
			mutate(c)
		}
	})
	return be, n, certFile, keyFile
}

func TestHTTPSAndHTTP2DeliverTheSameEvents(t *testing.T) {
	ca := certstest.NewCA(t, "test CA")
	be, n, _, _ := httpsNode(t, ca, nil)
	url := "https://" + n.Addr() + streamPath

	var clients []*ssetest.Client
	for _, h2 := range []bool{false, true} {
		c, resp, err := ssetest.DialWith(tlsClient(ca, h2), url, nil, nil)
		if err != nil || c == nil {
			t.Fatalf("h2=%v: %v %v", h2, err, resp)
		}
		t.Cleanup(c.Close)
		want := 1
		if h2 {
			want = 2
		}
		if c.Resp.ProtoMajor != want || c.Resp.TLS == nil {
			t.Fatalf("h2=%v: answered over %s", h2, c.Resp.Proto)
		}
		clients = append(clients, c)
	}
	be.Publish(streamPath, 20)
	for i, c := range clients {
		if got := c.IDs(t, 20, 5*time.Second); !slices.Equal(got, seq(1, 20)) {
			t.Fatalf("client %d got %v", i, got)
		}
	}
}

func TestCertificateRotationKeepsClients(t *testing.T) {
	const clients = 500
	ca := certstest.NewCA(t, "test CA")
	be, n, certFile, keyFile := httpsNode(t, ca, nil)
	url := "https://" + n.Addr() + streamPath
	hc := tlsClient(ca, false)
	old := certstest.ReadCert(t, certFile).SerialNumber

	cs := make([]*ssetest.Client, clients)
	parallel(clients, func(i int) {
		c, resp, err := ssetest.DialWith(hc, url, nil, nil)
		if err != nil || c == nil {
			t.Errorf("client %d: %v %v", i, err, resp)
			return
		}
		cs[i] = c
	})
	if t.Failed() {
		t.FailNow()
	}
	for _, c := range cs {
		t.Cleanup(c.Close)
	}
	ssetest.Eventually(t, "clients attached", 10*time.Second, func() bool { return n.Relay().Clients() == clients })
	be.Publish(streamPath, 1)
	expectAll(t, cs, 1, 1)

	// A new certificate and key replace the files, as a renewal does.
	newCert, newKey := ca.Issue(t, certstest.Options{IPs: loopbackIP})
	for src, dst := range map[string]string{newCert: certFile, newKey: keyFile} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		certstest.WriteFileAtomic(t, dst, data)
	}
	if err := n.ReloadTLS(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	be.Publish(streamPath, 1)
	expectAll(t, cs, 2, 2)
	conn, err := tls.Dial("tcp", n.Addr(), &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	got := conn.ConnectionState().PeerCertificates[0].SerialNumber
	conn.Close()
	if got.Cmp(old) == 0 {
		t.Fatal("a new connection after the reload got the old certificate")
	}

	// A bad pair is refused and the good one kept.
	certstest.WriteFileAtomic(t, certFile, []byte("not a certificate"))
	if err := n.ReloadTLS(); err == nil {
		t.Fatal("a broken certificate file was accepted")
	}
	c, resp, err := ssetest.DialWith(hc, url, nil, nil)
	if err != nil || c == nil {
		t.Fatalf("new client after a refused reload: %v %v", err, resp)
	}
	c.Close()
}

func TestUpstreamHTTPSWithItsOwnCA(t *testing.T) {
	ca := certstest.NewCA(t, "back-end CA")
	certFile, keyFile := ca.Issue(t, certstest.Options{DNSNames: []string{"cs.internal"}})
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	clientCA := certstest.NewCA(t, "client CA")
	be := backend.New(backend.Config{}, ssetest.Logger(t))
	t.Cleanup(be.Close)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCA.Pool(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: be, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	uri := "https://" + ln.Addr().String() + streamPath
	clientCert, clientKey := clientCA.Issue(t, certstest.Options{Client: true})

	tests := []struct {
		name   string
		tls    *UpstreamTLS
		status int
	}{
		{"CA, name and client certificate", &UpstreamTLS{CA: ca.CertFile(), ServerName: "cs.internal", Cert: clientCert, Key: clientKey}, http.StatusOK},
		{"system roots", &UpstreamTLS{ServerName: "cs.internal", Cert: clientCert, Key: clientKey}, http.StatusBadGateway},
		{"wrong name", &UpstreamTLS{CA: ca.CertFile(), ServerName: "other.internal", Cert: clientCert, Key: clientKey}, http.StatusBadGateway},
		{"no client certificate", &UpstreamTLS{CA: ca.CertFile(), ServerName: "cs.internal"}, http.StatusBadGateway},
		{"insecure switch", &UpstreamTLS{InsecureSkipVerify: true, Cert: clientCert, Key: clientKey}, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			one := 0
			cfg := testConfig(BackendSpec{Name: "cs", URI: uri, TLS: tc.tls})
			cfg.Relay.ConnectRetries = one
			n := startNode(t, cfg)
			st, code, _ := status(t, "http://"+n.Addr()+streamPath, nil)
			if st != tc.status {
				t.Fatalf("status %d (%s), want %d", st, code, tc.status)
			}
		})
	}
}

func TestMutualTLSBetweenNodes(t *testing.T) {
	// Nodes prove membership with certificates from the mesh's CA, and
	// speak HTTPS to each other; a node with a certificate from another CA
	// is refused, and the mesh-wide report is gathered over mutual TLS.
	meshCA := certstest.NewCA(t, "mesh CA")
	otherCA := certstest.NewCA(t, "another CA")
	be, addr := startBackend(t, backend.Config{})
	cl := BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath}
	nodeTLS := func(ca *certstest.CA, id string) func(*Config) {
		return func(c *Config) {
			cert, key := ca.Issue(t, certstest.Options{IPs: loopbackIP, URIs: []string{"ssemesh://node/" + id}, Client: true, Server: true})
			c.TLS = &TLSFiles{Cert: cert, Key: key}
			c.Admin.TLS = &AdminTLS{TLSFiles: TLSFiles{Cert: cert, Key: key}}
			c.Mesh.TLS = &MeshTLS{CA: meshCA.CertFile(), Cert: cert, Key: key}
			c.Mesh.Secret = "" // certificates alone prove membership
		}
	}
	root := meshNode(t, meshSpec{id: "root", dc: "dc1", tier: 0, static: []BackendSpec{cl}}, nodeTLS(meshCA, "root"))
	leaf := meshNode(t, meshSpec{id: "leaf", dc: "dc1", tier: 1, seeds: []string{root.GossipAddr()}, static: []BackendSpec{cl}}, nodeTLS(meshCA, "leaf"))
	waitMembers(t, 2, root, leaf)
	hc := tlsClient(meshCA, true)

	c, resp, err := ssetest.DialWith(hc, "https://"+leaf.Addr()+streamPath, nil, nil)
	if err != nil || c == nil {
		t.Fatalf("client of the leaf: %v %v", err, resp)
	}
	t.Cleanup(c.Close)
	be.Publish(streamPath, 3)
	if got := c.IDs(t, 3, 5*time.Second); !slices.Equal(got, seq(1, 3)) {
		t.Fatalf("client of the leaf got %v", got)
	}
	if upstreamOf(leaf, streamPath) != "root" || root.Relay().ChildClients() != 1 {
		t.Fatalf("leaf's parent %q, root's child subscribers %d: want the leaf, proven by its certificate", upstreamOf(leaf, streamPath), root.Relay().ChildClients())
	}

	// The mesh-wide report: the leaf asks the root's admin listener over
	// mutual TLS.
	nresp, err := hc.Get("https://" + leaf.AdminAddr() + "/v1/nodes")
	if err != nil {
		t.Fatal(err)
	}
	var nodes nodesView
	err = json.NewDecoder(nresp.Body).Decode(&nodes)
	nresp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, nr := range nodes.Nodes {
		if !nr.Reachable {
			t.Fatalf("node %s not reached over mutual TLS: %s", nr.ID, nr.Error)
		}
	}

	// A node whose certificate comes from another CA is no member: its
	// handshakes with the root fail, and its clients get no stream.
	rogue := meshNode(t, meshSpec{id: "rogue", dc: "dc1", tier: 1, seeds: []string{root.GossipAddr()}, static: []BackendSpec{cl}}, func(c *Config) {
		nodeTLS(otherCA, "rogue")(c)
		c.Mesh.TLS.CA = meshCA.CertFile() // it trusts the mesh's servers
		one := 0
		c.Relay.ConnectRetries = one
		c.Relay.ReadyTimeout = time.Duration(2 * time.Second)
	})
	waitMembers(t, 3, root, leaf, rogue)
	rc, rresp, err := ssetest.DialWith(tlsClient(otherCA, true), "https://"+rogue.Addr()+streamPath, nil, nil)
	if err == nil && rc != nil {
		rc.Close()
		t.Fatal("the rogue node got the stream from the root")
	}
	if rresp != nil {
		rresp.Body.Close()
	}
	if root.Relay().ChildClients() != 1 || be.Stats(streamPath).Total != 1 {
		t.Fatalf("root has %d child subscribers and the back end %d connections after the rogue's attempt", root.Relay().ChildClients(), be.Stats(streamPath).Total)
	}
}
