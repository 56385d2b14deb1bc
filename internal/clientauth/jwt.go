package clientauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sirupsen/logrus"
)

// jwtChecker verifies tokens locally.
type jwtChecker struct {
	secret     []byte      // nil: no HS256
	jwks       *jwksSource // nil: no RS256 or ES256
	parser     *jwt.Parser
	pathsClaim string
	cookie     string
	issuer     bool // an issuer is required
}

// newJWTChecker builds the checker; start runs the JWKS refresh loop under
// the Auth's ownership.
func newJWTChecker(cfg *JWTConfig, log logrus.FieldLogger, st *counters, o options, start func(func(context.Context))) (*jwtChecker, error) {
	j := &jwtChecker{pathsClaim: cfg.PathsClaim, cookie: cfg.Cookie, issuer: cfg.Issuer != ""}
	// Each algorithm is accepted only with its own kind of key: HS256 with
	// the secret, RS256 and ES256 with the JWKS. Listing them here makes
	// the parser refuse every other alg ("none" included) before any key
	// is looked up, so a public key can never serve as an HMAC secret.
	var methods []string
	if cfg.HS256Secret != "" {
		j.secret = []byte(cfg.HS256Secret)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if cfg.JWKSURL != "" {
		src, err := newJWKSSource(cfg.JWKSURL, log, st, o)
		if err != nil {
			return nil, err
		}
		j.jwks = src
		start(src.run)
		methods = append(methods, jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg())
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithAudience(cfg.Audience),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(o.now),
	}
	if cfg.Issuer != "" {
		popts = append(popts, jwt.WithIssuer(cfg.Issuer))
	}
	j.parser = jwt.NewParser(popts...)
	return j, nil
}

func (j *jwtChecker) healthy() (bool, string) {
	if j.jwks == nil {
		return true, "jwt: hs256 secret only"
	}
	return j.jwks.health.report()
}

func (j *jwtChecker) closeIdle() {
	if j.jwks != nil {
		j.jwks.client.CloseIdleConnections()
	}
}

func (j *jwtChecker) check(ctx context.Context, r Request) Decision {
	tok, from := j.token(r)
	if tok == "" {
		d := refuse(http.StatusUnauthorized, ReasonMissingCredentials, "no token in the Authorization header, cookie or query")
		// RFC 6750 §3.1: no error code when the request had no credentials.
		d.Header = http.Header{"Www-Authenticate": {"Bearer"}}
		return d
	}
	claims := jwt.MapClaims{}
	if _, err := j.parser.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) { return j.key(ctx, t) }); err != nil {
		return j.refusal(err, claims, from)
	}
	if j.pathsClaim != "" {
		if ok, why := pathAllowed(claims[j.pathsClaim], r.Path); !ok {
			d := refuse(http.StatusForbidden, ReasonWrongPath,
				fmt.Sprintf("token from %s: claim %q does not cover %s: %s", from, j.pathsClaim, r.Path, why))
			d.Header = http.Header{"Www-Authenticate": {`Bearer error="insufficient_scope"`}}
			return d
		}
	}
	var exp time.Time
	if e, err := claims.GetExpirationTime(); err == nil && e != nil {
		exp = e.Time
	}
	return allow(exp, "token from "+from)
}

// key returns the key for t's algorithm; the parser has already refused
// any algorithm not configured.
func (j *jwtChecker) key(ctx context.Context, t *jwt.Token) (any, error) {
	switch alg := t.Method.Alg(); {
	case alg == jwt.SigningMethodHS256.Alg() && j.secret != nil:
		return j.secret, nil
	case (alg == jwt.SigningMethodRS256.Alg() || alg == jwt.SigningMethodES256.Alg()) && j.jwks != nil:
		return j.jwks.keyfunc(ctx, t)
	default:
		return nil, fmt.Errorf("algorithm %q not accepted", alg)
	}
}

// refusal maps a parse error to a decision. When several claims fail, the
// token's identity (audience, issuer) is reported before its times. A
// missing aud or iss counts as a wrong one: the library reports only that
// a required claim is missing, so the claims say which.
func (j *jwtChecker) refusal(err error, claims jwt.MapClaims, from string) Decision {
	detail := fmt.Sprintf("token from %s: %v", from, err)
	if errors.Is(err, errUnknownKey) && j.jwks != nil && j.jwks.health.failing() {
		_, why := j.jwks.health.report()
		return refuse(http.StatusServiceUnavailable, ReasonAuthUnavailable, detail+"; "+why)
	}
	missing := func(claim string) bool {
		_, ok := claims[claim]
		return errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && !ok
	}
	reason := ReasonInvalidToken
	switch {
	case errors.Is(err, jwt.ErrTokenInvalidAudience) || missing("aud"):
		reason = ReasonWrongAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer) || (j.issuer && missing("iss")):
		reason = ReasonWrongIssuer
	case errors.Is(err, jwt.ErrTokenExpired):
		reason = ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		reason = ReasonNotYetValid
	}
	d := refuse(http.StatusUnauthorized, reason, detail)
	d.Header = http.Header{"Www-Authenticate": {`Bearer error="invalid_token"`}}
	return d
}

// token finds the token: Authorization: Bearer, else the cookie, else the
// query parameter. It returns where it was found, for logs.
func (j *jwtChecker) token(r Request) (tok, from string) {
	for _, v := range r.Header.Values("Authorization") {
		if scheme, t, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
			if t = strings.TrimSpace(t); t != "" {
				return t, "header"
			}
		}
	}
	if j.cookie != "" {
		req := http.Request{Header: r.Header}
		if c, err := req.Cookie(j.cookie); err == nil && c.Value != "" {
			return c.Value, "cookie"
		}
	}
	if t := r.Query.Get(QueryParam); t != "" {
		return t, "query"
	}
	return "", ""
}

// pathAllowed reports whether claim, a list of patterns, admits p; when it
// does not, it says why.
func pathAllowed(claim any, p string) (bool, string) {
	if claim == nil {
		return false, "claim missing"
	}
	list, ok := claim.([]any)
	if !ok {
		return false, "claim is not a list"
	}
	pats := make([]string, 0, len(list))
	for _, e := range list {
		s, ok := e.(string)
		if !ok {
			return false, "claim holds a value that is not a string"
		}
		pats = append(pats, s)
	}
	for _, pat := range pats {
		if pat == "*" {
			return true, ""
		}
		// A malformed pattern matches nothing (path.Match's ErrBadPattern).
		if m, err := path.Match(pat, p); err == nil && m {
			return true, ""
		}
	}
	return false, fmt.Sprintf("none of %d patterns matches", len(pats))
}
