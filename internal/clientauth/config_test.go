package clientauth

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func TestValidate(t *testing.T) {
	okJWT := func(f func(*JWTConfig)) Config {
		j := &JWTConfig{HS256Secret: testSecret, Audience: "ssemesh"}
		f(j)
		return Config{JWT: j}
	}
	okDelegate := func(f func(*DelegateConfig)) Config {
		d := &DelegateConfig{URL: "https://auth.example/check"}
		f(d)
		return Config{Delegate: d}
	}
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"neither", Config{}, "one of delegate or jwt is required"},
		{"both", Config{Delegate: &DelegateConfig{URL: "http://a"}, JWT: &JWTConfig{}}, "delegate, jwt: set only one"},
		{"delegate minimal", okDelegate(func(*DelegateConfig) {}), ""},
		{"delegate full", okDelegate(func(d *DelegateConfig) {
			d.Forward, d.Cache, d.Timeout, d.MaxConcurrent = []string{"X-Api-Key"}, dur(0), time.Second, 4
		}), ""},
		{"delegate no url", okDelegate(func(d *DelegateConfig) { d.URL = "" }), "delegate.url: required"},
		{"delegate ftp url", okDelegate(func(d *DelegateConfig) { d.URL = "ftp://a/b" }), "delegate.url: must be an http or https URL"},
		{"delegate url without host", okDelegate(func(d *DelegateConfig) { d.URL = "http:///x" }), "delegate.url:"},
		{"delegate bad header", okDelegate(func(d *DelegateConfig) { d.Forward = []string{"Cookie", "Bad Header"} }), "delegate.forward[1]:"},
		{"delegate forwards X-Forwarded-For", okDelegate(func(d *DelegateConfig) { d.Forward = []string{"x-forwarded-for"} }), "delegate.forward[0]: x-forwarded-for is set by the proxy"},
		{"delegate forwards X-Original-URI", okDelegate(func(d *DelegateConfig) { d.Forward = []string{"X-Original-URI"} }), "delegate.forward[0]:"},
		{"delegate negative cache", okDelegate(func(d *DelegateConfig) { d.Cache = dur(-time.Second) }), "delegate.cache:"},
		{"delegate negative timeout", okDelegate(func(d *DelegateConfig) { d.Timeout = -1 }), "delegate.timeout:"},
		{"delegate negative max", okDelegate(func(d *DelegateConfig) { d.MaxConcurrent = -1 }), "delegate.max_concurrent:"},
		{"jwt hs256", okJWT(func(*JWTConfig) {}), ""},
		{"jwt jwks", okJWT(func(j *JWTConfig) { j.HS256Secret, j.JWKSURL = "", "https://idp.example/jwks" }), ""},
		{"jwt both", okJWT(func(j *JWTConfig) { j.JWKSURL = "https://idp.example/jwks" }), ""},
		{"jwt no key", okJWT(func(j *JWTConfig) { j.HS256Secret = "" }), "jwt: one of hs256_secret or jwks_url is required"},
		{"jwt short secret", okJWT(func(j *JWTConfig) { j.HS256Secret = "short" }), "jwt.hs256_secret: must be at least 32 bytes"},
		{"jwt no audience", okJWT(func(j *JWTConfig) { j.Audience = "" }), "jwt.audience: required"},
		{"jwt bad jwks url", okJWT(func(j *JWTConfig) { j.JWKSURL = "idp.example/jwks" }), "jwt.jwks_url:"},
		{"jwt bad cookie", okJWT(func(j *JWTConfig) { j.Cookie = "a;b" }), "jwt.cookie:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Validate: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewRefusesInvalidConfig(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil || !strings.HasPrefix(err.Error(), "clientauth: ") {
		t.Fatalf("New: %v, want a clientauth error", err)
	}
}

func TestDelegateDefaults(t *testing.T) {
	got := DelegateConfig{URL: "http://a", Forward: []string{"cookie", "X-Api-Key", "Cookie"}}.withDefaults()
	if want := []string{"Cookie", "X-Api-Key"}; !reflect.DeepEqual(got.Forward, want) {
		t.Errorf("Forward = %q, want %q", got.Forward, want)
	}
	if *got.Cache != DefaultCache || got.Timeout != DefaultTimeout || got.MaxConcurrent != DefaultMaxConcurrent {
		t.Errorf("defaults = %v %v %d", *got.Cache, got.Timeout, got.MaxConcurrent)
	}
	if got := (DelegateConfig{URL: "http://a"}).withDefaults().Forward; !reflect.DeepEqual(got, DefaultForward) {
		t.Errorf("default Forward = %q", got)
	}
	if got := (DelegateConfig{URL: "http://a", Cache: dur(0)}).withDefaults(); *got.Cache != 0 {
		t.Errorf("explicit zero cache became %v", *got.Cache)
	}
}

func TestStripToken(t *testing.T) {
	q := url.Values{"access_token": {"t1", "t2"}, "topic": {"a", "b"}, "x": {""}}
	tok, rest := StripToken(q)
	if tok != "t1" {
		t.Errorf("token = %q, want t1", tok)
	}
	if want := (url.Values{"topic": {"a", "b"}, "x": {""}}); !reflect.DeepEqual(rest, want) {
		t.Errorf("rest = %v, want %v", rest, want)
	}
	if len(q["access_token"]) != 2 {
		t.Error("StripToken changed its argument")
	}
	if tok, rest := StripToken(nil); tok != "" || len(rest) != 0 {
		t.Errorf("StripToken(nil) = %q, %v", tok, rest)
	}
}

func TestRequestURI(t *testing.T) {
	tests := []struct {
		r    Request
		want string
	}{
		{Request{Path: "/a", OriginalURI: "/a?b=1"}, "/a?b=1"},
		{Request{Path: "/a"}, "/a"},
		{Request{Path: "/a", Query: url.Values{"access_token": {"t"}}}, "/a"},
		{Request{Path: "/a", Query: url.Values{"access_token": {"t"}, "b": {"1"}}}, "/a?b=1"},
	}
	for _, tt := range tests {
		if got := tt.r.uri(); got != tt.want {
			t.Errorf("%+v.uri() = %q, want %q", tt.r, got, tt.want)
		}
	}
}

func TestReasonsStable(t *testing.T) {
	want := []string{"missing_credentials", "invalid_token", "expired", "not_yet_valid", "wrong_audience",
		"wrong_issuer", "wrong_path", "denied", "auth_unavailable", "timeout", "overloaded"}
	if got := Reasons(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Reasons() = %q, want %q", got, want)
	}
}
