package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

func TestUnknownPathAndMethod(t *testing.T) {
	_, quiet, _ := oneBackend(t, backend.Config{}, nil)
	resp, err := http.Get("http://" + quiet.Addr() + "/elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(raw), streamPath) || strings.Contains(string(raw), "mounts") {
		t.Fatalf("unknown path: status %d, body %s; want 404 naming no mount (expose_mounts is off)", resp.StatusCode, raw)
	}

	_, n, url := oneBackend(t, backend.Config{}, func(c *Config) { c.ExposeMounts = true })
	base := "http://" + n.Addr()

	resp, err = http.Get(base + "/elsewhere?x=1")
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error  string `json:"error"`
		Mounts []struct {
			Name, Mount string
		} `json:"mounts"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path: status %d, %v", resp.StatusCode, err)
	}
	if len(body.Mounts) != 1 || body.Mounts[0].Mount != streamPath || body.Mounts[0].Name != "changelog" {
		t.Fatalf("404 body should list the mounts: %+v", body)
	}

	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(m, url, strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
			t.Errorf("%s: status %d, Allow %q; want 405 with Allow", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

func TestPrefixMountStreams(t *testing.T) {
	be, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "live", URI: "http://" + addr + "/live-center/feed/", Mount: "/feeds", Prefix: true, QueryParams: []string{"lang"}})
	n := startNode(t, cfg)
	base := "http://" + n.Addr()
	a := ssetest.Dial(t, base+"/feeds/event-1?lang=en", nil)
	b := ssetest.Dial(t, base+"/feeds/event-2", nil)
	// A parameter off the allow-list is dropped: the same stream as b.
	c := ssetest.Dial(t, base+"/feeds/event-2?cachebust=7", nil)
	be.Publish("/live-center/feed/event-1?lang=en", 2)
	be.Publish("/live-center/feed/event-2", 1)
	if got := a.IDs(t, 2, 5*time.Second); got[1] != "2" {
		t.Fatalf("feed 1 got %v", got)
	}
	if got := b.IDs(t, 1, 5*time.Second); got[0] != "1" {
		t.Fatalf("feed 2 got %v", got)
	}
	if got := c.IDs(t, 1, 5*time.Second); got[0] != "1" {
		t.Fatalf("feed 2 with a dropped parameter got %v", got)
	}
	if n.Relay().Streams() != 2 || len(be.StreamKeys()) != 2 {
		t.Fatalf("%d streams on the node, %d on the back end: want one per path and allowed query", n.Relay().Streams(), len(be.StreamKeys()))
	}
	// "/feeds" must not capture "/feedsX".
	resp, err := http.Get(base + "/feedsX")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/feedsX: status %d, want 404", resp.StatusCode)
	}
}

func TestCORS(t *testing.T) {
	_, _, url := oneBackend(t, backend.Config{}, func(c *Config) {
		c.CORS.AllowedOrigins = []string{"https://news.example"}
	})
	req, _ := http.NewRequest(http.MethodOptions, url, nil)
	req.Header.Set("Origin", "https://news.example")
	req.Header.Set("Access-Control-Request-Headers", "last-event-id")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://news.example" || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Last-Event-ID") {
		t.Fatalf("preflight headers %v", resp.Header)
	}
	c := ssetest.Dial(t, url, http.Header{"Origin": {"https://news.example"}})
	if c.Resp.Header.Get("Access-Control-Allow-Origin") != "https://news.example" {
		t.Fatalf("stream response lacks CORS: %v", c.Resp.Header)
	}
	other := ssetest.Dial(t, url, http.Header{"Origin": {"https://evil.example"}})
	if other.Resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("an origin not allowed got CORS headers")
	}
}

func TestGracefulShutdownDrains(t *testing.T) {
	be, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
	cfg.Drain = Duration(300 * time.Millisecond)
	n, err := New(cfg, ssetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + n.Addr() + streamPath
	cs := []*ssetest.Client{ssetest.Dial(t, url, nil), ssetest.Dial(t, url, nil), ssetest.Dial(t, url, nil)}
	be.Publish(streamPath, 1)
	for _, c := range cs {
		c.Next(t, 5*time.Second)
	}
	ready := func() int {
		resp, err := http.Get("http://" + n.AdminAddr() + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := ready(); got != http.StatusOK {
		t.Fatalf("readyz %d before shutdown", got)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- n.Shutdown(ctx)
	}()
	for i, c := range cs {
		rest := c.ExpectEnd(t, 5*time.Second)
		if len(rest) == 0 || rest[len(rest)-1].Retry < 0 {
			t.Fatalf("client %d closed without a retry hint (got %+v)", i, rest)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if be.Stats(streamPath).Open != 0 {
		ssetest.Eventually(t, "upstream closed", 5*time.Second, func() bool { return be.Stats(streamPath).Open == 0 })
	}
}

func TestReadyzDuringDrain(t *testing.T) {
	_, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
	cfg.Drain = Duration(2 * time.Second)
	n, err := New(cfg, ssetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	ssetest.Dial(t, "http://"+n.Addr()+streamPath, nil)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- n.Shutdown(ctx)
	}()
	ssetest.Eventually(t, "readyz 503 while draining", 2*time.Second, func() bool {
		resp, err := http.Get("http://" + n.AdminAddr() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
