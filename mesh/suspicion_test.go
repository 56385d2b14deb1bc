package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestSuspicionStates drives the gossip delegate and the prober's outcomes
// as memberlist and the probe loop do, and checks the member's state in
// the view after each step.
func TestSuspicionStates(t *testing.T) {
	m, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	d := &gossipDelegate{m: m}
	member := func(name string, draining bool) *memberlist.Node {
		b, err := encodeMeta(nodeMeta{ID: name, DC: "dc1", Tier: 1, ClientAddr: "127.0.0.1:1", Draining: draining})
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 7946, Meta: b}
	}
	unanswered := func(name string, times int) func() {
		return func() {
			for range times {
				m.noteProbe(name, false)
			}
		}
	}
	steps := []struct {
		name string
		do   func()
		id   string
		want MemberState
	}{
		{"joins", func() { d.NotifyJoin(member("b", false)) }, "b", StateAlive},
		{"one ping unanswered", unanswered("b", 1), "b", StateAlive},
		{"answered in between", func() { m.noteProbe("b", true); m.noteProbe("b", false) }, "b", StateAlive},
		{"two in a row", unanswered("b", 1), "b", StateSuspect},
		{"memberlist's own probe answered", func() { d.NotifyPingComplete(member("b", false), time.Millisecond, nil) }, "b", StateAlive},
		{"the count starts again", unanswered("b", 1), "b", StateAlive},
		{"suspected again", unanswered("b", 1), "b", StateSuspect},
		{"refutes with new metadata", func() { d.NotifyUpdate(member("b", false)) }, "b", StateAlive},
		{"new metadata resets the count", unanswered("b", 1), "b", StateAlive},
		{"suspected, then declared failed", func() { unanswered("b", 2)(); d.NotifyLeave(member("b", true)) }, "b", StateDead},
		{"no suspicion of a departed member", unanswered("b", 3), "b", StateDead},
		{"rejoins", func() { d.NotifyJoin(member("b", false)) }, "b", StateAlive},
		{"announces draining", func() { d.NotifyUpdate(member("b", true)) }, "b", StateDraining},
		{"leaves unsuspected", func() { d.NotifyLeave(member("b", true)) }, "b", StateLeft},
		{"unknown member", unanswered("c", 3), "c", ""},
	}
	for _, st := range steps {
		st.do()
		m.publish()
		if got := memberState(m.View(), st.id); got != st.want {
			t.Fatalf("%s: %s is %q, want %q:\n%s", st.name, st.id, got, st.want, dumpView(m.View()))
		}
	}
}

// fakePinger answers pings as scripted and records who was pinged when.
type fakePinger struct {
	mu     sync.Mutex
	silent map[string]bool
	rounds [][]string // names pinged, per tick (by fake time)
	last   time.Time
}

func (f *fakePinger) Ping(node string, _ net.Addr) (time.Duration, error) {
	f.mu.Lock()
	now := time.Now()
	if len(f.rounds) == 0 || !now.Equal(f.last) {
		f.rounds = append(f.rounds, nil)
		f.last = now
	}
	f.rounds[len(f.rounds)-1] = append(f.rounds[len(f.rounds)-1], node)
	silent := f.silent[node]
	f.mu.Unlock()
	if silent {
		time.Sleep(200 * time.Millisecond) // memberlist's timeout
		return 0, errors.New("no ack")
	}
	return time.Millisecond, nil
}

func (f *fakePinger) set(node string, silent bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.silent[node] = silent
}

func (f *fakePinger) take() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.rounds
	f.rounds = nil
	for _, names := range r {
		slices.Sort(names)
	}
	return r
}

// TestProbeLoopOnAFakeClock runs the probe loop in a synctest bubble: which
// members each round pings (every candidate parent, rotated when there are
// more than a round takes, and one other member in turn), when a silent
// parent turns suspect (the second unanswered round, not the first) and
// that its first answer clears it.
func TestProbeLoopOnAFakeClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(t, "leaf")
		cfg.Tier = 2
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		d := &gossipDelegate{m: m}
		join := func(name string, tier int) {
			b, err := encodeMeta(nodeMeta{ID: name, DC: "dc1", Tier: tier, ClientAddr: "127.0.0.1:1"})
			if err != nil {
				t.Fatal(err)
			}
			d.NotifyJoin(&memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 7946, Meta: b})
		}
		join("root", 0)
		join("relay", 1)
		join("leaf2", 2)
		join("leaf3", 2)
		f := &fakePinger{silent: map[string]bool{}}
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); m.probeLoop(ctx, f, time.Second) }()

		state := func() MemberState { m.publish(); return memberState(m.View(), "relay") }
		time.Sleep(time.Second - time.Millisecond)
		synctest.Wait()
		if r := f.take(); len(r) != 0 {
			t.Fatalf("pinged before the first interval: %v", r)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		time.Sleep(time.Second)
		synctest.Wait()
		want := [][]string{{"leaf2", "relay", "root"}, {"leaf3", "relay", "root"}}
		if got := f.take(); !slices.EqualFunc(got, want, slices.Equal) {
			t.Fatalf("rounds pinged %v, want %v (both parents every round, the others in turn)", got, want)
		}

		f.set("relay", true)
		time.Sleep(time.Second) // round 3: first unanswered ping
		synctest.Wait()
		time.Sleep(300 * time.Millisecond) // past the ping's timeout
		synctest.Wait()
		if st := state(); st != StateAlive {
			t.Fatalf("after one unanswered ping relay is %q, want alive", st)
		}
		time.Sleep(700 * time.Millisecond) // round 4
		synctest.Wait()
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		if st := state(); st != StateSuspect {
			t.Fatalf("after two unanswered pings relay is %q, want suspect", st)
		}
		f.set("relay", false)
		time.Sleep(700 * time.Millisecond) // round 5: answered
		synctest.Wait()
		if st := state(); st != StateAlive {
			t.Fatalf("after an answer relay is %q, want alive", st)
		}
		stop()
		<-done
	})
}

// TestProbeTargetsRotate checks the choice of members per round with more
// candidate parents than a round pings.
func TestProbeTargetsRotate(t *testing.T) {
	peers := map[string]*peer{}
	for i := range 10 {
		peers[fmt.Sprintf("r%d", i)] = &peer{addr: "127.0.0.1:7946", meta: nodeMeta{Tier: 0}}
	}
	peers["gone"] = &peer{addr: "127.0.0.1:7946", departed: time.Unix(1, 0)}
	peers["dead"] = &peer{addr: "127.0.0.1:7946", state: memberlist.StateDead}
	peers["same"] = &peer{addr: "127.0.0.1:7946", meta: nodeMeta{Tier: 1}}
	var p prober
	seen := map[string]int{}
	for round := range 5 {
		ts := p.targets(1, peers)
		if len(ts) != probeParents+1 {
			t.Fatalf("round %d: %d targets, want %d", round, len(ts), probeParents+1)
		}
		for _, tg := range ts {
			seen[tg.name]++
		}
	}
	// 5 rounds x 8 of 10 parents: each parent 4 times; "same" every round.
	for i := range 10 {
		if n := seen[fmt.Sprintf("r%d", i)]; n != 4 {
			t.Errorf("r%d pinged %d times in 5 rounds, want 4 (%v)", i, n, seen)
		}
	}
	if seen["same"] != 5 || seen["gone"] != 0 || seen["dead"] != 0 {
		t.Errorf("pinged %v: want the other member every round, never a departed or dead one", seen)
	}
}

// TestGossipSuspectsSilencedMember silences a member's gossip port (its
// packets and connections are dropped both ways, the process keeps
// running): a peer suspects it within about a second, and takes it back
// as alive once it answers again.
func TestGossipSuspectsSilencedMember(t *testing.T) {
	a := startMesh(t, testConfig(t, "a"))
	cb := testConfig(t, "b")
	cb.Gossip.Seeds = []string{a.LocalAddr()}
	var quiet *silencer
	b, err := New(cb)
	if err != nil {
		t.Fatal(err)
	}
	b.tweakGossip = func(conf *memberlist.Config) {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{conf.BindAddr}, BindPort: conf.BindPort, Logger: conf.Logger,
		})
		if err != nil {
			t.Fatalf("gossip transport: %v", err)
		}
		quiet = newSilencer(nt)
		conf.Transport = quiet
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Shutdown() })
	awaitView(t, a, 10*time.Second, "b alive", allAlive("a", "b"))

	silenced := time.Now()
	quiet.silent.Store(true)
	awaitView(t, a, 5*time.Second, "b suspect", func(v *View) bool {
		st := memberState(v, "b")
		if st == StateDead {
			t.Fatalf("b went dead without being suspect first")
		}
		return st == StateSuspect
	})
	took := time.Since(silenced)
	t.Logf("b suspect %s after its gossip port went silent", took)
	// The Fast timings promise about 0.5 s; the bound leaves room for the
	// race detector on a loaded machine.
	if took > 2*time.Second {
		t.Errorf("suspicion took %s", took)
	}
	quiet.silent.Store(false)
	awaitView(t, a, 10*time.Second, "b alive again", allAlive("a", "b"))
}

// silencer is a gossip transport that can go silent, like a host whose
// gossip port a firewall suddenly drops: while silent, packets in and out
// are dropped, incoming connections are closed and outgoing ones refused.
type silencer struct {
	memberlist.NodeAwareTransport
	silent  atomic.Bool
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
}

var errSilenced = errors.New("gossip port silenced")

func newSilencer(nt *memberlist.NetTransport) *silencer {
	s := &silencer{
		NodeAwareTransport: nt,
		packets:            make(chan *memberlist.Packet),
		streams:            make(chan net.Conn),
		done:               make(chan struct{}),
	}
	go s.pump()
	return s
}

func (s *silencer) pump() {
	in, conns := s.NodeAwareTransport.PacketCh(), s.NodeAwareTransport.StreamCh()
	for {
		select {
		case p := <-in:
			if s.silent.Load() {
				continue
			}
			select {
			case s.packets <- p:
			case <-s.done:
				return
			}
		case c := <-conns:
			if s.silent.Load() {
				_ = c.Close()
				continue
			}
			select {
			case s.streams <- c:
			case <-s.done:
				_ = c.Close()
				return
			}
		case <-s.done:
			return
		}
	}
}

func (s *silencer) PacketCh() <-chan *memberlist.Packet { return s.packets }
func (s *silencer) StreamCh() <-chan net.Conn           { return s.streams }

func (s *silencer) WriteTo(b []byte, addr string) (time.Time, error) {
	if s.silent.Load() {
		return time.Now(), nil
	}
	return s.NodeAwareTransport.WriteTo(b, addr)
}

func (s *silencer) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if s.silent.Load() {
		return time.Now(), nil
	}
	return s.NodeAwareTransport.WriteToAddress(b, addr)
}

func (s *silencer) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if s.silent.Load() {
		return nil, errSilenced
	}
	return s.NodeAwareTransport.DialTimeout(addr, timeout)
}

func (s *silencer) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if s.silent.Load() {
		return nil, errSilenced
	}
	return s.NodeAwareTransport.DialAddressTimeout(addr, timeout)
}

func (s *silencer) Shutdown() error {
	close(s.done)
	return s.NodeAwareTransport.Shutdown()
}
