package clientauth

import (
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestHistogramBuckets(t *testing.T) {
	c := newCounters()
	obs := []struct {
		d      time.Duration
		bucket int
	}{
		{0, 0},
		{300 * time.Microsecond, 0},
		{500 * time.Microsecond, 0}, // bounds are inclusive
		{3 * time.Millisecond, 3},   // (0.0025, 0.005]
		{time.Second, 10},           // (0.5, 1]
		{7 * time.Second, 13},       // above 5 s
	}
	var sum time.Duration
	for _, o := range obs {
		c.observe(allow(time.Time{}, ""), o.d)
		sum += o.d
	}
	h := c.snapshot().Latency
	want := make([]uint64, len(LatencyBounds)+1)
	for _, o := range obs {
		want[o.bucket]++
	}
	for i := range want {
		if h.Counts[i] != want[i] {
			t.Errorf("Counts[%d] = %d, want %d", i, h.Counts[i], want[i])
		}
	}
	if h.Count != uint64(len(obs)) {
		t.Errorf("Count = %d, want %d", h.Count, len(obs))
	}
	if math.Abs(h.Sum-sum.Seconds()) > 1e-9 {
		t.Errorf("Sum = %v, want %v", h.Sum, sum.Seconds())
	}
	cum := h.Cumulative()
	if cum[0.0005] != 3 || cum[0.005] != 4 || cum[1] != 5 || cum[5] != 5 {
		t.Errorf("Cumulative = %v", cum)
	}
}

// TestStatsMatchChecks runs known checks through both kinds of Auth and
// compares every counter.
func TestStatsMatchChecks(t *testing.T) {
	t.Run("jwt", func(t *testing.T) {
		clk := newFakeClock()
		a := newTestAuth(t, Config{JWT: &JWTConfig{HS256Secret: testSecret, Audience: "ssemesh"}}, clk, options{})
		good := signHS(t, jwt.MapClaims{"aud": "ssemesh", "exp": clk.Now().Add(time.Hour).Unix()})
		old := signHS(t, jwt.MapClaims{"aud": "ssemesh", "exp": clk.Now().Add(-time.Hour).Unix()})
		for _, tok := range []string{good, good, good, old, old, ""} {
			r := Request{Path: "/s", Header: http.Header{}}
			if tok != "" {
				r.Header.Set("Authorization", "Bearer "+tok)
			}
			check(a, r)
		}
		s := a.Stats()
		want := map[string]uint64{ReasonExpired: 2, ReasonMissingCredentials: 1}
		if s.Allowed != 3 {
			t.Errorf("Allowed = %d, want 3", s.Allowed)
		}
		for _, r := range Reasons() {
			if s.Refused[r] != want[r] {
				t.Errorf("Refused[%s] = %d, want %d", r, s.Refused[r], want[r])
			}
		}
		if s.Latency.Count != 6 || s.Latency.Sum <= 0 {
			t.Errorf("Latency Count = %d Sum = %v, want 6 and > 0", s.Latency.Count, s.Latency.Sum)
		}
		if s.AuthRequests != 0 || s.CacheHits != 0 || s.JWKSFetches != 0 {
			t.Errorf("delegate/jwks counters moved: %+v", s)
		}
	})
	t.Run("delegate", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Cookie") == "" {
				w.WriteHeader(http.StatusUnauthorized)
			}
		}))
		defer srv.Close()
		clk := newFakeClock()
		a := newTestAuth(t, Config{Delegate: &DelegateConfig{URL: srv.URL}}, clk, options{})
		for _, c := range []string{"a=1", "a=1", "a=2", "", ""} {
			check(a, Request{Path: "/s", Header: header("Cookie", c)})
		}
		s := a.Stats()
		if s.Allowed != 3 || s.Refused[ReasonDenied] != 2 {
			t.Errorf("Allowed = %d, denied = %d, want 3 and 2", s.Allowed, s.Refused[ReasonDenied])
		}
		if s.AuthRequests != 3 || s.CacheHits != 2 || s.Merged != 0 {
			t.Errorf("AuthRequests = %d CacheHits = %d Merged = %d, want 3, 2, 0", s.AuthRequests, s.CacheHits, s.Merged)
		}
		var n uint64
		for _, c := range s.Latency.Counts {
			n += c
		}
		if s.Latency.Count != 5 || n != 5 {
			t.Errorf("Latency Count = %d, bucket total = %d, want 5", s.Latency.Count, n)
		}
	})
}
