package meshauth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const (
	secretA = "0123456789abcdef0123456789abcdef-a"
	secretB = "0123456789abcdef0123456789abcdef-b"
)

func at(sec int64) func() time.Time { return func() time.Time { return time.Unix(sec, 0) } }

func TestVerify(t *testing.T) {
	s := NewSigner("leaf-1", secretA)
	s.now = at(1000)
	good := s.Sign(PurposeStream, "/feed?x=1", "relay-1,leaf-1")

	tests := []struct {
		name    string
		value   string
		purpose string
		target  string
		via     string
		secrets []string
		now     int64
		want    error
	}{
		{"valid", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1000, nil},
		{"valid at the window's edge", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1060, nil},
		{"valid with an earlier clock", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 940, nil},
		{"accepted rotation secret", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretB, secretA}, 1000, nil},
		{"expired", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1061, ErrExpired},
		{"from the future", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 939, ErrExpired},
		{"other secret", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretB}, 1000, ErrMismatch},
		{"other target", good, PurposeStream, "/feed?x=2", "relay-1,leaf-1", []string{secretA}, 1000, ErrMismatch},
		{"other ancestry", good, PurposeStream, "/feed?x=1", "root-1,leaf-1", []string{secretA}, 1000, ErrMismatch},
		{"other purpose", good, PurposeAdmin, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1000, ErrMismatch},
		{"missing", "", PurposeStream, "/feed?x=1", "", []string{secretA}, 1000, ErrMissing},
		{"garbage", "hello", PurposeStream, "/feed", "", []string{secretA}, 1000, ErrMalformed},
		{"other version", strings.Replace(good, "v1 ", "v2 ", 1), PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1000, ErrMalformed},
		{"bad time", "v1 leaf-1 soon " + strings.Fields(good)[3], PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1000, ErrMalformed},
		{"short mac", "v1 leaf-1 1000 AAAA", PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1000, ErrMalformed},
		{"claims another node", strings.Replace(good, "leaf-1", "root-1", 1), PurposeStream, "/feed?x=1", "relay-1,leaf-1", []string{secretA}, 1000, ErrMismatch},
		{"no secrets", good, PurposeStream, "/feed?x=1", "relay-1,leaf-1", nil, 1000, ErrMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifier(tc.secrets, 0)
			v.now = at(tc.now)
			id, err := v.Verify(tc.value, tc.purpose, tc.target, tc.via)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %q, %v; want %v", id, err, tc.want)
			}
			if err == nil && id != "leaf-1" {
				t.Fatalf("Verify proved %q, want leaf-1", id)
			}
		})
	}
}

func TestCheckSecret(t *testing.T) {
	if err := CheckSecret(strings.Repeat("x", MinSecretLen-1)); err == nil {
		t.Fatal("short secret accepted")
	}
	if err := CheckSecret(strings.Repeat("x", MinSecretLen)); err != nil {
		t.Fatalf("secret of the minimum length refused: %v", err)
	}
}
