package main

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// wantFlags are flags each command's help must show.
var wantFlags = map[string][]string{
	"run":        {"config", "listen", "admin", "log-level", "log-format", "max-clients", "node-id", "dc", "tier", "consul", "gossip", "advertise", "check", "seed", "backend"},
	"demo":       {"listen", "admin", "backend-listen", "rate", "log-level"},
	"topology":   {"admin", "token", "ca", "cert", "key", "format", "stream"},
	"status":     {"admin", "token", "ca", "cert", "key"},
	"reload":     {"admin", "token", "ca", "cert", "key"},
	"health":     {"admin", "token", "ready", "timeout"},
	"import-cue": {"out"},
	"version":    {"json"},
}

// helpOf runs a help command line, which must succeed.
func helpOf(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("ssemesh %s: exit %d, want 0; stderr %q", strings.Join(args, " "), code, errb.String())
	}
	return out.String(), errb.String()
}

func TestEveryCommandHasHelp(t *testing.T) {
	for name, e := range commands {
		t.Run(name, func(t *testing.T) {
			forms := [][]string{{name, "--help"}, {name, "-h"}, {"help", name}}
			var first string
			for _, args := range forms {
				out, errOut := helpOf(t, args...)
				if errOut != "" {
					t.Errorf("%v wrote to stderr: %q", args, errOut)
				}
				synopsis := "Usage: ssemesh " + name
				if name == "help" {
					synopsis = "Usage: ssemesh <command>"
				}
				if !strings.HasPrefix(out, synopsis) {
					t.Errorf("%v: help starts %q, want the synopsis", args, firstLine(out))
				}
				if first == "" {
					first = out
				} else if out != first {
					t.Errorf("%v prints other help than %s --help", args, name)
				}
			}
			// Flags appear with their double-dash names, and every
			// environment variable the command reads is named.
			for _, f := range wantFlags[name] {
				if !strings.Contains(first, "\n  --"+f+" ") && !strings.Contains(first, "\n  --"+f+"\n") {
					t.Errorf("help lacks --%s:\n%s", f, first)
				}
			}
			for _, env := range e.cmd.env {
				if name != "run" && !strings.Contains(first, env) {
					t.Errorf("help lacks %s", env)
				}
			}
		})
	}
	t.Run("run names its variables", func(t *testing.T) {
		out, _ := helpOf(t, "run", "--help")
		for _, env := range []string{"SSEMESH_CONFIG", "SSEMESH_MAX_CLIENTS", "SSEMESH_SEED", "SSEMESH_BACKEND", "SSEMESH_MESH_SECRET", "SSEMESH_ADMIN_TOKEN"} {
			if !strings.Contains(out, env) {
				t.Errorf("run --help lacks %s", env)
			}
		}
		if !strings.Contains(out, "default 127.0.0.1:8080") || !strings.Contains(out, "Precedence: flag, environment variable, file, default") {
			t.Errorf("run --help lacks defaults or precedence:\n%s", out)
		}
	})
	t.Run("top level", func(t *testing.T) {
		for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
			out, _ := helpOf(t, args...)
			for name := range commands {
				if !strings.Contains(out, "\n  "+name+" ") {
					t.Errorf("%v lacks command %s", args, name)
				}
			}
		}
	})
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func TestUsageErrorsExitTwo(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"no command", nil, "Usage: ssemesh <command>"},
		{"unknown command", []string{"serve"}, `unknown command "serve"`},
		{"help for an unknown command", []string{"help", "serve"}, `unknown command "serve"`},
		{"run: unknown flag", []string{"run", "--colour"}, "flag provided but not defined: -colour"},
		{"run: stray argument", []string{"run", "node.yaml"}, `unexpected argument "node.yaml"`},
		{"run: bad integer", []string{"run", "--max-clients", "lots"}, "invalid value"},
		{"demo: unknown flag", []string{"demo", "--colour"}, "flag provided but not defined"},
		{"topology: stray argument", []string{"topology", "--admin", "127.0.0.1:1", "tree"}, `unexpected argument "tree"`},
		{"status: bad admin URL", []string{"status", "--admin", "ftp://x"}, "want host:port"},
		{"reload: unknown flag", []string{"reload", "--now"}, "flag provided but not defined"},
		{"health: bad duration", []string{"health", "--timeout", "soon"}, "invalid value"},
		{"version: stray argument", []string{"version", "full"}, `unexpected argument "full"`},
		{"import-cue: no file", []string{"import-cue"}, "one CUE SSE Proxy configuration file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SSEMESH_ADMIN", "")
			var out, errb bytes.Buffer
			code := run(tc.args, &out, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errb.String(), exitUsage, tc.stderr)
			}
			if out.Len() != 0 {
				t.Errorf("usage error wrote to stdout: %q", out.String())
			}
		})
	}
}

func TestRunSettingsPrecedence(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want runOptions
	}{
		{"nothing set", nil, nil, runOptions{tier: -1}},
		{"environment only", nil, map[string]string{
			"SSEMESH_LISTEN": "0.0.0.0:8080", "SSEMESH_ADMIN": "0.0.0.0:9090", "SSEMESH_MAX_CLIENTS": "500",
			"SSEMESH_TIER": "2", "SSEMESH_DC": "eu", "SSEMESH_CONFIG": "/etc/ssemesh/ssemesh.yaml",
			"SSEMESH_LOG_LEVEL": "debug", "SSEMESH_LOG_FORMAT": "json", "SSEMESH_NODE_ID": "leaf-1",
			"SSEMESH_CONSUL": "127.0.0.1:8500", "SSEMESH_GOSSIP": "0.0.0.0:7946", "SSEMESH_ADVERTISE": "10.0.0.7",
			"SSEMESH_CHECK":   "true", // not read: --check is an action
			"SSEMESH_SEED":    "10.0.0.1:7946, 10.0.0.2:7946",
			"SSEMESH_BACKEND": "a=http://cs:8080/changes?x=1,2 b=http://lc:8080/events",
		}, runOptions{
			listen: "0.0.0.0:8080", admin: "0.0.0.0:9090", maxClients: 500, tier: 2, dc: "eu",
			configPath: "/etc/ssemesh/ssemesh.yaml", logLevel: "debug", logFormat: "json", nodeID: "leaf-1",
			consul: "127.0.0.1:8500", gossip: "0.0.0.0:7946", advertise: "10.0.0.7",
			seeds:    multiFlag{"10.0.0.1:7946", "10.0.0.2:7946"},
			backends: uriFlag{multiFlag{"a=http://cs:8080/changes?x=1,2", "b=http://lc:8080/events"}},
		}},
		{"flag wins over the environment", []string{"--listen", "127.0.0.1:1", "--seed", "s:1", "--tier", "0"},
			map[string]string{"SSEMESH_LISTEN": "0.0.0.0:8080", "SSEMESH_SEED": "e:1,e:2", "SSEMESH_TIER": "3"},
			runOptions{listen: "127.0.0.1:1", seeds: multiFlag{"s:1"}, tier: 0}},
		{"empty variable is unset", nil, map[string]string{"SSEMESH_LISTEN": "", "SSEMESH_TIER": ""}, runOptions{tier: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRun(tc.args, io.Discard, env(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", *got, tc.want)
			}
		})
	}

	t.Run("bad value names the variable", func(t *testing.T) {
		_, err := parseRun(nil, io.Discard, env(map[string]string{"SSEMESH_MAX_CLIENTS": "lots"}))
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "$SSEMESH_MAX_CLIENTS") {
			t.Fatalf("got %v, want a usage error naming $SSEMESH_MAX_CLIENTS", err)
		}
	})

	t.Run("flag over environment over file over default", func(t *testing.T) {
		dir := t.TempDir()
		file := writeFile(t, dir, "node.yaml", "listen: 127.0.0.1:7001\nadmin: {listen: 127.0.0.1:7002}\nlimits: {max_clients: 300}\nlog: {level: warn}\nbackends:\n  - {name: a, uri: 'http://127.0.0.1:1/x'}\n")
		o, err := parseRun([]string{"--config", file, "--listen", "127.0.0.1:7101"}, io.Discard,
			env(map[string]string{"SSEMESH_LISTEN": "127.0.0.1:7201", "SSEMESH_ADMIN": "127.0.0.1:7202"}))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := o.build(env(nil))
		if err != nil {
			t.Fatal(err)
		}
		got := []any{cfg.Listen, cfg.Admin.Listen, cfg.Limits.MaxClients, cfg.Log.Level, cfg.Log.Format}
		want := []any{"127.0.0.1:7101", "127.0.0.1:7202", 300, "warn", "text"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("listen, admin, max_clients, log level, log format = %v, want %v (flag, env, file, file, default)", got, want)
		}
	})
}

// TestEnvironmentReachesARealRun runs the command line with the variables
// set in the process, as a unit file or container would.
func TestEnvironmentReachesARealRun(t *testing.T) {
	t.Setenv("SSEMESH_BACKEND", "a=http://127.0.0.1:1/x b=http://127.0.0.1:1/y")
	t.Setenv("SSEMESH_MESH_SECRET", "")
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--check"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "2 back end(s)") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want the two back ends from $SSEMESH_BACKEND", code, out.String(), errb.String())
	}
	t.Setenv("SSEMESH_MAX_CLIENTS", "-5")
	out.Reset()
	errb.Reset()
	if code := run([]string{"run", "--check"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "limits.max_clients") {
		t.Fatalf("exit %d, stderr %q; want exit 2 naming limits.max_clients", code, errb.String())
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHealthProbe(t *testing.T) {
	n := testNode(t, "/a")
	draining := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"status":"draining"}`)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(draining.Close)

	tests := []struct {
		name   string
		env    string // SSEMESH_ADMIN
		args   []string
		code   int
		stderr string
	}{
		{"healthy", "", []string{"--admin", n.AdminAddr()}, 0, ""},
		{"ready", "", []string{"--admin", n.AdminAddr(), "--ready"}, 0, ""},
		{"admin from the environment", n.AdminAddr(), nil, 0, ""},
		{"serving but draining", "", []string{"--admin", draining.URL}, 0, ""},
		{"not ready while draining", "", []string{"--admin", draining.URL, "--ready"}, 1, "503"},
		{"nobody listening", "", []string{"--admin", "127.0.0.1:1"}, 1, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("SSEMESH_ADMIN", tc.env)
			code, out, errOut := runCLI(append([]string{"health"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.stderr) || out != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, no output, stderr containing %q", code, out, errOut, tc.code, tc.stderr)
			}
		})
	}
}
