package topology

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	changelog = "changelog /webservice/escenic/changelog/sse"
	sport     = "feed /live-center/feed/sport?lang=en"
)

// goldenReport is a three-DC mesh: dc1 holds the owner, dc2 is fed through
// its gateway s1, dc3 was not reached. The sport stream is broken on
// purpose (a cycle and a node whose upstream reported nothing) to show how
// detached nodes render.
func goldenReport() Report {
	port := 8000
	n := func(id, dc string, tier int, st State, clients, capacity int) NodeReport {
		port++
		return NodeReport{Node: Node{
			ID: id, DC: dc, Tier: tier, State: st, Clients: clients, Capacity: capacity, Streams: 2,
			ClientAddr: fmt.Sprintf("127.0.0.1:%d", port), AdminAddr: fmt.Sprintf("127.0.0.1:%d", port+1000),
		}, Reachable: true}
	}
	u := n("u1", "dc3", 0, StateUnreachable, 0, 0)
	u.Reachable, u.Error, u.Streams = false, "dial tcp 127.0.0.1:9008: connection refused", 0
	return Report{
		GeneratedAt: "2025-01-02T03:04:05Z",
		Nodes: []NodeReport{
			n("r1", "dc1", 0, StateAlive, 3, 0),
			n("r2", "dc1", 0, StateAlive, 5, 100),
			n("m1", "dc1", 1, StateAlive, 40, 100),
			n("l1", "dc1", 2, StateAlive, 100, 100),
			n("s1", "dc2", 0, StateAlive, 2, 0),
			n("s2", "dc2", 0, StateDraining, 1, 0),
			n("x1", "dc2", 1, StateSuspect, 7, 0),
			u,
		},
		Streams: []StreamReport{
			{Stream: sport, Backend: "live-center", Owner: "r2", Edges: []StreamEdge{
				{Child: "r2", Parent: "", LagMs: 1.5, EventsPerSec: 2, LastEventID: "s-9"},
				{Child: "m1", Parent: "l1"},
				{Child: "l1", Parent: "m1"},
				{Child: "x1", Parent: "u1"},
			}},
			{Stream: changelog, Backend: "changelog", Owner: "r1", Edges: []StreamEdge{
				{Child: "r1", Parent: "", LagMs: 12.25, LagEvents: 0, LastEventID: "1042", EventsPerSec: 3.5},
				{Child: "r2", Parent: "r1", LagMs: 0.4, LastEventID: "1042", EventsPerSec: 3.5},
				{Child: "m1", Parent: "r2", LagMs: 0.9, LastEventID: "1042", EventsPerSec: 3.5},
				{Child: "l1", Parent: "m1", LagMs: 2, LagEvents: 1, LastEventID: "1041", EventsPerSec: 3.4},
				{Child: "s1", Parent: "r1", LagMs: 48.2, LagEvents: 2, LastEventID: "1040", EventsPerSec: 3.5},
				{Child: "s2", Parent: "s1", LagMs: 0.7, LastEventID: "1040", EventsPerSec: 3.5},
				{Child: "x1", Parent: "s1", LagMs: 0.8, LastEventID: "1040", EventsPerSec: 3.5},
			}},
		},
		Unreachable: []string{"dc3"},
	}
}

// checkGolden compares got with testdata/name; UPDATE_GOLDEN=1 rewrites it.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatalf("create testdata: %v", err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatalf("write golden: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with UPDATE_GOLDEN=1 to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file.\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	r := goldenReport()
	tests := []struct {
		golden string
		render func() string
	}{
		{"all.txt", func() string { return RenderText(r, "") }},
		{"changelog.txt", func() string { return RenderText(r, changelog) }},
		{"missing.txt", func() string { return RenderText(r, "nope") }},
		{"changelog.dot", func() string { return RenderDOT(r, changelog) }},
		{"all.dot", func() string { return RenderDOT(r, "") }},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			got := tc.render()
			if again := tc.render(); again != got {
				t.Fatalf("rendering is not deterministic")
			}
			checkGolden(t, tc.golden, got)
		})
	}
}

// treeIDs returns the node IDs on tree lines of one stream's text section.
func treeIDs(section string) []string {
	var ids []string
	for _, line := range strings.Split(section, "\n") {
		i := strings.Index(line, "─ ")
		if i < 0 {
			continue
		}
		fields := strings.Fields(line[i+len("─ "):])
		if len(fields) == 0 || (len(fields) > 1 && fields[1] == "(cycle)") {
			continue
		}
		ids = append(ids, fields[0])
	}
	return ids
}

// TestRenderTextShowsEveryNodeOnce renders converged random meshes and
// checks that each stream's tree lists every node that carries the stream
// exactly once, and the DOT output has one edge line per edge.
func TestRenderTextShowsEveryNodeOnce(t *testing.T) {
	for _, pc := range propertyCases(t)[:5] {
		v, streams := pc.world()
		specs := []StreamSpec{{Stream: streams[0].key, Backend: "changelog", BackendDC: streams[0].backendDC}}
		r := Expected(v, "t", specs)
		out := RenderText(r, specs[0].Stream)
		_, section, ok := strings.Cut(out, "\nstream ")
		if !ok {
			t.Fatalf("seed %d: no stream section in\n%s", pc.seed, out)
		}
		seen := map[string]int{}
		for _, id := range treeIDs(section) {
			seen[id]++
		}
		edges := r.Streams[0].Edges
		for _, e := range edges {
			if seen[e.Child] != 1 {
				t.Errorf("seed %d: %s appears %d times in\n%s", pc.seed, e.Child, seen[e.Child], section)
			}
		}
		if len(seen) != len(edges) {
			t.Errorf("seed %d: tree shows %d nodes, stream has %d edges", pc.seed, len(seen), len(edges))
		}
		dot := RenderDOT(r, specs[0].Stream)
		if got := strings.Count(dot, " -> "); got != len(edges) {
			t.Errorf("seed %d: DOT has %d edges, want %d", pc.seed, got, len(edges))
		}
		if strings.Count(dot, "{") != strings.Count(dot, "}") {
			t.Errorf("seed %d: unbalanced braces in DOT", pc.seed)
		}
	}
}

func TestDOTQuoting(t *testing.T) {
	r := Report{
		Nodes:   []NodeReport{{Node: node(`we"ird\id`, "dc\n1", 0), Reachable: true}},
		Streams: []StreamReport{{Stream: `s"1`, Backend: `b\e`, Edges: []StreamEdge{{Child: `we"ird\id`}}}},
	}
	dot := RenderDOT(r, "")
	for _, want := range []string{`"node:we\"ird\\id"`, `label="dc\n1"`, `"backend:b\\e" -> "node:we\"ird\\id"`} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %s:\n%s", want, dot)
		}
	}
}

// TestDOTParsesWithGraphviz feeds the golden DOT files to Graphviz when it
// is installed, so a syntax slip in RenderDOT cannot hide behind a golden.
func TestDOTParsesWithGraphviz(t *testing.T) {
	dot, err := exec.LookPath("dot")
	if err != nil {
		t.Skip("graphviz dot not installed")
	}
	r := goldenReport()
	for _, stream := range []string{"", changelog, sport} {
		cmd := exec.Command(dot, "-Tsvg", "-o", os.DevNull)
		cmd.Stdin = strings.NewReader(RenderDOT(r, stream))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("dot rejects the graph of %q: %v\n%s", stream, err, out)
		}
	}
}
