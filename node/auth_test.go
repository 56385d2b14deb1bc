package node

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/clientauth"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

// authServer is a delegate auth server: the session cookie decides, and
// every request it gets is counted. While hold is open, answers wait.
type authServer struct {
	addr     string
	requests atomic.Int32
	mu       sync.Mutex
	hold     chan struct{}
}

// holdAnswers makes answers wait until the returned channel is closed.
func (a *authServer) holdAnswers() chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hold = make(chan struct{})
	return a.hold
}

func newAuthServer(t *testing.T) *authServer {
	a := &authServer{hold: make(chan struct{})}
	close(a.hold)
	a.addr = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		a.mu.Lock()
		hold := a.hold
		a.mu.Unlock()
		<-hold
		c, _ := r.Cookie("session")
		switch {
		case c == nil || c.Value == "bad":
			w.Header().Set("WWW-Authenticate", `Cookie realm="news"`)
			w.WriteHeader(http.StatusUnauthorized)
		case c.Value == "forbidden":
			w.WriteHeader(http.StatusForbidden)
		case strings.HasPrefix(c.Value, "good") && r.Header.Get("X-Original-URI") != "":
			w.WriteHeader(http.StatusOK)
		default:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	return a
}

func cookie(v string) http.Header { return http.Header{"Cookie": {"session=" + v}} }

func TestDelegateAuthorization(t *testing.T) {
	as := newAuthServer(t)
	timeout := time.Second
	be, n, url := oneBackend(t, backend.Config{}, func(c *Config) {
		c.Auth = &clientauth.Config{Delegate: &clientauth.DelegateConfig{URL: "http://" + as.addr + "/check", Timeout: timeout}}
	})

	good := ssetest.Dial(t, url, cookie("good"))
	be.Publish(streamPath, 2)
	if got := good.IDs(t, 2, 5*time.Second); got[1] != "2" {
		t.Fatalf("admitted client got %v", got)
	}
	tests := []struct {
		name      string
		h         http.Header
		status    int
		code      string
		challenge bool
	}{
		{"no cookie", nil, 401, "auth_denied", true},
		{"refused cookie", cookie("bad"), 401, "auth_denied", true},
		{"forbidden", cookie("forbidden"), 403, "auth_denied", false},
		{"auth server error", cookie("broken"), 503, "auth_unavailable", false},
		{"auth server too slow", cookie("slow"), 503, "auth_timeout", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.code == "auth_timeout" {
				release := as.holdAnswers()
				defer close(release)
			}
			_, resp, err := ssetest.DialStatus(url, tc.h)
			if err != nil || resp == nil {
				t.Fatalf("%v %v", err, resp)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get(relay.ErrorHeader) != tc.code {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, resp.Header.Get(relay.ErrorHeader), tc.status, tc.code)
			}
			if got := resp.Header.Get("WWW-Authenticate"); (got != "") != tc.challenge {
				t.Fatalf("WWW-Authenticate %q", got)
			}
		})
	}

	// A crowd with one cookie costs one check (the verdict above is also
	// cached for 30 s, so hold the server to see the merge).
	before := as.requests.Load()
	hold := as.holdAnswers()
	const crowd = 200
	var wg sync.WaitGroup
	var admitted atomic.Int32
	for i := 0; i < crowd; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, resp, err := ssetest.DialStatus(url, cookie("good2"))
			if err == nil && c != nil {
				admitted.Add(1)
				c.Close()
			} else if resp != nil {
				resp.Body.Close()
			}
		}()
	}
	ssetest.Eventually(t, "a check reached the auth server", 5*time.Second, func() bool { return as.requests.Load() > before })
	close(hold)
	wg.Wait()
	if got := as.requests.Load() - before; got != 1 {
		t.Fatalf("%d clients with one cookie made %d auth requests, want 1", crowd, got)
	}
	if admitted.Load() != crowd {
		t.Fatalf("%d of %d clients with a good cookie admitted", admitted.Load(), crowd)
	}

	fams := scrape(t, n, "")
	if got := metricValue(fams, "ssemesh_auth_refused_total", map[string]string{"backend": "default", "reason": "denied"}); got < 3 {
		t.Errorf("auth refusals (denied) = %v, want at least 3", got)
	}
	if got := metricValue(fams, "ssemesh_requests_refused_total", map[string]string{"reason": "auth_denied"}); got < 3 {
		t.Errorf("requests refused (auth_denied) = %v", got)
	}
}

const jwtSecret = "jwt-secret-of-at-least-32-bytes-0123456789"

func token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(jwtSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTAuthorization(t *testing.T) {
	be := newRecorder(t, eventStream)
	jwtCfg := &clientauth.Config{JWT: &clientauth.JWTConfig{HS256Secret: jwtSecret, Audience: "sse", PathsClaim: "ssemesh_paths"}}
	n := startNode(t, func() Config {
		c := testConfig(BackendSpec{Name: "feeds", URI: "http://" + be.addr + "/f/", Mount: "/feeds/", Prefix: true})
		c.Auth = jwtCfg
		c.Relay.DrainRetry = time.Duration(100 * time.Millisecond)
		return c
	}())
	base := "http://" + n.Addr()
	now := time.Now()
	claims := func(paths []string, exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"aud": "sse", "exp": exp.Unix(), "ssemesh_paths": paths}
	}
	ok := token(t, claims([]string{"/feeds/*"}, now.Add(time.Hour)))

	c := ssetest.Dial(t, base+"/feeds/a?access_token="+ok, nil)
	if ev := c.Next(t, 5*time.Second); ev.Data != "hello" {
		t.Fatalf("admitted client got %+v", ev)
	}
	for _, r := range be.requests() {
		if strings.Contains(r.URL.RawQuery, "access_token") || strings.Contains(r.URL.RawQuery, ok) {
			t.Fatalf("the token reached the back end: %s", r.URL.RawQuery)
		}
	}
	tests := []struct {
		name   string
		url    string
		h      http.Header
		status int
		code   string
	}{
		{"bearer header", base + "/feeds/b", http.Header{"Authorization": {"Bearer " + ok}}, 200, ""},
		{"expired", base + "/feeds/b?access_token=" + token(t, claims([]string{"/feeds/*"}, now.Add(-time.Hour))), nil, 401, "auth_expired"},
		{"wrong audience", base + "/feeds/b?access_token=" + token(t, jwt.MapClaims{"aud": "other", "exp": now.Add(time.Hour).Unix(), "ssemesh_paths": []string{"*"}}), nil, 401, "auth_wrong_audience"},
		{"another path", base + "/feeds/b?access_token=" + token(t, claims([]string{"/feeds/a"}, now.Add(time.Hour))), nil, 403, "auth_wrong_path"},
		{"no token", base + "/feeds/b", nil, 401, "auth_missing_credentials"},
		{"forged token", base + "/feeds/b?access_token=" + ok[:len(ok)-4] + "AAAA", nil, 401, "auth_invalid_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, code, body := status(t, tc.url, tc.h)
			if st != tc.status || code != tc.code {
				t.Fatalf("%d %s (%s), want %d %s", st, code, body, tc.status, tc.code)
			}
			if strings.Contains(body, "eyJ") {
				t.Fatalf("the error body carries a token: %s", body)
			}
		})
	}

	// A token that runs out closes its stream at exp, with a retry hint.
	short := token(t, claims([]string{"*"}, time.Now().Add(1500*time.Millisecond)))
	sc := ssetest.Dial(t, base+"/feeds/c?access_token="+short, nil)
	opened := time.Now()
	var sawRetry bool
	for _, ev := range sc.ExpectEnd(t, 10*time.Second) {
		if ev.Retry >= 0 {
			sawRetry = true
		}
	}
	if took := time.Since(opened); took > 7*time.Second || !sawRetry {
		t.Fatalf("stream of an expiring token closed after %s (retry hint %v)", took, sawRetry)
	}
	// The count follows the close the client saw.
	ssetest.Eventually(t, "the expiry counted", 5*time.Second, func() bool {
		return n.Relay().Metrics().Snapshot().Disconnects[relay.ReasonExpired] == 1
	})
}

func TestChildNodesAreNotAskedForCredentials(t *testing.T) {
	// Authorization happens once, at the leaf the client reached: the
	// root never checks the leaf's requests.
	be, addr := startBackend(t, backend.Config{})
	cl := BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath}
	withAuth := func(c *Config) {
		c.Auth = &clientauth.Config{JWT: &clientauth.JWTConfig{HS256Secret: jwtSecret, Audience: "sse"}}
	}
	root := meshNode(t, meshSpec{id: "root", dc: "dc1", tier: 0, static: []BackendSpec{cl}}, withAuth)
	leaf := meshNode(t, meshSpec{id: "leaf", dc: "dc1", tier: 1, seeds: []string{root.GossipAddr()}, static: []BackendSpec{cl}}, withAuth)
	waitMembers(t, 2, root, leaf)
	tok := token(t, jwt.MapClaims{"aud": "sse", "exp": time.Now().Add(time.Hour).Unix()})
	c := ssetest.Dial(t, "http://"+leaf.Addr()+streamPath, http.Header{"Authorization": {"Bearer " + tok}})
	be.Publish(streamPath, 1)
	c.IDs(t, 1, 5*time.Second)
	rootStats := root.live().auth.def.Stats()
	leafStats := leaf.live().auth.def.Stats()
	if rootStats.Allowed != 0 || len(nonZero(rootStats.Refused)) != 0 || leafStats.Allowed != 1 {
		t.Fatalf("root checked %d/%v, leaf %d: want the leaf alone to check", rootStats.Allowed, rootStats.Refused, leafStats.Allowed)
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

func TestReadyzShowsAnAuthServerDown(t *testing.T) {
	_, n, url := oneBackend(t, backend.Config{}, func(c *Config) {
		c.Auth = &clientauth.Config{Delegate: &clientauth.DelegateConfig{URL: "http://127.0.0.1:1/check", Timeout: time.Second}}
	})
	if st, code, _ := status(t, url, cookie("x")); st != http.StatusServiceUnavailable || code != "auth_unavailable" {
		t.Fatalf("client with the auth server down: %d %s, want 503 (fail closed)", st, code)
	}
	resp, err := http.Get("http://" + n.AdminAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var r struct {
		Status string
		Down   []map[string]string `json:"auth_unavailable"`
	}
	if err := json.Unmarshal(body, &r); err != nil || resp.StatusCode != http.StatusOK || len(r.Down) != 1 || r.Down[0]["backend"] != "default" {
		t.Fatalf("/readyz %d %s", resp.StatusCode, body)
	}
}
