package mesh

import (
	"math/rand/v2"
	"time"
)

// backoff yields exponentially growing waits with full jitter in the upper
// half ([d/2, d)), so many nodes retrying after one Consul outage spread
// out instead of returning in lockstep.
type backoff struct {
	base, max, cur time.Duration
}

func newBackoff(base, maxWait time.Duration) *backoff {
	if maxWait < base {
		maxWait = base
	}
	return &backoff{base: base, max: maxWait}
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }
