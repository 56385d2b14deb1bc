package cfgerr

import (
	"errors"
	"testing"
)

func TestPrefix(t *testing.T) {
	tests := []struct {
		name    string
		section string
		err     error
		want    string
	}{
		{"nil stays nil", "relay", nil, ""},
		{"one key", "relay", New("linger", "must not be negative"), "config: relay.linger: must not be negative"},
		{"nested sections", "mesh", Prefix("gossip", New("key", "bad")), "config: mesh.gossip.key: bad"},
		{"list index", "backends", New("[2].uri", "bad"), "config: backends[2].uri: bad"},
		{"no key", "mesh", New("", "broken"), "config: mesh: broken"},
		{"plain error", "relay", errors.New("boom"), "config: relay: boom"},
		{"a list", "relay", List{New("a", "x"), New("b", "y")}, "config: 2 problems:\n  relay.a: x\n  relay.b: y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Prefix(tc.section, tc.err)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			var e *Error
			if err != nil && !errors.As(err, &e) {
				t.Fatalf("%v: no *Error inside", err)
			}
		})
	}
}
