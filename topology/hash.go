package topology

// The rendezvous weights must be identical on every node of a mesh, across
// builds, architectures and releases: two nodes that disagree on a weight
// disagree on the owner, and the back end gets two connections. Changing any
// constant here is therefore a mesh-wide breaking change; hash_test.go pins
// known values.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// fnv64a is FNV-1a over the bytes of s.
func fnv64a(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// mix64 is the SplitMix64 finaliser. FNV-1a alone avalanches poorly in its
// high bits for short keys that differ only in their last byte ("n1", "n2"),
// which would bias rendezvous winners; the finaliser spreads every input bit
// over the whole word and is a bijection, so distinct inputs keep distinct
// outputs.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// keyHash hashes a stream key or node ID into the space weight combines.
func keyHash(s string) uint64 { return mix64(fnv64a(s)) }

// weight is the rendezvous (highest-random-weight) score of a node under a
// key: a stream's keyHash for owners and gateways, a childHash for the
// parents one child picks among. Mixing after the XOR makes the score of one node for two streams,
// or of two nodes for one stream, behave as independent draws.
func weight(key, nodeHash uint64) uint64 {
	return mix64(key ^ nodeHash)
}

// childHash derives the key under which one child ranks the candidate
// parents of one stream. The constant keeps childHash(hs, h) apart from
// the stream-only key hs that ranks owners and gateways.
func childHash(streamHash, childNodeHash uint64) uint64 {
	return mix64(streamHash ^ childNodeHash ^ 0x9e3779b97f4a7c15)
}
