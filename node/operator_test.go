package node

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/topology"
)

// adminGet sends one request to the admin listener with the given headers
// and returns the status and body.
func adminGet(t *testing.T, url string, header map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func TestAdminTokenGuardsEveryOperatorRoute(t *testing.T) {
	const token = "s3cret-token"
	on := true
	_, n, _ := oneBackend(t, backend.Config{}, func(c *Config) { c.Admin.Token, c.Admin.Pprof = token, &on })
	base := "http://" + n.AdminAddr()

	protected := []string{"/v1/topology", "/v1/topology?format=text", "/v1/nodes", "/v1/streams", "/metrics", "/", "/debug/pprof/", "/debug/pprof/goroutine?debug=1"}
	auth := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"no token", nil, http.StatusUnauthorized},
		{"wrong token", map[string]string{"Authorization": "Bearer nope"}, http.StatusUnauthorized},
		{"token without scheme", map[string]string{"Authorization": token}, http.StatusUnauthorized},
		{"right token", map[string]string{"Authorization": "Bearer " + token}, http.StatusOK},
	}
	for _, path := range protected {
		for _, a := range auth {
			t.Run(path+"/"+a.name, func(t *testing.T) {
				status, h, _ := adminGet(t, base+path, a.header)
				if status != a.want {
					t.Fatalf("status %d, want %d", status, a.want)
				}
				if status == http.StatusUnauthorized && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("401 without a Bearer challenge: %q", h.Get("WWW-Authenticate"))
				}
			})
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, _, _ := adminGet(t, base+path, map[string]string{"Origin": "https://evil.example", "Host": "evil.example"}); status != http.StatusOK {
			t.Errorf("%s: status %d without token, want 200 (health stays open)", path, status)
		}
	}
	// The page comes back even on 401: it is what asks for the token.
	status, h, body := adminGet(t, base+"/", nil)
	if status != http.StatusUnauthorized || !strings.Contains(body, `id="auth"`) || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("page without token: status %d, type %q; want 401 carrying the page", status, h.Get("Content-Type"))
	}
}

func TestAdminRefusesOtherOriginsAndHosts(t *testing.T) {
	const token = "s3cret-token"
	on := true
	_, n, _ := oneBackend(t, backend.Config{}, func(c *Config) { c.Admin.Token, c.Admin.Pprof = token, &on })
	addr := n.AdminAddr()
	port := portOf(addr)
	good := "Bearer " + token
	tests := []struct {
		name   string
		path   string
		header map[string]string
		want   int
	}{
		{"same origin", "/v1/topology", map[string]string{"Origin": "http://" + addr}, http.StatusOK},
		{"no origin", "/v1/topology", nil, http.StatusOK},
		{"other origin", "/v1/topology", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"other origin, no token", "/v1/nodes", map[string]string{"Origin": "https://evil.example", "Authorization": ""}, http.StatusForbidden},
		{"other port on the same host", "/metrics", map[string]string{"Origin": "http://127.0.0.1:1"}, http.StatusForbidden},
		{"opaque origin", "/v1/streams", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"other origin on the page", "/", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"other origin on pprof", "/debug/pprof/", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"rebound DNS name", "/v1/topology", map[string]string{"Host": "evil.example:" + port, "Authorization": ""}, http.StatusForbidden},
		{"rebound name, same origin", "/v1/topology", map[string]string{"Host": "evil.example:" + port, "Origin": "http://evil.example:" + port, "Authorization": ""}, http.StatusForbidden},
		{"rebound name, wrong token", "/", map[string]string{"Host": "evil.example:" + port, "Authorization": "Bearer guess"}, http.StatusForbidden},
		{"peer by advertised name, with token", "/v1/topology", map[string]string{"Host": "node-7.mesh.internal:" + port}, http.StatusOK},
		{"localhost", "/v1/topology", map[string]string{"Host": "localhost:" + port, "Origin": "http://localhost:" + port}, http.StatusOK},
		{"IPv6 literal", "/v1/topology", map[string]string{"Host": "[::1]:" + port}, http.StatusOK},
		{"cross-site subresource", "/metrics", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, http.StatusForbidden},
		{"cross-site navigation", "/", map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, http.StatusOK},
		{"same-origin fetch", "/v1/topology", map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Authorization": good}
			for k, v := range tc.header {
				h[k] = v
			}
			if h["Authorization"] == "" {
				delete(h, "Authorization")
			}
			status, _, body := adminGet(t, "http://"+addr+tc.path, h)
			if status != tc.want {
				t.Fatalf("status %d, want %d: %s", status, tc.want, body)
			}
			if status == http.StatusForbidden && !strings.Contains(body, `"error"`) {
				t.Errorf("403 without a JSON reason: %s", body)
			}
		})
	}
}

// twoStreams starts a node with a prefix mount and one client on each of
// two streams.
func twoStreams(t *testing.T) (*Node, []string) {
	t.Helper()
	be, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "live", URI: "http://" + addr + "/live-center/feed/", Mount: "/feeds", Prefix: true, QueryParams: []string{"lang"}})
	n := startNode(t, cfg)
	keys := []string{"/feeds/event-1?lang=en", "/feeds/event-2"}
	for _, k := range keys {
		ssetest.Dial(t, "http://"+n.Addr()+k, nil)
	}
	be.Publish("/live-center/feed/event-1?lang=en", 2)
	be.Publish("/live-center/feed/event-2", 1)
	ssetest.Eventually(t, "both streams open", 5*time.Second, func() bool { return n.Relay().Streams() == 2 && n.Relay().Clients() == 2 })
	ssetest.Eventually(t, "events relayed", 5*time.Second, func() bool { return n.Relay().Metrics().Snapshot().EventsIn == 3 })
	return n, keys
}

func TestTopologyEndpointFormats(t *testing.T) {
	n, keys := twoStreams(t)
	base := "http://" + n.AdminAddr() + "/v1/topology"

	decode := func(t *testing.T, body string) topology.Report {
		t.Helper()
		var r topology.Report
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("not a report: %v\n%s", err, body)
		}
		return r
	}

	t.Run("json", func(t *testing.T) {
		status, h, body := adminGet(t, base, nil)
		if status != http.StatusOK || h.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, type %q", status, h.Get("Content-Type"))
		}
		r := decode(t, body)
		if len(r.Nodes) != 1 || r.Nodes[0].ID != n.ID() || r.Nodes[0].Clients != 2 || r.Nodes[0].Streams != 2 {
			t.Fatalf("nodes: %+v", r.Nodes)
		}
		got := map[string]topology.StreamReport{}
		for _, s := range r.Streams {
			got[s.Stream] = s
		}
		for _, k := range keys {
			s, ok := got[k]
			if !ok {
				t.Fatalf("stream %q missing from %+v", k, r.Streams)
			}
			if s.Backend != "live" || len(s.Edges) != 1 || s.Edges[0].Child != n.ID() {
				t.Errorf("stream %q: %+v", k, s)
			}
		}
		if got[keys[0]].Edges[0].LastEventID != "2" {
			t.Errorf("last event id of %q: %q, want 2", keys[0], got[keys[0]].Edges[0].LastEventID)
		}
	})
	t.Run("stream narrows", func(t *testing.T) {
		_, _, body := adminGet(t, base+"?stream="+url.QueryEscape(keys[1]), nil)
		r := decode(t, body)
		if len(r.Streams) != 1 || r.Streams[0].Stream != keys[1] {
			t.Fatalf("streams: %+v", r.Streams)
		}
	})
	t.Run("text", func(t *testing.T) {
		status, h, body := adminGet(t, base+"?format=text", nil)
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			t.Fatalf("status %d, type %q", status, h.Get("Content-Type"))
		}
		for _, want := range []string{"ssemesh topology at", `stream "` + keys[0] + `"`, `stream "` + keys[1] + `"`, "back end live", n.ID()} {
			if !strings.Contains(body, want) {
				t.Errorf("text lacks %q:\n%s", want, body)
			}
		}
		_, _, narrowed := adminGet(t, base+"?format=text&stream="+url.QueryEscape(keys[0]), nil)
		if !strings.Contains(narrowed, keys[0]) || strings.Contains(narrowed, keys[1]) {
			t.Errorf("narrowed text:\n%s", narrowed)
		}
	})
	t.Run("dot", func(t *testing.T) {
		status, h, body := adminGet(t, base+"?format=dot", nil)
		if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/vnd.graphviz") {
			t.Fatalf("status %d, type %q", status, h.Get("Content-Type"))
		}
		if !strings.HasPrefix(body, "digraph") || strings.Count(body, "->") != 2 || !strings.Contains(body, `"node:`+n.ID()+`"`) {
			t.Errorf("dot:\n%s", body)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			query string
			want  int
		}{
			{"?format=xml", http.StatusBadRequest},
			{"?format=", http.StatusOK},
			{"?stream=/feeds/none", http.StatusNotFound},
		} {
			status, h, body := adminGet(t, base+tc.query, nil)
			if status != tc.want {
				t.Errorf("%s: status %d, want %d", tc.query, status, tc.want)
			}
			if tc.want >= 400 && (h.Get("Content-Type") != "application/json" || !strings.Contains(body, `"error"`)) {
				t.Errorf("%s: error is not JSON: %q %s", tc.query, h.Get("Content-Type"), body)
			}
		}
	})
}

func TestNodesEndpoint(t *testing.T) {
	n, _ := twoStreams(t)
	status, _, body := adminGet(t, "http://"+n.AdminAddr()+"/v1/nodes", nil)
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	var v nodesView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	if v.Self != n.ID() || len(v.Nodes) != 1 {
		t.Fatalf("got %+v", v)
	}
	self := v.Nodes[0]
	if self.ID != n.ID() || !self.Reachable || self.State != topology.StateAlive || self.Clients != 2 || self.AdminAddr != n.AdminAddr() {
		t.Fatalf("self: %+v", self)
	}
}

func TestBrowserGuardHosts(t *testing.T) {
	g := newBrowserGuard([]string{"Admin.Example.", "node-7"})
	tests := []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:9090", true},
		{"10.1.2.3", true},
		{"[::1]:9090", true},
		{"localhost:9090", true},
		{"LOCALHOST.", true},
		{"app.localhost:1", true},
		{"admin.example:9090", true},
		{"admin.example.", true},
		{"node-7:9090", true},
		{"node-8:9090", false},
		{"evil.example:9090", false},
		{"127.0.0.1.evil.example", false},
		{"localhost.evil.example", false},
		{":9090", false},
	}
	for _, tc := range tests {
		if got := g.hostAllowed(tc.host); got != tc.ok {
			t.Errorf("hostAllowed(%q) = %v, want %v", tc.host, got, tc.ok)
		}
	}
}

func TestAdminWithoutTokenStillChecksHost(t *testing.T) {
	_, n, _ := oneBackend(t, backend.Config{}, nil)
	addr := n.AdminAddr()
	port := portOf(addr)
	for _, tc := range []struct {
		host string
		want int
	}{
		{addr, http.StatusOK},
		{"localhost:" + port, http.StatusOK},
		{"evil.example:" + port, http.StatusForbidden},
	} {
		for _, path := range []string{"/v1/topology", "/metrics", "/"} {
			if status, _, _ := adminGet(t, "http://"+addr+path, map[string]string{"Host": tc.host}); status != tc.want {
				t.Errorf("%s with Host %s: status %d, want %d", path, tc.host, status, tc.want)
			}
		}
	}
	if status, _, _ := adminGet(t, "http://"+addr+"/readyz", map[string]string{"Host": "evil.example"}); status != http.StatusOK {
		t.Errorf("/readyz with a foreign Host: status %d, want 200 (health checks name hosts freely)", status)
	}
}
