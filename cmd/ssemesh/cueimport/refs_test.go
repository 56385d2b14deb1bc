package cueimport

import (
	"strings"
	"testing"

	"github.com/ssemesh/ssemesh/node"
)

// What Dropwizard reads from a scalar must be what ssemesh reads from the
// converted one, in the same environment.
func TestTextKeepsDropwizardsMeaning(t *testing.T) {
	env := map[string]string{"USER": "alice", "EMPTY": "", "PORT": "9443"}
	tests := []struct {
		name    string
		in      string
		ssemesh string // as written in the ssemesh configuration
		reads   string // what both read, in env
	}{
		{"plain", "sse-proxy", "sse-proxy", "sse-proxy"},
		{"reference", "${USER}", "${USER}", "alice"},
		{"default used", "${NOPE:-bob}", "${NOPE:-bob}", "bob"},
		{"default not used", "${USER:-bob}", "${USER:-bob}", "alice"},
		{"empty variable takes the default", "${EMPTY:-bob}", "${EMPTY:-bob}", "bob"},
		{"in a string", "http://cs:${PORT:-8080}/x", "http://cs:${PORT:-8080}/x", "http://cs:9443/x"},
		{"a lone dollar", "5$", "5$$", "5$"},
		{"two dollars", "pa$$word", "pa$$$$word", "pa$$word"},
		{"Dropwizard's escape", "$${USER}", "$${USER}", "${USER}"},
		{"never closed", "${USER", "$${USER", "${USER"},
		{"a dollar before a reference", "$${USER}${USER}", "$${USER}${USER}", "${USER}alice"},
		{"a default with a colon", "${NOPE:-http://cs:8080/}", "${NOPE:-http://cs:8080/}", "http://cs:8080/"},
		{"an empty default", "${NOPE:-}", "${NOPE:-}", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			txt, err := parseText(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := txt.ssemesh(); got != tc.ssemesh {
				t.Errorf("written %q, want %q", got, tc.ssemesh)
			}
			if got := txt.source(); got != tc.in {
				t.Errorf("source %q, want %q", got, tc.in)
			}
			// ssemesh's own interpolation, on the written text, reads the
			// same value.
			got, missing := node.InterpolateValue(txt.ssemesh(), lookupIn(env))
			if missing != "" {
				t.Fatalf("variable %s unset", missing)
			}
			if got != tc.reads {
				t.Errorf("ssemesh reads %q, want %q", got, tc.reads)
			}
		})
	}
}

func TestTextRefusesOtherReferences(t *testing.T) {
	for _, in := range []string{"${cs.user}", "${ USER }", "${1ST}", "${A:-${B}}", "x${A-b}"} {
		if _, err := parseText(in); err == nil || !strings.Contains(err.Error(), "ssemesh interpolates only") {
			t.Errorf("parseText(%q) = %v, want a refusal", in, err)
		}
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"https://a.example,https://b.example", []string{"https://a.example", "https://b.example"}},
		{" https://a.example , ${O:-https://b.example,https://c.example}", []string{"https://a.example", "${O:-https://b.example,https://c.example}"}},
		{"*", []string{"*"}},
		{"a,,b", []string{"a", "b"}},
	}
	for _, tc := range tests {
		txt, err := parseText(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range splitList(txt) {
			if p = p.trimSpace(); len(p.segs) > 0 {
				got = append(got, p.ssemesh())
			}
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("splitList(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBackendNames(t *testing.T) {
	tests := []struct {
		name  string
		paths []string
		hosts []string
		want  []string
	}{
		{"path segments", []string{"/webservice/escenic/changelog/sse"}, []string{"cs"}, []string{"changelog-sse"}},
		{"trailing slash", []string{"/live-center/feed/"}, []string{"live"}, []string{"live-center-feed"}},
		{"no path: the host", []string{"/"}, []string{"newsgate.example.com"}, []string{"newsgate.example.com"}},
		{"one segment", []string{"/events"}, []string{"cs"}, []string{"events"}},
		{"other characters", []string{"/a b/c@d"}, []string{"cs"}, []string{"a-b-c-d"}},
		{"shared: the host in front", []string{"/x/sse", "/x/sse"}, []string{"cs1", "cs2"}, []string{"cs1-x-sse", "cs2-x-sse"}},
		{"shared on one host: numbered", []string{"/x/sse", "/x/sse?a=1"}, []string{"cs", "cs"}, []string{"cs-x-sse", "cs-x-sse-2"}},
		{"nothing known", []string{""}, []string{""}, []string{"backend-1"}},
		{"long", []string{"/" + strings.Repeat("a", 80) + "/sse"}, []string{"cs"}, []string{strings.Repeat("a", 64)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bs := make([]outBackend, len(tc.paths))
			for i := range bs {
				p, _, _ := strings.Cut(tc.paths[i], "?")
				bs[i] = outBackend{path: p, pathKnown: p != "", host: tc.hosts[i]}
			}
			(&conv{}).nameBackends(bs)
			for i, b := range bs {
				if b.name != tc.want[i] || !nameRE.MatchString(b.name) {
					t.Errorf("name %d = %q, want %q", i, b.name, tc.want[i])
				}
			}
		})
	}
}

func TestOrigin(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"https://www.example.com", "https://www.example.com", true},
		{"https://www.example.com/", "https://www.example.com", true},
		{"http://localhost:3000", "http://localhost:3000", true},
		{"https://*.example.com", "", false},
		{"https://www.example.com/news", "", false},
		{"www.example.com", "", false},
		{"null", "", false},
	}
	for _, tc := range tests {
		got, ok := origin(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("origin(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
