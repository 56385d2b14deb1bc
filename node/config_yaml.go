package node

import (
	"crypto/rand"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ssemesh/ssemesh/internal/cfgerr"
)

// checkDocument walks a parsed YAML document along the Config type and
// reports, all at once, every key the Config has no place for and every
// scalar the decoder would otherwise bend or reject with a Go type name: it
// stores 1.5 in an integer field as 1, and "yes"-like strings are not
// booleans in YAML 1.2. Each problem names the key path and the line.
//
// ${VAR} references are replaced first, in the parsed values (never in
// keys or comments): a value cannot change the document's structure,
// whatever the variable holds, and an unquoted value is typed by what it
// became (max_clients: ${MAX} is an integer when MAX holds one).
func checkDocument(doc *yaml.Node, refs envRefs, lookup func(string) (string, bool)) error {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	c := yamlChecker{lookup: lookup, refs: refs}
	c.interpolate(doc.Content[0], "")
	c.node(doc.Content[0], reflect.TypeOf(Config{}), "")
	switch len(c.problems) {
	case 0:
		return nil
	case 1:
		return c.problems[0]
	}
	return c.problems
}

var (
	durationType   = reflect.TypeOf(Duration(0))
	goDurationType = reflect.TypeOf(time.Duration(0))
)

// yamlChecker collects the problems of one document.
type yamlChecker struct {
	problems ConfigErrors
	lookup   func(string) (string, bool)
	refs     envRefs
}

// envRefs holds the ${...} references of a file while it is parsed: each
// is replaced in the text by a token that is a valid plain scalar in any
// YAML context, so that a reference in a flow mapping ({password:
// ${PASS}}) parses, and put back into the values afterwards.
type envRefs struct {
	tokens []string // token, reference, token, reference...
}

// protectRefs replaces every ${...} reference of raw with a token ($$ is
// left as it is: it is a literal $).
func protectRefs(raw []byte) ([]byte, envRefs) {
	var r envRefs
	var salt [4]byte
	_, _ = rand.Read(salt[:])
	out := envRef.ReplaceAllFunc(raw, func(m []byte) []byte {
		if string(m) == "$$" {
			return m
		}
		tok := fmt.Sprintf("ssemeshref%x%d", salt, len(r.tokens)/2)
		r.tokens = append(r.tokens, tok, string(m))
		return []byte(tok)
	})
	return out, r
}

// restore puts the references back into s.
func (r envRefs) restore(s string) string {
	if len(r.tokens) == 0 || !strings.Contains(s, "ssemeshref") {
		return s
	}
	return strings.NewReplacer(r.tokens...).Replace(s)
}

// interpolate replaces the references in every value below n.
func (c *yamlChecker) interpolate(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.ScalarNode:
		n.Value = c.refs.restore(n.Value)
		if !strings.Contains(n.Value, "$") {
			return
		}
		v, missing := InterpolateValue(n.Value, c.lookupOrNone)
		if missing != "" {
			c.add(path, n, fmt.Sprintf("environment variable %s is not set and has no default (write ${%s:-default})", missing, missing))
			return
		}
		if v != n.Value {
			n.Value = v
			if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
				n.Tag = "" // typed by its new value
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			k.Value = c.refs.restore(k.Value) // keys are not interpolated
			c.interpolate(n.Content[i+1], joinKey(path, k.Value))
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			c.interpolate(item, fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

func (c *yamlChecker) lookupOrNone(name string) (string, bool) {
	if c.lookup == nil {
		return "", false
	}
	return c.lookup(name)
}

func (c *yamlChecker) add(path string, n *yaml.Node, reason string) {
	if len(c.problems) < cfgerr.Max {
		c.problems = append(c.problems, &ConfigError{Key: path, Reason: fmt.Sprintf("%s (line %d)", reason, n.Line)})
	}
}

func (c *yamlChecker) want(n *yaml.Node, path, want string) {
	got := n.Value
	if n.Kind != yaml.ScalarNode {
		got = map[yaml.Kind]string{yaml.MappingNode: "a map", yaml.SequenceNode: "a list"}[n.Kind]
	} else {
		got = strconv.Quote(got)
	}
	c.add(path, n, fmt.Sprintf("want %s, got %s", want, got))
}

func (c *yamlChecker) node(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	if t == durationType || t == goDurationType {
		if n.Kind == yaml.ScalarNode && n.Value == "0" {
			// A bare 0 is zero for every duration; the decoder would
			// refuse it for a time.Duration.
			n.Value, n.Tag, n.Style = "0s", "!!str", 0
			return
		}
		if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
			c.want(n, path, `a duration with a unit, such as "15s"`)
			return
		}
		if n.Kind != yaml.ScalarNode {
			c.want(n, path, `a duration such as "15s"`)
		} else if _, err := time.ParseDuration(n.Value); err != nil {
			c.want(n, path, `a duration such as "500ms", "15s" or "2m"`)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.want(n, path, "a map")
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				c.add(joinKey(path, k.Value), k, unknownKey(path, k.Value, fields))
				continue
			}
			c.node(v, ft, joinKey(path, k.Value))
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.want(n, path, "a list")
			return
		}
		for i, item := range n.Content {
			c.node(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.want(n, path, "a map")
			return
		}
		if t.Elem().Kind() == reflect.Interface {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.node(n.Content[i+1], t.Elem(), joinKey(path, n.Content[i].Value))
		}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			c.want(n, path, "an integer")
		}
	case reflect.Float64, reflect.Float32:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
			c.want(n, path, "a number")
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			c.want(n, path, "true or false")
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			c.want(n, path, "a single value")
		}
	}
}

// cueKeys are top-level keys of a CUE SSE Proxy (Dropwizard) file.
var cueKeys = map[string]bool{"server": true, "logging": true, "metrics": true, "sseProxy": true}

// unknownKey explains a key the Config has no place for: the closest
// known key when it looks misspelt, and the import command when the file
// is a CUE SSE Proxy configuration.
func unknownKey(path, key string, fields map[string]reflect.Type) string {
	if path == "" && cueKeys[key] {
		return "unknown key; this looks like a CUE SSE Proxy configuration: convert it with `ssemesh import-cue FILE`"
	}
	best, bestD := "", 3
	for k := range fields {
		if d := editDistance(strings.ToLower(key), k); d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if best != "" && bestD <= max(1, len(key)/4) {
		return fmt.Sprintf("unknown key; did you mean %q?", best)
	}
	return "unknown key"
}

// editDistance is the Levenshtein distance between two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// yamlFields maps the YAML keys of a struct to their field types, inline
// structs included.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(opts, "inline") {
			if f.Type.Kind() == reflect.Struct {
				for k, v := range yamlFields(f.Type) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func joinKey(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}
