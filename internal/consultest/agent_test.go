package consultest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// awaitService runs blocking health queries from q.WaitIndex until the
// service has a passing instance, and returns the entries and the index they
// came with. It is safe to call from any goroutine.
func awaitService(c *api.Client, service string, q api.QueryOptions) ([]*api.ServiceEntry, uint64, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		q.WaitTime = 5 * time.Second
		entries, meta, err := c.Health().Service(service, "", true, &q)
		if err != nil {
			return nil, 0, fmt.Errorf("health query for %q (dc %q): %w", service, q.Datacenter, err)
		}
		if len(entries) > 0 {
			return entries, meta.LastIndex, nil
		}
		q.WaitIndex = meta.LastIndex
	}
	return nil, 0, fmt.Errorf("service %q (dc %q) never became passing", service, q.Datacenter)
}

func TestAgentRegisterAndBlockingQuery(t *testing.T) {
	t.Parallel()
	a := Start(t, Options{})
	if a.Datacenter != "dc1" {
		t.Fatalf("default datacenter = %q, want dc1", a.Datacenter)
	}
	host, _, err := net.SplitHostPort(a.HTTPAddr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("HTTPAddr %q: want a 127.0.0.1 address (%v)", a.HTTPAddr, err)
	}
	c := a.Client(t)

	_, meta, err := c.Health().Service("backend", "", true, nil)
	if err != nil {
		t.Fatalf("initial health query: %v", err)
	}
	startIndex := meta.LastIndex

	type result struct {
		entries []*api.ServiceEntry
		index   uint64
		err     error
	}
	got := make(chan result, 1)
	go func() {
		// Started before the registration, so it can only see the service
		// by blocking until the catalog changes.
		entries, idx, err := awaitService(c, "backend", api.QueryOptions{WaitIndex: startIndex})
		got <- result{entries, idx, err}
	}()

	err = c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID:      "backend-1",
		Name:    "backend",
		Address: "127.0.0.1",
		Port:    8080,
		Tags:    []string{"ssemesh"},
		Meta:    map[string]string{"mount": "/webservice/escenic/changelog/sse"},
	})
	if err != nil {
		t.Fatalf("registering service: %v", err)
	}

	var r result
	select {
	case r = <-got:
	case <-time.After(40 * time.Second):
		t.Fatal("blocking query did not return")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.index <= startIndex {
		t.Errorf("index %d not after start index %d", r.index, startIndex)
	}
	if len(r.entries) != 1 {
		t.Fatalf("got %d entries, want 1", len(r.entries))
	}
	s := r.entries[0].Service
	if s.ID != "backend-1" || s.Port != 8080 || s.Meta["mount"] != "/webservice/escenic/changelog/sse" || len(s.Tags) != 1 || s.Tags[0] != "ssemesh" {
		t.Errorf("service read back = %+v", s)
	}
	if n := r.entries[0].Node.Node; n != a.NodeName {
		t.Errorf("service node = %q, want %q", n, a.NodeName)
	}
}

func TestAgentsJoinedOverWAN(t *testing.T) {
	t.Parallel()
	dc1 := Start(t, Options{Datacenter: "dc1", NodeName: "wan-a"})
	dc2 := Start(t, Options{Datacenter: "dc2", NodeName: "wan-b", JoinWAN: []string{dc1.SerfWANAddr}})
	WaitWAN(t, dc1, "dc1", "dc2")
	WaitWAN(t, dc2, "dc1", "dc2")

	err := dc2.Client(t).Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "feed-dc2", Name: "feed", Address: "127.0.0.1", Port: 9090,
	})
	if err != nil {
		t.Fatalf("registering in dc2: %v", err)
	}

	entries, _, err := awaitService(dc1.Client(t), "feed", api.QueryOptions{Datacenter: "dc2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Service.ID != "feed-dc2" || entries[0].Node.Datacenter != "dc2" || entries[0].Node.Node != "wan-b" {
		t.Fatalf("dc1 asked for dc2's feed, got %+v", entries)
	}

	// The local data centre must not see dc2's service.
	local, _, err := dc1.Client(t).Health().Service("feed", "", true, nil)
	if err != nil {
		t.Fatalf("local health query: %v", err)
	}
	if len(local) != 0 {
		t.Fatalf("dc1 lists %d local instances of dc2's service", len(local))
	}
}

func TestAgentRestartKeepsAddresses(t *testing.T) {
	t.Parallel()
	a := Start(t, Options{NodeName: "restarting"})
	httpAddr, wanAddr := a.HTTPAddr, a.SerfWANAddr
	c := a.Client(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "k", Value: []byte("v")}, nil); err != nil {
		t.Fatalf("kv put: %v", err)
	}

	a.Stop()
	if _, err := http.Get("http://" + httpAddr + "/v1/status/leader"); err == nil {
		t.Fatal("agent still answers after Stop")
	}
	a.Stop() // stopping twice is harmless

	a.Restart(t)
	if a.HTTPAddr != httpAddr || a.SerfWANAddr != wanAddr {
		t.Fatalf("addresses moved on restart: http %s -> %s, wan %s -> %s", httpAddr, a.HTTPAddr, wanAddr, a.SerfWANAddr)
	}
	leader, err := c.Status().Leader()
	if err != nil || leader == "" {
		t.Fatalf("leader after restart = %q, %v", leader, err)
	}
	// A -dev agent keeps state in memory: a value written before the
	// restart proves the old process is gone when it is missing.
	kv, _, err := c.KV().Get("k", nil)
	if err != nil {
		t.Fatalf("kv get: %v", err)
	}
	if kv != nil {
		t.Fatalf("key survived restart: %+v", kv)
	}
	if _, err := c.KV().Put(&api.KVPair{Key: "k", Value: []byte("v2")}, nil); err != nil {
		t.Fatalf("kv put after restart: %v", err)
	}

	// Restart on a running agent replaces it too.
	a.Restart(t)
	if kv, _, err := c.KV().Get("k", nil); err != nil || kv != nil {
		t.Fatalf("after second restart: kv %+v, err %v", kv, err)
	}
}

func TestStartDetectsTakenPort(t *testing.T) {
	t.Parallel()
	bin := Require(t)
	p, err := pickPorts()
	if err != nil {
		t.Fatal(err)
	}
	occupied, err := net.Listen("tcp", hostPort(p.http))
	if err != nil {
		t.Fatal(err)
	}
	defer occupied.Close()

	a := &Agent{
		Datacenter: "dc1", NodeName: "clash",
		LogPath: t.TempDir() + "/consul.log",
		bin:     bin,
		opts:    Options{Datacenter: "dc1", NodeName: "clash"},
	}
	t.Cleanup(a.Stop)
	a.setPorts(p)
	err = a.start(20 * time.Second)
	if !errors.Is(err, errBind) {
		t.Fatalf("start on a taken HTTP port: %v; want errBind\n%s", err, a.logTail())
	}
	a.mu.Lock()
	running := a.proc != nil
	a.mu.Unlock()
	if running {
		t.Fatal("failed start left a process behind")
	}
}

func TestPollStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := poll(ctx, time.Minute, func(context.Context) (bool, error) {
		calls++
		if calls == 3 {
			cancel()
		}
		return false, nil
	})
	if !errors.Is(err, context.Canceled) || calls != 3 {
		t.Fatalf("poll = %v after %d calls; want context.Canceled after 3", err, calls)
	}
}
