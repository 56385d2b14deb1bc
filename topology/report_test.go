package topology

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func nr(id, dc string, tier int) NodeReport {
	return NodeReport{Node: node(id, dc, tier), Reachable: true}
}

func edge(child, parent string) StreamEdge { return StreamEdge{Child: child, Parent: parent} }

func kinds(errs []error) []ViolationKind {
	var out []ViolationKind
	for _, err := range errs {
		var v *Violation
		if !errors.As(err, &v) {
			return append(out, "not-a-violation")
		}
		out = append(out, v.Kind)
	}
	return out
}

func TestValidate(t *testing.T) {
	nodes := []NodeReport{nr("r1", "dc1", 0), nr("r2", "dc1", 0), nr("m1", "dc1", 1), nr("s1", "dc2", 0), nr("s2", "dc2", 0)}
	unreached := nr("m9", "dc1", 1)
	unreached.Reachable = false
	stream := func(owner string, edges ...StreamEdge) []StreamReport {
		return []StreamReport{{Stream: "s", Backend: "b", Owner: owner, Edges: edges}}
	}
	tests := []struct {
		name    string
		report  Report
		want    []ViolationKind
		wantIDs []string // Nodes of the first violation
	}{
		{
			name:   "valid tree",
			report: Report{Nodes: nodes, Streams: stream("r1", edge("r1", ""), edge("r2", "r1"), edge("m1", "r2"), edge("s1", "r1"), edge("s2", "s1"))},
		},
		{
			name:   "empty stream is fine",
			report: Report{Nodes: nodes, Streams: stream("")},
		},
		{
			name:    "duplicate node",
			report:  Report{Nodes: append(append([]NodeReport(nil), nodes...), nr("r1", "dc9", 3))},
			want:    []ViolationKind{KindDuplicateNode},
			wantIDs: []string{"r1"},
		},
		{
			name:    "unknown child and parent",
			report:  Report{Nodes: nodes, Streams: stream("r1", edge("r1", ""), edge("zz", "r1"), edge("m1", "yy"))},
			want:    []ViolationKind{KindUnknownNode, KindUnknownNode},
			wantIDs: []string{"zz"},
		},
		{
			name:   "no owner",
			report: Report{Nodes: nodes, Streams: stream("r1", edge("r2", "r1"))},
			want:   []ViolationKind{KindNoOwner, KindDetached},
		},
		{
			name:    "two owners",
			report:  Report{Nodes: nodes, Streams: stream("", edge("r2", ""), edge("r1", ""))},
			want:    []ViolationKind{KindManyOwners},
			wantIDs: []string{"r1", "r2"},
		},
		{
			name:    "owner mismatch",
			report:  Report{Nodes: nodes, Streams: stream("r1", edge("r2", ""), edge("r1", "r2"))},
			want:    []ViolationKind{KindOwnerMismatch},
			wantIDs: []string{"r2", "r1"},
		},
		{
			name:    "two upstreams during make-before-break",
			report:  Report{Nodes: nodes, Streams: stream("r1", edge("r1", ""), edge("r2", "r1"), edge("m1", "r2"), edge("m1", "r1"))},
			want:    []ViolationKind{KindManyParents},
			wantIDs: []string{"m1", "r1", "r2"},
		},
		{
			name:    "cycle",
			report:  Report{Nodes: nodes, Streams: stream("r1", edge("r1", ""), edge("m1", "r2"), edge("r2", "s1"), edge("s1", "m1"))},
			want:    []ViolationKind{KindCycle},
			wantIDs: []string{"m1", "r2", "s1"},
		},
		{
			name:    "two links into one DC",
			report:  Report{Nodes: nodes, Streams: stream("r1", edge("r1", ""), edge("s1", "r1"), edge("s2", "r1"))},
			want:    []ViolationKind{KindCrossDC},
			wantIDs: []string{"s1", "s2"},
		},
		{
			name:    "parent without upstream",
			report:  Report{Nodes: nodes, Streams: stream("r1", edge("r1", ""), edge("s2", "s1"))},
			want:    []ViolationKind{KindDetached},
			wantIDs: []string{"s1"},
		},
		{
			name:   "unreachable parent is not blamed",
			report: Report{Nodes: append(append([]NodeReport(nil), nodes...), unreached), Streams: stream("r1", edge("r1", ""), edge("s2", "m9"))},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := Validate(tc.report)
			if got := kinds(errs); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("kinds = %v, want %v; errors: %v", got, tc.want, errs)
			}
			if tc.wantIDs != nil {
				var v *Violation
				errors.As(errs[0], &v)
				if !reflect.DeepEqual(v.Nodes, tc.wantIDs) {
					t.Errorf("nodes = %v, want %v", v.Nodes, tc.wantIDs)
				}
			}
			for _, err := range errs {
				if !strings.HasPrefix(err.Error(), "topology: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
			}
		})
	}
}

// TestExpectedValidates builds the converged report of random views and
// checks that Validate finds nothing: Choose and Validate agree on the
// invariants.
func TestExpectedValidates(t *testing.T) {
	for _, pc := range propertyCases(t) {
		if pc.nodes > 400 {
			continue
		}
		v, streams := pc.world()
		specs := make([]StreamSpec, 0, 30)
		for _, sc := range streams[:30] {
			specs = append(specs, StreamSpec{Stream: sc.key, Backend: "changelog", BackendDC: sc.backendDC})
		}
		r := Expected(v, "2025-01-02T03:04:05Z", specs)
		if errs := Validate(r); len(errs) > 0 {
			t.Errorf("seed %d: %d violations, first: %v", pc.seed, len(errs), errs[0])
		}
		if len(r.Nodes) != len(NewPlan(v).nodes) || len(r.Streams) != len(specs) {
			t.Errorf("seed %d: report has %d nodes and %d streams", pc.seed, len(r.Nodes), len(r.Streams))
		}
		// Breaking one edge must be noticed.
		for si, s := range r.Streams {
			if len(s.Edges) < 2 {
				continue
			}
			broken := r
			broken.Streams = append([]StreamReport(nil), r.Streams...)
			edges := append([]StreamEdge(nil), s.Edges...)
			for i := range edges {
				if edges[i].Parent == "" {
					edges[i].Parent = edges[(i+1)%len(edges)].Child
				}
			}
			broken.Streams[si].Edges = edges
			if len(Validate(broken)) == 0 {
				t.Errorf("seed %d stream %q: removing the back-end link went unnoticed", pc.seed, s.Stream)
			}
			break
		}
	}
}

func TestReportJSON(t *testing.T) {
	r := goldenReport()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	for _, key := range []string{`"generatedAt"`, `"reachable"`, `"clientAddr"`, `"lagMs"`, `"lastEventId"`, `"eventsPerSec"`, `"unreachable"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("round trip changed the report:\n%+v\n%+v", back, r)
	}
}
