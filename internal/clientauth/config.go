package clientauth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults for the fields of DelegateConfig left zero (nil for Cache).
const (
	DefaultCache         = 30 * time.Second
	DefaultTimeout       = 2 * time.Second
	DefaultMaxConcurrent = 32
)

// DefaultForward is the list of request headers sent to the auth server
// when DelegateConfig.Forward is empty: the two places a browser's
// EventSource carries credentials.
var DefaultForward = []string{"Authorization", "Cookie"}

// MinSecretLen is the shortest HS256 secret accepted, in bytes: RFC 7518
// §3.2 requires a key at least as long as the hash output.
const MinSecretLen = 32

// Config selects how one back end's clients are checked. Exactly one of
// Delegate and JWT is set. Errors from Validate name fields by their YAML
// names relative to the block this struct is decoded from.
type Config struct {
	Delegate *DelegateConfig `yaml:"delegate"`
	JWT      *JWTConfig      `yaml:"jwt"`
}

// DelegateConfig asks an auth server about every new client, the way
// nginx's auth_request and nchan's authorize do.
type DelegateConfig struct {
	// URL of the auth server, http or https. It is sent a GET carrying the
	// Forward headers, X-Original-URI and X-Forwarded-For.
	URL string `yaml:"url"`
	// Forward names the client request headers sent to the auth server;
	// empty means DefaultForward. No other client header is ever sent.
	Forward []string `yaml:"forward"`
	// Cache is how long the auth server's verdict (admit, 401 or 403; never
	// an error) is reused for the same forwarded headers and stream. nil
	// means DefaultCache; a pointer to 0 turns the cache off (concurrent
	// checks of one credential are still merged into one request). A
	// pointer is used because a plain Duration cannot tell "unset" from 0.
	Cache *time.Duration `yaml:"cache"`
	// Timeout bounds one check: waiting for a slot and the request together
	// (default DefaultTimeout).
	Timeout time.Duration `yaml:"timeout"`
	// MaxConcurrent bounds the requests in flight to the auth server
	// (default DefaultMaxConcurrent).
	MaxConcurrent int `yaml:"max_concurrent"`
}

// JWTConfig verifies a signed token locally (Mercure style). At least one
// of HS256Secret and JWKSURL is set; each enables only its own algorithms.
type JWTConfig struct {
	// HS256Secret enables HS256 tokens signed with this secret
	// (at least MinSecretLen bytes).
	HS256Secret string `yaml:"hs256_secret"`
	// JWKSURL enables RS256 and ES256 tokens signed by a key of this JSON
	// Web Key Set, fetched at start, refreshed in the background and when
	// a token names a key id not yet known (at a bounded rate).
	JWKSURL string `yaml:"jwks_url"`
	// Audience must be one of the token's aud values (required).
	Audience string `yaml:"audience"`
	// Issuer, when set, must equal the token's iss.
	Issuer string `yaml:"issuer"`
	// PathsClaim, when set, names a claim holding a list of path patterns
	// the token may read; see the package documentation for the rules.
	PathsClaim string `yaml:"paths_claim"`
	// Cookie, when set, names a cookie carrying the token (for browsers,
	// whose EventSource cannot send an Authorization header).
	Cookie string `yaml:"cookie"`
}

// Validate reports the first field that cannot work, by its YAML name.
func (c Config) Validate() error {
	switch {
	case c.Delegate == nil && c.JWT == nil:
		return errors.New("one of delegate or jwt is required")
	case c.Delegate != nil && c.JWT != nil:
		return errors.New("delegate, jwt: set only one")
	case c.Delegate != nil:
		return c.Delegate.validate()
	default:
		return c.JWT.validate()
	}
}

// headersSetByUs may not be forwarded from the client: the proxy sets them,
// and letting the client's copy through would let it lie about its address
// or the URI it asks for.
var headersSetByUs = map[string]bool{
	"X-Original-Uri":  true,
	"X-Forwarded-For": true,
	"Host":            true,
}

func (d *DelegateConfig) validate() error {
	if err := checkURL(d.URL); err != nil {
		return fmt.Errorf("delegate.url: %w", err)
	}
	for i, h := range d.Forward {
		switch {
		case !isToken(h):
			return fmt.Errorf("delegate.forward[%d]: %q is not a header name", i, h)
		case headersSetByUs[http.CanonicalHeaderKey(h)]:
			return fmt.Errorf("delegate.forward[%d]: %s is set by the proxy, not forwarded", i, h)
		}
	}
	switch {
	case d.Cache != nil && *d.Cache < 0:
		return errors.New("delegate.cache: must not be negative")
	case d.Timeout < 0:
		return errors.New("delegate.timeout: must not be negative")
	case d.MaxConcurrent < 0:
		return errors.New("delegate.max_concurrent: must not be negative")
	}
	return nil
}

// withDefaults fills the zero fields; forward names become canonical and
// unique, so the cache key and the request see one spelling.
func (d DelegateConfig) withDefaults() DelegateConfig {
	fwd := d.Forward
	if len(fwd) == 0 {
		fwd = DefaultForward
	}
	d.Forward = nil
	seen := map[string]bool{}
	for _, h := range fwd {
		h = http.CanonicalHeaderKey(h)
		if !seen[h] {
			seen[h] = true
			d.Forward = append(d.Forward, h)
		}
	}
	if d.Cache == nil {
		c := DefaultCache
		d.Cache = &c
	}
	if d.Timeout == 0 {
		d.Timeout = DefaultTimeout
	}
	if d.MaxConcurrent == 0 {
		d.MaxConcurrent = DefaultMaxConcurrent
	}
	return d
}

func (j *JWTConfig) validate() error {
	switch {
	case j.HS256Secret == "" && j.JWKSURL == "":
		return errors.New("jwt: one of hs256_secret or jwks_url is required")
	case j.HS256Secret != "" && len(j.HS256Secret) < MinSecretLen:
		return fmt.Errorf("jwt.hs256_secret: must be at least %d bytes (generate one with: openssl rand -base64 32), got %d", MinSecretLen, len(j.HS256Secret))
	case j.Audience == "":
		return errors.New("jwt.audience: required")
	case j.Cookie != "" && !isToken(j.Cookie):
		return fmt.Errorf("jwt.cookie: %q is not a cookie name", j.Cookie)
	}
	if j.JWKSURL != "" {
		if err := checkURL(j.JWKSURL); err != nil {
			return fmt.Errorf("jwt.jwks_url: %w", err)
		}
	}
	return nil
}

func checkURL(s string) error {
	if s == "" {
		return errors.New("required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an http or https URL with a host, got %q", s)
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token, the syntax of header
// field names and cookie names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
