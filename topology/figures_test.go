package topology

import (
	"math/rand"
	"os"
	"sort"
	"testing"
)

// TestFigures measures the numbers quoted in docs/topology.md ("Figures").
// It takes a while under -race, so it runs only when asked:
//
//	TOPOLOGY_FIGURES=1 go test ./topology -run TestFigures -v
func TestFigures(t *testing.T) {
	if os.Getenv("TOPOLOGY_FIGURES") != "1" {
		t.Skip("set TOPOLOGY_FIGURES=1 to measure the documented figures")
	}
	const (
		seed      = 2025
		perLeaver = 8
	)
	for _, allAlive := range []bool{true, false} {
		rng := rand.New(rand.NewSource(seed))
		v := randomView(rng, genOpts{nodes: 1000, dcs: propertyDCs, allAlive: allAlive})
		streams := randomStreams(rng, 100, propertyDCs)
		before := NewPlan(v)
		old := allChoices(before, streams, nil)

		// Shape of the converged mesh.
		var cross, depthSum, depthMax, carried int
		for s := range streams {
			for i, c := range old[s] {
				if !c.OK {
					continue
				}
				carried++
				if c.CrossDC {
					cross++
				}
				d := 0
				for j := i; !old[s][j].Backend; j = before.byID[old[s][j].Parent.ID] {
					d++
				}
				depthSum += d
				depthMax = max(depthMax, d)
			}
		}
		t.Logf("view: 1000 nodes, 3 DCs, all alive=%v, 100 streams (seed %d)", allAlive, seed)
		t.Logf("  cross-DC links per stream: %.2f; hops to the back end: mean %.2f, max %d",
			float64(cross)/float64(len(streams)), float64(depthSum)/float64(carried), depthMax)

		// Departures: perLeaver random alive nodes of every tier.
		type agg struct {
			n                                                int
			changed, direct, downstream, touched, maxChanged int
		}
		byTier := map[int]*agg{}
		idsByTier := map[int][]string{}
		for _, n := range before.nodes {
			if n.Alive() {
				idsByTier[n.Tier] = append(idsByTier[n.Tier], n.ID)
			}
		}
		var pairs int
		for tier := 0; tier <= 3; tier++ {
			ids := idsByTier[tier]
			sort.Strings(ids)
			a := &agg{}
			byTier[tier] = a
			for k := 0; k < perLeaver && len(ids) > 0; k++ {
				leaver := ids[rng.Intn(len(ids))]
				ap := NewPlan(without(v, leaver))
				d := measureLeave(t, seed, before, ap, streams, old, allChoices(ap, streams, nil), leaver)
				a.n++
				a.changed += d.changed
				a.direct += d.changedDirect
				a.downstream += d.downstream
				a.touched += d.streamsTouched
				a.maxChanged = max(a.maxChanged, d.changed)
				pairs = d.pairs
			}
		}
		for tier := 0; tier <= 3; tier++ {
			a := byTier[tier]
			if a.n == 0 {
				continue
			}
			f := func(x int) float64 { return float64(x) / float64(a.n) }
			t.Logf("  tier-%d departure (mean of %d): re-parented %.1f of %d (node,stream) choices (%.3f%%, max %.0f), %.1f of them its direct children; %.1f were downstream of it; streams touched %.1f of %d",
				tier, a.n, f(a.changed), pairs, 100*f(a.changed)/float64(pairs), float64(a.maxChanged),
				f(a.direct), f(a.downstream), f(a.touched), len(streams))
		}
	}
}
