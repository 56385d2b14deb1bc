package mesh

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestRemoteHold(t *testing.T) {
	a := Member{ID: "a", DC: "dc2", State: StateAlive, Source: SourceConsul}
	b := Member{ID: "b", DC: "dc2", State: StateAlive, Source: SourceConsul}
	feed := Backend{Name: "feed", DC: "dc2", Mount: "/feed"}
	t0 := time.Unix(1000, 0)
	const grace = 30 * time.Second
	type read struct {
		at       time.Duration // after t0
		index    uint64
		members  []Member
		backends []Backend
		want     []Member
		wantB    []Backend
		reset    bool
	}
	tests := []struct {
		name  string
		reads []read
	}{
		{"a node leaves a growing catalog: gone at once", []read{
			{0, 10, []Member{a, b}, []Backend{feed}, []Member{a, b}, []Backend{feed}, false},
			{time.Second, 11, []Member{a}, []Backend{feed}, []Member{a}, []Backend{feed}, false},
		}},
		{"catalog restarted empty: the last known are held", []read{
			{0, 10, []Member{a, b}, []Backend{feed}, []Member{a, b}, []Backend{feed}, false},
			{time.Second, 2, nil, nil, []Member{a, b}, []Backend{feed}, true},
			{5 * time.Second, 3, []Member{b}, nil, []Member{b, a}, []Backend{feed}, false},
		}},
		{"the hold ends when everything is back", []read{
			{0, 10, []Member{a, b}, []Backend{feed}, []Member{a, b}, []Backend{feed}, false},
			{time.Second, 2, nil, nil, []Member{a, b}, []Backend{feed}, true},
			{2 * time.Second, 5, []Member{a, b}, []Backend{feed}, []Member{a, b}, []Backend{feed}, false},
			// a later departure in a growing catalog is a real one
			{3 * time.Second, 6, []Member{a}, []Backend{feed}, []Member{a}, []Backend{feed}, false},
		}},
		{"the hold ends after the grace", []read{
			{0, 10, []Member{a, b}, []Backend{feed}, []Member{a, b}, []Backend{feed}, false},
			{time.Second, 2, []Member{a}, nil, []Member{a, b}, []Backend{feed}, true},
			{time.Second + grace - time.Millisecond, 3, []Member{a}, nil, []Member{a, b}, []Backend{feed}, false},
			{time.Second + grace, 4, []Member{a}, nil, []Member{a}, nil, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h remoteHold
			var prevM []Member
			var prevB []Backend
			for i, r := range tc.reads {
				gotM, gotB, reset := h.observe(t0.Add(r.at), r.index, grace, r.members, prevM, r.backends, prevB)
				if !reflect.DeepEqual(gotM, r.want) || !reflect.DeepEqual(gotB, r.wantB) || reset != r.reset {
					t.Fatalf("read %d: members %v backends %v reset %v; want %v %v %v", i, gotM, gotB, reset, r.want, r.wantB, r.reset)
				}
				prevM, prevB = gotM, gotB
			}
		})
	}
}

// TestConsulFakeRemoteCatalogRestart: when another data centre's Consul
// servers come back without their catalog, its nodes stay in the view
// while they register again.
func TestConsulFakeRemoteCatalogRestart(t *testing.T) {
	f := newFakeConsul("dc1")
	for _, id := range []string{"n2", "n3"} {
		f.add("dc2", api.AgentService{ID: id, Service: "ssemesh", Port: 8080}, true)
	}
	for i := 0; i < 5; i++ {
		// Grow dc2's index well past where a restart puts it.
		f.setPassing("dc2", "n3", false)
		f.setPassing("dc2", "n3", true)
	}
	m := startFakeMesh(t, fakeConsulConfig(t, "n1"), f)
	remoteIDs := func(v *View) string {
		var ids []string
		for _, mem := range v.Members {
			if mem.Source == SourceConsul {
				ids = append(ids, mem.ID)
			}
		}
		return strings.Join(ids, ",")
	}
	awaitView(t, m, 5*time.Second, "dc2's nodes", func(v *View) bool { return remoteIDs(v) == "n2,n3" })

	// waitReads returns once dc2 has been read n more times.
	waitReads := func(n int) {
		t.Helper()
		seen := f.callsIn("passing ssemesh", "dc2")
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(5 * time.Second)
		for f.callsIn("passing ssemesh", "dc2") < seen+n {
			select {
			case <-deadline:
				t.Fatal("dc2 not read again within 5s")
			case <-tick.C:
			}
		}
	}

	f.restartDC("dc2")
	// Several reads of the empty catalog later, the nodes are still there.
	waitReads(3)
	if got := remoteIDs(m.View()); got != "n2,n3" {
		t.Fatalf("after dc2's catalog restarted empty the view holds %q, want n2,n3 kept", got)
	}
	f.add("dc2", api.AgentService{ID: "n2", Service: "ssemesh", Port: 8080}, true)
	f.add("dc2", api.AgentService{ID: "n3", Service: "ssemesh", Port: 8080}, true)
	waitReads(2)
	// Registered again: a departure is a departure once more.
	f.remove("dc2", "n3")
	awaitView(t, m, 5*time.Second, "n3 gone after it left a live catalog", func(v *View) bool { return remoteIDs(v) == "n2" })
}
