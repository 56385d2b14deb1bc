package relay

import "time"

// entry is one upstream block as every subscriber receives it: encoded once,
// shared by all writers, never mutated after it enters the ring.
type entry struct {
	seq   uint64 // node-local position, contiguous within a stream
	id    string // lastEventId in force after this block (WHATWG semantics)
	hasID bool   // the block itself carried an id field
	wire  []byte // canonical encoding sent to clients
	at    time.Time
	off   int64 // bytes pushed into the stream before this entry
}

// ring keeps the most recent entries of a stream, bounded by count, bytes and
// age, so that a subscriber reconnecting with Last-Event-ID can be replayed
// without asking upstream. Positions are sequence numbers: entry seq s sits at
// index s-first. The caller serialises access (stream.mu).
type ring struct {
	buf      []entry // circular; len(buf) is the capacity
	start    int     // index in buf of the oldest entry
	n        int     // entries held
	first    uint64  // seq of the oldest entry (valid when n > 0)
	next     uint64  // seq the next pushed entry gets
	bytes    int64   // bytes held
	pushed   int64   // bytes ever pushed, so distances are O(1)
	maxBytes int64
	maxAge   time.Duration
	byID     map[string]uint64 // newest seq that carried each explicit id
	// beforeID is the lastEventId in force just before the oldest entry: a
	// subscriber at exactly that id resumes at first without a gap.
	beforeID    string
	hasBeforeID bool
}

func newRing(maxEvents int, maxBytes int64, maxAge time.Duration) *ring {
	if maxEvents < 1 {
		maxEvents = 1
	}
	return &ring{
		buf:      make([]entry, maxEvents),
		next:     1,
		first:    1,
		maxBytes: maxBytes,
		maxAge:   maxAge,
		byID:     make(map[string]uint64),
	}
}

// push appends a block and evicts what no longer fits. It returns the seq the
// block was given.
func (r *ring) push(id string, hasID bool, wire []byte, now time.Time) uint64 {
	if r.n == len(r.buf) {
		r.evictOldest()
	}
	seq := r.next
	r.next++
	if r.n == 0 {
		r.first = seq
	}
	r.buf[(r.start+r.n)%len(r.buf)] = entry{seq: seq, id: id, hasID: hasID, wire: wire, at: now, off: r.pushed}
	r.n++
	r.pushed += int64(len(wire))
	r.bytes += int64(len(wire))
	if hasID {
		r.byID[id] = seq
	}
	// Keep at least the newest entry whatever the byte budget: a subscriber
	// must always be able to resume from the head.
	for r.n > 1 && r.maxBytes > 0 && r.bytes > r.maxBytes {
		r.evictOldest()
	}
	r.expire(now)
	return seq
}

// expire drops entries older than maxAge, keeping the newest one.
func (r *ring) expire(now time.Time) {
	if r.maxAge <= 0 {
		return
	}
	for r.n > 1 && now.Sub(r.buf[r.start].at) > r.maxAge {
		r.evictOldest()
	}
}

func (r *ring) evictOldest() {
	e := &r.buf[r.start]
	r.beforeID, r.hasBeforeID = e.id, true
	if e.hasID && r.byID[e.id] == e.seq {
		delete(r.byID, e.id)
	}
	r.bytes -= int64(len(e.wire))
	*e = entry{}
	r.start = (r.start + 1) % len(r.buf)
	r.n--
	r.first++
}

// head is the seq of the newest entry, first-1 when empty.
func (r *ring) head() uint64 { return r.next - 1 }

// get returns the entry at seq, if still held.
func (r *ring) get(seq uint64) (*entry, bool) {
	if r.n == 0 || seq < r.first || seq >= r.next {
		return nil, false
	}
	return &r.buf[(r.start+int(seq-r.first))%len(r.buf)], true
}

// after returns the seq following the newest block that carried id, i.e. where a
// subscriber whose lastEventId is id resumes. ok is false when the ring no
// longer (or never) held such a block.
func (r *ring) after(id string) (uint64, bool) {
	seq, ok := r.byID[id]
	if !ok {
		return 0, false
	}
	return seq + 1, true
}

// appendRange appends the wire bytes of entries [from, to] to dst, stopping at
// maxBytes (at least one entry is always appended when available). It returns
// the extended slice and the seq after the last entry appended.
func (r *ring) appendRange(dst []byte, from, to uint64, maxBytes int) ([]byte, uint64) {
	if from < r.first {
		from = r.first
	}
	seq := from
	for ; seq <= to && seq < r.next; seq++ {
		e, _ := r.get(seq)
		if len(dst) > 0 && len(dst)+len(e.wire) > maxBytes {
			break
		}
		dst = append(dst, e.wire...)
	}
	return dst, seq
}

// bytesFrom is how many wire bytes a subscriber positioned at seq still has to
// receive to reach the head; it drives the slow-consumer limit.
func (r *ring) bytesFrom(seq uint64) int64 {
	if seq <= r.first {
		return r.bytes
	}
	if seq >= r.next {
		return 0
	}
	e, _ := r.get(seq)
	return r.pushed - e.off
}

// span describes what the ring holds, for reports.
func (r *ring) span() (events int, bytes int64, oldest time.Time) {
	if r.n == 0 {
		return 0, 0, time.Time{}
	}
	return r.n, r.bytes, r.buf[r.start].at
}
