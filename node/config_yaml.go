package node

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkScalarTypes walks a parsed YAML document along the Config type and
// refuses scalars the decoder would otherwise bend: it stores 1.5 in an
// integer field as 1, and "yes"-like strings are not booleans in YAML 1.2.
// The error names the key path and the line.
func checkScalarTypes(doc *yaml.Node) error {
	if doc == nil || doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil
	}
	return checkNode(doc.Content[0], reflect.TypeOf(Config{}), "")
}

var (
	durationType   = reflect.TypeOf(Duration(0))
	goDurationType = reflect.TypeOf(time.Duration(0))
)

func checkNode(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if t == durationType || t == goDurationType {
		return nil // Duration.UnmarshalYAML and the decoder check durations
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return typeError(n, path, "a map")
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				continue // unknown keys are the decoder's to report
			}
			if err := checkNode(v, ft, joinKey(path, k.Value)); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return typeError(n, path, "a list")
		}
		for i, item := range n.Content {
			if err := checkNode(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return typeError(n, path, "a map")
		}
		if t.Elem().Kind() == reflect.Interface {
			return nil
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkNode(n.Content[i+1], t.Elem(), joinKey(path, n.Content[i].Value)); err != nil {
				return err
			}
		}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return typeError(n, path, "a whole number")
		}
	case reflect.Float64, reflect.Float32:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
			return typeError(n, path, "a number")
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return typeError(n, path, "true or false")
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return typeError(n, path, "a single value")
		}
	}
	return nil
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

func typeError(n *yaml.Node, path, want string) error {
	got := n.Value
	if n.Kind != yaml.ScalarNode {
		got = map[yaml.Kind]string{yaml.MappingNode: "a map", yaml.SequenceNode: "a list"}[n.Kind]
	} else {
		got = strconv.Quote(got)
	}
	return &ConfigError{Key: path, Reason: fmt.Sprintf("line %d: want %s, got %s", n.Line, want, got)}
}
