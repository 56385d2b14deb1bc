package relay

import (
	"sync"
	"time"
)

// maxBatchBytes bounds what one dispatch round writes, so a dispatcher that
// fell behind catches up in steps instead of building one huge buffer.
const maxBatchBytes = 1 << 20

// batch is a run of consecutive ring entries encoded back to back, so one
// write(2) per client covers it. offs[i] is where seq first+i starts.
type batch struct {
	first, last uint64
	data        []byte
	offs        []int
	at          time.Time // arrival of the newest entry, for latency
}

// from returns the bytes a client positioned at seq still needs.
func (b *batch) from(seq uint64) []byte { return b.data[b.offs[seq-b.first]:] }

// runDispatcher owns the fast-path subscribers of one stream: it writes every
// new batch and heartbeat to each of them, applies drain and close, and
// closes the stream a linger period after its last subscriber left. Once
// the stream is over it finishes every subscriber, removes the stream from
// the relay's table and returns.
func (s *stream) runDispatcher() {
	cfg := &s.r.cfg
	hb := time.NewTicker(cfg.Heartbeat)
	defer hb.Stop()
	// Child nodes get a beat of their own when it is shorter; see
	// Config.ChildHeartbeat.
	var childC <-chan time.Time
	if cfg.childBeat() < cfg.Heartbeat {
		chb := time.NewTicker(cfg.childBeat())
		defer chb.Stop()
		childC = chb.C
	}
	var drainTick *time.Ticker
	var drainC <-chan time.Time
	var drainOnce sync.Once
	defer drainOnce.Do(func() { close(s.drained) })
	// The linger timer runs from the idleGen-th time the stream lost its
	// last subscriber; a subscriber that came and left meanwhile starts it
	// over.
	var linger *time.Timer
	var lingerC <-chan time.Time
	var lingerGen uint64
	lingerDue := false

	var clients []*client
	drainTotal, drainDone := 0, 0
	var drainStart time.Time
	for {
		beat, childBeat := false, false
		select {
		case <-s.kick:
		case <-hb.C:
			beat = true
		case <-childC:
			childBeat = true
		case <-drainC:
		case <-lingerC:
			lingerDue, lingerC = true, nil
		}

		s.mu.Lock()
		if beat {
			// Age is otherwise enforced only when an event arrives; a
			// quiet stream must not hold entries past ring_age either.
			s.ring.expire(time.Now())
		}
		idle := s.refs == 0 && s.idleGen != lingerGen
		if idle {
			lingerGen = s.idleGen
		} else if lingerDue && s.refs == 0 {
			s.log.Debug("last subscriber gone: closing upstream")
			s.teardownLocked(stateClosed, nil)
		}
		lingerDue = false
		over := s.finishedLocked()
		for _, c := range s.joiners {
			c.slow = false // back from catch-up: the dispatcher owns it again
			clients = append(clients, c)
		}
		s.joiners = s.joiners[:0]
		b := s.nextBatchLocked()
		s.checkSlowLocked()
		drainBy := s.drainBy
		more := s.dispatched < s.ring.head()
		s.mu.Unlock()

		if over {
			if linger != nil {
				linger.Stop()
			}
			s.r.forget(s)
			for _, c := range clients {
				c.finish("")
			}
			return
		}
		if idle {
			if linger == nil {
				linger = time.NewTimer(cfg.Linger)
			} else {
				linger.Reset(cfg.Linger)
			}
			lingerC = linger.C
		}
		if s.expiring.Swap(false) {
			for _, c := range clients {
				if c.expired.Load() && !c.gone.Load() {
					c.closeExpired(c.offerBytes)
				}
			}
		}
		if b != nil {
			s.writeAll(clients, func(c *client) int { return c.offer(b) }, b.at)
		}
		if beat {
			s.writeAll(clients, func(c *client) int {
				if !c.child || childC == nil { // children beat on their own ticker
					c.offerBytes(heartbeat)
				}
				return 0
			}, time.Time{})
		} else if childBeat {
			// Children are few: a plain pass finds them.
			for _, c := range clients {
				if c.child {
					c.offerBytes(heartbeat)
				}
			}
		}
		clients = compact(clients)
		if more {
			s.kickDispatcher()
		}

		if !drainBy.IsZero() {
			if drainC == nil {
				drainStart, drainTotal = time.Now(), len(clients)
				drainTick = time.NewTicker(50 * time.Millisecond)
				defer drainTick.Stop()
				drainC = drainTick.C
			}
			// Close clients at an even pace over the drain period so they
			// do not all reconnect elsewhere in the same instant.
			period := drainBy.Sub(drainStart)
			due := drainTotal
			if el := time.Since(drainStart); el < period && period > 0 {
				due = int(float64(drainTotal) * float64(el) / float64(period))
			}
			for drainDone < due && len(clients) > 0 {
				c := clients[len(clients)-1]
				clients = clients[:len(clients)-1]
				c.offerBytes(retryHint(cfg.DrainRetry))
				c.finish("")
				drainDone++
			}
			if time.Now().After(drainBy) {
				for _, c := range clients {
					c.offerBytes(retryHint(cfg.DrainRetry))
					c.finish("")
				}
				clients = clients[:0]
				s.mu.Lock()
				left := len(s.all)
				s.mu.Unlock()
				if left == 0 {
					drainOnce.Do(func() { close(s.drained) })
				}
			}
		}
	}
}

// nextBatchLocked collects the entries not yet dispatched, up to
// maxBatchBytes. s.mu is held.
func (s *fanout) nextBatchLocked() *batch {
	head := s.ring.head()
	from := s.dispatched + 1
	if from < s.ring.first {
		from = s.ring.first
	}
	if from > head {
		return nil
	}
	e, _ := s.ring.get(from)
	b := &batch{first: from, last: from, offs: []int{0}, data: e.wire, at: e.at}
	for seq := from + 1; seq <= head; seq++ {
		e, _ := s.ring.get(seq)
		if len(b.data)+len(e.wire) > maxBatchBytes {
			break
		}
		if seq == from+1 {
			// Copy: ring entries are shared and must never be appended to.
			b.data = append(make([]byte, 0, 2*len(b.data)+len(e.wire)), b.data...)
		}
		b.offs = append(b.offs, len(b.data))
		b.data = append(b.data, e.wire...)
		b.last, b.at = seq, e.at
	}
	s.dispatched = b.last
	return b
}

// writeAll applies write to every client, spreading large sets over the
// relay's writer pool; the dispatcher takes the last shard itself. write
// returns the events delivered to that client, for the counters.
func (s *fanout) writeAll(clients []*client, write func(*client) int, at time.Time) {
	r := s.r
	shards := r.shards(len(clients))
	per := (len(clients) + shards - 1) / shards
	var wg sync.WaitGroup
	run := func(part []*client) {
		var n uint64
		for _, c := range part {
			n += uint64(write(c))
		}
		if n > 0 {
			r.metrics.Deliveries.Add(n)
			if !at.IsZero() {
				r.metrics.observe(time.Since(at), n)
			}
		}
	}
	for i := 0; i < shards-1; i++ {
		part := clients[i*per : min((i+1)*per, len(clients))]
		wg.Add(1)
		job := func() { defer wg.Done(); run(part) }
		select {
		case r.jobs <- job:
		case <-r.ctx.Done():
			job()
		}
	}
	if last := (shards - 1) * per; last < len(clients) {
		run(clients[last:])
	}
	wg.Wait()
}

// shards is how many parts a fan-out to n clients is cut into: one per
// shardMin clients, at most one per writer, at least one.
func (r *Relay) shards(n int) int {
	return min(max(n/r.shardMin, 1), r.workers)
}

// compact drops clients that left the fast path (gone or slow).
func compact(clients []*client) []*client {
	out := clients[:0]
	for _, c := range clients {
		if !c.gone.Load() && !c.slow {
			out = append(out, c)
		}
	}
	for i := len(out); i < len(clients); i++ {
		clients[i] = nil
	}
	return out
}

// offer writes the part of b the client has not had yet, without blocking;
// a client whose socket is full moves to the slow path. It returns the number
// of events fully or partly handed to the socket.
func (c *client) offer(b *batch) int {
	if c.gone.Load() || c.next > b.last {
		return 0
	}
	if c.next < b.first {
		c.demote(nil)
		return 0
	}
	data := b.from(c.next)
	n, err := c.tryWrite(data)
	if err != nil {
		c.finish(ReasonWriteError)
		return 0
	}
	delivered := int(b.last - c.next + 1)
	c.events.Add(uint64(delivered))
	c.next = b.last + 1
	if n < len(data) || c.owes() {
		c.demote(data[n:])
	}
	return delivered
}

// offerBytes writes out-of-band bytes (heartbeat, retry hint) best effort.
func (c *client) offerBytes(p []byte) {
	if c.gone.Load() || c.slow {
		return
	}
	n, err := c.tryWrite(p)
	if err != nil {
		c.finish(ReasonWriteError)
		return
	}
	if n < len(p) || c.owes() {
		c.demote(p[n:])
	}
}

// checkSlowLocked disconnects subscribers off the fast path that fell more
// than ClientLagBytes behind the head. A stalled subscriber is usually parked
// in a blocking write, so the check must come from here, not from its own
// goroutine. s.mu is held.
func (s *fanout) checkSlowLocked() {
	for c := range s.slow {
		if s.ring.bytesFrom(c.pos.Load()) > s.r.cfg.ClientLagBytes {
			delete(s.slow, c)
			c.kill(ReasonLag)
		}
	}
}

// demote moves a client whose socket is full to its own catch-up goroutine,
// owing rest before its next ring entry.
func (c *client) demote(rest []byte) {
	c.slow = true
	c.pending = rest
	c.pos.Store(c.next)
	c.s.r.metrics.SlowPath.Add(1)
	c.s.mu.Lock()
	c.s.slow[c] = struct{}{}
	c.s.mu.Unlock()
	if !c.s.r.goOwned(c.catchUp) {
		c.finish("")
	}
}
