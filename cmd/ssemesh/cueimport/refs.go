package cueimport

import (
	"fmt"
	"regexp"
	"strings"
)

// A CUE SSE Proxy configuration may hold ${VAR} and ${VAR:-default}
// references, which Dropwizard replaces from the environment before it
// parses the YAML. ssemesh replaces the same two forms, also on the raw
// text, so a reference is carried over as it is written and the node reads
// the variable at start, as the CUE proxy did. What differs is the rest of
// the text: Dropwizard keeps a lone '$' and reads "$${" as an escaped
// reference, while ssemesh reads every "$$" as one '$'. A literal '$' is
// therefore written "$$" in the output.

// varName is the variable names ssemesh recognises in a reference.
var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ref is one ${NAME} or ${NAME:-def} reference.
type ref struct {
	name   string
	def    string
	hasDef bool
}

func (r ref) String() string {
	if r.hasDef {
		return "${" + r.name + ":-" + r.def + "}"
	}
	return "${" + r.name + "}"
}

// segment is a run of literal text or one reference.
type segment struct {
	lit string
	src string // the literal as the CUE configuration writes it
	ref *ref
}

// text is a scalar of the CUE configuration as Dropwizard reads it: literal
// text with references in between.
type text struct{ segs []segment }

// literal makes a text without references.
func literal(s string) text {
	if s == "" {
		return text{}
	}
	return text{segs: []segment{{lit: s, src: strings.ReplaceAll(s, "${", "$${")}}}
}

// parseText splits s into literal text and references. A "${" whose
// content ssemesh would read differently (a name with other characters, a
// reference in a default) is an error: carried over, it would silently mean
// something else.
func parseText(s string) (text, error) {
	var t text
	var lit, src strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.segs = append(t.segs, segment{lit: lit.String(), src: src.String()})
			lit.Reset()
			src.Reset()
		}
	}
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			// Dropwizard's escape: the reference is kept as text.
			lit.WriteString("${")
			src.WriteString("$${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				// Never closed: Dropwizard leaves it as text.
				lit.WriteString(s[i:])
				src.WriteString(s[i:])
				i = len(s)
				continue
			}
			body := s[i+2 : i+2+end]
			r := ref{name: body}
			if name, def, ok := strings.Cut(body, ":-"); ok {
				r = ref{name: name, def: def, hasDef: true}
			}
			if !varName.MatchString(r.name) || strings.Contains(r.def, "${") {
				return text{}, fmt.Errorf("reference %q: ssemesh interpolates only ${NAME} and ${NAME:-default}, NAME of letters, digits and '_', and no reference inside a default", s[i:i+3+end])
			}
			flush()
			t.segs = append(t.segs, segment{ref: &r})
			i += 3 + end
		default:
			lit.WriteByte(s[i])
			src.WriteByte(s[i])
			i++
		}
	}
	flush()
	return t, nil
}

// hasRefs reports whether the text holds a reference.
func (t text) hasRefs() bool {
	for _, s := range t.segs {
		if s.ref != nil {
			return true
		}
	}
	return false
}

// whole returns the reference when the text is exactly one.
func (t text) whole() (ref, bool) {
	if len(t.segs) == 1 && t.segs[0].ref != nil {
		return *t.segs[0].ref, true
	}
	return ref{}, false
}

// value is the text as it reads with every reference replaced by f's
// answer.
func (t text) value(f func(ref) string) string {
	return t.render(f, func(s string) string { return s })
}

// plain is the text of a value without references.
func (t text) plain() string { return t.value(func(ref) string { return "" }) }

// ssemesh is the text as it is written in an ssemesh configuration:
// references as they are, every literal '$' doubled.
func (t text) ssemesh() string {
	return t.render(func(r ref) string { return r.String() }, func(s string) string { return strings.ReplaceAll(s, "$", "$$") })
}

// source is the text as it was written in the CUE configuration, for
// messages.
func (t text) source() string {
	var b strings.Builder
	for _, s := range t.segs {
		if s.ref != nil {
			b.WriteString(s.ref.String())
		} else {
			b.WriteString(s.src)
		}
	}
	return b.String()
}

// render writes the references with onRef and the literal parts with
// onLit.
func (t text) render(onRef func(ref) string, onLit func(string) string) string {
	var b strings.Builder
	for _, s := range t.segs {
		if s.ref != nil {
			b.WriteString(onRef(*s.ref))
		} else {
			b.WriteString(onLit(s.lit))
		}
	}
	return b.String()
}

// concat joins texts.
func concat(parts ...text) text {
	var out text
	for _, p := range parts {
		out.segs = append(out.segs, p.segs...)
	}
	return out
}

// splitList splits a comma-separated text, as Jetty reads a list given as
// one string. Commas inside a reference's default do not split.
func splitList(t text) []text {
	var out []text
	cur := text{}
	for _, s := range t.segs {
		if s.ref != nil {
			cur.segs = append(cur.segs, s)
			continue
		}
		// The escape "$${" has no comma: both split at the same places.
		parts, srcs := strings.Split(s.lit, ","), strings.Split(s.src, ",")
		for i, p := range parts {
			if i > 0 {
				out = append(out, cur)
				cur = text{}
			}
			if p != "" {
				cur.segs = append(cur.segs, segment{lit: p, src: srcs[i]})
			}
		}
	}
	return append(out, cur)
}

// trimSpace trims spaces at both ends of the literal parts.
func (t text) trimSpace() text {
	segs := append([]segment(nil), t.segs...)
	if len(segs) > 0 && segs[0].ref == nil {
		segs[0].lit = strings.TrimLeft(segs[0].lit, " \t")
		segs[0].src = strings.TrimLeft(segs[0].src, " \t")
	}
	if n := len(segs); n > 0 && segs[n-1].ref == nil {
		segs[n-1].lit = strings.TrimRight(segs[n-1].lit, " \t")
		segs[n-1].src = strings.TrimRight(segs[n-1].src, " \t")
	}
	out := text{}
	for _, s := range segs {
		if s.ref != nil || s.lit != "" {
			out.segs = append(out.segs, s)
		}
	}
	return out
}

// varKind is what a variable's value stands for, which decides the sample
// value the converted configuration is checked with.
type varKind int

const (
	kindText   varKind = iota // part of a string: any short token fits
	kindURI                   // a back end's whole uri
	kindScheme                // what a back end's uri starts with
	kindOrigin                // a whole CORS origin
	kindBool                  // true or false
	kindLevel                 // a log level
)

// envVar is one variable the converted configuration reads.
type envVar struct {
	kind varKind
	// always is whether every reference to it has a default.
	always bool
	first  int // order of first use
}

// vars records the variables the converted configuration references.
type vars map[string]*envVar

// use records the references of t; kind applies when t is one whole
// reference, the other references being parts of a string.
func (v vars) use(t text, kind varKind) {
	_, whole := t.whole()
	for i, s := range t.segs {
		if s.ref == nil {
			continue
		}
		k := kindText
		switch {
		case whole:
			k = kind
		case kind == kindURI && i == 0:
			k = kindScheme
		}
		e, ok := v[s.ref.name]
		if !ok {
			e = &envVar{kind: k, always: true, first: len(v)}
			v[s.ref.name] = e
		}
		e.always = e.always && s.ref.hasDef
	}
}

// sample is a value for a variable of this kind that the checks accept, so
// that the converted configuration can be checked without the environment
// it will run in.
func (k varKind) sample(name string) string {
	switch k {
	case kindURI:
		return "http://sample.invalid/" + name
	case kindScheme:
		return "http"
	case kindOrigin:
		return "https://sample.invalid"
	case kindBool:
		return "false"
	case kindLevel:
		return "info"
	}
	return "1"
}
