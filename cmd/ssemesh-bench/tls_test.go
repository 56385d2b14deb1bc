package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
)

// tlsBackend is the bench back end behind a TLS listener of the test, with
// what the listener saw.
type tlsBackend struct {
	b      *backend.Backend
	srv    *httptest.Server
	caFile string // the server's certificate, as a CA bundle to trust

	mu     sync.Mutex
	used   map[net.Conn]bool // connections that carried a request
	protos map[int]int       // requests by HTTP major version
}

// startTLSBackend serves the back end over TLS, offering HTTP/2 when h2 is
// set, with at most maxStreams concurrent streams per connection (0: Go's
// default).
func startTLSBackend(t *testing.T, cfg backend.Config, h2 bool, maxStreams int) *tlsBackend {
	t.Helper()
	tb := &tlsBackend{b: backend.New(cfg, quietLog()), used: map[net.Conn]bool{}, protos: map[int]int{}}
	tb.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tb.mu.Lock()
		tb.protos[r.ProtoMajor]++
		tb.mu.Unlock()
		tb.b.ServeHTTP(w, r)
	}))
	tb.srv.EnableHTTP2 = h2
	// Refused handshakes are what some tests are about, not news.
	tb.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if maxStreams > 0 {
		tb.srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: maxStreams}
	}
	tb.srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateActive {
			tb.mu.Lock()
			tb.used[c] = true
			tb.mu.Unlock()
		}
	}
	tb.srv.StartTLS()
	tb.caFile = writePEM(t, "server-ca.pem", tb.srv.Certificate().Raw)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { tb.b.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		tb.b.Close()
		tb.srv.Close()
	})
	return tb
}

// seen returns the connections that carried requests and the requests by
// HTTP major version.
func (tb *tlsBackend) seen() (conns int, protos map[int]int) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	protos = map[int]int{}
	for k, v := range tb.protos {
		protos[k] = v
	}
	return len(tb.used), protos
}

// writePEM writes a DER certificate as PEM into the test's directory.
func writePEM(t *testing.T, name string, der []byte) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// otherCA writes a CA certificate that signed nothing the test servers use.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the node's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, "other-ca.pem", der)
}

// cutMidWindow cuts every connection of stream once all clients are on it
// and events more have been published, and sends how many it cut (-1: the
// clients never all connected).
func cutMidWindow(b *backend.Backend, stream string, clients int, events int64) <-chan int {
	done := make(chan int, 1)
	go func() {
		var fromID int64
		if !poll(func() bool { st := b.Stats(stream); fromID = st.LastID; return st.Open == clients }) ||
			!poll(func() bool { return b.Stats(stream).LastID >= fromID+events }) {
			done <- -1
			return
		}
		done <- b.Cut(stream)
	}()
	return done
}

// TestLoadTLS runs a load over https with each protocol against a back end
// that offers both, cutting every stream in the middle of the window:
// clients must resume and lose nothing, over the protocol asked for, and h2
// clients must share no more connections than --h2-streams implies.
func TestLoadTLS(t *testing.T) {
	t.Setenv(asMainEnv, "1")
	tests := []struct {
		name      string
		proto     string
		clients   int
		procs     int
		h2Streams int
		wantMajor int
		wantConns int // connections that carried requests
	}{
		// Each client has a connection, and a second one after the cut.
		{name: "http1", proto: protoHTTP1, clients: 12, procs: 1, wantMajor: 1, wantConns: 24},
		// Blocks of 8, 8, 8 and 6 clients over two worker processes; a
		// cut resets the streams, not the connections.
		{name: "h2", proto: protoH2, clients: 30, procs: 2, h2Streams: 8, wantMajor: 2, wantConns: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := startTLSBackend(t, backend.Config{Rate: 50, PayloadSize: 200, Format: backend.FormatBench}, true, 0)
			cut := cutMidWindow(tb.b, "/tls", tc.clients, 50)
			args := []string{
				"--url", tb.srv.URL + "/tls", "--ca", tb.caFile, "--proto", tc.proto,
				"--clients", strconv.Itoa(tc.clients), "--procs", strconv.Itoa(tc.procs),
				"--ramp", "300ms", "--settle", "500ms", "--duration", "2s", "--drain", "500ms",
				"--node-pid", strconv.Itoa(os.Getpid()),
			}
			if tc.h2Streams > 0 {
				args = append(args, "--h2-streams", strconv.Itoa(tc.h2Streams))
			}
			rep, _ := runLoadJSON(t, args...)
			if n := <-cut; n != tc.clients {
				t.Fatalf("cut %d streams, want %d", n, tc.clients)
			}

			if rep.Connected != tc.clients || rep.Failed != 0 || rep.LateConnects != 0 {
				t.Fatalf("connected %d failed %d late %d (%v)", rep.Connected, rep.Failed, rep.LateConnects, rep.FailReasons)
			}
			if rep.EventsPerClient < 50 || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicated != 0 || rep.Unparsed != 0 {
				t.Fatalf("events per client %d, expected %d delivered %d lost %d dup %d unparsed %d",
					rep.EventsPerClient, rep.Expected, rep.Delivered, rep.Lost, rep.Duplicated, rep.Unparsed)
			}
			if rep.Reconnects < tc.clients || rep.Latency.Count != uint64(rep.Delivered) {
				t.Fatalf("reconnects %d, latency samples %d", rep.Reconnects, rep.Latency.Count)
			}
			conns, protos := tb.seen()
			if protos[tc.wantMajor] < 2*tc.clients || len(protos) != 1 {
				t.Fatalf("requests by HTTP version %v, want only HTTP/%d", protos, tc.wantMajor)
			}
			if conns != tc.wantConns || rep.Connections != int64(conns) {
				t.Fatalf("%d connections carried requests, load counted %d; want %d", conns, rep.Connections, tc.wantConns)
			}
			if !rep.TLS || rep.Proto != tc.proto || rep.H2Streams != tc.h2Streams {
				t.Fatalf("report says tls %v proto %q h2 streams %d", rep.TLS, rep.Proto, rep.H2Streams)
			}
			n := rep.Node
			if n == nil || n.Connects != tc.clients || n.ConnectSeconds <= 0 || n.ConnectSeconds > 5 || n.ConnectCPUSeconds < 0 {
				t.Fatalf("node report %+v (%s)", n, rep.NodeError)
			}
		})
	}
}

// TestLoadTLSInsecure trusts nothing and verifies nothing: the run works
// and says so.
func TestLoadTLSInsecure(t *testing.T) {
	tb := startTLSBackend(t, backend.Config{Rate: 50, Format: backend.FormatBench}, true, 0)
	rep, stderr := runLoadJSON(t, "--url", tb.srv.URL+"/i", "--insecure", "--proto", "h2", "--clients", "5",
		"--ramp", "100ms", "--settle", "300ms", "--duration", "1s", "--drain", "300ms")
	if rep.Connected != 5 || rep.Lost != 0 || rep.Delivered == 0 {
		t.Fatalf("connected %d delivered %d lost %d (%v)", rep.Connected, rep.Delivered, rep.Lost, rep.FailReasons)
	}
	if !strings.Contains(stderr, "warning: --insecure") {
		t.Fatalf("no warning on stderr %q", stderr)
	}
}

// TestLoadTLSRefused: a certificate the load cannot verify, or a node
// without HTTP/2 under --proto h2, fail the command before the run, with
// the reason.
func TestLoadTLSRefused(t *testing.T) {
	withH2 := startTLSBackend(t, backend.Config{Format: backend.FormatBench}, true, 0)
	h1Only := startTLSBackend(t, backend.Config{Format: backend.FormatBench}, false, 0)
	wrongCA := otherCA(t)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"wrong CA", []string{"--url", withH2.srv.URL + "/x", "--ca", wrongCA},
			[]string{"certificate signed by unknown authority", "--ca"}},
		{"wrong CA, h2", []string{"--url", withH2.srv.URL + "/x", "--ca", wrongCA, "--proto", "h2"},
			[]string{"certificate signed by unknown authority", "--ca"}},
		{"system roots", []string{"--url", withH2.srv.URL + "/x"},
			[]string{"certificate signed by unknown authority"}},
		{"no HTTP/2", []string{"--url", h1Only.srv.URL + "/x", "--ca", h1Only.caFile, "--proto", "h2"},
			[]string{"did not choose HTTP/2", "--proto http1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"load", "--clients", "3", "--duration", "1s"}, tc.args...)
			code := run(context.Background(), args, &out, &errOut)
			if code != 1 || out.Len() != 0 {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 1 and no report", code, out.String(), errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut.String(), w) {
					t.Fatalf("stderr %q lacks %q", errOut.String(), w)
				}
			}
		})
	}
	if conns, protos := withH2.seen(); conns != 0 {
		t.Fatalf("refused runs sent requests: %v", protos)
	}
}

// TestH2Session checks the h2 client itself, below the checks that load
// makes before a run: a response over HTTP/1.1 is refused, and a request
// that finds its connection at the server's stream limit waits for a
// stream rather than opening a second connection, then fails as such.
func TestH2Session(t *testing.T) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	newClient := func(tb *tlsBackend, conn *h2Conn, timeout time.Duration) *h2Stream {
		return &h2Stream{conn: conn, url: tb.srv.URL + "/s", timeout: timeout}
	}
	newConn := func(t *testing.T, tb *tlsBackend, dials *atomic.Int64) *h2Conn {
		conf, err := clientTLSConfig(tb.caFile, false, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		c := newH2Conn(dialer, strings.TrimPrefix(tb.srv.URL, "https://"), conf, 5*time.Second, dials)
		t.Cleanup(c.close)
		return c
	}

	t.Run("HTTP/1.1 answer", func(t *testing.T) {
		tb := startTLSBackend(t, backend.Config{Format: backend.FormatBench}, false, 0)
		var dials atomic.Int64
		err := newClient(tb, newConn(t, tb, &dials), 5*time.Second).
			session(context.Background(), func() { t.Error("connected over HTTP/1.1") }, func([]byte) {})
		var notH2 notH2Error
		if !errors.As(err, &notH2) || classify(err) != "response over HTTP/1.1, not HTTP/2" {
			t.Fatalf("err %v, classified %q", err, classify(err))
		}
	})

	t.Run("stream limit", func(t *testing.T) {
		tb := startTLSBackend(t, backend.Config{Format: backend.FormatBench}, true, 2)
		var dials atomic.Int64
		conn := newConn(t, tb, &dials)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel()
		var connected atomic.Int64
		for range 2 {
			wg.Go(func() {
				_ = newClient(tb, conn, 5*time.Second).session(ctx, func() { connected.Add(1) }, func([]byte) {})
			})
		}
		if !poll(func() bool { return connected.Load() == 2 }) {
			t.Fatal("the first two streams did not connect")
		}
		err := newClient(tb, conn, 300*time.Millisecond).session(ctx, func() { t.Error("third stream connected") }, func([]byte) {})
		if !errors.Is(err, errNoH2Stream) || classify(err) != errNoH2Stream.Error() {
			t.Fatalf("err %v, classified %q", err, classify(err))
		}
		if n, _ := tb.seen(); n != 1 || dials.Load() != 1 {
			t.Fatalf("%d connections carried requests, %d dialled; want 1", n, dials.Load())
		}
	})
}
