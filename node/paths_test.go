package node

import (
	"net/url"
	"strings"
	"testing"

	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/mesh"
)

func TestCheckClientPath(t *testing.T) {
	tests := []struct {
		path string
		ok   bool
	}{
		{"/feeds/event-1", true},
		{"/feeds/", true},
		{"/feeds/a;v=1/b", true},
		{"/feeds/caf%C3%A9", true},
		{"/feeds/a%20b", true},
		{"/feeds/~user/x:y@z", true},
		{"/feeds/..;/secret", false},
		{"/feeds/../secret", false},
		{"/feeds/./x", false},
		{"/feeds/.;x/y", false},
		{"/feeds/%2e%2e/x", false},
		{"/feeds/%2E./x", false},
		{"/feeds/%252e%252e/x", false},
		{"/feeds/a%2Fb", false},
		{"/feeds/a%2fb", false},
		{"/feeds/a%5Cb", false},
		{"/feeds/a\\b", false},
		{"/feeds/a%00b", false},
		{"/feeds/a%0d%0aX: y", false},
		{"/feeds/a%7F", false},
		{"/feeds//evil", false},
		{"//evil/x", false},
		{"/feeds/@evil:9000/x", true}, // '@' is a path character; it stays in the path
		{"/feeds/a%zz", false},
		{"/feeds/a%2", false},
		{"/feeds/a b", false},
		{"/feeds/a\"b", false},
		{"/feeds/a<b>", false},
		{"/feeds/\xff", false},
		{"feeds", false},
		{"", false},
		{"*", false},
		{"/" + strings.Repeat("a", maxPathBytes), false},
	}
	for _, tc := range tests {
		err := checkClientPath(tc.path)
		if (err == nil) != tc.ok {
			t.Errorf("checkClientPath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}

func TestUpstreamURL(t *testing.T) {
	tests := []struct {
		base, mount, path, query string
		prefix                   bool
		want                     string
	}{
		{"http://cs:8080/sse", "/sse", "/sse", "", false, "http://cs:8080/sse"},
		{"http://cs:8080/sse?key=k", "/sse", "/sse", "lang=en", false, "http://cs:8080/sse?key=k&lang=en"},
		{"http://cs:8080/", "/feeds/", "/feeds/@evil:9000/x", "", true, "http://cs:8080/@evil:9000/x"},
		{"http://cs:8080/base/", "/feeds/", "/feeds/a/b", "", true, "http://cs:8080/base/a/b"},
		{"http://cs:8080/base/", "/feeds", "/feeds/a", "", true, "http://cs:8080/base/a"},
		{"http://cs:8080/base/", "/feeds", "/feeds", "", true, "http://cs:8080/base/"},
		{"https://cs/base/", "/f/", "/f/caf%C3%A9", "", true, "https://cs/base/caf%C3%A9"},
		{"http://cs:8080/base/", "/f/", "/f/a;x=1", "", true, "http://cs:8080/base/a;x=1"},
	}
	for _, tc := range tests {
		base, _ := url.Parse(tc.base)
		u, err := upstreamURL(base, tc.prefix, mountRest(tc.mount, tc.path), tc.query)
		if err != nil {
			t.Errorf("%s + %s: %v", tc.base, tc.path, err)
			continue
		}
		if u.String() != tc.want {
			t.Errorf("%s + %s = %s, want %s", tc.base, tc.path, u, tc.want)
		}
	}
}

func TestParseClientQuery(t *testing.T) {
	configured := map[string]bool{"apikey": true}
	allowed := []string{"lang", "apikey", "z"}
	tests := []struct {
		raw      string
		identity string
		lastID   string
		hasID    bool
		bad      bool
	}{
		{"", "", "", false, false},
		{"r=1", "", "", false, false},
		{"lang=en&r=7", "lang=en", "", false, false},
		{"z=1&lang=en", "lang=en&z=1", "", false, false}, // canonical order: one stream, one key
		{"apikey=ATTACKER&lang=en", "lang=en", "", false, false},
		{"lastEventId=42&lang=en", "lang=en", "42", true, false},
		{"lastEventId=a%0d%0ab", "", "a\r\nb", true, false}, // taken out here, refused by ValidLastEventID
		{"lang=%zz", "", "", false, true},
		{"lang=" + strings.Repeat("x", maxQueryBytes), "", "", false, true},
	}
	for _, tc := range tests {
		q, err := parseClientQuery(tc.raw, allowed, configured)
		if (err != nil) != tc.bad {
			t.Errorf("parseClientQuery(%q) error %v, want bad=%v", tc.raw, err, tc.bad)
			continue
		}
		if q.identity != tc.identity || q.lastID != tc.lastID || q.hasID != tc.hasID {
			t.Errorf("parseClientQuery(%q) = %+v, want identity %q lastID %q/%v", tc.raw, q, tc.identity, tc.lastID, tc.hasID)
		}
	}
}

func TestRedactURL(t *testing.T) {
	u, _ := url.Parse("http://user:pw@cs:8080/sse?apikey=SECRET&b=2&b=3")
	got := redactURL(u)
	if strings.Contains(got, "SECRET") || strings.Contains(got, "pw") || got != "http://cs:8080/sse?apikey=REDACTED&b=REDACTED" {
		t.Fatalf("redactURL = %s", got)
	}
}

// FuzzClientPathMapping drives hostile paths and queries through the whole
// mapping from a client request to an upstream URL: whatever the client
// sends, the upstream host, port and scheme are the back end's, the path
// stays below the back end's path with no segment a server could read as a
// step up, and the configured query parameter keeps its configured value.
func FuzzClientPathMapping(f *testing.F) {
	for _, s := range []struct{ path, query string }{
		{"/feeds/event-1", "lang=en"},
		{"/feeds/@evil:9000/x", ""},
		{"/feeds/..;/secret", ""},
		{"/feeds/%2e%2e/x", "apikey=ATTACKER"},
		{"/feeds/%252e%252e/x", "lastEventId=1"},
		{"/feeds/a%2Fb", "lang=a&lang=b"},
		{"/feeds//evil.example/x", ""},
		{"/feeds/%5C%5Cevil", "key=v"},
		{"/feeds/a%00b", "a=%00"},
	} {
		f.Add(s.path, s.query)
	}
	base, _ := url.Parse("http://cs.example:8080/base/?apikey=SECRET")
	m := &mount{spec: BackendSpec{Name: "f", Mount: "/feeds/", Prefix: true, QueryParams: []string{"lang", "apikey"}}, configured: map[string]bool{}}
	m.addInstance(base)
	f.Fuzz(func(t *testing.T, path, query string) {
		if checkClientPath(path) != nil || !m.matches(path) {
			return
		}
		q, err := parseClientQuery(query, m.spec.QueryParams, m.configured)
		if err != nil {
			return
		}
		u, err := m.upstreamURL(0, path, q.identity)
		if err != nil {
			t.Fatalf("a path that passed the checks was refused by the mapping: %q: %v", path, err)
		}
		again, err := url.Parse(u.String())
		if err != nil {
			t.Fatalf("upstream URL %q does not parse: %v", u, err)
		}
		for _, v := range []*url.URL{u, again} {
			if v.Scheme != "http" || v.Host != "cs.example:8080" || v.User != nil {
				t.Fatalf("path %q query %q left the back end: %s", path, query, v)
			}
			if !strings.HasPrefix(v.Path, "/base/") || !strings.HasPrefix(v.EscapedPath(), "/base/") {
				t.Fatalf("path %q left the back end's path: %s", path, v)
			}
			for _, seg := range strings.Split(v.Path, "/") {
				name, _, _ := strings.Cut(seg, ";")
				if name == "." || name == ".." || strings.ContainsAny(seg, "\\\x00\r\n") {
					t.Fatalf("path %q reaches the back end with segment %q: %s", path, seg, v)
				}
			}
			vals, err := url.ParseQuery(v.RawQuery)
			if err != nil || len(vals["apikey"]) != 1 || vals["apikey"][0] != "SECRET" {
				t.Fatalf("query %q changed the configured parameter: %s", query, v.RawQuery)
			}
			if _, ok := vals[lastEventIDParam]; ok {
				t.Fatalf("query %q sent lastEventId upstream: %s", query, v.RawQuery)
			}
		}
	})
}

func TestConsulPrefixInstancesGetATrailingSlash(t *testing.T) {
	n, err := New(testConfig(), ssetest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.relay.Close)
	n.updateMounts([]mesh.Backend{{Name: "live", Mount: "/f/", Prefix: true,
		Instances: []mesh.Instance{{ID: "a", Address: "10.0.0.5:8080", Scheme: "http", Path: "/feed"}}}})
	m := n.findMount("/f/abc")
	if m == nil {
		t.Fatal("mount from Consul not installed")
	}
	u, err := m.upstreamURL(0, "/f/abc", "")
	if err != nil || u.String() != "http://10.0.0.5:8080/feed/abc" {
		t.Fatalf("upstream %v (%v), want http://10.0.0.5:8080/feed/abc", u, err)
	}
}
