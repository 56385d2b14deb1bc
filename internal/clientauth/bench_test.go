package clientauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// The cost of one Check, for docs/benchmarks.md:
//   go test -run XXX -bench . -benchtime 2s ./internal/clientauth/

func benchAuth(b *testing.B, cfg Config) *Auth {
	b.Helper()
	a, err := New(cfg, testLogger())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.Close)
	return a
}

func benchCheck(b *testing.B, a *Auth, r func(i int) Request) {
	b.Helper()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if d := a.Check(ctx, r(i)); !d.Allow {
			b.Fatalf("refused: %+v", d)
		}
	}
}

func BenchmarkDelegate(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	b.Cleanup(srv.Close)
	b.Run("cache hit", func(b *testing.B) {
		a := benchAuth(b, Config{Delegate: &DelegateConfig{URL: srv.URL}})
		benchCheck(b, a, func(int) Request {
			return Request{Path: "/feeds/a", Header: header("Cookie", "session=one")}
		})
	})
	b.Run("cache miss (auth server on loopback)", func(b *testing.B) {
		a := benchAuth(b, Config{Delegate: &DelegateConfig{URL: srv.URL}})
		benchCheck(b, a, func(i int) Request {
			return Request{Path: "/feeds/a", Header: header("Cookie", "session="+strconv.Itoa(i))}
		})
	})
}

func BenchmarkJWT(b *testing.B) {
	claims := jwt.MapClaims{"aud": testAudience, "exp": time.Now().Add(time.Hour).Unix()}
	b.Run("HS256", func(b *testing.B) {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
		if err != nil {
			b.Fatal(err)
		}
		a := benchAuth(b, Config{JWT: &JWTConfig{HS256Secret: testSecret, Audience: testAudience}})
		benchCheck(b, a, func(int) Request { return Request{Path: "/feeds/a", Header: header("Authorization", "Bearer "+tok)} })
	})
	b.Run("ES256 from a JWKS", func(b *testing.B) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		jwk, err := jwkset.NewJWKFromKey(&key.PublicKey, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: "k1", ALG: jwkset.AlgES256, USE: jwkset.UseSig}})
		if err != nil {
			b.Fatal(err)
		}
		body, _ := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}))
		b.Cleanup(srv.Close)
		t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
		t.Header["kid"] = "k1"
		tok, err := t.SignedString(key)
		if err != nil {
			b.Fatal(err)
		}
		a := benchAuth(b, Config{JWT: &JWTConfig{JWKSURL: srv.URL, Audience: testAudience}})
		benchCheck(b, a, func(int) Request { return Request{Path: "/feeds/a", Header: header("Authorization", "Bearer "+tok)} })
	})
}
