package node

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseConfigIssueShape(t *testing.T) {
	src := `
listen: 127.0.0.1:8080
admin: {listen: 127.0.0.1:9090}
backends:
  - name: changelog
    uri: http://cs.example:8080/webservice/escenic/changelog/sse
    mount: /webservice/escenic/changelog/sse
    prefix: false
    headers: {Host: cs.example}
    credentials: {username: ${CS_USER}, password: ${CS_PASS:-secret}}
  - name: live
    uri: http://lc.example/live-center/feed/
    prefix: true
relay:
  heartbeat: 5s
  ring_events: 500
`
	cfg, err := ParseConfig([]byte(src), env(map[string]string{"CS_USER": "proxy"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b := cfg.Backends[0]
	if b.Credentials.Username != "proxy" || b.Credentials.Password != "secret" || b.Headers["Host"] != "cs.example" {
		t.Fatalf("backend 0: %+v %+v", b, b.Credentials)
	}
	if cfg.Backends[1].Mount != "/live-center/feed/" || !cfg.Backends[1].Prefix {
		t.Fatalf("backend 1 mount %q defaults to the uri's path", cfg.Backends[1].Mount)
	}
	rc, err := cfg.RelayConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rc.Heartbeat != 5*time.Second || rc.RingEvents != 500 || rc.Linger == 0 {
		t.Fatalf("relay config %+v", rc)
	}
}

func TestConsulBackEndEntries(t *testing.T) {
	// Entries without uri name back ends found in Consul: several may leave
	// the mount to Consul, and one may pin it.
	src := "mesh: {consul: {address: 127.0.0.1:8500}}\nbackends:\n  - {name: a, headers: {X-Tenant: t1}}\n  - {name: b}\n  - {name: c, mount: /pinned/, prefix: true}\n"
	cfg, err := ParseConfig([]byte(src), env(nil))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatalf("valid Consul entries refused: %v", err)
	}
	if cfg.Backends[2].Mount != "/pinned/" || cfg.Backends[0].Mount != "" {
		t.Fatalf("mounts %q %q, want the pinned one kept and the others left to Consul", cfg.Backends[2].Mount, cfg.Backends[0].Mount)
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	tests := []struct {
		name, src, key string
	}{
		{"unknown top-level key", "listn: 1.2.3.4:5\n", "listn"},
		{"unknown nested key", "admin: {lissen: x}\n", "yaml"},
		{"bad listen", "listen: nowhere\n", "listen"},
		{"bad duration", "relay: {heartbeat: soon}\n", "yaml"},
		{"unset variable", "backends:\n  - name: a\n    uri: ${NOPE}\n", "line 3"},
		{"bad uri", "backends:\n  - {name: a, uri: ftp://x/y}\n", "backends[0].uri"},
		{"credentials in uri", "backends:\n  - {name: a, uri: 'http://u:p@x/y'}\n", "backends[0].uri"},
		{"duplicate name", "backends:\n  - {name: a, uri: http://x/y}\n  - {name: a, uri: http://x/z}\n", "backends[1].name"},
		{"duplicate mount", "backends:\n  - {name: a, uri: http://x/y}\n  - {name: b, uri: http://z/y}\n", "backends[1].mount"},
		{"relative mount", "backends:\n  - {name: a, uri: http://x/y, mount: y}\n", "backends[0].mount"},
		{"reserved header", "backends:\n  - {name: a, uri: http://x/y, headers: {Last-Event-ID: '1'}}\n", "backends[0].headers.Last-Event-ID"},
		{"bad name", "backends:\n  - {name: 'a b', uri: http://x/y}\n", "backends[0].name"},
		{"negative tier", "mesh: {tier: -1}\n", "mesh.tier"},
		{"zero clients", "limits: {max_clients: -3}\n", "limits.max_clients"},
		{"bad log level", "log: {level: loud}\n", "log.level"},
		{"bad cors origin", "cors: {allowed_origins: [news.example]}\n", "cors.allowed_origins[0]"},
		{"tiny event limit", "relay: {max_event_bytes: 10}\n", "relay.max_event_bytes"},
		{"backoff inverted", "relay: {backoff_min: 5s, backoff_max: 1s}\n", "relay.backoff_max"},
		{"client lag below one event", "relay: {max_event_bytes: 1048576, client_lag_bytes: 65536}\n", "relay.client_lag_bytes"},
		{"consul back end with relative mount", "mesh: {consul: {address: 127.0.0.1:8500}}\nbackends:\n  - {name: a, mount: feed}\n", "backends[0].mount"},
		{"consul back end with reserved header", "mesh: {consul: {address: 127.0.0.1:8500}}\nbackends:\n  - {name: a, headers: {Accept: x}}\n", "backends[0].headers.Accept"},
		{"negative handoff", "mesh: {handoff: -1s}\n", "mesh.handoff"},
		{"negative avoid", "mesh: {avoid_for: -1s}\n", "mesh.avoid_for"},
		{"unspecified advertise", "mesh: {advertise: 0.0.0.0}\n", "mesh.advertise"},
		{"bad gossip seed", "mesh: {gossip: {bind: '127.0.0.1:0', seeds: [nohost]}}\n", "mesh.gossip.seeds[0]"},
		{"bad gossip key", "mesh: {gossip: {bind: '127.0.0.1:0', key: not-base64}}\n", "mesh.gossip.key"},
		{"bad dc", "mesh: {dc: 'd c', gossip: {bind: '127.0.0.1:0'}}\n", "mesh.dc"},
		{"node id too long for gossip", "node_id: " + strings.Repeat("n", 300) + "\nmesh: {gossip: {bind: '127.0.0.1:0'}}\n", "node_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tc.src), env(nil))
			if err == nil {
				err = cfg.Validate()
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a ConfigError", err)
			}
			if ce.Key != tc.key || ce.Reason == "" {
				t.Fatalf("error %q names key %q, want %q", err, ce.Key, tc.key)
			}
		})
	}
}

func TestInterpolate(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a: ${X}", "a: x"},
		{"a: ${Y:-dflt}", "a: dflt"},
		{"a: ${E:-dflt}", "a: dflt"}, // set but empty takes the default, as in sh
		{"a: $${X}", "a: ${X}"},
		{"a: $X", "a: $X"},
		{"# token: ${MISSING}\na: ${X}", "# token: ${MISSING}\na: x"},
		{"  # ${MISSING} in an indented comment", "  # ${MISSING} in an indented comment"},
		{"a: ${X}\nb: ${X}\n", "a: x\nb: x\n"},
	}
	for _, tc := range tests {
		got, err := Interpolate([]byte(tc.in), env(map[string]string{"X": "x", "E": ""}))
		if err != nil || string(got) != tc.want {
			t.Errorf("Interpolate(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		src  string
		line string
	}{
		{"a: 1\nb: ${MISSING}\n", "line 2"},
		// The same name with a default earlier must not move the line.
		{"a: ${MISSING:-x}\n# ${MISSING}\nb: 2\nc: ${MISSING}\n", "line 4"},
	} {
		_, err := Interpolate([]byte(tc.src), env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.line+":") || !strings.Contains(err.Error(), "MISSING") {
			t.Errorf("missing variable error %v should name %s and the variable", err, tc.line)
		}
	}
}
