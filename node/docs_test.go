package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocumentedConfigurationsAreValid checks the complete example
// configurations in docs/ (YAML blocks whose first line names a file under
// /etc/ssemesh/) against the checks a node runs at start, so the examples
// cannot drift from the code.
func TestDocumentedConfigurationsAreValid(t *testing.T) {
	lookup := func(name string) (string, bool) {
		if strings.Contains(name, "GOSSIP_KEY") {
			return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", true
		}
		return "example-value-of-" + strings.ToLower(name) + "-0123456789abcdef", true
	}
	files, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		blocks := strings.Split(string(raw), "```yaml\n")
		for _, b := range blocks[1:] {
			body, _, _ := strings.Cut(b, "```")
			if !strings.HasPrefix(body, "# /etc/ssemesh/") {
				continue
			}
			found++
			name := filepath.Base(f) + ": " + strings.SplitN(body, "\n", 2)[0]
			cfg, err := ParseConfig([]byte(body), lookup)
			if err == nil {
				ApplySecretEnv(&cfg, lookup)
				err = cfg.Validate()
			}
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	if found < 3 {
		t.Fatalf("found %d example configurations in docs/, want the root, leaf and hardened examples", found)
	}
}
