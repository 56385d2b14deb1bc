package clientauth

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testAudience = "ssemesh"
	testIssuer   = "https://idp.example"
)

// sign makes a token with method and key, and kid in its header when set.
func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

func signHS(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	return sign(t, jwt.SigningMethodHS256, []byte(testSecret), "", claims)
}

func bearer(tok string) Request {
	return Request{Path: "/feeds/a", Header: header("Authorization", "Bearer "+tok)}
}

func TestJWTHS256(t *testing.T) {
	clk := newFakeClock()
	now := clk.Now()
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	claims := func(kv ...any) jwt.MapClaims {
		c := jwt.MapClaims{"aud": testAudience, "iss": testIssuer, "exp": at(time.Hour), "sub": "user-1"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(c, kv[i].(string))
			} else {
				c[kv[i].(string)] = kv[i+1]
			}
		}
		return c
	}
	good := signHS(t, claims())
	expired := signHS(t, claims("exp", at(-time.Minute)))
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		r       Request
		allow   bool
		status  int
		reason  string
		expires time.Time // for an allowed check
		wwwAuth string
	}{
		{"valid", bearer(good), true, 0, "", now.Add(time.Hour), ""},
		{"lower-case scheme", Request{Path: "/x", Header: header("Authorization", "bearer "+good)}, true, 0, "", now.Add(time.Hour), ""},
		{"no exp never expires", bearer(signHS(t, claims("exp", nil))), true, 0, "", time.Time{}, ""},
		{"expired within the leeway", bearer(signHS(t, claims("exp", at(-2*time.Second)))), true, 0, "", now.Add(-2 * time.Second), ""},
		{"aud list holding ours", bearer(signHS(t, claims("aud", []string{"other", testAudience}))), true, 0, "", now.Add(time.Hour), ""},
		{"nbf passed", bearer(signHS(t, claims("nbf", at(-time.Minute)))), true, 0, "", now.Add(time.Hour), ""},
		{"expired", bearer(expired), false, 401, ReasonExpired, time.Time{}, `Bearer error="invalid_token"`},
		{"nbf in the future", bearer(signHS(t, claims("nbf", at(time.Minute)))), false, 401, ReasonNotYetValid, time.Time{}, `Bearer error="invalid_token"`},
		{"wrong audience", bearer(signHS(t, claims("aud", "other"))), false, 401, ReasonWrongAudience, time.Time{}, `Bearer error="invalid_token"`},
		{"no audience", bearer(signHS(t, claims("aud", nil))), false, 401, ReasonWrongAudience, time.Time{}, `Bearer error="invalid_token"`},
		{"wrong audience reported before expiry", bearer(signHS(t, claims("aud", "other", "exp", at(-time.Hour)))), false, 401, ReasonWrongAudience, time.Time{}, `Bearer error="invalid_token"`},
		{"wrong issuer", bearer(signHS(t, claims("iss", "https://evil.example"))), false, 401, ReasonWrongIssuer, time.Time{}, `Bearer error="invalid_token"`},
		{"no issuer", bearer(signHS(t, claims("iss", nil))), false, 401, ReasonWrongIssuer, time.Time{}, `Bearer error="invalid_token"`},
		{"other secret", bearer(sign(t, jwt.SigningMethodHS256, []byte(testSecret+"x"), "", claims())), false, 401, ReasonInvalidToken, time.Time{}, `Bearer error="invalid_token"`},
		{"HS384 refused", bearer(sign(t, jwt.SigningMethodHS384, []byte(testSecret), "", claims())), false, 401, ReasonInvalidToken, time.Time{}, `Bearer error="invalid_token"`},
		{"alg none refused", bearer(none), false, 401, ReasonInvalidToken, time.Time{}, `Bearer error="invalid_token"`},
		{"malformed", bearer("not.a.token"), false, 401, ReasonInvalidToken, time.Time{}, `Bearer error="invalid_token"`},
		{"exp of the wrong type", bearer(signHS(t, claims("exp", "tomorrow"))), false, 401, ReasonInvalidToken, time.Time{}, `Bearer error="invalid_token"`},
		{"missing", Request{Path: "/x", Header: http.Header{}}, false, 401, ReasonMissingCredentials, time.Time{}, "Bearer"},
		{"basic auth is no token", Request{Path: "/x", Header: header("Authorization", "Basic dXNlcjpwdw==")}, false, 401, ReasonMissingCredentials, time.Time{}, "Bearer"},
		{"from the cookie", Request{Path: "/x", Header: header("Cookie", "theme=dark; token="+good)}, true, 0, "", now.Add(time.Hour), ""},
		{"other cookie is no token", Request{Path: "/x", Header: header("Cookie", "session="+good)}, false, 401, ReasonMissingCredentials, time.Time{}, "Bearer"},
		{"from the query", Request{Path: "/x", Query: url.Values{QueryParam: {good}}}, true, 0, "", now.Add(time.Hour), ""},
		{"header before cookie", Request{Path: "/x", Header: header("Authorization", "Bearer "+expired, "Cookie", "token="+good)}, false, 401, ReasonExpired, time.Time{}, `Bearer error="invalid_token"`},
		{"cookie before query", Request{Path: "/x", Header: header("Cookie", "token="+expired), Query: url.Values{QueryParam: {good}}}, false, 401, ReasonExpired, time.Time{}, `Bearer error="invalid_token"`},
	}
	a := newTestAuth(t, Config{JWT: &JWTConfig{
		HS256Secret: testSecret, Audience: testAudience, Issuer: testIssuer, Cookie: "token",
	}}, clk, options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := check(a, tt.r)
			wantDecision(t, d, tt.allow, tt.status, tt.reason)
			if !d.Expires.Equal(tt.expires) {
				t.Errorf("Expires = %v, want %v", d.Expires, tt.expires)
			}
			if got := d.Header.Get("WWW-Authenticate"); got != tt.wwwAuth {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wwwAuth)
			}
		})
	}
	if ok, detail := a.Healthy(); !ok {
		t.Errorf("Healthy = false (%s) with a secret only", detail)
	}
}

func TestJWTPaths(t *testing.T) {
	clk := newFakeClock()
	a := newTestAuth(t, Config{JWT: &JWTConfig{HS256Secret: testSecret, Audience: testAudience, PathsClaim: "streams"}}, clk, options{})
	tok := func(paths any) string {
		c := jwt.MapClaims{"aud": testAudience}
		if paths != nil {
			c["streams"] = paths
		}
		return signHS(t, c)
	}
	tests := []struct {
		name  string
		claim any
		path  string
		allow bool
	}{
		{"glob matches", []string{"/other", "/feeds/*"}, "/feeds/a", true},
		{"exact path", []string{"/feeds/a"}, "/feeds/a", true},
		{"star admits all", []string{"*"}, "/any/thing/deep", true},
		{"escaped path", []string{"/feeds/a%20b"}, "/feeds/a%20b", true},
		{"glob stays in its segment", []string{"/feeds/*"}, "/feeds/a/b", false},
		{"glob needs a segment", []string{"/feeds/*"}, "/feeds", false},
		{"other path", []string{"/feeds/*"}, "/admin/x", false},
		{"empty list", []string{}, "/feeds/a", false},
		{"claim missing", nil, "/feeds/a", false},
		{"claim not a list", "/feeds/a", "/feeds/a", false},
		{"non-string in the list", []any{"/feeds/a", 7}, "/feeds/a", false},
		{"bad pattern matches nothing", []string{"/feeds/["}, "/feeds/[", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bearer(tok(tt.claim))
			r.Path = tt.path
			d := check(a, r)
			wantDecision(t, d, tt.allow, 403, ReasonWrongPath)
			if !tt.allow {
				if got := d.Header.Get("WWW-Authenticate"); got != `Bearer error="insufficient_scope"` {
					t.Errorf("WWW-Authenticate = %q", got)
				}
			}
		})
	}
}

// TestJWTAlgorithmsFollowKeys: RS256 is not accepted when only a secret is
// configured, whatever the token says.
func TestJWTAlgorithmsFollowKeys(t *testing.T) {
	a := newTestAuth(t, Config{JWT: &JWTConfig{HS256Secret: testSecret, Audience: testAudience}}, newFakeClock(), options{})
	k := rsaKey(t)
	tok := sign(t, jwt.SigningMethodRS256, k, "k1", jwt.MapClaims{"aud": testAudience})
	wantDecision(t, check(a, bearer(tok)), false, 401, ReasonInvalidToken)
}
