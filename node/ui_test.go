package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/topology"
)

// fixtureReport is a synthetic mesh of 50 nodes in three data centres
// (2 roots, 5 relays and 10 or 9 leaves each) carrying three streams, with
// a few nodes in every state other than alive.
func fixtureReport() topology.Report {
	var v topology.View
	dcs := []string{"eu-west", "us-east", "ap-south"}
	odd := map[string]topology.State{
		"eu-west-leaf-03":  topology.StateSuspect,
		"us-east-relay-02": topology.StateDraining,
		"us-east-leaf-07":  topology.StateLeft,
		"ap-south-leaf-05": topology.StateUnreachable,
		"ap-south-leaf-02": topology.StateSuspect,
	}
	for d, dc := range dcs {
		leaves := 10
		if d == 2 {
			leaves = 9
		}
		add := func(kind string, tier, count, capacity int) {
			for i := 1; i <= count; i++ {
				id := fmt.Sprintf("%s-%s-%02d", dc, kind, i)
				st, ok := odd[id]
				if !ok {
					st = topology.StateAlive
				}
				clients := (i*37 + d*11 + tier*5) % 40
				if tier == 2 {
					clients = 900 + (i*7919+d*104729)%14000
				}
				v.Nodes = append(v.Nodes, topology.Node{
					ID: id, DC: dc, Tier: tier, State: st,
					ClientAddr: fmt.Sprintf("10.%d.%d.%d:8080", d, tier, i),
					AdminAddr:  fmt.Sprintf("10.%d.%d.%d:9090", d, tier, i),
					Clients:    clients, Capacity: capacity, Streams: 3,
				})
			}
		}
		add("root", 0, 2, 0)
		add("relay", 1, 5, 0)
		add("leaf", 2, leaves, 19000)
	}
	return topology.Expected(v, "2026-03-01T12:00:00Z", []topology.StreamSpec{
		{Stream: "/webservice/escenic/changelog/sse", Backend: "changelog", BackendDC: "eu-west"},
		{Stream: "/live-center/feed/event-4711", Backend: "live-center", BackendDC: "us-east"},
		{Stream: "/live-center/feed/event-4712?lang=de", Backend: "live-center", BackendDC: "ap-south"},
	})
}

// fixtureServer serves the embedded page and rep as /v1/topology, the way a
// node's admin listener does; with token set, both need it.
func fixtureServer(t *testing.T, rep topology.Report, token string) string {
	t.Helper()
	page := newPageHandler()
	mux := http.NewServeMux()
	mux.Handle("/{$}", page)
	mux.HandleFunc("/v1/topology", func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("Authorization") != "Bearer "+token {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// chromiumPath finds a headless-capable Chromium, or skips (fails on CI).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("chromium is not installed; CI must run scripts/install-test-deps.sh")
	}
	t.Skip("chromium is not installed: run scripts/install-test-deps.sh")
	return ""
}

// runChromium runs headless Chromium once on a fresh profile and returns
// its standard output.
func runChromium(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--hide-scrollbars", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, lastLines(stderr.String(), 20))
	}
	return stdout.Bytes()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// renderedDOM loads url and returns the DOM after the page's script ran.
func renderedDOM(t *testing.T, url string) string {
	t.Helper()
	return string(runChromium(t, "--virtual-time-budget=5000", "--window-size=1600,1000", "--dump-dom", url))
}

var (
	nodeAttr = regexp.MustCompile(`data-node="([^"]*)"`)
	edgeAttr = regexp.MustCompile(`data-edge="([^"]*)"`)
)

func attrValues(re *regexp.Regexp, dom string) []string {
	var out []string
	for _, m := range re.FindAllStringSubmatch(dom, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	sort.Strings(out)
	return out
}

func wantEdges(s topology.StreamReport) []string {
	var out []string
	for _, e := range s.Edges {
		p := e.Parent
		if p == "" {
			p = "backend"
		}
		out = append(out, e.Child+"->"+p)
	}
	sort.Strings(out)
	return out
}

func TestPageDrawsFiftyNodeMesh(t *testing.T) {
	rep := fixtureReport()
	if len(rep.Nodes) != 50 || len(rep.Streams) != 3 {
		t.Fatalf("fixture has %d nodes and %d streams, want 50 and 3", len(rep.Nodes), len(rep.Streams))
	}
	if errs := topology.Validate(rep); len(errs) != 0 {
		t.Fatalf("fixture violates the tree's invariants: %v", errs)
	}
	var wantNodes []string
	for _, n := range rep.Nodes {
		wantNodes = append(wantNodes, n.ID)
	}
	sort.Strings(wantNodes)
	base := fixtureServer(t, rep, "")

	byName := map[string]topology.StreamReport{}
	var names []string
	for _, s := range rep.Streams {
		byName[s.Stream] = s
		names = append(names, s.Stream)
	}
	sort.Strings(names)

	tests := []struct {
		name   string
		url    string
		stream string
	}{
		{"default is the first stream", base + "/", names[0]},
		{"stream chosen in the fragment", base + "/#stream=" + url.QueryEscape(names[2]), names[2]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dom := renderedDOM(t, tc.url)
			if !strings.Contains(dom, `data-status="ok"`) {
				t.Fatalf("page did not report a successful load; DOM:\n%s", lastLines(dom, 30))
			}
			if got := attrValues(nodeAttr, dom); !slices.Equal(got, wantNodes) {
				t.Errorf("node boxes: got %d %v, want the fixture's %d", len(got), got, len(wantNodes))
			}
			want := wantEdges(byName[tc.stream])
			if len(want) < 40 {
				t.Fatalf("fixture stream %q has only %d edges", tc.stream, len(want))
			}
			if got := attrValues(edgeAttr, dom); !slices.Equal(got, want) {
				t.Errorf("edges of %q: got %d %v, want %d %v", tc.stream, len(got), got, len(want), want)
			}
			if !strings.Contains(dom, `data-backend="`+byName[tc.stream].Backend+`"`) {
				t.Errorf("no back-end box for %q", byName[tc.stream].Backend)
			}
		})
	}
}

func TestPageAsksForTokenOn401(t *testing.T) {
	base := fixtureServer(t, fixtureReport(), "s3cret")
	dom := renderedDOM(t, base+"/")
	if !strings.Contains(dom, `data-status="auth"`) {
		t.Fatalf("status is not asking for a token; DOM:\n%s", lastLines(dom, 30))
	}
	form := regexp.MustCompile(`<form id="auth"[^>]*>`).FindString(dom)
	if form == "" || strings.Contains(form, "hidden") {
		t.Fatalf("token form not shown: %q", form)
	}
	if n := len(nodeAttr.FindAllString(dom, -1)); n != 0 {
		t.Fatalf("page drew %d nodes without a token", n)
	}
}

// TestPageScreenshot saves what an operator sees of the 50-node mesh, as a
// test artifact (SSEMESH_ARTIFACTS, else a temporary folder).
func TestPageScreenshot(t *testing.T) {
	base := fixtureServer(t, fixtureReport(), "")
	dir := os.Getenv("SSEMESH_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "topology.png")
	_ = os.Remove(file)
	runChromium(t, "--virtual-time-budget=5000", "--window-size=1600,1000", "--screenshot="+file, base+"/")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if len(b) < 20<<10 || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s is not a plausible PNG (%d bytes)", file, len(b))
	}
	t.Logf("screenshot: %s", file)
}

func TestPageCarriesItsOwnPolicy(t *testing.T) {
	p, err := buildPage()
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	body := rec.Body.String()
	csp := rec.Header().Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no inline <%s> in the page", tag)
		}
		if h := cspHash([]byte(m[1])); !strings.Contains(csp, "'"+h+"'") {
			t.Errorf("CSP %q does not allow the inline %s (%s)", csp, tag, h)
		}
	}
	// Only the SVG namespace name and same-document url(#marker) references
	// may look like addresses.
	local := strings.NewReplacer("http://www.w3.org/2000/svg", "", "url(#", "")
	for _, external := range []string{"http://", "https://", "//cdn", "@import", "url(", "src="} {
		for _, line := range strings.Split(body, "\n") {
			if strings.Contains(local.Replace(line), external) {
				t.Errorf("page refers to something outside the node (%q): %s", external, strings.TrimSpace(line))
			}
		}
	}
	if strings.Contains(body, uiScriptMark) || strings.Contains(body, uiStyleMark) {
		t.Error("page still contains an inlining marker")
	}
}

// Keep the fixture in reach of the JSON the page parses: the report's field
// names are the page's contract.
func TestFixtureJSONFieldsUsedByPage(t *testing.T) {
	b, err := json.Marshal(fixtureReport())
	if err != nil {
		t.Fatal(err)
	}
	script, err := uiFiles.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"nodes", "streams", "edges", "child", "parent", "owner", "backend", "stream",
		"id", "dc", "tier", "state", "clients", "capacity", "lagMs", "lastEventId", "unreachable", "reachable"} {
		if !bytes.Contains(b, []byte(`"`+field+`"`)) && field != "unreachable" {
			t.Errorf("report JSON has no field %q", field)
		}
		if !bytes.Contains(script, []byte("."+field)) {
			t.Errorf("page script does not read field %q", field)
		}
	}
}
