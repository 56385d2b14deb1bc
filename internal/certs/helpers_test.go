package certs

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/ssemesh/ssemesh/internal/certs/certstest"
)

// ioTimeout bounds every network step of a test, so a bug shows as a
// failure naming the step instead of a hung test.
const ioTimeout = 5 * time.Second

func newLog() (logrus.FieldLogger, *logtest.Hook) {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return l, hook
}

// startServer serves TLS on a loopback port: each connection, once its
// handshake succeeds, is greeted with "peer=<PeerName>\n" and then echoed.
// The server and its connections end with the test.
func startServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // the listener was closed by the cleanup
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				serveConn(c.(*tls.Conn))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func serveConn(c *tls.Conn) {
	c.SetDeadline(time.Now().Add(ioTimeout))
	if err := c.Handshake(); err != nil {
		return // a refused client: the alert has been sent
	}
	c.SetDeadline(time.Time{})
	name, _ := PeerName(c.ConnectionState())
	if _, err := fmt.Fprintf(c, "peer=%s\n", name); err != nil {
		return
	}
	io.Copy(c, c)
}

// client is one connection to a startServer server.
type client struct {
	conn *tls.Conn
	r    *bufio.Reader
	peer string // the name the server found in our certificate
}

// dial connects to addr, hands sni to the handshake when cfg names no
// server (as tls.Dial and http.Transport do from the address), and reads
// the server's greeting. A refused handshake is an error: with TLS 1.3 a
// refused client certificate shows only when the greeting is read.
func dial(t *testing.T, addr, sni string, cfg *tls.Config) (*client, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName == "" && sni != "" {
		cfg = cfg.Clone()
		cfg.ServerName = sni
	}
	conn := tls.Client(raw, cfg)
	c := &client{conn: conn, r: bufio.NewReader(conn)}
	conn.SetDeadline(time.Now().Add(ioTimeout))
	line, err := c.r.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	c.peer = strings.TrimSuffix(strings.TrimPrefix(line, "peer="), "\n")
	t.Cleanup(func() { conn.Close() })
	return c, nil
}

// mustDial is dial for a connection that must succeed.
func mustDial(t *testing.T, addr, sni string, cfg *tls.Config) *client {
	t.Helper()
	c, err := dial(t, addr, sni, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return c
}

// ping sends a line and expects it back.
func (c *client) ping(msg string) error {
	c.conn.SetDeadline(time.Now().Add(ioTimeout))
	defer c.conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.conn, msg+"\n"); err != nil {
		return err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return fmt.Errorf("echo %q, want %q", line, msg+"\n")
	}
	return nil
}

// serial is the serial of the certificate the server presented.
func (c *client) serial() *big.Int {
	return c.conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// trustingClient is a client config that trusts ca for "localhost", set up
// without this package so a test of the server does not depend on
// ClientConfig.
func trustingClient(ca *certstest.CA) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// serverPair issues a server certificate for localhost and 127.0.0.1.
func serverPair(t *testing.T, ca *certstest.CA) (certFile, keyFile string) {
	return ca.Issue(t, certstest.Options{DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
}

// wantErr checks that err is an error whose text holds every part.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}
