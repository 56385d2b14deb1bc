// Package meshauth proves that a request between ssemesh nodes comes from a
// member of the mesh.
//
// Nodes of one mesh share a secret. A node asking another for a stream (or
// for its part of the topology report) sends, in the Header, its node id, the
// time, and an HMAC-SHA256 under the secret over what the request asks for:
// its purpose, the path and query, and the ancestry it claims. The receiver
// recomputes the MAC with each secret it accepts, compares in constant time
// and checks the time is within the validity window. A request without a
// valid proof is an ordinary client whatever else it carries: a header
// alone never makes a client a node.
//
// The proof is bound to one request target and ancestry and expires after
// the window, so a copy seen on the wire is worth one stream for a minute,
// and never the secret. Rotation: every node accepts several secrets and
// signs with one (see Verifier).
package meshauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header carries a node's proof of membership on node-to-node requests.
const Header = "X-Ssemesh-Auth"

// Purposes keep a proof made for one kind of request from being accepted
// for another.
const (
	PurposeStream = "stream" // a child node subscribing to a stream
	PurposeAdmin  = "admin"  // a peer gathering the topology report
)

// DefaultWindow is how far a proof's time may be from the receiver's clock.
// It covers clock skew between hosts kept by NTP; proofs are made afresh for
// every attempt, retries included, so it need not cover backoff.
const DefaultWindow = 60 * time.Second

// MinSecretLen is the shortest secret accepted: 32 characters, what
// `openssl rand -base64 24` prints; use 32 random bytes in production.
const MinSecretLen = 32

const version = "v1"

// Errors returned by Verify; the reason a proof was refused, for counters.
var (
	ErrMissing   = errors.New("no mesh credentials")
	ErrMalformed = errors.New("malformed mesh credentials")
	ErrExpired   = errors.New("mesh credentials outside the validity window")
	ErrMismatch  = errors.New("mesh credentials do not verify")
)

// CheckSecret reports why s cannot be a mesh secret.
func CheckSecret(s string) error {
	if len(s) < MinSecretLen {
		return fmt.Errorf("must be at least %d characters (generate one with: openssl rand -base64 32), got %d", MinSecretLen, len(s))
	}
	return nil
}

// Signer makes proofs for one node.
type Signer struct {
	id  string
	key []byte
	now func() time.Time
}

// NewSigner returns a Signer for nodeID; secret must pass CheckSecret.
func NewSigner(nodeID, secret string) *Signer {
	return &Signer{id: nodeID, key: []byte(secret), now: time.Now}
}

// Sign returns the Header value for a request with purpose, target (the
// escaped path, with "?query" when there is one) and via (the ancestry
// header's value, "" for none).
func (s *Signer) Sign(purpose, target, via string) string {
	ts := strconv.FormatInt(s.now().Unix(), 10)
	mac := sum(s.key, purpose, s.id, ts, target, via)
	return version + " " + s.id + " " + ts + " " + base64.RawURLEncoding.EncodeToString(mac)
}

// Verifier checks proofs against the secrets a node accepts.
type Verifier struct {
	keys   [][]byte
	window time.Duration
	now    func() time.Time
}

// NewVerifier accepts proofs made with any of secrets (the signing secret
// first, then those still accepted during a rotation) and no older or newer
// than window (DefaultWindow when 0).
func NewVerifier(secrets []string, window time.Duration) *Verifier {
	if window <= 0 {
		window = DefaultWindow
	}
	v := &Verifier{window: window, now: time.Now}
	for _, s := range secrets {
		if s != "" {
			v.keys = append(v.keys, []byte(s))
		}
	}
	return v
}

// Verify checks value (the Header) for a request with purpose, target and
// via, and returns the node id it proves.
func (v *Verifier) Verify(value, purpose, target, via string) (string, error) {
	if value == "" {
		return "", ErrMissing
	}
	parts := strings.Split(value, " ")
	if len(parts) != 4 || parts[0] != version || parts[1] == "" {
		return "", ErrMalformed
	}
	id, ts := parts[1], parts[2]
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", ErrMalformed
	}
	got, err := base64.RawURLEncoding.DecodeString(parts[3])
	if err != nil || len(got) != sha256.Size {
		return "", ErrMalformed
	}
	// Compare in whole seconds: a proof made at second t may arrive at any
	// point of second t+window.
	skew := v.now().Unix() - sec
	if skew < 0 {
		skew = -skew
	}
	if skew > int64(v.window/time.Second) {
		return "", ErrExpired
	}
	ok := false
	for _, k := range v.keys {
		// Every key is tried, so the time taken does not tell which one
		// (if any) matched.
		if hmac.Equal(got, sum(k, purpose, id, ts, target, via)) {
			ok = true
		}
	}
	if !ok {
		return "", ErrMismatch
	}
	return id, nil
}

// sum is the MAC over the fields, each ended by a newline: node ids,
// purposes and timestamps cannot contain one, and neither can a request
// target or a header value, so no two field lists give the same input.
func sum(key []byte, purpose, id, ts, target, via string) []byte {
	m := hmac.New(sha256.New, key)
	for _, f := range []string{"ssemesh-mesh-auth", version, purpose, id, ts, target, via} {
		m.Write([]byte(f))
		m.Write([]byte{'\n'})
	}
	return m.Sum(nil)
}
