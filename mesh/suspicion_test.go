package mesh

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestSuspicionStates drives the gossip delegate as memberlist does, with
// the line memberlist logs when its probe of a member goes unanswered, and
// checks the member's state in the view after each step.
func TestSuspicionStates(t *testing.T) {
	m, err := New(testConfig(t, "a"))
	if err != nil {
		t.Fatal(err)
	}
	d := &gossipDelegate{m: m}
	w := &logWriter{log: m.log, onSuspect: m.onSuspect}
	member := func(name string, draining bool) *memberlist.Node {
		b, err := encodeMeta(nodeMeta{ID: name, DC: "dc1", Tier: 1, ClientAddr: "127.0.0.1:1", Draining: draining})
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: 7946, Meta: b}
	}
	probeFailed := func(name string) {
		line := "[INFO] memberlist: Suspect " + name + " has failed, no acks received\n"
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name string
		do   func()
		id   string
		want MemberState
	}{
		{"joins", func() { d.NotifyJoin(member("b", false)) }, "b", StateAlive},
		{"probe unanswered", func() { probeFailed("b") }, "b", StateSuspect},
		{"probe answered", func() { d.NotifyPingComplete(member("b", false), time.Millisecond, nil) }, "b", StateAlive},
		{"suspected again", func() { probeFailed("b") }, "b", StateSuspect},
		{"refutes with new metadata", func() { d.NotifyUpdate(member("b", false)) }, "b", StateAlive},
		{"suspected, then declared failed", func() { probeFailed("b"); d.NotifyLeave(member("b", true)) }, "b", StateDead},
		{"no suspicion of a departed member", func() { probeFailed("b") }, "b", StateDead},
		{"rejoins", func() { d.NotifyJoin(member("b", false)) }, "b", StateAlive},
		{"announces draining", func() { d.NotifyUpdate(member("b", true)) }, "b", StateDraining},
		{"leaves unsuspected", func() { d.NotifyLeave(member("b", true)) }, "b", StateLeft},
		{"unknown member", func() { probeFailed("c") }, "c", ""},
		{"other log lines", func() {
			_, _ = w.Write([]byte("[DEBUG] memberlist: Failed UDP ping: d (timeout reached)\n[INFO] memberlist: Marking d as failed, suspect timeout reached (0 peer confirmations)\n"))
		}, "d", ""},
	}
	for _, st := range steps {
		st.do()
		m.publish()
		if got := memberState(m.View(), st.id); got != st.want {
			t.Fatalf("%s: %s is %q, want %q:\n%s", st.name, st.id, got, st.want, dumpView(m.View()))
		}
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
