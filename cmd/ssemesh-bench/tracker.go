package main

import (
	"bytes"
	"strconv"
)

// trackWindow is how far behind the newest sequence number a late event can
// still be told apart from a duplicate.
const trackWindow = 4096

// seqTracker classifies one client's sequence numbers as new or repeated. It
// remembers a sliding window of trackWindow numbers below the highest seen,
// in 512 bytes, so that reordered events within the window count as
// delivered, not as duplicates; one older than the window counts as a
// duplicate.
type seqTracker struct {
	started bool
	hi      int64
	bits    [trackWindow / 64]uint64
}

func (t *seqTracker) bit(seq int64) (word int, mask uint64) {
	i := uint64(seq) % trackWindow
	return int(i / 64), 1 << (i % 64)
}

// add records seq and reports whether it was new.
func (t *seqTracker) add(seq int64) bool {
	switch {
	case !t.started:
		t.started, t.hi = true, seq
	case seq > t.hi:
		if seq-t.hi >= trackWindow {
			t.bits = [trackWindow / 64]uint64{}
		} else {
			for s := t.hi + 1; s < seq; s++ {
				w, m := t.bit(s)
				t.bits[w] &^= m
			}
		}
		t.hi = seq
		w, m := t.bit(seq)
		t.bits[w] &^= m
	case t.hi-seq >= trackWindow:
		return false
	}
	w, m := t.bit(seq)
	if t.bits[w]&m != 0 {
		return false
	}
	t.bits[w] |= m
	return true
}

// parseBench extracts seq and t from a bench payload
// {"seq":N,"t":UNIXNANOS,...} without a JSON decoder: this runs for every
// event of every client.
func parseBench(data []byte) (seq, t int64, ok bool) {
	seq, ok1 := intField(data, `"seq":`)
	t, ok2 := intField(data, `"t":`)
	return seq, t, ok1 && ok2
}

func intField(data []byte, key string) (int64, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(key):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	v, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return v, err == nil
}
