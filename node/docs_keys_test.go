package node

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// keyTree is the YAML key paths of a configuration type: every path, and
// which of them only group other keys (sections, and lists of sections).
type keyTree struct{ all, sections map[string]bool }

func codeKeys(t reflect.Type) keyTree {
	kt := keyTree{all: map[string]bool{}, sections: map[string]bool{}}
	kt.walk(t, "")
	delete(kt.all, "")
	return kt
}

func (kt keyTree) walk(t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	kt.all[path] = true
	switch {
	case t == reflect.TypeOf(time.Duration(0)) || t == reflect.TypeOf(Duration(0)):
	case t.Kind() == reflect.Struct:
		kt.sections[path] = true
		for k, ft := range yamlFields(t) {
			kt.walk(ft, joinKey(path, k))
		}
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		kt.sections[path] = true
		kt.walk(t.Elem(), path+"[]")
	}
}

// docKeys reads the key reference (section 5) of docs/configuration.md:
// the first column of every table, relative keys (backends' table) made
// full. A row whose meaning is only a pointer to another section does not
// document the keys below it.
func docKeys(t *testing.T) (keys, wholes map[string]bool) {
	t.Helper()
	raw, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	start := strings.Index(doc, "\n## 5. Key reference")
	end := strings.Index(doc, "\n## 6.")
	if start < 0 || end < start {
		t.Fatal("docs/configuration.md has no section 5 followed by section 6")
	}
	keys, wholes = map[string]bool{}, map[string]bool{}
	keyRe := regexp.MustCompile("`([^`]+)`")
	index := regexp.MustCompile(`\[[a-z]\]`)
	section := ""
	for _, line := range strings.Split(doc[start:end], "\n") {
		if strings.HasPrefix(line, "### ") {
			section = ""
			if m := keyRe.FindStringSubmatch(line); m != nil {
				section = m[1]
			}
			continue
		}
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cols := strings.Split(line, "|")
		meaning := strings.TrimSpace(cols[len(cols)-2])
		pointer := strings.HasPrefix(meaning, "section [") || meaning == "below"
		for _, m := range keyRe.FindAllStringSubmatch(cols[1], -1) {
			k := index.ReplaceAllString(m[1], "[]")
			if section == "backends" && !strings.HasPrefix(k, "backends") {
				k = "backends[]." + k
			}
			keys[k] = true
			if !pointer {
				wholes[k] = true
			}
		}
	}
	return keys, wholes
}

// TestKeyReferenceMatchesTheCode: every key the configuration has is in
// the key reference, and every key the reference names exists.
func TestKeyReferenceMatchesTheCode(t *testing.T) {
	code := codeKeys(reflect.TypeOf(Config{}))
	documented, wholes := docKeys(t)

	// A key is documented by its own row or by a row that documents a
	// section above it as a whole (tls {cert, key}, credentials, auth).
	coveredBy := func(k string) bool {
		for p := k; p != ""; {
			if wholes[p] {
				return true
			}
			i := strings.LastIndexAny(p, ".[")
			if i < 0 {
				break
			}
			p = p[:i]
		}
		return false
	}
	var undocumented, unknown []string
	for k := range code.all {
		if !code.sections[k] && !coveredBy(k) {
			undocumented = append(undocumented, k)
		}
	}
	for k := range documented {
		if !code.all[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(undocumented)
	sort.Strings(unknown)
	if len(undocumented) > 0 {
		t.Errorf("keys in the code but not in docs/configuration.md section 5: %v", undocumented)
	}
	if len(unknown) > 0 {
		t.Errorf("keys in docs/configuration.md section 5 that the code does not have: %v", unknown)
	}
}
