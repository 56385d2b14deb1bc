// Package admit paces the admission of new subscribers to a node.
//
// A node that loses a neighbour in a storm is asked to take thousands of
// clients within a second. Each admission costs far more CPU than an event
// (a connection, a request, perhaps a handshake, a replay from the ring),
// and on a small machine an unpaced burst takes the cores from the fan-out:
// every connected client's latency rises with it. The pacer lets new
// subscribers in at a steady rate with a burst, and keeps the rest waiting
// their turn, up to a bound, rather than refusing them: a browser's
// EventSource gives up for good on a 503, while a held request costs a
// goroutine and a socket the node has counted anyway (limits.max_clients).
package admit

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"
)

// Config sets the pace; a zero Rate admits everyone at once.
type Config struct {
	// Rate is how many new subscribers are admitted per second on average,
	// and Burst how many at once after a quiet spell.
	Rate  float64
	Burst int
	// MaxWait is the longest a request waits for its turn; one that would
	// wait longer is refused at once with the time its turn would come.
	MaxWait time.Duration
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return errors.New("rate: must be a non-negative number")
	case c.Rate > 0 && c.Burst < 1:
		return errors.New("burst: must be at least 1 when a rate is set")
	case c.Burst < 0:
		return errors.New("burst: must not be negative")
	case c.MaxWait < 0:
		return errors.New("max wait: must not be negative")
	}
	return nil
}

// Pacer is a token bucket whose callers queue for tokens not yet earned.
// Safe for concurrent use.
type Pacer struct {
	mu     sync.Mutex
	cfg    Config
	tokens float64 // may go negative: tokens promised to waiting callers
	last   time.Time
	now    func() time.Time
}

// New returns a pacer that starts with a full bucket.
func New(cfg Config) *Pacer {
	return &Pacer{cfg: cfg, tokens: float64(cfg.Burst), now: time.Now}
}

// SetConfig changes the pace (a reload); callers already waiting keep
// their turn.
func (p *Pacer) SetConfig(cfg Config) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refillLocked(p.now())
	p.cfg = cfg
	if b := float64(cfg.Burst); p.tokens > b {
		p.tokens = b
	}
}

func (p *Pacer) refillLocked(now time.Time) {
	if !p.last.IsZero() && p.cfg.Rate > 0 {
		p.tokens += now.Sub(p.last).Seconds() * p.cfg.Rate
		if b := float64(p.cfg.Burst); p.tokens > b {
			p.tokens = b
		}
	}
	p.last = now
}

// Wait returns once the caller may be admitted: at once while the bucket
// has tokens, else at its turn. It returns ok=false without waiting when
// the turn is more than MaxWait away (retryAfter then says when to come
// back), and ok=false with retryAfter 0 when ctx ends first; waited is the
// time spent waiting.
func (p *Pacer) Wait(ctx context.Context) (ok bool, waited, retryAfter time.Duration) {
	p.mu.Lock()
	if p.cfg.Rate <= 0 {
		p.mu.Unlock()
		return true, 0, 0
	}
	now := p.now()
	p.refillLocked(now)
	p.tokens--
	if p.tokens >= 0 {
		p.mu.Unlock()
		return true, 0, 0
	}
	wait := time.Duration(math.Round(-p.tokens / p.cfg.Rate * float64(time.Second)))
	if wait > p.cfg.MaxWait {
		p.tokens++
		p.mu.Unlock()
		return false, 0, wait
	}
	p.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true, wait, 0
	case <-ctx.Done():
		// The turn is given back: callers behind this one move up a
		// little (by at most one token's time), never past their own
		// reservation.
		p.mu.Lock()
		p.tokens++
		p.mu.Unlock()
		return false, 0, 0
	}
}
