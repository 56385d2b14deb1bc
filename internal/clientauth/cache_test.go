package clientauth

import (
	"net/http"
	"testing"
	"time"
)

func TestCacheKey(t *testing.T) {
	names := []string{"Authorization", "Cookie"}
	base := makeKey(header("Cookie", "a=1"), names, "/s")
	tests := []struct {
		name  string
		fwd   http.Header
		uri   string
		equal bool
	}{
		{"same", header("Cookie", "a=1"), "/s", true},
		{"other stream", header("Cookie", "a=1"), "/t", false},
		{"other query", header("Cookie", "a=1"), "/s?x=1", false},
		{"other cookie", header("Cookie", "a=2"), "/s", false},
		{"value moved to another header", header("Authorization", "a=1"), "/s", false},
		{"split value", header("Cookie", "a=", "Cookie", "1"), "/s", false},
		{"value moved into the uri", header(), "a=1/s", false},
	}
	for _, tt := range tests {
		if got := makeKey(tt.fwd, names, tt.uri) == base; got != tt.equal {
			t.Errorf("%s: equal = %v, want %v", tt.name, got, tt.equal)
		}
	}
}

func TestCacheEviction(t *testing.T) {
	clk := newFakeClock()
	c := newVerdictCache(time.Minute, 3)
	k := func(s string) cacheKey { return makeKey(nil, nil, s) }
	for _, s := range []string{"a", "b", "c"} {
		c.put(k(s), allow(time.Time{}, s), clk.Now())
		clk.Advance(time.Second)
	}
	// Full: the oldest goes.
	c.put(k("d"), allow(time.Time{}, "d"), clk.Now())
	if _, ok := c.get(k("a"), clk.Now()); ok {
		t.Error("oldest entry a kept beyond the bound")
	}
	for _, s := range []string{"b", "c", "d"} {
		if _, ok := c.get(k(s), clk.Now()); !ok {
			t.Errorf("entry %s lost", s)
		}
	}
	// b and c expire: both go before d is touched, though the cache has
	// room for one more.
	clk.Advance(time.Minute - 500*time.Millisecond) // now t=62.5s: b (put at 1s) and c (2s) expired, d (3s) not
	c.put(k("e"), allow(time.Time{}, "e"), clk.Now())
	if n := c.len(); n != 2 {
		t.Errorf("len = %d after expiry, want 2 (d, e)", n)
	}
	if _, ok := c.get(k("d"), clk.Now()); !ok {
		t.Error("unexpired d evicted")
	}
	// A read past expiry misses and drops the entry.
	clk.Advance(time.Minute)
	if _, ok := c.get(k("d"), clk.Now()); ok {
		t.Error("expired d served")
	}
	if n := c.len(); n != 1 {
		t.Errorf("len = %d, want 1", n)
	}
}

func TestCacheReturnsCopies(t *testing.T) {
	clk := newFakeClock()
	c := newVerdictCache(time.Minute, 10)
	d := refuse(401, ReasonDenied, "")
	d.Header = header("WWW-Authenticate", "Basic")
	c.put(k0, d, clk.Now())
	d.Header.Set("WWW-Authenticate", "changed by the caller")
	got, _ := c.get(k0, clk.Now())
	got.Header.Set("WWW-Authenticate", "changed by a reader")
	again, _ := c.get(k0, clk.Now())
	if v := again.Header.Get("WWW-Authenticate"); v != "Basic" {
		t.Fatalf("cached header = %q, want Basic", v)
	}
}

var k0 = makeKey(nil, nil, "/")
