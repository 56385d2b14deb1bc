package relay

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

var ringEpoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// pushN pushes n blocks "<prefix>i" (i from 1), each carrying id i and
// arriving one second after the previous one.
func pushN(r *ring, n int, prefix string) {
	for i := 1; i <= n; i++ {
		r.push(fmt.Sprint(i), true, []byte(fmt.Sprintf("%s%d", prefix, i)), ringEpoch.Add(time.Duration(i)*time.Second))
	}
}

// checkSpan asserts which seqs the ring holds: exactly first..head.
func checkSpan(t *testing.T, r *ring, first, head uint64) {
	t.Helper()
	if r.first != first || r.head() != head {
		t.Fatalf("ring holds %d..%d, want %d..%d", r.first, r.head(), first, head)
	}
	if n := int(head - first + 1); r.n != n {
		t.Fatalf("ring.n = %d, want %d", r.n, n)
	}
	for seq := first; seq <= head; seq++ {
		e, ok := r.get(seq)
		if !ok || e.seq != seq {
			t.Fatalf("get(%d) = %+v, %v; want the entry with that seq", seq, e, ok)
		}
	}
	for _, seq := range []uint64{0, first - 1, head + 1, head + 100} {
		if seq >= first && seq <= head {
			continue
		}
		if e, ok := r.get(seq); ok {
			t.Fatalf("get(%d) = %+v, want nothing outside %d..%d", seq, e, first, head)
		}
	}
}

func TestRingEmpty(t *testing.T) {
	r := newRing(4, 0, 0)
	if r.head() != 0 || r.first != 1 {
		t.Fatalf("empty ring: head %d first %d, want 0 and 1", r.head(), r.first)
	}
	if _, ok := r.get(0); ok {
		t.Fatal("get(0) on an empty ring found an entry")
	}
	if _, ok := r.get(1); ok {
		t.Fatal("get(1) on an empty ring found an entry")
	}
	if got := r.bytesFrom(1); got != 0 {
		t.Fatalf("bytesFrom(1) on an empty ring = %d, want 0", got)
	}
	if n, b, oldest := r.span(); n != 0 || b != 0 || !oldest.IsZero() {
		t.Fatalf("span() = %d, %d, %v; want zeros", n, b, oldest)
	}
	if _, ok := r.after("x"); ok {
		t.Fatal("after() on an empty ring found an id")
	}
	if r.hasBeforeID {
		t.Fatal("an empty ring reports an id before its oldest entry")
	}
	dst, next := r.appendRange(nil, 1, 10, 1<<20)
	if len(dst) != 0 || next != 1 {
		t.Fatalf("appendRange on an empty ring = %q, %d; want nothing and 1", dst, next)
	}
}

func TestRingPushAssignsContiguousSeqs(t *testing.T) {
	r := newRing(8, 0, 0)
	for i := 1; i <= 5; i++ {
		wire := []byte(fmt.Sprintf("w%d", i))
		at := ringEpoch.Add(time.Duration(i) * time.Millisecond)
		seq := r.push(fmt.Sprint(i), i%2 == 0, wire, at)
		if seq != uint64(i) {
			t.Fatalf("push %d got seq %d", i, seq)
		}
		e, ok := r.get(seq)
		if !ok {
			t.Fatalf("get(%d) after push found nothing", seq)
		}
		if e.id != fmt.Sprint(i) || e.hasID != (i%2 == 0) || !bytes.Equal(e.wire, wire) || !e.at.Equal(at) {
			t.Fatalf("get(%d) = %+v, want what was pushed", seq, e)
		}
	}
	checkSpan(t, r, 1, 5)
	if r.bytes != 10 || r.pushed != 10 {
		t.Fatalf("bytes %d pushed %d, want 10 and 10", r.bytes, r.pushed)
	}
}

func TestRingEvictionByCount(t *testing.T) {
	tests := []struct {
		capacity, pushes int
		first, head      uint64
	}{
		{capacity: 0, pushes: 3, first: 3, head: 3}, // clamped to one entry
		{capacity: 1, pushes: 1, first: 1, head: 1},
		{capacity: 1, pushes: 4, first: 4, head: 4},
		{capacity: 3, pushes: 2, first: 1, head: 2},
		{capacity: 3, pushes: 3, first: 1, head: 3},
		{capacity: 3, pushes: 4, first: 2, head: 4},
		{capacity: 3, pushes: 10, first: 8, head: 10},
		{capacity: 4, pushes: 9, first: 6, head: 9},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("cap%d_push%d", tc.capacity, tc.pushes), func(t *testing.T) {
			r := newRing(tc.capacity, 0, 0)
			pushN(r, tc.pushes, "e")
			checkSpan(t, r, tc.first, tc.head)
			for seq := tc.first; seq <= tc.head; seq++ {
				e, _ := r.get(seq)
				if want := fmt.Sprintf("e%d", seq); string(e.wire) != want {
					t.Fatalf("get(%d).wire = %q, want %q", seq, e.wire, want)
				}
			}
			var want int64
			for seq := tc.first; seq <= tc.head; seq++ {
				want += int64(len(fmt.Sprintf("e%d", seq)))
			}
			if r.bytes != want {
				t.Fatalf("bytes = %d, want %d", r.bytes, want)
			}
			evicted := tc.first > 1
			if r.hasBeforeID != evicted {
				t.Fatalf("hasBeforeID = %v, want %v", r.hasBeforeID, evicted)
			}
			if evicted && r.beforeID != fmt.Sprint(tc.first-1) {
				t.Fatalf("beforeID = %q, want %q", r.beforeID, fmt.Sprint(tc.first-1))
			}
		})
	}
}

func TestRingEvictionByBytes(t *testing.T) {
	tests := []struct {
		name        string
		maxBytes    int64
		sizes       []int
		first, head uint64
		bytes       int64
	}{
		{name: "fits", maxBytes: 30, sizes: []int{10, 10, 10}, first: 1, head: 3, bytes: 30},
		{name: "one over", maxBytes: 30, sizes: []int{10, 10, 10, 1}, first: 2, head: 4, bytes: 21},
		{name: "big entry evicts several", maxBytes: 30, sizes: []int{5, 5, 5, 5, 25}, first: 4, head: 5, bytes: 30},
		{name: "budget reached exactly", maxBytes: 30, sizes: []int{5, 5, 5, 5, 20}, first: 3, head: 5, bytes: 30},
		{name: "newest fills the budget alone", maxBytes: 30, sizes: []int{5, 5, 30}, first: 3, head: 3, bytes: 30},
		{name: "oversized newest kept alone", maxBytes: 30, sizes: []int{10, 100}, first: 2, head: 2, bytes: 100},
		{name: "oversized replaced by next", maxBytes: 30, sizes: []int{100, 1}, first: 2, head: 2, bytes: 1},
		{name: "zero disables", maxBytes: 0, sizes: []int{1000, 1000, 1000}, first: 1, head: 3, bytes: 3000},
		{name: "empty blocks", maxBytes: 1, sizes: []int{0, 0, 0}, first: 1, head: 3, bytes: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(100, tc.maxBytes, 0)
			for i, n := range tc.sizes {
				r.push(fmt.Sprint(i+1), true, bytes.Repeat([]byte{'x'}, n), ringEpoch)
			}
			checkSpan(t, r, tc.first, tc.head)
			if r.bytes != tc.bytes {
				t.Fatalf("bytes = %d, want %d", r.bytes, tc.bytes)
			}
			var total int64
			for _, n := range tc.sizes {
				total += int64(n)
			}
			if r.pushed != total {
				t.Fatalf("pushed = %d, want %d", r.pushed, total)
			}
		})
	}
}

func TestRingEvictionByAge(t *testing.T) {
	const maxAge = 10 * time.Second
	tests := []struct {
		name        string
		maxAge      time.Duration
		ages        []time.Duration // arrival offsets from ringEpoch, in push order
		first, head uint64
	}{
		{name: "all young", maxAge: maxAge, ages: []time.Duration{0, 1 * time.Second, 2 * time.Second}, first: 1, head: 3},
		{name: "exactly max age kept", maxAge: maxAge, ages: []time.Duration{0, maxAge}, first: 1, head: 2},
		{name: "just over max age dropped", maxAge: maxAge, ages: []time.Duration{0, maxAge + time.Nanosecond}, first: 2, head: 2},
		{name: "several expire at once", maxAge: maxAge, ages: []time.Duration{0, time.Second, 2 * time.Second, 12 * time.Second}, first: 3, head: 4},
		{name: "newest kept however old the rest", maxAge: maxAge, ages: []time.Duration{0, time.Hour}, first: 2, head: 2},
		{name: "zero disables", maxAge: 0, ages: []time.Duration{0, time.Hour, 2 * time.Hour}, first: 1, head: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(100, 0, tc.maxAge)
			for i, a := range tc.ages {
				r.push(fmt.Sprint(i+1), true, []byte("x"), ringEpoch.Add(a))
			}
			checkSpan(t, r, tc.first, tc.head)
			_, _, oldest := r.span()
			if want := ringEpoch.Add(tc.ages[tc.first-1]); !oldest.Equal(want) {
				t.Fatalf("span oldest = %v, want %v", oldest, want)
			}
		})
	}
}

func TestRingExpireOnlyDropsOldEntries(t *testing.T) {
	r := newRing(100, 0, 10*time.Second)
	for i := 0; i < 5; i++ {
		r.push(fmt.Sprint(i+1), true, []byte("x"), ringEpoch.Add(time.Duration(i)*time.Second))
	}
	r.expire(ringEpoch.Add(12 * time.Second)) // entries at 0s and 1s are older than 10s
	checkSpan(t, r, 3, 5)
	r.expire(ringEpoch.Add(time.Hour))
	checkSpan(t, r, 5, 5) // the newest stays whatever its age
}

func TestRingAfter(t *testing.T) {
	type block struct {
		id    string
		hasID bool
	}
	tests := []struct {
		name     string
		capacity int
		blocks   []block
		query    string
		want     uint64
		ok       bool
	}{
		{name: "single", capacity: 10, blocks: []block{{"a", true}}, query: "a", want: 2, ok: true},
		{name: "middle", capacity: 10, blocks: []block{{"a", true}, {"b", true}, {"c", true}}, query: "b", want: 3, ok: true},
		{name: "unknown", capacity: 10, blocks: []block{{"a", true}}, query: "z", ok: false},
		{name: "inherited id is not indexed", capacity: 10, blocks: []block{{"a", true}, {"a", false}}, query: "a", want: 2, ok: true},
		{name: "inherited only", capacity: 10, blocks: []block{{"a", false}}, query: "a", ok: false},
		{name: "reused id resolves to newest", capacity: 10, blocks: []block{{"a", true}, {"b", true}, {"a", true}, {"c", true}}, query: "a", want: 4, ok: true},
		{name: "empty id reset", capacity: 10, blocks: []block{{"a", true}, {"", true}, {"", false}}, query: "", want: 3, ok: true},
		{name: "evicted id forgotten", capacity: 2, blocks: []block{{"a", true}, {"b", true}, {"c", true}}, query: "a", ok: false},
		{name: "reused id survives eviction of its older copy", capacity: 2, blocks: []block{{"a", true}, {"b", true}, {"a", true}}, query: "a", want: 4, ok: true},
		{name: "newest copy evicted", capacity: 2, blocks: []block{{"a", true}, {"a", true}, {"b", true}, {"c", true}}, query: "a", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(tc.capacity, 0, 0)
			for _, b := range tc.blocks {
				r.push(b.id, b.hasID, []byte("x"), ringEpoch)
			}
			got, ok := r.after(tc.query)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Fatalf("after(%q) = %d, %v; want %d, %v", tc.query, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestRingBeforeIDTracksIDInForce(t *testing.T) {
	r := newRing(2, 0, 0)
	r.push("a", true, []byte("1"), ringEpoch)
	r.push("a", false, []byte("2"), ringEpoch) // no id field: "a" stays in force
	r.push("b", true, []byte("3"), ringEpoch)
	if !r.hasBeforeID || r.beforeID != "a" {
		t.Fatalf("beforeID = %q (%v), want \"a\"", r.beforeID, r.hasBeforeID)
	}
	r.push("b", false, []byte("4"), ringEpoch) // evicts seq 2, which had "a" in force
	if r.beforeID != "a" {
		t.Fatalf("beforeID = %q, want \"a\"", r.beforeID)
	}
	r.push("c", true, []byte("5"), ringEpoch) // evicts seq 3 ("b")
	if r.beforeID != "b" {
		t.Fatalf("beforeID = %q, want \"b\"", r.beforeID)
	}
}

func TestRingBytesFrom(t *testing.T) {
	// Capacity 4 with sizes 1..6: seqs 3..6 remain (3+4+5+6 = 18 bytes).
	r := newRing(4, 0, 0)
	for i := 1; i <= 6; i++ {
		r.push(fmt.Sprint(i), true, bytes.Repeat([]byte{'x'}, i), ringEpoch)
	}
	checkSpan(t, r, 3, 6)
	tests := []struct {
		seq  uint64
		want int64
	}{
		{seq: 0, want: 18},  // before the ring: everything it holds
		{seq: 1, want: 18},  // evicted seq: everything it holds
		{seq: 3, want: 18},  // oldest
		{seq: 4, want: 15},  // 4+5+6
		{seq: 5, want: 11},  // 5+6
		{seq: 6, want: 6},   // newest
		{seq: 7, want: 0},   // caught up
		{seq: 100, want: 0}, // beyond the head
	}
	for _, tc := range tests {
		if got := r.bytesFrom(tc.seq); got != tc.want {
			t.Errorf("bytesFrom(%d) = %d, want %d", tc.seq, got, tc.want)
		}
	}
}

func TestRingAppendRange(t *testing.T) {
	// Capacity 4 holding seqs 3..6 with wires "c3", "d4", "e5", "f6".
	r := newRing(4, 0, 0)
	for i := 1; i <= 6; i++ {
		r.push(fmt.Sprint(i), true, []byte(fmt.Sprintf("%c%d", 'a'+i-1, i)), ringEpoch)
	}
	tests := []struct {
		name     string
		from, to uint64
		maxBytes int
		want     string
		next     uint64
	}{
		{name: "all", from: 3, to: 6, maxBytes: 100, want: "c3d4e5f6", next: 7},
		{name: "from evicted clamps to oldest", from: 1, to: 6, maxBytes: 100, want: "c3d4e5f6", next: 7},
		{name: "to beyond head", from: 5, to: 50, maxBytes: 100, want: "e5f6", next: 7},
		{name: "inner range", from: 4, to: 5, maxBytes: 100, want: "d4e5", next: 6},
		{name: "single", from: 6, to: 6, maxBytes: 100, want: "f6", next: 7},
		{name: "byte limit", from: 3, to: 6, maxBytes: 5, want: "c3d4", next: 5},
		{name: "byte limit exact", from: 3, to: 6, maxBytes: 6, want: "c3d4e5", next: 6},
		{name: "first entry even over the limit", from: 3, to: 6, maxBytes: 1, want: "c3", next: 4},
		{name: "empty range", from: 6, to: 5, maxBytes: 100, want: "", next: 6},
		{name: "past head", from: 7, to: 9, maxBytes: 100, want: "", next: 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, next := r.appendRange(nil, tc.from, tc.to, tc.maxBytes)
			if string(got) != tc.want || next != tc.next {
				t.Fatalf("appendRange(%d, %d, %d) = %q, %d; want %q, %d", tc.from, tc.to, tc.maxBytes, got, next, tc.want, tc.next)
			}
		})
	}
}

func TestRingAppendRangeDoesNotAliasEntries(t *testing.T) {
	r := newRing(4, 0, 0)
	r.push("1", true, []byte("one"), ringEpoch)
	r.push("2", true, []byte("two"), ringEpoch)
	out, _ := r.appendRange(nil, 1, 2, 100)
	for i := range out {
		out[i] = '!'
	}
	for seq, want := range map[uint64]string{1: "one", 2: "two"} {
		if e, _ := r.get(seq); string(e.wire) != want {
			t.Fatalf("entry %d changed to %q through appendRange's result", seq, e.wire)
		}
	}
}

func TestRingSpan(t *testing.T) {
	r := newRing(3, 0, 0)
	for i := 1; i <= 5; i++ {
		r.push(fmt.Sprint(i), true, bytes.Repeat([]byte{'x'}, i), ringEpoch.Add(time.Duration(i)*time.Minute))
	}
	n, b, oldest := r.span()
	if n != 3 || b != 3+4+5 || !oldest.Equal(ringEpoch.Add(3*time.Minute)) {
		t.Fatalf("span() = %d, %d, %v; want 3, 12, %v", n, b, oldest, ringEpoch.Add(3*time.Minute))
	}
}

// TestRingMatchesModel pushes random blocks through small rings, so the
// circular buffer wraps many times, and compares every lookup with a plain
// slice of everything pushed after each step.
func TestRingMatchesModel(t *testing.T) {
	type pushed struct {
		id    string
		hasID bool
		wire  []byte
		at    time.Time
	}
	configs := []struct {
		capacity int
		maxBytes int64
		maxAge   time.Duration
	}{
		{capacity: 1},
		{capacity: 3},
		{capacity: 7, maxBytes: 40},
		{capacity: 16, maxBytes: 64, maxAge: 20 * time.Second},
		{capacity: 5, maxAge: 5 * time.Second},
	}
	for _, cfg := range configs {
		t.Run(fmt.Sprintf("cap%d_bytes%d_age%s", cfg.capacity, cfg.maxBytes, cfg.maxAge), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(cfg.capacity), uint64(cfg.maxBytes)))
			r := newRing(cfg.capacity, cfg.maxBytes, cfg.maxAge)
			var all []pushed
			lo := 0 // index in all of the oldest entry the model keeps
			var bytesHeld int64
			now := ringEpoch
			inForce := ""
			for step := 0; step < 500; step++ {
				now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
				p := pushed{hasID: rng.IntN(3) > 0, wire: bytes.Repeat([]byte{byte('a' + step%26)}, rng.IntN(12)), at: now}
				if p.hasID {
					inForce = fmt.Sprint(rng.IntN(20)) // ids repeat
				}
				p.id = inForce
				seq := r.push(p.id, p.hasID, p.wire, p.at)
				all = append(all, p)
				bytesHeld += int64(len(p.wire))
				if seq != uint64(len(all)) {
					t.Fatalf("step %d: seq %d, want %d", step, seq, len(all))
				}

				// The model's eviction: count, then bytes, then age, always
				// keeping the newest entry.
				drop := func() { bytesHeld -= int64(len(all[lo].wire)); lo++ }
				for len(all)-lo > cfg.capacity {
					drop()
				}
				for len(all)-lo > 1 && cfg.maxBytes > 0 && bytesHeld > cfg.maxBytes {
					drop()
				}
				for len(all)-lo > 1 && cfg.maxAge > 0 && now.Sub(all[lo].at) > cfg.maxAge {
					drop()
				}

				first, head := uint64(lo+1), uint64(len(all))
				checkSpan(t, r, first, head)
				if r.bytes != bytesHeld {
					t.Fatalf("step %d: bytes %d, want %d", step, r.bytes, bytesHeld)
				}
				var suffix int64
				for i := len(all) - 1; i >= lo; i-- {
					suffix += int64(len(all[i].wire))
					seq := uint64(i + 1)
					e, _ := r.get(seq)
					if !bytes.Equal(e.wire, all[i].wire) || e.id != all[i].id || e.hasID != all[i].hasID || !e.at.Equal(all[i].at) {
						t.Fatalf("step %d: get(%d) = %+v, want %+v", step, seq, e, all[i])
					}
					if got := r.bytesFrom(seq); got != suffix {
						t.Fatalf("step %d: bytesFrom(%d) = %d, want %d", step, seq, got, suffix)
					}
				}
				if r.hasBeforeID != (lo > 0) || (lo > 0 && r.beforeID != all[lo-1].id) {
					t.Fatalf("step %d: beforeID %q (%v), want the id in force at seq %d", step, r.beforeID, r.hasBeforeID, lo)
				}
				for id := 0; id < 20; id++ {
					key := fmt.Sprint(id)
					var want uint64
					for i := len(all) - 1; i >= lo; i-- {
						if all[i].hasID && all[i].id == key {
							want = uint64(i + 2)
							break
						}
					}
					got, ok := r.after(key)
					if ok != (want != 0) || got != want {
						t.Fatalf("step %d: after(%q) = %d, %v; want %d", step, key, got, ok, want)
					}
				}
				if len(r.byID) > r.n {
					t.Fatalf("step %d: byID holds %d ids for %d entries", step, len(r.byID), r.n)
				}
			}
		})
	}
}
