package clientauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

var (
	rsaOnce sync.Once
	rsaKeys [2]*rsa.PrivateKey // generated once: 2048-bit keys are slow under -race
)

func rsaKeyN(t *testing.T, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for j := range rsaKeys {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[j] = k
		}
	})
	return rsaKeys[i]
}

func rsaKey(t *testing.T) *rsa.PrivateKey { return rsaKeyN(t, 0) }

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwksServer serves the public halves of its keys; while down it drops
// every connection without an answer.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	down    atomic.Bool
	mu      sync.Mutex
	keys    []jwkset.JWKMarshal
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if s.down.Load() {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		s.mu.Lock()
		body, err := json.Marshal(jwkset.JWKSMarshal{Keys: s.keys})
		s.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// serve makes the server publish pub (a public key) under kid, besides
// those it publishes already.
func (s *jwksServer) serve(t *testing.T, kid string, alg jwkset.ALG, pub any) {
	t.Helper()
	k, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, ALG: alg, USE: jwkset.UseSig}})
	if err != nil {
		t.Fatalf("JWK %s: %v", kid, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k.Marshal())
}

func jwksAuth(t *testing.T, url string, clk *fakeClock, f func(*JWTConfig)) *Auth {
	t.Helper()
	cfg := &JWTConfig{JWKSURL: url, Audience: testAudience}
	if f != nil {
		f(cfg)
	}
	return newTestAuth(t, Config{JWT: cfg}, clk, options{})
}

func TestJWKSAlgorithms(t *testing.T) {
	rk, ek := rsaKey(t), ecKey(t)
	srv := newJWKSServer(t)
	srv.serve(t, "rsa-1", jwkset.AlgRS256, rk.Public())
	srv.serve(t, "ec-1", jwkset.AlgES256, ek.Public())
	clk := newFakeClock()
	a := jwksAuth(t, srv.URL, clk, nil)
	claims := jwt.MapClaims{"aud": testAudience, "exp": clk.Now().Add(time.Hour).Unix()}
	pubDER, err := x509.MarshalPKIXPublicKey(rk.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	other := rsaKeyN(t, 1)

	tests := []struct {
		name   string
		tok    string
		allow  bool
		reason string
	}{
		{"RS256", sign(t, jwt.SigningMethodRS256, rk, "rsa-1", claims), true, ""},
		{"ES256", sign(t, jwt.SigningMethodES256, ek, "ec-1", claims), true, ""},
		{"RS256 without kid", sign(t, jwt.SigningMethodRS256, rk, "", claims), true, ""},
		{"ES256 without kid", sign(t, jwt.SigningMethodES256, ek, "", claims), true, ""},
		{"RS256 by another key", sign(t, jwt.SigningMethodRS256, other, "rsa-1", claims), false, ReasonInvalidToken},
		{"RS256 naming the EC key", sign(t, jwt.SigningMethodRS256, rk, "ec-1", claims), false, ReasonInvalidToken},
		{"HS256 keyed with the public key PEM", sign(t, jwt.SigningMethodHS256, pubPEM, "rsa-1", claims), false, ReasonInvalidToken},
		{"HS256 keyed with the public key DER", sign(t, jwt.SigningMethodHS256, pubDER, "rsa-1", claims), false, ReasonInvalidToken},
		{"RS384 refused", sign(t, jwt.SigningMethodRS384, rk, "rsa-1", claims), false, ReasonInvalidToken},
		{"expired", sign(t, jwt.SigningMethodES256, ek, "ec-1", jwt.MapClaims{"aud": testAudience, "exp": clk.Now().Add(-time.Hour).Unix()}), false, ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := check(a, bearer(tt.tok))
			wantDecision(t, d, tt.allow, 401, tt.reason)
			if tt.allow && !d.Expires.Equal(clk.Now().Add(time.Hour).Truncate(time.Second)) {
				t.Errorf("Expires = %v", d.Expires)
			}
		})
	}
	if ok, detail := a.Healthy(); !ok {
		t.Errorf("Healthy = false (%s)", detail)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Errorf("%d fetches, want 1 (known keys need none)", n)
	}
}

// TestJWKSWithSecretToo: with both configured, each algorithm still uses
// only its own key.
func TestJWKSWithSecretToo(t *testing.T) {
	rk := rsaKey(t)
	srv := newJWKSServer(t)
	srv.serve(t, "rsa-1", jwkset.AlgRS256, rk.Public())
	a := jwksAuth(t, srv.URL, newFakeClock(), func(c *JWTConfig) { c.HS256Secret = testSecret })
	pubDER, err := x509.MarshalPKIXPublicKey(rk.Public())
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"aud": testAudience}
	wantDecision(t, check(a, bearer(signHS(t, claims))), true, 0, "")
	wantDecision(t, check(a, bearer(sign(t, jwt.SigningMethodRS256, rk, "rsa-1", claims))), true, 0, "")
	wantDecision(t, check(a, bearer(sign(t, jwt.SigningMethodHS256, pubDER, "rsa-1", claims))), false, 401, ReasonInvalidToken)
}

// TestJWKSRotation: a token naming a key id not yet known makes the set
// be fetched again (at most once per minGap), and verifies once the JWKS
// serves the key.
func TestJWKSRotation(t *testing.T) {
	old, next := ecKey(t), ecKey(t)
	srv := newJWKSServer(t)
	srv.serve(t, "k1", jwkset.AlgES256, old.Public())
	clk := newFakeClock()
	a := jwksAuth(t, srv.URL, clk, nil)
	claims := jwt.MapClaims{"aud": testAudience}
	tokOld := sign(t, jwt.SigningMethodES256, old, "k1", claims)
	tokNew := sign(t, jwt.SigningMethodES256, next, "k2", claims)

	wantDecision(t, check(a, bearer(tokOld)), true, 0, "") // waits for the first fetch
	// The first fetch was just now: an unknown kid does not fetch again
	// before minGap, and the token is refused.
	wantDecision(t, check(a, bearer(tokNew)), false, 401, ReasonInvalidToken)
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want 1 (rate bound)", n)
	}

	srv.serve(t, "k2", jwkset.AlgES256, next.Public())
	clk.Advance(testJWKSTiming.minGap)
	// Many checks naming the new key at once share one fetch.
	var wg sync.WaitGroup
	var allowed atomic.Int64
	for range 50 {
		wg.Go(func() {
			if check(a, bearer(tokNew)).Allow {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 50 {
		t.Errorf("%d of 50 checks with the new key allowed", got)
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2", n)
	}
	wantDecision(t, check(a, bearer(tokOld)), true, 0, "")
	if s := a.Stats(); s.JWKSFetches != 2 || s.JWKSFailures != 0 {
		t.Errorf("JWKSFetches = %d JWKSFailures = %d, want 2 and 0", s.JWKSFetches, s.JWKSFailures)
	}
}

// TestJWKSDownAtStart: with no keys, checks fail closed with 503 and the
// authorizer is unhealthy; when the JWKS comes back, the next check names
// an unknown key, fetches, and passes.
func TestJWKSDownAtStart(t *testing.T) {
	k := ecKey(t)
	srv := newJWKSServer(t)
	srv.serve(t, "k1", jwkset.AlgES256, k.Public())
	srv.down.Store(true)
	clk := newFakeClock()
	a := jwksAuth(t, srv.URL, clk, nil)
	tok := sign(t, jwt.SigningMethodES256, k, "k1", jwt.MapClaims{"aud": testAudience})

	wantDecision(t, check(a, bearer(tok)), false, 503, ReasonAuthUnavailable) // waited for the first fetch
	wantDecision(t, check(a, bearer(tok)), false, 503, ReasonAuthUnavailable) // within minGap: no fetch
	if ok, detail := a.Healthy(); ok || !strings.Contains(detail, "jwks") {
		t.Errorf("Healthy = %v, %q; want false naming jwks", ok, detail)
	}
	// A token without kid cannot be verified either.
	noKid := sign(t, jwt.SigningMethodES256, k, "", jwt.MapClaims{"aud": testAudience})
	wantDecision(t, check(a, bearer(noKid)), false, 503, ReasonAuthUnavailable)
	if s := a.Stats(); s.JWKSFetches != 1 || s.JWKSFailures != 1 || s.Refused[ReasonAuthUnavailable] != 3 {
		t.Errorf("Stats: fetches %d failures %d auth_unavailable %d, want 1, 1, 3", s.JWKSFetches, s.JWKSFailures, s.Refused[ReasonAuthUnavailable])
	}

	srv.down.Store(false)
	clk.Advance(testJWKSTiming.minGap)
	wantDecision(t, check(a, bearer(tok)), true, 0, "")
	wantDecision(t, check(a, bearer(noKid)), true, 0, "")
	if ok, detail := a.Healthy(); !ok {
		t.Errorf("Healthy = false (%s) after the JWKS came back", detail)
	}
}

// TestJWKSKeepsKeysWhenDown: a failed refresh keeps the keys it had, so
// known keys still verify, while unknown ones are 503 (the key may be one
// the failed fetch would have brought).
func TestJWKSKeepsKeysWhenDown(t *testing.T) {
	k := ecKey(t)
	srv := newJWKSServer(t)
	srv.serve(t, "k1", jwkset.AlgES256, k.Public())
	clk := newFakeClock()
	a := jwksAuth(t, srv.URL, clk, nil)
	tok := sign(t, jwt.SigningMethodES256, k, "k1", jwt.MapClaims{"aud": testAudience})
	wantDecision(t, check(a, bearer(tok)), true, 0, "")

	srv.down.Store(true)
	clk.Advance(testJWKSTiming.minGap)
	unknown := sign(t, jwt.SigningMethodES256, ecKey(t), "k9", jwt.MapClaims{"aud": testAudience})
	wantDecision(t, check(a, bearer(unknown)), false, 503, ReasonAuthUnavailable)
	wantDecision(t, check(a, bearer(tok)), true, 0, "")
	if ok, _ := a.Healthy(); ok {
		t.Error("Healthy after a failed fetch")
	}
}

// TestJWKSEmptySetKeepsKeys: a set without a usable key is a failed
// fetch, not a revocation of every key.
func TestJWKSEmptySetKeepsKeys(t *testing.T) {
	k := ecKey(t)
	srv := newJWKSServer(t)
	srv.serve(t, "k1", jwkset.AlgES256, k.Public())
	clk := newFakeClock()
	a := jwksAuth(t, srv.URL, clk, nil)
	tok := sign(t, jwt.SigningMethodES256, k, "k1", jwt.MapClaims{"aud": testAudience})
	wantDecision(t, check(a, bearer(tok)), true, 0, "")
	srv.mu.Lock()
	srv.keys = nil
	srv.mu.Unlock()
	clk.Advance(testJWKSTiming.minGap)
	check(a, bearer(sign(t, jwt.SigningMethodES256, k, "k2", jwt.MapClaims{"aud": testAudience}))) // asks for a fetch
	if ok, detail := a.Healthy(); ok || !strings.Contains(detail, "no usable key") {
		t.Errorf("Healthy = %v, %q; want false: no usable key", ok, detail)
	}
	wantDecision(t, check(a, bearer(tok)), true, 0, "")
}

// TestJWKSCloseReleasesWaiters: Close stops the refresh goroutine, even
// during a fetch, and a check waiting for that fetch returns.
func TestJWKSCloseReleasesWaiters(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // never answers; ends when the client gives up
	}))
	defer srv.Close()
	a, err := newAuth(Config{JWT: &JWTConfig{JWKSURL: srv.URL, Audience: testAudience}}, testLogger(),
		options{now: newFakeClock().Now, jwks: jwksTiming{refresh: time.Hour, retryMin: time.Hour, retryMax: time.Hour, minGap: time.Second, fetch: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodES256, ecKey(t), "k1", jwt.MapClaims{"aud": testAudience})
	got := make(chan Decision, 1)
	go func() { got <- check(a, bearer(tok)) }()
	recv(t, arrived, "the first fetch")
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	recv(t, closed, "Close to return")
	wantDecision(t, recv(t, got, "the waiting check"), false, 503, ReasonAuthUnavailable)
	wantDecision(t, check(a, bearer(tok)), false, 503, ReasonAuthUnavailable)
}
