package node

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/relay"
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
	if rc := cfg.Relay; rc.Heartbeat != 5*time.Second || rc.RingEvents != 500 || rc.Linger != relay.DefaultConfig().Linger {
		t.Fatalf("relay config %+v: want the file's keys over the defaults", rc)
	}
}

// TestZeroInTheFileIsZero: a key written as zero is zero, not "the
// default"; only an absent key keeps the default.
func TestZeroInTheFileIsZero(t *testing.T) {
	src := "relay:\n  linger: 0s\n  drain_retry: 0s\n  gap_event: ''\n  connect_retries: 0\n"
	cfg, err := ParseConfig([]byte(src), env(nil))
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		t.Fatal(err)
	}
	got := []any{cfg.Relay.Linger, cfg.Relay.DrainRetry, cfg.Relay.GapEvent, cfg.Relay.ConnectRetries, cfg.Relay.Heartbeat}
	want := []any{time.Duration(0), time.Duration(0), "", 0, relay.DefaultConfig().Heartbeat}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("linger, drain_retry, gap_event, connect_retries, heartbeat = %v, want %v", got, want)
	}
}

func TestConsulBackEndEntries(t *testing.T) {
	// Entries without uri name back ends found in Consul: several may leave
	// the mount to Consul, and one may pin it.
	src := "mesh: {secret: " + testSecret + ", consul: {address: 127.0.0.1:8500}, gossip: {bind: '127.0.0.1:7946'}}\nbackends:\n  - {name: a, headers: {X-Tenant: t1}}\n  - {name: b}\n  - {name: c, mount: /pinned/, prefix: true}\n"
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
		{"unknown nested key", "admin: {lissen: x}\n", "admin.lissen"},
		{"bad listen", "listen: nowhere\n", "listen"},
		{"bad duration", "relay: {heartbeat: soon}\n", "relay.heartbeat"},
		{"unset variable", "backends:\n  - name: a\n    uri: ${NOPE}\n", "backends[0].uri"},
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
		{"bad gossip seed", "mesh: {secret: " + testSecret + ", gossip: {bind: '127.0.0.1:0', seeds: [nohost]}}\n", "mesh.gossip.seeds[0]"},
		{"bad gossip key", "mesh: {secret: " + testSecret + ", gossip: {bind: '127.0.0.1:0', key: not-base64}}\n", "mesh.gossip.key"},
		{"bad dc", "mesh: {secret: " + testSecret + ", dc: 'd c', gossip: {bind: '127.0.0.1:0'}}\n", "mesh.dc"},
		{"prefix uri without a trailing slash", "backends:\n  - {name: a, uri: 'http://cs:8080', mount: /feeds/, prefix: true}\n", "backends[0].uri"},
		{"prefix uri path without a trailing slash", "backends:\n  - {name: a, uri: 'http://cs:8080/base', prefix: true}\n", "backends[0].uri"},
		{"bad header name", "backends:\n  - {name: a, uri: http://x/y, headers: {'Bad Name': v}}\n", "backends[0].headers.Bad Name"},
		{"bad header value", "backends:\n  - {name: a, uri: http://x/y, headers: {X-A: \"v\\nw\"}}\n", "backends[0].headers.X-A"},
		{"hop-by-hop header", "backends:\n  - {name: a, uri: http://x/y, headers: {connection: close}}\n", "backends[0].headers.connection"},
		{"mesh header", "backends:\n  - {name: a, uri: http://x/y, headers: {X-Ssemesh-Via: a}}\n", "backends[0].headers.X-Ssemesh-Via"},
		{"fractional integer", "limits: {max_clients: 1.5}\n", "limits.max_clients"},
		{"string for an integer", "limits: {max_streams: many}\n", "limits.max_streams"},
		{"string for a bool", "expose_mounts: 'yes'\n", "expose_mounts"},
		{"list for a string", "listen: [a, b]\n", "listen"},
		{"unparsable consul address", "mesh: {secret: " + testSecret + ", consul: {address: 'http://[::1'}}\n", "mesh.consul.address"},
		{"consul address without port", "mesh: {secret: " + testSecret + ", consul: {address: 'consul'}}\n", "mesh.consul.address"},
		{"any origin with credentials", "cors: {allowed_origins: ['*'], allow_credentials: true}\n", "cors.allow_credentials"},
		{"open admin without token", "admin: {listen: '0.0.0.0:9090'}\n", "admin.token"},
		{"mesh without secret", "mesh: {gossip: {bind: '127.0.0.1:0'}}\n", "mesh.secret"},
		{"short secret", "mesh: {secret: short, gossip: {bind: '127.0.0.1:0'}}\n", "mesh.secret"},
		{"accepted secret without secret", "mesh: {accept_secrets: [" + testSecret + "]}\n", "mesh.accept_secrets"},
		{"open gossip without key", "mesh: {secret: " + testSecret + ", gossip: {bind: '0.0.0.0:7946'}}\n", "mesh.gossip.key"},
		{"consul alone opens gossip", "mesh: {secret: " + testSecret + ", consul: {address: '127.0.0.1:8500'}}\n", "mesh.gossip.key"},
		{"lastEventId as identity", "backends:\n  - {name: a, uri: http://x/y, query_params: [lastEventId]}\n", "backends[0].query_params[0]"},
		{"configured parameter as identity", "backends:\n  - {name: a, uri: 'http://x/y?apikey=k', query_params: [apikey]}\n", "backends[0].query_params[0]"},
		{"chained without secret", "backends:\n  - {name: a, uri: http://x/y, chained: true}\n", "backends[0].chained"},
		{"bad trusted proxy", "trusted_proxies: [lb.example]\n", "trusted_proxies[0]"},
		{"negative per-address connections", "limits: {per_ip: {connections: -1}}\n", "limits.per_ip.connections"},
		{"rate without burst", "limits: {per_ip: {new_streams: 5, burst: 0}}\n", "limits.per_ip.burst"},
		{"admission rate without burst", "limits: {admit: {rate: 100, burst: 0}}\n", "limits.admit.burst"},
		{"negative admission wait", "limits: {admit: {max_wait: -1s}}\n", "limits.admit.max_wait"},
		{"negative admission rate", "limits: {admit: {rate: -5}}\n", "limits.admit.rate"},
		{"no catch-up per stream", "relay: {catch_up_per_stream: -1}\n", "relay.catch_up_per_stream"},
		{"catch-up budget below one stream's", "relay: {catch_up_per_stream: 8, catch_up_max: 4}\n", "relay.catch_up_max"},
		{"node id too long for gossip", "node_id: " + strings.Repeat("n", 300) + "\nmesh: {secret: " + testSecret + ", gossip: {bind: '127.0.0.1:0'}}\n", "node_id"},
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

func TestExplicitInsecureSwitchesAreAccepted(t *testing.T) {
	for _, src := range []string{
		"admin: {listen: '0.0.0.0:9090', insecure_no_token: true}\n",
		"admin: {listen: '0.0.0.0:9090', token: t}\n",
		"mesh: {secret: " + testSecret + ", advertise: 10.0.0.7, gossip: {bind: '0.0.0.0:7946', insecure_no_key: true}}\n",
		"mesh: {secret: " + testSecret + ", advertise: 10.0.0.7, gossip: {bind: '0.0.0.0:7946', key: 'MDEyMzQ1Njc4OWFiY2RlZg=='}}\n",
		"backends:\n  - {name: a, uri: 'http://cs:8080/', mount: /feeds/, prefix: true, query_params: [lang]}\n",
		"trusted_proxies: [10.0.0.0/8, 192.0.2.7, '2001:db8::/32']\n",
	} {
		cfg, err := ParseConfig([]byte(src), env(nil))
		if err == nil {
			err = cfg.Validate()
		}
		if err != nil {
			t.Errorf("%q refused: %v", src, err)
		}
	}
}

func TestInterpolateValue(t *testing.T) {
	tests := []struct{ in, want, missing string }{
		{"${X}", "x", ""},
		{"${Y:-dflt}", "dflt", ""},
		{"${E:-dflt}", "dflt", ""}, // set but empty takes the default, as in sh
		{"${E}", "", ""},           // set but empty, no default: empty
		{"$${X}", "${X}", ""},
		{"$X", "$X", ""},
		{"pre-${X}-${X}", "pre-x-x", ""},
		{"${MISSING}", "${MISSING}", "MISSING"},
		{"${X} ${MISSING} ${OTHER}", "x ${MISSING} ${OTHER}", "MISSING"},
	}
	for _, tc := range tests {
		got, missing := InterpolateValue(tc.in, env(map[string]string{"X": "x", "E": ""}))
		if got != tc.want || missing != tc.missing {
			t.Errorf("InterpolateValue(%q) = %q, missing %q; want %q, %q", tc.in, got, missing, tc.want, tc.missing)
		}
	}
}

func TestInterpolationInTheFile(t *testing.T) {
	lookup := env(map[string]string{
		"MAX":    "500",
		"PASS":   "p: w#rd\nadmin: {listen: 0.0.0.0:1}", // YAML inside a value stays a value
		"ORIGIN": "https://news.example",
		"ON":     "true",
	})
	src := "# token: ${NOT_SET_BUT_A_COMMENT}\n" +
		"limits: {max_clients: ${MAX}}\n" +
		"cors: {allowed_origins: ['${ORIGIN}'], allow_credentials: ${ON}}\n" +
		"backends:\n" +
		"  - name: a\n" +
		"    uri: http://127.0.0.1:1/x\n" +
		"    credentials: {username: u, password: ${PASS}}\n"
	cfg, err := ParseConfig([]byte(src), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.MaxClients != 500 || !cfg.CORS.AllowCredentials || cfg.CORS.AllowedOrigins[0] != "https://news.example" {
		t.Fatalf("typed values from variables: %+v %+v", cfg.Limits, cfg.CORS)
	}
	if cfg.Backends[0].Credentials.Password != "p: w#rd\nadmin: {listen: 0.0.0.0:1}" || cfg.Admin.Listen != DefaultConfig().Admin.Listen {
		t.Fatalf("a variable's YAML changed the document: password %q, admin %q", cfg.Backends[0].Credentials.Password, cfg.Admin.Listen)
	}
	// A quoted reference stays a string, so a number in it is refused
	// where a number is wanted, rather than silently typed.
	if _, err := ParseConfig([]byte("limits: {max_clients: '${MAX}'}\n"), lookup); err == nil || !strings.Contains(err.Error(), "limits.max_clients") {
		t.Fatalf("quoted reference for an integer: %v", err)
	}
	// Every missing variable is reported, with its key and line.
	_, err = ParseConfig([]byte("a: 1\nbackends:\n  - name: a\n    uri: ${NOPE}\n    credentials: {username: ${NOPE2}}\n"), env(nil))
	for _, want := range []string{"backends[0].uri: environment variable NOPE is not set", "(line 4)", "backends[0].credentials.username: environment variable NOPE2", "(line 5)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing variables: %v; want %q", err, want)
		}
	}
}

func TestConfigReportsEveryProblemAtOnce(t *testing.T) {
	src := "backends:\n" + // 1
		"  - name: a\n" + // 2
		"    uri: http://127.0.0.1:1/x\n" + // 3
		"    bogus: 1\n" + // 4
		"backend: []\n" + // 5
		"limits:\n" + // 6
		"  max_clients: lots\n" + // 7
		"  max_client: 5\n" + // 8
		"relay:\n" + // 9
		"  heartbeat: [1]\n" // 10
	_, err := ParseConfig([]byte(src), env(nil))
	var es ConfigErrors
	if !errors.As(err, &es) {
		t.Fatalf("got %v, want ConfigErrors", err)
	}
	want := []string{
		`backends[0].bogus: unknown key (line 4)`,
		`backend: unknown key; did you mean "backends"? (line 5)`,
		`limits.max_clients: want an integer, got "lots" (line 7)`,
		`limits.max_client: unknown key; did you mean "max_clients"? (line 8)`,
		`relay.heartbeat: want a duration such as "15s", got a list (line 10)`,
	}
	if len(es) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(es), len(want), err)
	}
	for i, e := range es {
		if got := e.Key + ": " + e.Reason; got != want[i] {
			t.Errorf("problem %d = %q, want %q", i, got, want[i])
		}
	}
	// The exit status comes from errors.As(*ConfigError), and no Go type
	// name reaches the operator.
	var ce *ConfigError
	if !errors.As(err, &ce) || strings.Contains(err.Error(), "node.") || strings.Contains(err.Error(), "int") && !strings.Contains(err.Error(), "integer") {
		t.Fatalf("error %q: want a *ConfigError inside and no Go type names", err)
	}
}

func TestCUEFileIsPointedAtTheImporter(t *testing.T) {
	src := "server:\n  applicationConnectors:\n    - type: http\n      port: 8080\nbackends:\n  - uri: http://cs:8080/changes\n"
	_, err := ParseConfig([]byte(src), env(nil))
	if err == nil || !strings.Contains(err.Error(), "ssemesh import-cue") {
		t.Fatalf("got %v, want a pointer to ssemesh import-cue", err)
	}
}
