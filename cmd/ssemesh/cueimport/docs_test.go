package cueimport

import (
	"os"
	"strings"
	"testing"
)

// The worked example of docs/migrating-from-cue.md is the converter's own
// output for the CUE configuration shown next to it, so the guide cannot
// drift from the command. (The node's tests check that the result is a
// valid configuration, as they do for every example under /etc/ssemesh/.)
func TestMigrationGuideWorkedExample(t *testing.T) {
	raw, err := os.ReadFile("../../../docs/migrating-from-cue.md")
	if err != nil {
		t.Fatal(err)
	}
	var cue, want string
	for _, block := range strings.Split(string(raw), "```yaml\n")[1:] {
		body, _, _ := strings.Cut(block, "```")
		switch {
		case strings.HasPrefix(body, "# /etc/escenic/sse-proxy/sse-proxy.yaml"):
			cue = body
		case strings.HasPrefix(body, "# /etc/ssemesh/node.yaml"):
			want = body
		}
	}
	if cue == "" || want == "" {
		t.Fatal("the guide lacks the worked example: a yaml block for /etc/escenic/sse-proxy/sse-proxy.yaml and one for /etc/ssemesh/node.yaml")
	}
	res, err := Convert([]byte(cue), Options{Source: "/etc/escenic/sse-proxy/sse-proxy.yaml", Target: "/etc/ssemesh/node.yaml"})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	if string(res.YAML) != want {
		t.Errorf("the guide shows another result than the converter's:\n--- guide\n%s--- converter\n%s", want, res.YAML)
	}
	for _, w := range res.Warnings {
		if !strings.Contains(string(raw), "import-cue: warning: "+w.Key+": ") {
			t.Errorf("the guide's command output lacks the warning on %s", w.Key)
		}
	}
}
