package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunCheck(t *testing.T) {
	t.Setenv("SECRET", "mesh-secret-from-the-environment-0123")
	t.Setenv("SSEMESH_MESH_SECRET", "")
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("backends:\n  - name: changelog\n    uri: http://127.0.0.1:8081/changes\nmesh:\n  advertise: 10.0.0.7\n  secret: ${SECRET}\n  gossip: {bind: \"0.0.0.0:7946\", key: MDEyMzQ1Njc4OWFiY2RlZg==}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("backends:\n  - name: changelog\n    uri: http://127.0.0.1:8081/changes\nlimits: {max_clients: 0}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"valid file", []string{"run", "--config", good, "--check"}, 0, "configuration ok: 1 back end(s) configured, mesh true", ""},
		{"valid flags", []string{"run", "--backend", "a=http://127.0.0.1:1/x", "--check"}, 0, "mesh false", ""},
		{"invalid key value", []string{"run", "--config", bad, "--check"}, exitUsage, "", "limits.max_clients"},
		{"unreachable advertise", []string{"run", "--backend", "a=http://127.0.0.1:1/x", "--gossip", "127.0.0.1:0", "--advertise", "0.0.0.0", "--check"}, exitUsage, "", "mesh.advertise"},
		{"missing file", []string{"run", "--config", filepath.Join(dir, "none.yaml"), "--check"}, exitUsage, "", "none.yaml"},
		{"mesh without a secret", []string{"run", "--backend", "a=http://127.0.0.1:1/x", "--gossip", "127.0.0.1:0", "--check"}, exitUsage, "", "mesh.secret"},
		{"open gossip without a key", []string{"run", "--backend", "a=http://127.0.0.1:1/x", "--gossip", "0.0.0.0:7946", "--advertise", "10.0.0.7", "--check"}, exitUsage, "", "mesh.gossip.key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(c.args, &out, &errb)
			if code != c.code || !strings.Contains(out.String(), c.stdout) || !strings.Contains(errb.String(), c.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout containing %q, stderr containing %q",
					code, out.String(), errb.String(), c.code, c.stdout, c.stderr)
			}
		})
	}
}
