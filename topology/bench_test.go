package topology

import (
	"math/rand"
	"testing"
)

func benchWorld(b *testing.B) (View, []streamCase) {
	b.Helper()
	rng := rand.New(rand.NewSource(42))
	v := randomView(rng, genOpts{nodes: 1000, dcs: propertyDCs})
	return v, randomStreams(rng, 100, propertyDCs)
}

// BenchmarkChoose is one call of the package-level Choose over 1,000 nodes,
// index building included: the cost of the simplest caller.
func BenchmarkChoose(b *testing.B) {
	v, streams := benchWorld(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n := v.Nodes[i%len(v.Nodes)]
		sc := streams[i%len(streams)]
		_ = Choose(v, n.ID, sc.key, sc.backendDC, nil)
		i++
	}
}

// BenchmarkPlanChoose is one choice on a prebuilt Plan over 1,000 nodes:
// the cost per (node, stream) when a node re-plans after a membership
// change.
func BenchmarkPlanChoose(b *testing.B) {
	v, streams := benchWorld(b)
	p := NewPlan(v)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		n := v.Nodes[i%len(v.Nodes)]
		sc := streams[i%len(streams)]
		_ = p.Choose(n.ID, sc.key, sc.backendDC, nil)
		i++
	}
}

// BenchmarkNewPlan indexes a 1,000-node view.
func BenchmarkNewPlan(b *testing.B) {
	v, _ := benchWorld(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = NewPlan(v)
	}
}
