package mesh

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/ssemesh/ssemesh/internal/retry"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// These tests run mesh's Consul logic against fakeConsul: no Consul binary,
// milliseconds each. The tests in consul_test.go run the same logic against
// a real agent.

// fakeConsulConfig is a Fast gossip node whose Consul loops run at test pace.
func fakeConsulConfig(t *testing.T, id string) Config {
	cfg := testConfig(t, id)
	cfg.Settle = 5 * time.Millisecond
	cfg.Consul = ConsulConfig{
		Address:          "fake",
		CheckInterval:    time.Second,
		PollInterval:     20 * time.Millisecond,
		MinQueryInterval: 2 * time.Millisecond,
		WaitTime:         5 * time.Second,
		RetryMax:         20 * time.Millisecond,
	}
	return cfg
}

// startFakeMesh starts a mesh on f and shuts it down when the test ends.
func startFakeMesh(t *testing.T, cfg Config, f *fakeConsul) *Mesh {
	t.Helper()
	m, err := newMesh(cfg, f)
	if err != nil {
		t.Fatalf("newMesh(%s): %v", cfg.NodeID, err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Logf("Shutdown(%s): %v", cfg.NodeID, err)
		}
	})
	return m
}

func backendsAre(want []Backend) func(*View) bool {
	return func(v *View) bool { return v.ConsulOK && reflect.DeepEqual(v.Backends, want) }
}

func TestFakeConsulBlockingQuery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul("dc1")
		f.add("", api.AgentService{ID: "a-1", Service: "a", Tags: []string{"ssemesh"}, Port: 1}, true)
		f.add("", api.AgentService{ID: "a-2", Service: "a", Tags: []string{"other"}, Port: 2}, true)
		f.add("", api.AgentService{ID: "a-3", Service: "a", Tags: []string{"ssemesh"}, Port: 3}, false)
		f.add("dc2", api.AgentService{ID: "b-1", Service: "b", Port: 4}, true)
		ctx := t.Context()

		// Index 0 answers at once; "" is the agent's data centre.
		services, idx, err := f.Services(ctx, consulQuery{})
		if err != nil || idx != f.index("dc1") || !reflect.DeepEqual(services, map[string][]string{"a": {"other", "ssemesh"}}) {
			t.Fatalf("Services = %v, %d, %v", services, idx, err)
		}
		// Tag and health filters.
		ids := func(es []*api.ServiceEntry) []string {
			var out []string
			for _, e := range es {
				out = append(out, e.Service.ID)
			}
			return out
		}
		if es, _, _ := f.Passing(ctx, "a", "ssemesh", consulQuery{}); !reflect.DeepEqual(ids(es), []string{"a-1"}) {
			t.Fatalf("passing a with tag ssemesh: %v", ids(es))
		}
		if es, _, _ := f.Passing(ctx, "a", "", consulQuery{}); len(es) != 2 {
			t.Fatalf("passing a with any tag: %v", ids(es))
		}
		if es, _, _ := f.Passing(ctx, "b", "", consulQuery{DC: "dc2"}); !reflect.DeepEqual(ids(es), []string{"b-1"}) || es[0].Node.Datacenter != "dc2" {
			t.Fatalf("passing b in dc2: %v", ids(es))
		}
		if es, _, _ := f.Passing(ctx, "b", "", consulQuery{}); len(es) != 0 {
			t.Fatalf("dc2's b answered for dc1: %v", ids(es))
		}

		// A blocking query waits for its own data centre's index to move.
		type answer struct {
			idx uint64
			err error
			at  time.Time
		}
		ask := func(q consulQuery) chan answer {
			ch := make(chan answer, 1)
			go func() {
				_, idx, err := f.Services(ctx, q)
				ch <- answer{idx, err, time.Now()}
			}()
			return ch
		}
		start := time.Now()
		ch := ask(consulQuery{Index: idx, Wait: 10 * time.Second})
		synctest.Wait()
		f.add("dc2", api.AgentService{ID: "b-2", Service: "b"}, true)
		synctest.Wait()
		select {
		case a := <-ch:
			t.Fatalf("woke on another data centre's change: %+v", a)
		default:
		}
		time.Sleep(time.Second)
		f.setPassing("", "a-3", true)
		if a := <-ch; a.err != nil || a.idx != idx+1 || a.at.Sub(start) != time.Second {
			t.Fatalf("after a change: %+v, want index %d after 1s", a, idx+1)
		}

		// Without a change it answers after Wait, with the same index.
		start = time.Now()
		if a := <-ask(consulQuery{Index: idx + 1, Wait: 10 * time.Second}); a.err != nil || a.idx != idx+1 || a.at.Sub(start) != 10*time.Second {
			t.Fatalf("no change: %+v, want index %d after 10s", a, idx+1)
		}

		// The context ends a blocked query; so does an agent going down.
		cctx, cancel := context.WithCancel(ctx)
		go func() { time.Sleep(time.Second); cancel() }()
		if _, _, err := f.Services(cctx, consulQuery{Index: idx + 1, Wait: time.Minute}); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled query: %v", err)
		}
		ch = ask(consulQuery{Index: idx + 1, Wait: time.Minute})
		synctest.Wait()
		f.setDown(errFakeDown)
		if a := <-ch; !errors.Is(a.err, errFakeDown) {
			t.Fatalf("query blocked when the agent went down: %+v", a)
		}
		if _, err := f.Datacenters(ctx); !errors.Is(err, errFakeDown) {
			t.Fatalf("Datacenters while down: %v", err)
		}
		f.setDown(nil)
		if dcs, err := f.Datacenters(ctx); err != nil || !reflect.DeepEqual(dcs, []string{"dc1", "dc2"}) {
			t.Fatalf("Datacenters = %v, %v", dcs, err)
		}

		// A restart forgets the agent's data centre and its index.
		if err := f.Register(ctx, &api.AgentServiceRegistration{ID: "n1", Name: "ssemesh", Port: 5}); err != nil {
			t.Fatal(err)
		}
		if svc, err := f.AgentService(ctx, "n1"); err != nil || svc == nil || svc.Port != 5 {
			t.Fatalf("AgentService after Register: %+v, %v", svc, err)
		}
		f.restart()
		if svc, err := f.AgentService(ctx, "n1"); svc != nil || err != nil {
			t.Fatalf("AgentService after restart: %+v, %v", svc, err)
		}
		if got := f.index("dc1"); got != 1 {
			t.Fatalf("index after restart %d, want 1", got)
		}
		if err := f.Deregister(ctx, "n1"); err != nil {
			t.Fatalf("deregistering a missing service: %v", err)
		}
	})
}

func TestConsulFakeBackendDiscovery(t *testing.T) {
	f := newFakeConsul("dc1")
	const changelogPath = "/webservice/escenic/changelog/sse"
	tagged := []string{"ssemesh"}
	f.add("", api.AgentService{ID: "changelog-1", Service: "changelog", Tags: tagged,
		Address: "127.0.0.1", Port: 9001, Meta: map[string]string{MetaPath: changelogPath}}, true)
	f.add("", api.AgentService{ID: "changelog-2", Service: "changelog", Tags: tagged,
		Address: "127.0.0.1", Port: 9002, Meta: map[string]string{MetaPath: changelogPath}}, false)
	// An instance of a back end without the tag is not one of its instances.
	f.add("", api.AgentService{ID: "changelog-x", Service: "changelog", Tags: []string{"other"},
		Address: "127.0.0.1", Port: 9009, Meta: map[string]string{MetaPath: changelogPath}}, true)
	// No service address: the instance runs on its Consul node's.
	f.add("", api.AgentService{ID: "feed-1", Service: "feed", Tags: []string{"ssemesh", "other"}, Port: 9003,
		Meta: map[string]string{MetaPath: "feed", MetaMount: "/live-center/feed/", MetaPrefix: "true", MetaScheme: "https"}}, true)
	f.add("", api.AgentService{ID: "untagged-1", Service: "untagged", Address: "127.0.0.1", Port: 9004,
		Meta: map[string]string{MetaPath: "/x"}}, true)
	// A back end whose only instance is unusable is left out.
	f.add("", api.AgentService{ID: "bad-1", Service: "bad", Tags: tagged, Address: "127.0.0.1", Port: 9005,
		Meta: map[string]string{MetaPath: "/x", MetaScheme: "ftp"}}, true)

	m := startFakeMesh(t, fakeConsulConfig(t, "n1"), f)
	changelog1 := Instance{ID: "changelog-1", Address: "127.0.0.1:9001", Scheme: "http", Path: changelogPath}
	changelog2 := Instance{ID: "changelog-2", Address: "127.0.0.1:9002", Scheme: "http", Path: changelogPath}
	feed := Backend{Name: "feed", DC: "dc1", Mount: "/live-center/feed/", Prefix: true,
		Instances: []Instance{{ID: "feed-1", Address: nodeAddr + ":9003", Scheme: "https", Path: "/feed"}}}
	want := []Backend{{Name: "changelog", DC: "dc1", Mount: changelogPath, Instances: []Instance{changelog1}}, feed}
	v := awaitView(t, m, 5*time.Second, "tagged back ends with passing instances", backendsAre(want))
	if !v.BackendsSynced || v.ConsulError != "" {
		t.Fatalf("synced %v, error %q", v.BackendsSynced, v.ConsulError)
	}

	f.setPassing("", "changelog-2", true)
	want[0].Instances = []Instance{changelog1, changelog2}
	awaitView(t, m, 5*time.Second, "changelog-2 passing", backendsAre(want))

	f.remove("", "feed-1")
	awaitView(t, m, 5*time.Second, "feed gone", backendsAre(want[:1]))

	// With no instance passing, the mount stays known with no instances.
	f.remove("", "changelog-1")
	f.setPassing("", "changelog-2", false)
	awaitView(t, m, 5*time.Second, "changelog without passing instances", backendsAre([]Backend{
		{Name: "changelog", DC: "dc1", Mount: changelogPath, Instances: []Instance{}},
	}))
	f.remove("", "changelog-2")
	f.remove("", "changelog-x")
	awaitView(t, m, 5*time.Second, "no back ends", backendsAre([]Backend{}))
	if n := m.ConsulErrors(); n != 0 {
		t.Fatalf("%d Consul errors without an outage", n)
	}
}

func TestConsulFakeRemoteDatacentres(t *testing.T) {
	f := newFakeConsul("dc1")
	f.add("dc2", api.AgentService{ID: "n2", Service: "ssemesh", Address: "127.0.0.3", Port: 28080, Meta: map[string]string{
		NodeMetaDC: "dc2", NodeMetaTier: "0", NodeMetaAdmin: "127.0.0.3:28081", NodeMetaClient: "127.0.0.3:28080",
		NodeMetaCapacity: "7", NodeMetaGossip: "127.0.0.3:7946",
	}}, true)
	// A registration without meta: data centre and client address from
	// where it is registered.
	f.add("dc2", api.AgentService{ID: "n3", Service: "ssemesh", Port: 8080}, true)
	f.add("dc2", api.AgentService{ID: "n4", Service: "ssemesh", Port: 8080}, false)
	f.add("dc2", api.AgentService{ID: "feed-2", Service: "feed", Tags: []string{"ssemesh"}, Address: "127.0.0.3", Port: 9002,
		Meta: map[string]string{MetaPath: "/feed/sse"}}, true)
	f.add("dc3", api.AgentService{ID: "feed-3", Service: "feed", Tags: []string{"ssemesh"}, Address: "127.0.0.4", Port: 9003,
		Meta: map[string]string{MetaPath: "/feed/sse"}}, true)
	// A back end of this node's own data centre wins over remote ones.
	f.add("dc2", api.AgentService{ID: "changelog-2", Service: "changelog", Tags: []string{"ssemesh"}, Address: "127.0.0.3", Port: 9001,
		Meta: map[string]string{MetaPath: "/remote"}}, true)
	f.add("dc1", api.AgentService{ID: "changelog-1", Service: "changelog", Tags: []string{"ssemesh"}, Address: "127.0.0.1", Port: 9001,
		Meta: map[string]string{MetaPath: "/local"}}, true)

	m := startFakeMesh(t, fakeConsulConfig(t, "n1"), f)
	n2 := Member{ID: "n2", DC: "dc2", Tier: 0, ClientAddr: "127.0.0.3:28080", AdminAddr: "127.0.0.3:28081",
		Capacity: 7, State: StateAlive, Source: SourceConsul}
	n3 := Member{ID: "n3", DC: "dc2", ClientAddr: nodeAddr + ":8080", State: StateAlive, Source: SourceConsul}
	membersAre := func(want ...Member) func(*View) bool {
		return func(v *View) bool {
			var remote []Member
			for _, mem := range v.Members {
				if mem.Source == SourceConsul {
					remote = append(remote, mem)
				}
			}
			return reflect.DeepEqual(remote, want)
		}
	}
	v := awaitView(t, m, 5*time.Second, "dc2's passing nodes", func(v *View) bool {
		return membersAre(n2, n3)(v) && len(v.Backends) == 2 && v.BackendsSynced
	})
	wantBackends := []Backend{
		{Name: "changelog", DC: "dc1", Mount: "/local", Instances: []Instance{{ID: "changelog-1", Address: "127.0.0.1:9001", Scheme: "http", Path: "/local"}}},
		{Name: "feed", DC: "dc2", Mount: "/feed/sse", Instances: []Instance{{ID: "feed-2", Address: "127.0.0.3:9002", Scheme: "http", Path: "/feed/sse"}}},
	}
	if !reflect.DeepEqual(v.Backends, wantBackends) {
		t.Fatalf("back ends:\n%s", dumpView(v))
	}

	// A data centre that cannot be read keeps its last known members.
	f.failDC("dc2", errFakeDown)
	v = awaitView(t, m, 5*time.Second, "dc2 unreadable", func(v *View) bool { return !v.ConsulOK })
	if !strings.Contains(v.ConsulError, `"dc2"`) || !membersAre(n2, n3)(v) {
		t.Fatalf("outage of dc2:\n%s", dumpView(v))
	}
	f.failDC("dc2", nil)
	awaitView(t, m, 5*time.Second, "dc2 readable again", func(v *View) bool { return v.ConsulOK })

	f.remove("dc2", "n2")
	f.setPassing("dc2", "n4", true)
	n4 := n3
	n4.ID = "n4"
	awaitView(t, m, 5*time.Second, "n2 gone, n4 passing", membersAre(n3, n4))
}

func TestConsulFakeRegistration(t *testing.T) {
	f := newFakeConsul("dc1")
	ctx := context.Background()
	// A previous life's registration, with other addresses, is replaced.
	if err := f.Register(ctx, &api.AgentServiceRegistration{ID: "n1", Name: "ssemesh", Address: "127.0.0.1", Port: 1,
		Meta: map[string]string{NodeMetaGossip: "127.0.0.1:2"}}); err != nil {
		t.Fatal(err)
	}
	cfg := fakeConsulConfig(t, "n1")
	cfg.Tier = 0
	m := startFakeMesh(t, cfg, f)
	wantMeta := map[string]string{
		NodeMetaDC: "dc1", NodeMetaTier: "0", NodeMetaGossip: m.LocalAddr(),
		NodeMetaAdmin: cfg.AdminAddr, NodeMetaClient: cfg.ClientAddr, NodeMetaCapacity: strconv.Itoa(cfg.Capacity),
	}
	registeredNow := func() (bool, error) {
		r := f.registration("n1")
		return r != nil && r.Port == 18080 && reflect.DeepEqual(r.Meta, wantMeta), nil
	}
	ssetest.EventuallyErr(t, "registration of this process", 5*time.Second, consulPoll, registeredNow)
	r := f.registration("n1")
	wantCheck := api.AgentServiceCheck{
		CheckID: checkID("n1"), Name: "ssemesh readyz", HTTP: "http://" + cfg.AdminAddr + "/readyz",
		Interval: "1s", Timeout: "1s", DeregisterCriticalServiceAfter: "1m0s",
	}
	if r.Name != "ssemesh" || r.Address != "127.0.0.1" || r.Check == nil || !reflect.DeepEqual(*r.Check, wantCheck) {
		t.Fatalf("registration %+v check %+v", r, r.Check)
	}

	// A registration that matches is left alone: the node only checks it.
	registers := len(f.callsOf("register"))
	checks := len(f.callsOf("agent service"))
	ssetest.EventuallyErr(t, "three more checks", 5*time.Second, consulPoll, func() (bool, error) {
		return len(f.callsOf("agent service")) >= checks+3, nil
	})
	if n := len(f.callsOf("register")); n != registers {
		t.Fatalf("registered %d more times while registered", n-registers)
	}

	// The agent lost it (a restart): the node registers again.
	f.restart()
	ssetest.EventuallyErr(t, "re-registration", 5*time.Second, consulPoll, registeredNow)

	// Draining deregisters, and nothing registers the node again.
	if err := m.SetDraining(ctx); err != nil {
		t.Fatalf("SetDraining: %v", err)
	}
	if f.registration("n1") != nil {
		t.Fatalf("still registered after draining")
	}
	registers = len(f.callsOf("register"))
	dcPolls := len(f.callsOf("datacenters"))
	ssetest.EventuallyErr(t, "three more polls after draining", 5*time.Second, consulPoll, func() (bool, error) {
		return len(f.callsOf("datacenters")) >= dcPolls+3, nil
	})
	if n := len(f.callsOf("register")); n != registers || f.registration("n1") != nil {
		t.Fatalf("registered again after draining (%d calls)", n-registers)
	}
}

func TestConsulFakePeerDiscovery(t *testing.T) {
	f := newFakeConsul("dc1")
	// A registration without a gossip address is not joined.
	f.add("", api.AgentService{ID: "old", Service: "ssemesh", Port: 1}, true)
	m1 := startFakeMesh(t, fakeConsulConfig(t, "n1"), f)
	c2 := fakeConsulConfig(t, "n2")
	c2.ClientAddr = "127.0.0.1:28080"
	m2 := startFakeMesh(t, c2, f)
	// No seeds: they can only have found each other through Consul.
	v := awaitView(t, m1, 10*time.Second, "n2 via consul", allAlive("n1", "n2"))
	if mem, _ := v.Member("n2"); mem.Source != SourceGossip || mem.ClientAddr != c2.ClientAddr {
		t.Fatalf("n2 should be a gossip member: %+v", mem)
	}
	awaitView(t, m2, 10*time.Second, "n1 via consul", allAlive("n1", "n2"))
	if _, ok := m1.View().Member("old"); ok {
		t.Fatalf("a node of this data centre came from Consul:\n%s", dumpView(m1.View()))
	}
}

// TestConsulFakeOutage runs the Consul loops without gossip on the clock of
// a synctest bubble: errors are counted, every loop backs off within the
// bounds of its backoff, the outage is logged once, and after it the view
// follows an agent that lost its state (its index went back to 1, its
// registrations are gone).
func TestConsulFakeOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeConsul("dc1")
		f.add("", api.AgentService{ID: "old-1", Service: "old", Tags: []string{"ssemesh"}, Address: "127.0.0.1", Port: 9001,
			Meta: map[string]string{MetaPath: "/old"}}, true)
		const minQuery, retryMax, poll = 100 * time.Millisecond, time.Second, 5 * time.Second
		cfg := testConfig(t, "n1")
		cfg.Settle = 10 * time.Millisecond
		cfg.Consul = ConsulConfig{Address: "fake", MinQueryInterval: minQuery, RetryMax: retryMax, PollInterval: poll, WaitTime: time.Minute}
		logger := ssetest.BufferedLogger(t, logrus.DebugLevel)
		hook := logtest.NewLocal(logger)
		cfg.Logger = logger
		m, err := newMesh(cfg, f)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := m.Shutdown(); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}()
		m.main.Go(m.publishLoop)
		m.main.Go(m.watchServices)
		m.main.Go(m.watchOtherDCs)
		m.part.Go(m.registerLoop)
		hasOld := func(v *View) bool { _, ok := v.Backend("old"); return ok }

		time.Sleep(time.Second)
		if v := m.View(); !v.ConsulOK || !hasOld(v) || !v.BackendsSynced || f.registration("n1") == nil {
			t.Fatalf("before the outage:\n%s", dumpView(v))
		}

		down := time.Now()
		f.setDown(errFakeDown)
		time.Sleep(10 * time.Second)
		v := m.View()
		if v.ConsulOK || !strings.Contains(v.ConsulError, errFakeDown.Error()) || !hasOld(v) {
			t.Fatalf("during the outage the view keeps the back end and names the error:\n%s", dumpView(v))
		}
		// The services watch was blocked when the agent went down: its
		// query failed then, and each retry failed at once.
		watch := append([]time.Time{down}, after(f.callsOf("services"), down)...)
		checkBackoff(t, "services watch", watch, retry.Backoff{Min: minQuery, Max: retryMax}, minQuery)
		// The data-centre poll and the registration check were asleep;
		// from their first failure on they back off.
		checkBackoff(t, "data centres", after(f.callsOf("datacenters"), down), retry.Backoff{Min: minQuery, Max: retryMax}, 0)
		checkBackoff(t, "registration", after(f.callsOf("agent service"), down), retry.Backoff{Min: minQuery, Max: retryMax}, 0)
		// Two queries were blocked when it went down: the services and the
		// back end watches.
		failed := 2 + len(after(f.callsOf("services"), down)) + len(after(f.callsOf("datacenters"), down)) +
			len(after(f.callsOf("agent service"), down)) + len(after(f.callsOf("passing old"), down))
		if got := m.ConsulErrors(); got != uint64(failed) {
			t.Errorf("ConsulErrors = %d, want one per failed call (%d)", got, failed)
		}

		// The agent comes back having lost everything; the node's
		// registration returns and the lost back end leaves the view.
		f.restart()
		f.setDown(nil)
		time.Sleep(2 * time.Minute)
		v = m.View()
		if !v.ConsulOK || hasOld(v) || f.registration("n1") == nil {
			t.Fatalf("after the agent restarted:\n%s", dumpView(v))
		}
		if n := countLogs(hook, logrus.WarnLevel, "mesh: consul unreachable"); n != 1 {
			t.Errorf("outage logged %d times at warn, want once", n)
		}
		if n := countLogs(hook, logrus.InfoLevel, "mesh: consul reachable again"); n != 1 {
			t.Errorf("recovery logged %d times, want once", n)
		}
		// A successful answer resets the backoff: the next outage starts
		// from MinQueryInterval again.
		start := time.Now()
		f.setDown(errFakeDown)
		time.Sleep(time.Second)
		watch = append([]time.Time{start}, after(f.callsOf("services"), start)...)
		checkBackoff(t, "services watch, second outage", watch[:3], retry.Backoff{Min: minQuery, Max: retryMax}, minQuery)
		f.setDown(nil)
	})
}

// after returns the times not before t.
func after(ts []time.Time, t time.Time) []time.Time {
	var out []time.Time
	for _, x := range ts {
		if !x.Before(t) {
			out = append(out, x)
		}
	}
	return out
}

// checkBackoff checks that attempt k+1 followed attempt k by a wait of
// attempt k of bo (given without jitter): within [ceiling/2, ceiling], and
// never under floor after the first attempt (a watch's query limiter), on
// the bubble's exact clock.
func checkBackoff(t *testing.T, what string, at []time.Time, bo retry.Backoff, floor time.Duration) {
	t.Helper()
	if len(at) < 3 {
		t.Fatalf("%s: only %d attempts", what, len(at))
	}
	for k := 0; k+1 < len(at); k++ {
		gap := at[k+1].Sub(at[k])
		ceil := bo.Delay(k) // without jitter: the ceiling
		lo, hi := ceil/2, ceil
		if k > 0 {
			lo, hi = max(lo, floor), max(hi, floor)
		}
		if gap < lo || gap > hi {
			t.Fatalf("%s: wait %d was %s, want [%s, %s] (attempts at %v)", what, k, gap, lo, hi, at)
		}
	}
}
