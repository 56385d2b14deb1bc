package cueimport

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/ssemesh/ssemesh/node"
)

// wantConfig is what a converted configuration holds once a node has read
// it, key by key.
type wantConfig struct {
	listen      string
	adminListen string
	adminToken  string
	logLevel    string
	logFormat   string
	accessLog   bool
	origins     []string
	credentials bool
	backends    []wantBackend
}

type wantBackend struct {
	name    string
	uri     string
	mount   string
	headers map[string]string
	creds   *node.Credentials
}

// msg is an expected warning or note: its key, and a part of its text.
type msg struct{ key, has string }

// nameRE is what ssemesh accepts as a back end's name.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func lookupIn(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// The testdata files follow the CUE SSE Proxy documentation's examples:
// the sse-proxy.yaml the installer writes, back ends with httpHeaders and
// credentials, ${VAR:-default} references, CORS and HTTPS connectors.
func TestConvertTestdata(t *testing.T) {
	cs := &node.Credentials{Username: "proxy", Password: "p@ss: w#rd"}
	changelog := func(host string) string {
		return "http://" + host + ":8080/webservice/escenic/changelog/sse"
	}
	const csPath = "/webservice/escenic/changelog/sse"
	tests := []struct {
		name     string
		file     string
		env      map[string]string
		want     wantConfig
		warnings []msg
		notes    []msg
		vars     []EnvVar
	}{
		{
			name: "one back end",
			file: "one-backend.yaml",
			env:  map[string]string{"USER": "proxy", "PASSWORD": "p@ss: w#rd"},
			want: wantConfig{
				listen: "0.0.0.0:9080", adminListen: "127.0.0.1:7090", logLevel: "info", logFormat: "text",
				backends: []wantBackend{{name: "changelog-sse", uri: changelog("editorial.example.com"), mount: csPath,
					headers: map[string]string{"Host": "cue.example.com"}, creds: cs}},
			},
			notes: []msg{{"server.gzip", "never compresses"}},
			vars:  []EnvVar{{Name: "USER"}, {Name: "PASSWORD"}},
		},
		{
			name: "several back ends with headers and credentials",
			file: "several-backends.yaml",
			env:  map[string]string{"CS_USER": "proxy", "CS_PASSWORD": "p@ss: w#rd", "LIVE_API_KEY": "k-123"},
			want: wantConfig{
				listen: "0.0.0.0:9080", adminListen: "localhost:7090", logLevel: "info", logFormat: "text",
				backends: []wantBackend{
					{name: "cs1.example.com-changelog-sse", uri: changelog("cs1.example.com"), mount: csPath,
						headers: map[string]string{"Host": "cue.example.com"}, creds: cs},
					{name: "cs2.example.com-changelog-sse", uri: changelog("cs2.example.com"), mount: "/cs2.example.com-changelog-sse" + csPath,
						headers: map[string]string{"Host": "cue.example.com"}, creds: cs},
					{name: "live-center-feed", uri: "https://live.example.com/live-center/feed/", mount: "/live-center/feed/",
						headers: map[string]string{"X-Api-Key": "k-123"}},
					{name: "newsgate.example.com", uri: "http://newsgate.example.com:8085/", mount: "/",
						creds: &node.Credentials{Username: "newsgate", Password: "ng-pass"}},
				},
			},
			warnings: []msg{
				{"metrics", "/metrics on the admin listener"},
				{"backends[0].httpHeaders.Accept", "dropped"},
				{"backends[1]", "same path as backends[0]"},
				{"backends[2].httpHeaders.Connection", "dropped"},
				{"backends[3].uri", "moves to credentials"},
			},
			vars: []EnvVar{{Name: "CS_USER"}, {Name: "CS_PASSWORD"}, {Name: "LIVE_API_KEY"}},
		},
		{
			name: "environment defaults apply",
			file: "env-defaults.yaml",
			env:  map[string]string{"CS_PASSWORD": "p@ss: w#rd", "NOT_A_REFERENCE": "oops"},
			want: wantConfig{
				listen: "0.0.0.0:9080", adminListen: "127.0.0.1:7090", logLevel: "warn", logFormat: "text",
				backends: []wantBackend{{name: "changelog-sse", uri: changelog("localhost"), mount: csPath,
					headers: map[string]string{"Host": "cue.example.com", "X-Note": "${NOT_A_REFERENCE} costs 5$"},
					creds:   &node.Credentials{Username: "sse-proxy", Password: "p@ss: w#rd"}}},
			},
			warnings: []msg{{"logging.level", "LOG_LEVEL must now hold an ssemesh level"}},
			vars: []EnvVar{{Name: "SSE_PROXY_BIND", Optional: true}, {Name: "SSE_PROXY_PORT", Optional: true},
				{Name: "SSE_PROXY_ADMIN_PORT", Optional: true}, {Name: "CS_USER", Optional: true}, {Name: "CS_PASSWORD"},
				{Name: "CS_SCHEME", Optional: true}, {Name: "CS_HOST", Optional: true}, {Name: "CS_PORT", Optional: true},
				{Name: "CS_VHOST", Optional: true}, {Name: "LOG_LEVEL", Optional: true}},
		},
		{
			name: "environment set",
			file: "env-defaults.yaml",
			env: map[string]string{"SSE_PROXY_BIND": "10.0.0.5", "SSE_PROXY_PORT": "19080", "SSE_PROXY_ADMIN_PORT": "17090",
				"CS_SCHEME": "https", "CS_HOST": "cs.internal", "CS_PORT": "8443", "CS_VHOST": "cue.internal",
				"CS_USER": "proxy", "CS_PASSWORD": "p@ss: w#rd", "LOG_LEVEL": "debug", "NOT_A_REFERENCE": "oops"},
			want: wantConfig{
				listen: "10.0.0.5:19080", adminListen: "127.0.0.1:17090", logLevel: "debug", logFormat: "text",
				backends: []wantBackend{{name: "changelog-sse", uri: "https://cs.internal:8443" + csPath, mount: csPath,
					headers: map[string]string{"Host": "cue.internal", "X-Note": "${NOT_A_REFERENCE} costs 5$"}, creds: cs}},
			},
			warnings: []msg{{"logging.level", "in lower case"}},
			vars: []EnvVar{{Name: "SSE_PROXY_BIND", Optional: true}, {Name: "SSE_PROXY_PORT", Optional: true},
				{Name: "SSE_PROXY_ADMIN_PORT", Optional: true}, {Name: "CS_USER", Optional: true}, {Name: "CS_PASSWORD"},
				{Name: "CS_SCHEME", Optional: true}, {Name: "CS_HOST", Optional: true}, {Name: "CS_PORT", Optional: true},
				{Name: "CS_VHOST", Optional: true}, {Name: "LOG_LEVEL", Optional: true}},
		},
		{
			name: "CORS as one string, Dropwizard's default connectors",
			file: "cors.yaml",
			env:  map[string]string{"SSEMESH_ADMIN_TOKEN": "admin-token"},
			want: wantConfig{
				listen: "0.0.0.0:8080", adminListen: "0.0.0.0:8081", adminToken: "admin-token", logLevel: "info", logFormat: "text",
				origins: []string{"https://www.example.com", "https://m.example.com"}, credentials: true,
				backends: []wantBackend{{name: "changelog-sse", uri: changelog("cs.example.com"), mount: csPath}},
			},
			warnings: []msg{
				{"server.adminConnectors", "requires a token"},
				{"cors.allowedOrigins", `"https://*.example.com" dropped`},
			},
			notes: []msg{
				{"server.applicationConnectors", "port 8080"},
				{"server.adminConnectors", "port 8081"},
				{"cors", "allowedMethods: ignored"},
			},
			vars: []EnvVar{{Name: "SSEMESH_ADMIN_TOKEN"}},
		},
		{
			name: "CORS as a list, from the environment",
			file: "cors-list.yaml",
			env:  map[string]string{"CORS_CREDENTIALS": "true"},
			want: wantConfig{
				listen: "0.0.0.0:9080", adminListen: "127.0.0.1:7090", logLevel: "info", logFormat: "text",
				origins: []string{"https://www.example.com", "https://beta.example.com"}, credentials: true,
				backends: []wantBackend{{name: "changelog-sse", uri: changelog("cs.example.com"), mount: csPath}},
			},
			vars: []EnvVar{{Name: "EXTRA_ORIGIN", Optional: true}, {Name: "CORS_CREDENTIALS", Optional: true}},
		},
		{
			name: "HTTPS connectors",
			file: "https.yaml",
			env:  map[string]string{"CS_PASSWORD": "p@ss: w#rd"},
			want: wantConfig{
				listen: "0.0.0.0:9080", adminListen: "127.0.0.1:7443", logLevel: "info", logFormat: "text",
				backends: []wantBackend{{name: "changelog-sse", uri: "https://editorial.example.com" + csPath, mount: csPath,
					creds: &node.Credentials{Username: "sse-proxy", Password: "p@ss: w#rd"}}},
			},
			warnings: []msg{
				{"server.applicationConnectors[0]", "keytool -importkeystore -srckeystore /etc/escenic/sse-proxy/keystore.jks -srcstoretype JKS"},
				{"server.adminConnectors[0]", "openssl pkcs12 -in /etc/escenic/sse-proxy/admin.p12 -nokeys"},
			},
			vars: []EnvVar{{Name: "CS_PASSWORD"}},
		},
		{
			name: "simple server with a context path",
			file: "simple-server.yaml",
			want: wantConfig{
				listen: "0.0.0.0:9080", adminListen: "127.0.0.1:9090", logLevel: "error", logFormat: "json", accessLog: true,
				backends: []wantBackend{{name: "changelog-sse", uri: changelog("cs.example.com"), mount: "/sse" + csPath}},
			},
			warnings: []msg{
				{"server.requestLog", "converted to access_log"},
				{"server.applicationContextPath", "below /sse"},
				{"server.adminContextPath", "127.0.0.1:9090"},
				{"logging.level", "OFF reads as error"},
				{"logging.loggers", "com.escenic.sse.proxy DEBUG"},
				{"logging.appenders[0]", "/var/log/escenic/sse-proxy.log"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Convert(raw, Options{Source: tc.file})
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			cfg, err := node.ParseConfig(res.YAML, lookupIn(tc.env))
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Fatalf("the node refuses the result: %v\n%s", err, res.YAML)
			}
			compareConfig(t, cfg, tc.want)
			// Every conversion trusts an nginx on the same host, as the CUE
			// installer sets one up, and says so last.
			compareMessages(t, "warning", res.Warnings, append(tc.warnings, msg{"trusted_proxies", "nginx in front on the same host"}))
			compareMessages(t, "note", res.Notes, tc.notes)
			if !reflect.DeepEqual(res.Env, tc.vars) && (len(res.Env) > 0 || len(tc.vars) > 0) {
				t.Errorf("Env = %v, want %v", res.Env, tc.vars)
			}
			if res.Backends != len(tc.want.backends) {
				t.Errorf("Backends = %d, want %d", res.Backends, len(tc.want.backends))
			}
			for _, w := range res.Warnings {
				if !strings.Contains(string(res.YAML), "# - "+w.Key+": ") {
					t.Errorf("the header does not list the warning %q", w)
				}
			}
		})
	}
}

func compareConfig(t *testing.T, cfg node.Config, want wantConfig) {
	t.Helper()
	for _, f := range []struct{ key, got, want string }{
		{"listen", cfg.Listen, want.listen},
		{"admin.listen", cfg.Admin.Listen, want.adminListen},
		{"admin.token", cfg.Admin.Token, want.adminToken},
		{"log.level", cfg.Log.Level, want.logLevel},
		{"log.format", cfg.Log.Format, want.logFormat},
	} {
		if f.got != f.want {
			t.Errorf("%s = %q, want %q", f.key, f.got, f.want)
		}
	}
	if cfg.AccessLog.Enabled != want.accessLog {
		t.Errorf("access_log.enabled = %v, want %v", cfg.AccessLog.Enabled, want.accessLog)
	}
	if !reflect.DeepEqual(cfg.CORS.AllowedOrigins, want.origins) {
		t.Errorf("cors.allowed_origins = %q, want %q", cfg.CORS.AllowedOrigins, want.origins)
	}
	if cfg.CORS.AllowCredentials != want.credentials {
		t.Errorf("cors.allow_credentials = %v, want %v", cfg.CORS.AllowCredentials, want.credentials)
	}
	if len(cfg.Backends) != len(want.backends) {
		t.Fatalf("%d back ends, want %d: %+v", len(cfg.Backends), len(want.backends), cfg.Backends)
	}
	for i, w := range want.backends {
		b := cfg.Backends[i]
		for _, f := range []struct{ key, got, want string }{
			{"name", b.Name, w.name},
			{"uri", b.URI, w.uri},
			{"mount", b.Mount, w.mount},
		} {
			if f.got != f.want {
				t.Errorf("backends[%d].%s = %q, want %q", i, f.key, f.got, f.want)
			}
		}
		if !nameRE.MatchString(b.Name) {
			t.Errorf("backends[%d].name %q is not a valid name", i, b.Name)
		}
		if len(b.Headers) != len(w.headers) || len(w.headers) > 0 && !reflect.DeepEqual(b.Headers, w.headers) {
			t.Errorf("backends[%d].headers = %q, want %q", i, b.Headers, w.headers)
		}
		if !reflect.DeepEqual(b.Credentials, w.creds) {
			t.Errorf("backends[%d].credentials = %+v, want %+v", i, b.Credentials, w.creds)
		}
		if b.Prefix || b.DC != "" || b.QueryParams != nil || b.Chained || b.TLS != nil || b.Auth != nil {
			t.Errorf("backends[%d] sets keys the CUE proxy has no equivalent for: %+v", i, b)
		}
	}
	if !reflect.DeepEqual(cfg.TrustedProxies, []string{"127.0.0.1", "::1"}) {
		t.Errorf("trusted_proxies = %q, want this host's loopback addresses", cfg.TrustedProxies)
	}
	if cfg.Mesh.Enabled() || cfg.TLS != nil || cfg.Admin.TLS != nil || cfg.Auth != nil {
		t.Errorf("the result sets keys the CUE proxy has no equivalent for: %+v", cfg)
	}
}

func compareMessages(t *testing.T, kind string, got []Message, want []msg) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d %ss, want %d:\n%s", len(got), kind, len(want), joinMessages(got))
		return
	}
	for i, w := range want {
		if got[i].Key != w.key || !strings.Contains(got[i].Text, w.has) {
			t.Errorf("%s %d = %q, want key %q and text with %q", kind, i, got[i], w.key, w.has)
		}
	}
}

func joinMessages(ms []Message) string {
	var b strings.Builder
	for _, m := range ms {
		b.WriteString("  " + m.String() + "\n")
	}
	return b.String()
}

func TestConvertRefusesInput(t *testing.T) {
	read := func(name string) string {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	tests := []struct {
		name   string
		src    string
		key    string
		reason string
	}{
		{"not YAML", read("not-yaml.yaml"), "sse-proxy.yaml", "not a YAML file: line 1: did not find expected"},
		{"no backends key", read("no-backends.yaml"), "backends", "no back end"},
		{"an empty file", "", "backends", "the file is empty"},
		{"an empty list", "backends: []\n", "backends", "sse-proxy.yaml line 1: no back end: the list is empty"},
		{"not a URL", read("bad-uri.yaml"), "backends[1].uri", "sse-proxy.yaml line 3: want an absolute http or https URL"},
		{"a list at the top", "- uri: http://cs/x\n", "(top level)", "want a map of settings"},
		{"backends is a map", "backends:\n  uri: http://cs/x\n", "backends", "line 2: want a list, got a map"},
		{"an entry without uri", "backends:\n  - httpHeaders: {Host: cs}\n", "backends[0]", "no uri"},
		{"a reference ssemesh reads otherwise", "backends:\n  - uri: http://cs/x\n    credentials: {username: '${cs.user}'}\n", "backends[0].credentials.username", "ssemesh interpolates only"},
		{"a reference in a default", "backends:\n  - uri: ${A:-${B}}\n", "backends[0].uri", "no reference inside a default"},
		{"a bad port", "server:\n  applicationConnectors:\n    - {type: http, port: 70000}\nbackends:\n  - uri: http://cs/x\n", "server.applicationConnectors[0].port", "line 3: want a port from 0 to 65535"},
		{"no connector", "server:\n  applicationConnectors: []\nbackends:\n  - uri: http://cs/x\n", "server.applicationConnectors", "no connector"},
		{"an unknown server type", "server: {type: fancy}\nbackends:\n  - uri: http://cs/x\n", "server.type", `want default or simple, got "fancy"`},
		{"an unknown level", "backends:\n  - uri: http://cs/x\nlogging: {level: LOUD}\n", "logging.level", `got "LOUD"`},
		{"a username with a colon", "backends:\n  - uri: http://cs/x\n    credentials: {username: 'a:b', password: c}\n", "backends[0].credentials.username", "':'"},
		{"a password alone", "backends:\n  - uri: http://cs/x\n    credentials: {password: c}\n", "backends[0].credentials", "without a username"},
		{"credentials as a string", "backends:\n  - uri: http://cs/x\n    credentials: user\n", "backends[0].credentials", `want a map, got "user"`},
		{"a default the node refuses", "backends:\n  - uri: http://cs/x\n    credentials: {username: '${CS_USER:-}', password: p}\n", "backends[0].credentials.username", "must not be empty"},
		{"a bad boolean", "backends:\n  - uri: http://cs/x\ncors: {allowedOrigins: 'https://a.example', allowCredentials: perhaps}\n", "cors.allowCredentials", `want true or false, got "perhaps"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Convert([]byte(tc.src), Options{Source: "sse-proxy.yaml"})
			var ce *node.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Convert = %v, %v; want a *node.ConfigError", res, err)
			}
			if ce.Key != tc.key || !strings.Contains(ce.Reason, tc.reason) || !strings.Contains(err.Error(), "sse-proxy.yaml") {
				t.Fatalf("error %q (key %q); want key %q, the file's name and %q", err, ce.Key, tc.key, tc.reason)
			}
		})
	}
}

// Cases smaller than a testdata file: each converts, and the node accepts
// the result.
func TestConvertEdgeCases(t *testing.T) {
	const be = "backends:\n  - uri: http://cs.example.com/x/sse\n"
	tests := []struct {
		name     string
		src      string
		env      map[string]string
		warnings []msg
		check    func(t *testing.T, res *Result, cfg node.Config)
	}{
		{
			name:     "an HTTPS connector alone is served as plain HTTP until tls is set",
			src:      "server:\n  applicationConnectors:\n    - {type: https, port: 9443, keyStorePath: /ks.p12, keyStoreType: pkcs12}\n  adminConnectors:\n    - {type: http, port: 7090, bindHost: 127.0.0.1}\n" + be,
			warnings: []msg{{"server.applicationConnectors[0]", "openssl pkcs12 -in /ks.p12 -nokeys"}},
			check: func(t *testing.T, res *Result, cfg node.Config) {
				if cfg.Listen != "0.0.0.0:9443" || !strings.Contains(string(res.YAML), "\n# tls: {cert: /etc/ssemesh/tls/sse-proxy.pem, key: /etc/ssemesh/tls/sse-proxy.key}") {
					t.Errorf("listen %q, and the file lacks the tls line:\n%s", cfg.Listen, res.YAML)
				}
				if strings.Contains(res.Warnings[0].Text, "keytool") {
					t.Errorf("a PKCS12 keystore needs no keytool: %s", res.Warnings[0])
				}
			},
		},
		{
			name: "IPv6 hosts and h2c",
			src:  "server:\n  applicationConnectors:\n    - {type: h2c, port: 9080, bindHost: '::'}\n  adminConnectors:\n    - {type: http, port: 7090, bindHost: '::1'}\n" + be,
			check: func(t *testing.T, res *Result, cfg node.Config) {
				if cfg.Listen != "[::]:9080" || cfg.Admin.Listen != "[::1]:7090" || cfg.Admin.Token != "" {
					t.Errorf("listen %q, admin %q, token %q", cfg.Listen, cfg.Admin.Listen, cfg.Admin.Token)
				}
				if len(res.Notes) != 1 || res.Notes[0].Key != "server.applicationConnectors[0]" {
					t.Errorf("notes %v, want one on h2c", res.Notes)
				}
			},
		},
		{
			name:     "a second HTTP connector",
			src:      "server:\n  applicationConnectors:\n    - {port: 9080}\n    - {type: http, port: 9081}\n  adminConnectors:\n    - {port: 7090, bindHost: localhost}\n" + be,
			warnings: []msg{{"server.applicationConnectors[1]", "http on 0.0.0.0:9081 is not converted"}},
			check: func(t *testing.T, res *Result, cfg node.Config) {
				if cfg.Listen != "0.0.0.0:9080" {
					t.Errorf("listen %q", cfg.Listen)
				}
			},
		},
		{
			name:     "a whole uri from the environment",
			src:      "server:\n  adminConnectors: [{port: 7090, bindHost: 127.0.0.1}]\nbackends:\n  - uri: ${CS_URI}\n",
			env:      map[string]string{"CS_URI": "http://cs.example.com/webservice/escenic/changelog/sse"},
			warnings: []msg{{"backends[0].uri", "known only at start"}},
			check: func(t *testing.T, res *Result, cfg node.Config) {
				b := cfg.Backends[0]
				if b.Name != "backend-1" || b.Mount != "/webservice/escenic/changelog/sse" || !reflect.DeepEqual(res.Env, []EnvVar{{Name: "CS_URI"}}) {
					t.Errorf("name %q, mount %q, env %v", b.Name, b.Mount, res.Env)
				}
			},
		},
		{
			name: "headers the node refuses, a fragment and empty credentials",
			src: "server:\n  adminConnectors: [{port: 7090, bindHost: 127.0.0.1}]\nbackends:\n  - uri: http://cs.example.com/x/sse#top\n" +
				"    httpHeaders: {Host: a.example, host: b.example, 'Bad Name': x, X-Ok: \"1\", X-Ctl: \"a\\nb\", Last-Event-ID: \"5\"}\n    credentials: {}\n",
			warnings: []msg{
				{"backends[0].credentials", "without a login"},
				{"backends[0].uri", "#top is dropped"},
				{"backends[0].httpHeaders.host", "the same header as Host"},
				{"backends[0].httpHeaders.Bad Name", "not a valid header name"},
				{"backends[0].httpHeaders.X-Ctl", "a character a header cannot carry"},
				{"backends[0].httpHeaders.Last-Event-ID", "ssemesh sets it itself"},
			},
			check: func(t *testing.T, res *Result, cfg node.Config) {
				b := cfg.Backends[0]
				if b.URI != "http://cs.example.com/x/sse" || !reflect.DeepEqual(b.Headers, map[string]string{"Host": "a.example", "X-Ok": "1"}) || b.Credentials != nil {
					t.Errorf("uri %q, headers %q, credentials %+v", b.URI, b.Headers, b.Credentials)
				}
			},
		},
		{
			name: "CORS with patterns only",
			src:  "server:\n  adminConnectors: [{port: 7090, bindHost: 127.0.0.1}]\n" + be + "cors: {allowedOrigins: 'https://*.example.com', allowCredentials: true}\n",
			warnings: []msg{
				{"cors.allowedOrigins", "dropped"},
				{"cors.allowedOrigins", "no origin left"},
			},
			check: func(t *testing.T, res *Result, cfg node.Config) {
				if len(cfg.CORS.AllowedOrigins) != 0 || cfg.CORS.AllowCredentials {
					t.Errorf("cors %+v, want none", cfg.CORS)
				}
			},
		},
		{
			name: "credentials from the environment with \"*\" are dropped",
			src:  "server:\n  adminConnectors: [{port: 7090, bindHost: 127.0.0.1}]\n" + be + "cors: {allowedOrigins: ['*'], allowCredentials: '${CRED:-true}'}\n",
			warnings: []msg{
				{"cors.allowCredentials", "dropped"},
			},
			check: func(t *testing.T, res *Result, cfg node.Config) {
				if !reflect.DeepEqual(cfg.CORS.AllowedOrigins, []string{"*"}) || cfg.CORS.AllowCredentials || len(res.Env) != 0 {
					t.Errorf("cors %+v, env %v", cfg.CORS, res.Env)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Convert([]byte(tc.src), Options{Source: "sse-proxy.yaml"})
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			cfg, err := node.ParseConfig(res.YAML, lookupIn(tc.env))
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Fatalf("the node refuses the result: %v\n%s", err, res.YAML)
			}
			compareMessages(t, "warning", res.Warnings, append(tc.warnings, msg{"trusted_proxies", ""}))
			tc.check(t, res, cfg)
		})
	}
}
