package cueimport

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ssemesh/ssemesh/node"
)

// item is a node of the CUE configuration with its key path, for messages.
type item struct {
	n   *yaml.Node
	key string
}

// resolve follows aliases, so that anchors in the CUE file read as their
// targets.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// resolveKind is the kind of the node, aliases followed.
func resolveKind(it item) yaml.Kind {
	if n := resolve(it.n); n != nil {
		return n.Kind
	}
	return 0
}

func (it item) null() bool {
	n := resolve(it.n)
	return n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func (it item) line() int {
	if it.n == nil {
		return 0
	}
	return it.n.Line
}

// childKey is the key path of the item under key k, for messages.
func (it item) childKey(k string) string {
	if it.key == "" {
		return k
	}
	return it.key + "." + k
}

// pair is one key of a mapping.
type pair struct {
	name string
	val  item
}

// conv carries what one conversion reports, and the file name its errors
// name.
type conv struct {
	file     string
	warnings []Message
	notes    []Message
	vars     vars
}

func (c *conv) warn(key, format string, args ...any) {
	c.warnings = append(c.warnings, Message{Key: key, Text: fmt.Sprintf(format, args...)})
}

func (c *conv) note(key, format string, args ...any) {
	c.notes = append(c.notes, Message{Key: key, Text: fmt.Sprintf(format, args...)})
}

// errAt is a problem with the CUE configuration, named by key and line.
func (c *conv) errAt(it item, format string, args ...any) error {
	where := c.file
	if l := it.line(); l > 0 {
		where += " line " + strconv.Itoa(l)
	}
	key := it.key
	if key == "" {
		key = "(top level)"
	}
	return &node.ConfigError{Key: key, Reason: where + ": " + fmt.Sprintf(format, args...)}
}

// kindName describes a node for "want X, got Y" messages.
func kindName(n *yaml.Node) string {
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// mapping returns the keys of a map in file order.
func (c *conv) mapping(it item) ([]pair, error) {
	n := resolve(it.n)
	if it.null() {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, c.errAt(it, "want a map, got %s", kindName(n))
	}
	out := make([]pair, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		out = append(out, pair{name: k.Value, val: item{n: n.Content[i+1], key: it.childKey(k.Value)}})
	}
	return out, nil
}

// list returns the entries of a list.
func (c *conv) list(it item) ([]item, error) {
	n := resolve(it.n)
	if it.null() {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, c.errAt(it, "want a list, got %s", kindName(n))
	}
	out := make([]item, len(n.Content))
	for i, e := range n.Content {
		out[i] = item{n: e, key: fmt.Sprintf("%s[%d]", it.key, i)}
	}
	return out, nil
}

// scalar reads a single value as text, references kept.
func (c *conv) scalar(it item) (text, error) {
	n := resolve(it.n)
	if it.null() {
		return text{}, nil
	}
	if n.Kind != yaml.ScalarNode {
		return text{}, c.errAt(it, "want a single value, got %s", kindName(n))
	}
	t, err := parseText(n.Value)
	if err != nil {
		return text{}, c.errAt(it, "%v", err)
	}
	return t, nil
}

// boolean reads true or false, also written as a string as Jetty's filter
// settings often are ("true"). A reference is returned as text.
func (c *conv) boolean(it item) (val bool, ref text, err error) {
	t, err := c.scalar(it)
	if err != nil || it.null() {
		return false, text{}, err
	}
	if t.hasRefs() {
		return false, t, nil
	}
	switch strings.ToLower(strings.TrimSpace(t.plain())) {
	case "true":
		return true, text{}, nil
	case "false":
		return false, text{}, nil
	}
	return false, text{}, c.errAt(it, "want true or false, got %q", t.plain())
}

// byName indexes pairs by key.
func byName(ps []pair) map[string]item {
	m := make(map[string]item, len(ps))
	for _, p := range ps {
		m[p.name] = p.val
	}
	return m
}
