package node

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// dialFrom opens a TCP connection to addr from the local address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

func TestProxyProtocolFromTrustedProxiesOnly(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "access.log")
	be, n, _ := oneBackend(t, backend.Config{}, func(c *Config) {
		c.TrustedProxies = []string{"127.0.0.1/32"}
		c.ProxyProtocol = true
		c.AccessLog = AccessLogConfig{Enabled: true, Path: logPath}
	})
	get := "GET " + streamPath + " HTTP/1.1\r\nHost: x\r\n\r\n"

	t.Run("a trusted proxy names the client", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.1", n.Addr())
		if _, err := io.WriteString(c, "PROXY TCP4 198.51.100.7 10.0.0.1 50000 8080\r\n"+get); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream through the proxy: %v %v", resp, err)
		}
		ssetest.Eventually(t, "the subscriber", 5*time.Second, func() bool { return n.Relay().Clients() == 1 })
		be.Publish(streamPath, 1)
		line, err := readUntil(br, "id: 1")
		if err != nil {
			t.Fatalf("event through the proxy: %v (%q)", err, line)
		}
		c.Close()
		// A departed client is found by a write: each poll sends one.
		var entries []accessEntry
		ssetest.Eventually(t, "the access log line", 5*time.Second, func() bool {
			be.Publish(streamPath, 1)
			entries = readAccessLog(t, logPath)
			return len(entries) == 1
		})
		if e := entries[0]; e.Client != "198.51.100.7" || e.Peer != "" || e.Status != http.StatusOK {
			t.Fatalf("entry %+v: want the client the header named, with no proxy peer", e)
		}
	})

	t.Run("a trusted proxy without a header is cut", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.1", n.Addr())
		if _, err := io.WriteString(c, get); err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(c); len(b) != 0 {
			t.Fatalf("answered %q (%v); want the connection closed unanswered", b, err)
		}
	})

	t.Run("anyone else cannot claim an address", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.2", n.Addr())
		if _, err := io.WriteString(c, "PROXY TCP4 203.0.113.1 10.0.0.1 50000 8080\r\n"+get); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("a PROXY line from an untrusted address: %v %v; want 400", resp, err)
		}
	})

	fams := scrape(t, n, "")
	for result, want := range map[string]float64{"proxied": 1, "failed": 1, "untrusted": 1} {
		if got := metricValue(fams, "ssemesh_proxy_protocol_connections_total", map[string]string{"result": result}); got != want {
			t.Errorf("ssemesh_proxy_protocol_connections_total{result=%q} = %v, want %v", result, got, want)
		}
	}
}

func TestProxyProtocolNeedsTrustedProxies(t *testing.T) {
	cfg := testConfig(BackendSpec{Name: "a", URI: "http://127.0.0.1:1/x"})
	cfg.ProxyProtocol = true
	var ce *ConfigError
	if err := cfg.Validate(); err == nil || !errors.As(err, &ce) || ce.Key != "proxy_protocol" {
		t.Fatalf("got %v, want a proxy_protocol error", err)
	}
}

// readUntil reads lines until one contains want.
func readUntil(br *bufio.Reader, want string) (string, error) {
	for {
		line, err := br.ReadString('\n')
		if strings.Contains(line, want) || err != nil {
			return line, err
		}
	}
}
