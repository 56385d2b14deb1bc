package node

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkDocument walks a parsed YAML document along the Config type and
// reports, all at once, every key the Config has no place for and every
// scalar the decoder would otherwise bend or reject with a Go type name: it
// stores 1.5 in an integer field as 1, and "yes"-like strings are not
// booleans in YAML 1.2. Each problem names the key path and the line.
func checkDocument(doc *yaml.Node) error {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	var c yamlChecker
	c.node(doc.Content[0], reflect.TypeOf(Config{}), "")
	switch len(c.problems) {
	case 0:
		return nil
	case 1:
		return c.problems[0]
	}
	return c.problems
}

// ConfigErrors is several configuration problems found in one pass, so an
// operator fixes a file in one round rather than one error per start.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	var b strings.Builder
	if len(es) == maxConfigProblems {
		fmt.Fprintf(&b, "config: %d problems or more (the first %d):", len(es), len(es))
	} else {
		fmt.Fprintf(&b, "config: %d problems:", len(es))
	}
	for _, e := range es {
		fmt.Fprintf(&b, "\n  %s: %s", e.Key, e.Reason)
	}
	return b.String()
}

// Unwrap lets errors.As find a *ConfigError (exit status 2) among them.
func (es ConfigErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// maxConfigProblems bounds the report: past it, the file is likely not an
// ssemesh configuration at all, and the first ones say so.
const maxConfigProblems = 20

var (
	durationType   = reflect.TypeOf(Duration(0))
	goDurationType = reflect.TypeOf(time.Duration(0))
)

// yamlChecker collects the problems of one document.
type yamlChecker struct {
	problems ConfigErrors
}

func (c *yamlChecker) add(path string, n *yaml.Node, reason string) {
	if len(c.problems) < maxConfigProblems {
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
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if t == durationType || t == goDurationType {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!int" && t == goDurationType {
			// The decoder takes no bare number for these (auth's), not
			// even 0.
			c.want(n, path, `a duration with a unit, such as "15s" or "0s"`)
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
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			c.want(n, path, "an integer")
		}
	case reflect.Float64, reflect.Float32:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			c.want(n, path, "a number")
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
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
