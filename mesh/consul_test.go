package mesh

import (
	"context"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/ssemesh/ssemesh/internal/consultest"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// consulConfig is a Fast gossip node registered with agent a, with an
// admin listener that passes Consul's check.
func consulConfig(t *testing.T, id string, a *consultest.Agent) Config {
	cfg := testConfig(t, id)
	cfg.DC = a.Datacenter
	cfg.AdminAddr = readyzServer(t)
	cfg.Consul = ConsulConfig{
		Address:          a.HTTPAddr,
		CheckInterval:    time.Second,
		PollInterval:     300 * time.Millisecond,
		MinQueryInterval: 50 * time.Millisecond,
		WaitTime:         2 * time.Second,
		RetryMax:         500 * time.Millisecond,
	}
	return cfg
}

func registerBackend(t *testing.T, c *api.Client, reg *api.AgentServiceRegistration) {
	t.Helper()
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("registering %s: %v", reg.ID, err)
	}
}

func TestConsulBackends(t *testing.T) {
	a := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	c := a.Client(t)
	const changelogPath = "/webservice/escenic/changelog/sse"
	registerBackend(t, c, &api.AgentServiceRegistration{
		ID: "changelog-1", Name: "changelog", Tags: []string{"ssemesh"},
		Address: "127.0.0.1", Port: 9001, Meta: map[string]string{MetaPath: changelogPath},
	})
	registerBackend(t, c, &api.AgentServiceRegistration{
		ID: "changelog-2", Name: "changelog", Tags: []string{"ssemesh"},
		Address: "127.0.0.1", Port: 9002, Meta: map[string]string{MetaPath: changelogPath},
		Check: &api.AgentServiceCheck{CheckID: "changelog-2-ttl", TTL: "1h", Status: api.HealthCritical},
	})
	registerBackend(t, c, &api.AgentServiceRegistration{
		ID: "feed-1", Name: "feed", Tags: []string{"ssemesh", "other"},
		Address: "127.0.0.1", Port: 9003, Meta: map[string]string{
			MetaPath: "feed", MetaMount: "/live-center/feed/", MetaPrefix: "true", MetaScheme: "https",
		},
	})
	registerBackend(t, c, &api.AgentServiceRegistration{
		ID: "untagged-1", Name: "untagged", Address: "127.0.0.1", Port: 9004,
		Meta: map[string]string{MetaPath: "/x"},
	})

	m := startMesh(t, consulConfig(t, "n1", a))
	changelog1 := Instance{ID: "changelog-1", Address: "127.0.0.1:9001", Scheme: "http", Path: changelogPath}
	changelog2 := Instance{ID: "changelog-2", Address: "127.0.0.1:9002", Scheme: "http", Path: changelogPath}
	feed := Backend{Name: "feed", DC: "dc1", Mount: "/live-center/feed/", Prefix: true,
		Instances: []Instance{{ID: "feed-1", Address: "127.0.0.1:9003", Scheme: "https", Path: "/feed"}}}
	want := []Backend{
		{Name: "changelog", DC: "dc1", Mount: changelogPath, Instances: []Instance{changelog1}},
		feed,
	}
	backendsAre := func(want []Backend) func(*View) bool {
		return func(v *View) bool { return v.ConsulOK && reflect.DeepEqual(v.Backends, want) }
	}
	v := awaitView(t, m, 15*time.Second, "tagged back ends with passing instances", backendsAre(want))
	if v.ConsulError != "" {
		t.Errorf("ConsulError %q with ConsulOK", v.ConsulError)
	}
	if got := v.Backends[1].Instances[0].URL(); got != "https://127.0.0.1:9003/feed" {
		t.Errorf("feed URL %q", got)
	}

	// The failing instance joins once its check passes.
	if err := c.Agent().UpdateTTL("changelog-2-ttl", "", api.HealthPassing); err != nil {
		t.Fatalf("passing changelog-2: %v", err)
	}
	want[0].Instances = []Instance{changelog1, changelog2}
	awaitView(t, m, 10*time.Second, "changelog-2 passing", backendsAre(want))

	if err := c.Agent().ServiceDeregister("feed-1"); err != nil {
		t.Fatal(err)
	}
	awaitView(t, m, 10*time.Second, "feed gone", backendsAre(want[:1]))

	// With no instance passing, the mount stays known with no instances.
	for _, id := range []string{"changelog-1"} {
		if err := c.Agent().ServiceDeregister(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Agent().UpdateTTL("changelog-2-ttl", "", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	awaitView(t, m, 10*time.Second, "changelog without passing instances", backendsAre([]Backend{
		{Name: "changelog", DC: "dc1", Mount: changelogPath, Instances: []Instance{}},
	}))
	if err := c.Agent().ServiceDeregister("changelog-2"); err != nil {
		t.Fatal(err)
	}
	awaitView(t, m, 10*time.Second, "no back ends", backendsAre([]Backend{}))
}

func TestConsulRegistrationAndPeerDiscovery(t *testing.T) {
	a := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	c := a.Client(t)
	c1 := consulConfig(t, "n1", a)
	c1.Tier = 0
	m1 := startMesh(t, c1)
	c2 := consulConfig(t, "n2", a)
	c2.ClientAddr = "127.0.0.1:28080"
	m2 := startMesh(t, c2)

	// No seeds: they can only have found each other through Consul.
	v := awaitView(t, m1, 20*time.Second, "n2 via consul join", allAlive("n1", "n2"))
	if mem, _ := v.Member("n2"); mem.Source != SourceGossip || mem.ClientAddr != "127.0.0.1:28080" {
		t.Fatalf("n2 should be a gossip member: %+v", mem)
	}
	awaitView(t, m2, 10*time.Second, "n1 via consul join", allAlive("n1", "n2"))

	svc, _, err := c.Agent().Service("n1", nil)
	if err != nil {
		t.Fatalf("n1 registration: %v", err)
	}
	wantMeta := map[string]string{
		NodeMetaDC: "dc1", NodeMetaTier: "0", NodeMetaGossip: m1.LocalAddr(),
		NodeMetaAdmin: c1.AdminAddr, NodeMetaClient: c1.ClientAddr, NodeMetaCapacity: strconv.Itoa(c1.Capacity),
	}
	if svc.Service != "ssemesh" || svc.Address != "127.0.0.1" || svc.Port != 18080 || !reflect.DeepEqual(svc.Meta, wantMeta) {
		t.Fatalf("n1 registration: service %q %s:%d meta %v; want meta %v", svc.Service, svc.Address, svc.Port, svc.Meta, wantMeta)
	}
	ssetest.EventuallyErr(t, "n1's readyz check passing", 10*time.Second, consulPoll, func() (bool, error) {
		checks, _, err := c.Health().Checks("ssemesh", nil)
		if err != nil {
			return false, err
		}
		for _, ch := range checks {
			if ch.ServiceID == "n1" && ch.CheckID == checkID("n1") && ch.Status == api.HealthPassing {
				if ch.Definition.HTTP != "" && ch.Definition.HTTP != "http://"+c1.AdminAddr+"/readyz" {
					t.Fatalf("check target %q", ch.Definition.HTTP)
				}
				return true, nil
			}
		}
		return false, nil
	})

	if err := m2.SetDraining(context.Background()); err != nil {
		t.Fatalf("SetDraining: %v", err)
	}
	if _, _, err := c.Agent().Service("n2", nil); !isNotFound(err) {
		t.Fatalf("n2 still registered after draining (err %v)", err)
	}
	awaitView(t, m1, 10*time.Second, "n2 left", func(v *View) bool { return memberState(v, "n2") == StateLeft })
}

func TestConsulOtherDatacentres(t *testing.T) {
	a1 := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	a2 := consultest.Start(t, consultest.Options{Datacenter: "dc2", JoinWAN: []string{a1.SerfWANAddr}})
	consultest.WaitWAN(t, a1, "dc1", "dc2")
	consultest.WaitWAN(t, a2, "dc1", "dc2")

	c1 := consulConfig(t, "n1", a1)
	m1 := startMesh(t, c1)
	c2 := consulConfig(t, "n2", a2)
	c2.Tier, c2.ClientAddr, c2.Capacity = 0, "127.0.0.1:28080", 7
	m2 := startMesh(t, c2)

	v := awaitView(t, m1, 30*time.Second, "n2 from dc2", func(v *View) bool {
		_, ok := v.Member("n2")
		return ok
	})
	got, _ := v.Member("n2")
	want := Member{ID: "n2", DC: "dc2", Tier: 0, ClientAddr: "127.0.0.1:28080", AdminAddr: c2.AdminAddr,
		Capacity: 7, State: StateAlive, Source: SourceConsul}
	if got != want {
		t.Fatalf("n2 as seen from dc1:\n got %+v\nwant %+v", got, want)
	}
	v = awaitView(t, m2, 30*time.Second, "n1 from dc1", func(v *View) bool {
		mem, ok := v.Member("n1")
		return ok && mem.Source == SourceConsul && mem.DC == "dc1"
	})
	if len(v.Members) != 2 {
		t.Fatalf("dc2 view:\n%s", dumpView(v))
	}

	// A back end registered only in dc1 is known in dc2, with its data
	// centre, so dc2's nodes can mount it and route towards dc1.
	registerBackend(t, a1.Client(t), &api.AgentServiceRegistration{
		ID: "feed-1", Name: "feed", Tags: []string{"ssemesh"}, Address: "127.0.0.1", Port: 9002,
		Meta: map[string]string{MetaPath: "/feed/sse"},
	})
	v = awaitView(t, m2, 30*time.Second, "dc1's back end in dc2's view", func(v *View) bool {
		b, ok := v.Backend("feed")
		return ok && len(b.Instances) == 1
	})
	if b, _ := v.Backend("feed"); b.DC != "dc1" || b.Mount != "/feed/sse" {
		t.Fatalf("remote back end %+v, want DC dc1 and mount /feed/sse", b)
	}

	// A node leaving its data centre disappears from the others' views.
	if err := m2.SetDraining(context.Background()); err != nil {
		t.Fatal(err)
	}
	awaitView(t, m1, 15*time.Second, "n2 gone from dc1's view", func(v *View) bool {
		_, ok := v.Member("n2")
		return !ok
	})
}

func TestConsulOutageKeepsViewAndRecovers(t *testing.T) {
	a := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	registerBackend(t, a.Client(t), &api.AgentServiceRegistration{
		ID: "old-1", Name: "old", Tags: []string{"ssemesh"}, Address: "127.0.0.1", Port: 9001,
		Meta: map[string]string{MetaPath: "/old"},
	})
	cfg := consulConfig(t, "n1", a)
	logger := ssetest.BufferedLogger(t, logrus.DebugLevel)
	hook := logtest.NewLocal(logger)
	cfg.Logger = logger
	m := startMesh(t, cfg)
	hasBackend := func(name string) func(*View) bool {
		return func(v *View) bool { _, ok := v.Backend(name); return ok }
	}
	awaitView(t, m, 15*time.Second, "old back end", func(v *View) bool { return v.ConsulOK && hasBackend("old")(v) })
	ssetest.EventuallyErr(t, "self-registration", 10*time.Second, consulPoll, func() (bool, error) {
		_, _, err := a.Client(t).Agent().Service("n1", nil)
		return err == nil, err
	})

	a.Stop()
	v := awaitView(t, m, 15*time.Second, "consul outage noticed", func(v *View) bool { return !v.ConsulOK })
	if v.ConsulError == "" || !hasBackend("old")(v) {
		t.Fatalf("outage view should keep the back end and name the error:\n%s", dumpView(v))
	}
	// Let every watch fail and retry several times before counting logs.
	ssetest.EventuallyErr(t, "repeated failed queries", 15*time.Second, consulPoll, func() (bool, error) {
		return countLogs(hook, logrus.DebugLevel, "mesh: consul query failed") >= 5, nil
	})

	a.Restart(t)
	ssetest.EventuallyErr(t, "re-registration after restart", 20*time.Second, consulPoll, func() (bool, error) {
		_, _, err := a.Client(t).Agent().Service("n1", nil)
		return err == nil, err
	})
	registerBackend(t, a.Client(t), &api.AgentServiceRegistration{
		ID: "new-1", Name: "new", Tags: []string{"ssemesh"}, Address: "127.0.0.1", Port: 9002,
		Meta: map[string]string{MetaPath: "/new"},
	})
	v = awaitView(t, m, 20*time.Second, "new back end after restart", func(v *View) bool {
		return v.ConsulOK && hasBackend("new")(v)
	})
	// The restarted dev agent lost "old": the view follows Consul.
	if hasBackend("old")(v) {
		t.Errorf("old back end survived the agent losing it:\n%s", dumpView(v))
	}
	if n := countLogs(hook, logrus.WarnLevel, "mesh: consul unreachable"); n != 1 {
		t.Errorf("outage logged %d times at warn, want once", n)
	}
	if n := countLogs(hook, logrus.InfoLevel, "mesh: consul reachable again"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
}

func countLogs(h *logtest.Hook, level logrus.Level, prefix string) int {
	n := 0
	for _, e := range h.AllEntries() {
		if e.Level == level && strings.HasPrefix(e.Message, prefix) {
			n++
		}
	}
	return n
}

func TestConsulUnreachableFromStart(t *testing.T) {
	// Nothing listens on port 1 of the loopback: connections are refused.
	addr := readyzServer(t)
	cfg := testConfig(t, "n1")
	cfg.AdminAddr = addr
	cfg.Consul = ConsulConfig{Address: "127.0.0.1:1", MinQueryInterval: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start must not depend on Consul: %v", err)
	}
	v := awaitView(t, m, 10*time.Second, "consul error", func(v *View) bool { return v.ConsulError != "" })
	if v.ConsulOK || len(v.Members) != 1 {
		t.Fatalf("view:\n%s", dumpView(v))
	}
	start := time.Now()
	err = m.Shutdown()
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Shutdown took %s with Consul down", took)
	}
	if err == nil || !strings.Contains(err.Error(), "deregistering") {
		t.Errorf("Shutdown should report the failed deregistration, got %v", err)
	}
}

func TestConsulReplacesStaleRegistration(t *testing.T) {
	// A node restarted under the same ID finds its previous life's
	// registration in the agent, with other addresses. It must replace it,
	// or peers keep joining and dialling addresses nobody listens on.
	a := consultest.Start(t, consultest.Options{Datacenter: "dc1"})
	c := a.Client(t)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "n1", Name: "ssemesh", Address: "127.0.0.1", Port: 1,
		Meta: map[string]string{NodeMetaDC: "dc1", NodeMetaTier: "0", NodeMetaGossip: "127.0.0.1:2", NodeMetaClient: "127.0.0.1:1"},
	})
	if err != nil {
		t.Fatalf("stale registration: %v", err)
	}
	c1 := consulConfig(t, "n1", a)
	m1 := startMesh(t, c1)
	ssetest.EventuallyErr(t, "registration carries this process's addresses", 10*time.Second, consulPoll, func() (bool, error) {
		svc, _, err := c.Agent().Service("n1", nil)
		if err != nil {
			return false, err
		}
		return svc.Port == 18080 && svc.Meta[NodeMetaGossip] == m1.LocalAddr() && svc.Meta[NodeMetaClient] == c1.ClientAddr, nil
	})
}
