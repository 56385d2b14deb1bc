package node

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// reloadSource stands in for the command's configuration file: the test
// changes the configuration a reload reads.
type reloadSource struct {
	mu  sync.Mutex
	cfg Config
	err error
}

func (s *reloadSource) set(mutate func(*Config)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mutate(&s.cfg)
}

func (s *reloadSource) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *reloadSource) read() (Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cfg
	c.Backends = slices.Clone(c.Backends)
	return c, s.err
}

// reloadableNode starts a node whose reloads read src.
func reloadableNode(t *testing.T, cfg Config) (*Node, *reloadSource) {
	t.Helper()
	n := startNode(t, cfg)
	src := &reloadSource{cfg: cfg}
	n.EnableReload(src.read, nil)
	return n, src
}

// authRecorder is a back end that records the Authorization of each
// connection and serves the synthetic change log.
type authRecorder struct {
	be   *backend.Backend
	addr string
	mu   sync.Mutex
	auth []string
}

func newAuthRecorder(t *testing.T) *authRecorder {
	a := &authRecorder{be: backend.New(backend.Config{}, ssetest.Logger(t))}
	t.Cleanup(a.be.Close)
	a.addr = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.auth = append(a.auth, r.Header.Get("Authorization"))
		a.mu.Unlock()
		a.be.ServeHTTP(w, r)
	}))
	return a
}

func TestReloadUnderTraffic(t *testing.T) {
	// Back ends added, removed and given new credentials while events
	// flow: clients of the untouched back end and of the one with new
	// credentials miss nothing and get nothing twice; clients of the
	// removed one are told to retry, and its path is gone.
	keep, creds, gone, added := newAuthRecorder(t), newAuthRecorder(t), newAuthRecorder(t), newAuthRecorder(t)
	spec := func(name string, a *authRecorder, user string) BackendSpec {
		return BackendSpec{Name: name, URI: "http://" + a.addr + streamPath, Mount: "/" + name, Credentials: &Credentials{Username: user, Password: "pw"}}
	}
	cfg := testConfig(spec("keep", keep, "u1"), spec("creds", creds, "u1"), spec("gone", gone, "u1"))
	cfg.Relay.DrainRetry = time.Duration(100 * time.Millisecond)
	n, src := reloadableNode(t, cfg)
	base := "http://" + n.Addr()

	keepers := []*ssetest.Client{ssetest.Dial(t, base+"/keep", nil), ssetest.Dial(t, base+"/keep", nil)}
	creders := []*ssetest.Client{ssetest.Dial(t, base+"/creds", nil), ssetest.Dial(t, base+"/creds", nil)}
	goner := ssetest.Dial(t, base+"/gone", nil)
	ssetest.Eventually(t, "clients attached", 5*time.Second, func() bool { return n.Relay().Clients() == 5 })
	pk := startPublisher(t, keep.be, streamPath, 5*time.Millisecond, 10000)
	pc := startPublisher(t, creds.be, streamPath, 5*time.Millisecond, 10000)
	ssetest.Eventually(t, "events flowing", 5*time.Second, func() bool { return keep.be.Stats(streamPath).LastID > 20 && creds.be.Stats(streamPath).LastID > 20 })

	src.set(func(c *Config) {
		c.Backends = []BackendSpec{spec("keep", keep, "u1"), spec("creds", creds, "u2"), spec("added", added, "u1")}
	})
	res := n.Reload()
	if res.Result != "ok" || !slices.Contains(res.Changed, "backends") || len(res.Kept) != 0 {
		t.Fatalf("reload: %+v", res)
	}
	ssetest.Eventually(t, "the new credentials in use", 5*time.Second, func() bool {
		creds.mu.Lock()
		defer creds.mu.Unlock()
		return len(creds.auth) == 2
	})
	lastKeep, lastCreds := pk.Stop(), pc.Stop()
	expectAll(t, keepers, 1, lastKeep)
	expectAll(t, creders, 1, lastCreds)

	creds.mu.Lock()
	auths := slices.Clone(creds.auth)
	creds.mu.Unlock()
	if len(auths) != 2 || auths[0] == auths[1] {
		t.Fatalf("back end with new credentials saw Authorization %q, want the old then the new", auths)
	}
	if st := creds.be.Stats(streamPath); st.LastEventIDs[1] == "" {
		t.Fatalf("the switch to new credentials did not resume from the last event (Last-Event-IDs %q)", st.LastEventIDs)
	}
	if keep.be.Stats(streamPath).Total != 1 {
		t.Fatalf("the untouched back end saw %d connections, want 1", keep.be.Stats(streamPath).Total)
	}

	// The removed back end's client is told when to come back, and its
	// path is gone.
	retry := false
	for _, ev := range goner.ExpectEnd(t, 5*time.Second) {
		if ev.Retry >= 0 {
			retry = true
		}
	}
	if !retry {
		t.Fatal("the removed back end's client got no retry hint")
	}
	if st, code, _ := status(t, base+"/gone", nil); st != http.StatusNotFound || code != codeNotFound {
		t.Fatalf("the removed mount answers %d %s", st, code)
	}
	c := ssetest.Dial(t, base+"/added", nil)
	added.be.Publish(streamPath, 1)
	c.IDs(t, 1, 5*time.Second)
}

func TestBadReloadChangesNothing(t *testing.T) {
	be, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
	cfg.Limits.MaxClients = 50
	n, src := reloadableNode(t, cfg)
	url := "http://" + n.Addr() + streamPath
	c := ssetest.Dial(t, url, nil)

	tests := []struct {
		name   string
		mutate func(*Config)
		err    error
	}{
		{"invalid value", func(c *Config) { c.Limits.MaxClients = 0; c.Backends = nil }, nil},
		{"bad back end", func(c *Config) { c.Backends = []BackendSpec{{Name: "bad name", URI: "ftp://x"}} }, nil},
		{"unreadable file", nil, errors.New("config: yaml: line 3: mapping values are not allowed in this context")},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src.set(func(c *Config) {
				*c = cfg
				if tc.mutate != nil {
					tc.mutate(c)
				}
			})
			src.setErr(tc.err)
			res := n.Reload()
			if res.Result != "refused" || res.Error == "" {
				t.Fatalf("reload: %+v, want refused", res)
			}
			if got := n.live().cfg.Limits.MaxClients; got != 50 {
				t.Fatalf("max_clients %d after a refused reload", got)
			}
			if got := n.reloadCounts.refused.Load(); got != uint64(i+1) {
				t.Fatalf("refused reloads counted %d", got)
			}
		})
	}
	src.setErr(nil)
	be.Publish(streamPath, 1)
	c.IDs(t, 1, 5*time.Second)
	ssetest.Dial(t, url, nil)
}

func TestReloadKeepsWhatNeedsARestart(t *testing.T) {
	_, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
	n, src := reloadableNode(t, cfg)
	url := "http://" + n.Addr() + streamPath
	src.set(func(c *Config) {
		c.Listen = "127.0.0.1:1"
		c.Relay.RingEvents = 7
		c.Limits.MaxClients = 1
		c.Admin.Token = "new-token"
	})
	res := n.Reload()
	if res.Result != "ok" || !slices.Equal(res.Kept, []string{"listen", "relay"}) || !slices.Contains(res.Changed, "limits") || !slices.Contains(res.Changed, "admin.token") {
		t.Fatalf("reload: %+v", res)
	}
	ssetest.Dial(t, url, nil)
	if st, code, _ := status(t, url, nil); st != http.StatusServiceUnavailable || code != codeMaxClients {
		t.Fatalf("second client under the reloaded limit of 1: %d %s", st, code)
	}
	resp, err := http.Get("http://" + n.AdminAddr() + "/v1/streams")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin API without the reloaded token: %d, want 401", resp.StatusCode)
	}
}

func TestReloadChecksWhatGoesInForce(t *testing.T) {
	// The admin listener stays where it is until a restart: a new file
	// that drops the token because it moves the listener to loopback
	// would leave the old, open listener without one.
	_, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
	cfg.Admin.Listen = "0.0.0.0:0"
	cfg.Admin.Token = "t0ken"
	n, src := reloadableNode(t, cfg)
	src.set(func(c *Config) {
		c.Admin.Listen = "127.0.0.1:0"
		c.Admin.Token = ""
	})
	if res := n.Reload(); res.Result != "refused" || !strings.Contains(res.Error, "admin.token") {
		t.Fatalf("reload: %+v, want refused naming admin.token", res)
	}
	if n.live().cfg.Admin.Token != "t0ken" {
		t.Fatal("the token was dropped")
	}
}

// TestReloadAnnouncesNewCapacity: limits.max_clients changed by a reload
// reaches the peers' views, which choose parents by free capacity.
func TestReloadAnnouncesNewCapacity(t *testing.T) {
	root := meshNode(t, meshSpec{id: "root", dc: "dc1", tier: 0}, func(c *Config) { c.Limits.MaxClients = 1000 })
	leaf := meshNode(t, meshSpec{id: "leaf", dc: "dc1", tier: 1, seeds: []string{root.mesh.LocalAddr()}}, nil)
	waitMembers(t, 2, root, leaf)
	capacityOf := func(id string) int {
		for _, m := range leaf.MeshView().Members {
			if m.ID == id {
				return m.Capacity
			}
		}
		return -1
	}
	if c := capacityOf("root"); c != 1000 {
		t.Fatalf("leaf sees root's capacity %d, want 1000", c)
	}
	src := &reloadSource{cfg: root.cfg}
	root.EnableReload(src.read, nil)
	src.set(func(c *Config) { c.Limits.MaxClients = 250 })
	if res := root.Reload(); res.Result != "ok" || !slices.Contains(res.Changed, "limits") {
		t.Fatalf("reload: %+v", res)
	}
	ssetest.Eventually(t, "the new capacity in the peer's view", 10*time.Second, func() bool { return capacityOf("root") == 250 })
}
