package topology

import "testing"

// TestHashIsStable pins the rendezvous hash: every node of a mesh, whatever
// its build, must compute the same weights, or two nodes may each believe
// they own a stream. A failure here means a mesh-wide breaking change.
func TestHashIsStable(t *testing.T) {
	tests := []struct {
		in       string
		fnv, mix uint64
	}{
		// FNV-1a published test vectors.
		{in: "", fnv: 0xcbf29ce484222325, mix: 0xf52a15e9a9b5e89b},
		{in: "a", fnv: 0xaf63dc4c8601ec8c, mix: 0x02c0bdbf481420f8},
		{in: "n1", fnv: 0x08b37b07b558d4c0, mix: 0xf8e46110455c6e53},
		{in: testStream, fnv: 0x41d75a551cc1d54e, mix: 0x5ee4b09e412f1003},
	}
	for _, tc := range tests {
		if got := fnv64a(tc.in); got != tc.fnv {
			t.Errorf("fnv64a(%q) = %#x, want %#x", tc.in, got, tc.fnv)
		}
		if got := keyHash(tc.in); got != tc.mix {
			t.Errorf("keyHash(%q) = %#x, want %#x", tc.in, got, tc.mix)
		}
	}
	if got, want := weight(keyHash(testStream), keyHash("n1")), uint64(0x898d5c2bcd839b56); got != want {
		t.Errorf("weight = %#x, want %#x", got, want)
	}
}
