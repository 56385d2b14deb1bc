package iplimit

import (
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTest(cfg Config) (*Limiter, *clock) {
	c := &clock{t: time.Unix(1000, 0)}
	l := New(cfg)
	l.now = c.now
	return l, c
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestKeyGroupsIPv6By64(t *testing.T) {
	tests := []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9"},
		{"::ffff:10.0.0.1", "10.0.0.1"},
	}
	for _, tc := range tests {
		if Key(addr(tc.a)) != Key(addr(tc.b)) {
			t.Errorf("%s and %s are different clients, want one", tc.a, tc.b)
		}
	}
	if Key(addr("2001:db8:1:2::1")) == Key(addr("2001:db8:1:3::1")) {
		t.Error("two /64s count as one client")
	}
	if Key(addr("10.0.0.1")) == Key(addr("10.0.0.2")) {
		t.Error("two IPv4 addresses count as one client")
	}
}

func TestConnections(t *testing.T) {
	l, _ := newTest(Config{Connections: 2})
	a := addr("192.0.2.1")
	r1, ok1 := l.Acquire(a)
	r2, ok2 := l.Acquire(addr("192.0.2.1"))
	if ok1 != OK || ok2 != OK {
		t.Fatalf("first two connections refused: %v %v", ok1, ok2)
	}
	if _, r := l.Acquire(a); r != Connections {
		t.Fatalf("third connection: %v, want Connections", r)
	}
	if _, r := l.Acquire(addr("192.0.2.2")); r != OK {
		t.Fatalf("another client refused: %v", r)
	}
	r1()
	r1() // a second release must not free another slot
	if _, r := l.Acquire(a); r != OK {
		t.Fatalf("connection after a release refused: %v", r)
	}
	if _, r := l.Acquire(a); r != Connections {
		t.Fatalf("double release freed two slots: %v", r)
	}
	r2()
}

func TestRate(t *testing.T) {
	l, c := newTest(Config{Rate: 2, Burst: 3})
	a := addr("198.51.100.7")
	for i := 0; i < 3; i++ {
		if _, r := l.Allow(a); r != OK {
			t.Fatalf("burst unit %d refused: %v", i, r)
		}
	}
	wait, r := l.Allow(a)
	if r != RateLimited || wait != 500*time.Millisecond {
		t.Fatalf("over the burst: %v wait %s, want RateLimited after 500ms", r, wait)
	}
	if _, r := l.Allow(addr("198.51.100.8")); r != OK {
		t.Fatalf("another client limited: %v", r)
	}
	c.advance(500 * time.Millisecond)
	if _, r := l.Allow(a); r != OK {
		t.Fatalf("after refill: %v", r)
	}
	if _, r := l.Allow(a); r != RateLimited {
		t.Fatalf("second unit after one refill: %v", r)
	}
	c.advance(time.Hour) // the bucket caps at the burst
	for i := 0; i < 3; i++ {
		if _, r := l.Allow(a); r != OK {
			t.Fatalf("unit %d after a long pause refused: %v", i, r)
		}
	}
	if _, r := l.Allow(a); r != RateLimited {
		t.Fatalf("bucket grew past the burst: %v", r)
	}
}

func TestTableIsBounded(t *testing.T) {
	l, c := newTest(Config{Connections: 1, Rate: 1, Burst: 1, MaxKeys: 4})
	var releases []func()
	for i := 1; i <= 4; i++ {
		rel, r := l.Acquire(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
		if r != OK {
			t.Fatalf("client %d refused: %v", i, r)
		}
		releases = append(releases, rel)
	}
	if _, r := l.Acquire(addr("10.0.0.9")); r != TableFull {
		t.Fatalf("fifth client with four busy: %v, want TableFull", r)
	}
	// A released client with a full bucket leaves the table at once.
	releases[0]()
	if got := l.Tracked(); got != 3 {
		t.Fatalf("tracked %d after a release, want 3", got)
	}
	// A client that spent its bucket stays until it refilled, then the
	// sweep of a full table drops it.
	if _, r := l.Allow(addr("10.0.0.5")); r != OK {
		t.Fatalf("rate unit refused: %v", r)
	}
	if _, r := l.Acquire(addr("10.0.0.6")); r != TableFull {
		t.Fatalf("table should be full: %v", r)
	}
	c.advance(time.Second)
	if _, r := l.Acquire(addr("10.0.0.6")); r != OK {
		t.Fatalf("refilled client not swept: %v", r)
	}
	for _, rel := range releases[1:] {
		rel()
	}
}

func TestZeroLimitsAreOff(t *testing.T) {
	l, _ := newTest(Config{})
	a := addr("203.0.113.1")
	for i := 0; i < 1000; i++ {
		if _, r := l.Acquire(a); r != OK {
			t.Fatal("connection limit applied while off")
		}
		if _, r := l.Allow(a); r != OK {
			t.Fatal("rate applied while off")
		}
	}
	if l.Tracked() != 0 {
		t.Fatal("a limiter with no limits tracks clients")
	}
}

func TestValidate(t *testing.T) {
	bad := []Config{{Connections: -1}, {Rate: -1}, {Rate: 1, Burst: 0}, {Burst: -1}, {MaxKeys: -1}}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := (Config{Connections: 10, Rate: 5, Burst: 10}).Validate(); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}
