// Package iplimit bounds what one client address may take from a node:
// concurrent connections, and new upstream work (new streams, history
// fetches) per second with a burst.
//
// Addresses are grouped the way an attacker obtains them: an IPv4 address
// is one client, an IPv6 client owns at least a /64, so all addresses of a
// /64 count as one. The table holds only clients that have a connection
// open or a bucket still refilling, so its size follows the node's client
// count, and MaxKeys caps it outright: a node that tracks MaxKeys clients
// refuses new ones rather than grow.
package iplimit

import (
	"errors"
	"math"
	"net/netip"
	"sync"
	"time"
)

// Config sets the limits; a zero limit is no limit.
type Config struct {
	// Connections is the most connections one client may hold at once.
	Connections int
	// Rate is how many units of new work (Allow calls) one client may
	// start per second on average, and Burst how many at once.
	Rate  float64
	Burst int
	// MaxKeys bounds the number of clients tracked (default 100,000).
	MaxKeys int
}

// DefaultMaxKeys is MaxKeys when unset.
const DefaultMaxKeys = 100000

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Connections < 0:
		return errors.New("connections: must not be negative")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return errors.New("rate: must be a non-negative number")
	case c.Burst < 0:
		return errors.New("burst: must not be negative")
	case c.Rate > 0 && c.Burst < 1:
		return errors.New("burst: must be at least 1 when a rate is set")
	case c.MaxKeys < 0:
		return errors.New("max keys: must not be negative")
	}
	return nil
}

// Refusal says which limit a client hit.
type Refusal int

// Refusals.
const (
	OK          Refusal = iota
	Connections         // the client holds Connections already
	RateLimited         // the client's bucket is empty
	TableFull           // MaxKeys clients are tracked
)

type entry struct {
	conns  int
	tokens float64
	last   time.Time // when tokens was last brought up to date
}

// Limiter is safe for concurrent use.
type Limiter struct {
	cfg Config
	now func() time.Time

	mu sync.Mutex
	m  map[netip.Prefix]*entry
}

// New returns a Limiter; cfg must be valid.
func New(cfg Config) *Limiter {
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	return &Limiter{cfg: cfg, now: time.Now, m: make(map[netip.Prefix]*entry)}
}

// Key is the client an address belongs to: the address itself for IPv4,
// its /64 for IPv6.
func Key(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// Acquire takes one connection slot for a; release gives it back and must
// be called exactly once when ok.
func (l *Limiter) Acquire(a netip.Addr) (release func(), r Refusal) {
	if l.cfg.Connections == 0 {
		return func() {}, OK
	}
	k := Key(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, r := l.entryLocked(k)
	if r != OK {
		return nil, r
	}
	if e.conns >= l.cfg.Connections {
		return nil, Connections
	}
	e.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			e.conns--
			l.dropIfIdleLocked(k, e, l.now())
		})
	}, OK
}

// Allow spends one unit of a's rate. When refused, wait is how long until
// a unit is available again.
func (l *Limiter) Allow(a netip.Addr) (wait time.Duration, r Refusal) {
	if l.cfg.Rate == 0 {
		return 0, OK
	}
	k := Key(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	e, r := l.entryLocked(k)
	if r != OK {
		return time.Second, r
	}
	now := l.now()
	l.refill(e, now)
	if e.tokens < 1 {
		return time.Duration((1 - e.tokens) / l.cfg.Rate * float64(time.Second)), RateLimited
	}
	e.tokens--
	return 0, OK
}

// Tracked is the number of clients in the table.
func (l *Limiter) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// entryLocked returns k's entry, creating it (with a full bucket) when
// there is room.
func (l *Limiter) entryLocked(k netip.Prefix) (*entry, Refusal) {
	if e := l.m[k]; e != nil {
		return e, OK
	}
	if len(l.m) >= l.cfg.MaxKeys {
		l.sweepLocked()
		if len(l.m) >= l.cfg.MaxKeys {
			return nil, TableFull
		}
	}
	e := &entry{tokens: float64(l.cfg.Burst), last: l.now()}
	l.m[k] = e
	return e, OK
}

func (l *Limiter) refill(e *entry, now time.Time) {
	if el := now.Sub(e.last); el > 0 {
		e.tokens = math.Min(float64(l.cfg.Burst), e.tokens+el.Seconds()*l.cfg.Rate)
	}
	e.last = now
}

// dropIfIdleLocked forgets a client that holds nothing: no connection and
// a full bucket, which is what a new entry would start with.
func (l *Limiter) dropIfIdleLocked(k netip.Prefix, e *entry, now time.Time) bool {
	if e.conns > 0 {
		return false
	}
	if l.cfg.Rate > 0 {
		l.refill(e, now)
		if e.tokens < float64(l.cfg.Burst) {
			return false
		}
	}
	delete(l.m, k)
	return true
}

// sweepLocked drops every idle client. It runs only when the table is
// full, so its cost is spread over the entries that filled it.
func (l *Limiter) sweepLocked() {
	now := l.now()
	for k, e := range l.m {
		l.dropIfIdleLocked(k, e, now)
	}
}
