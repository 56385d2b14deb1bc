// Package cueimport converts a CUE SSE Proxy configuration (the YAML file
// of the Dropwizard service, /etc/escenic/sse-proxy/sse-proxy.yaml) into
// an ssemesh node configuration that serves the same clients at the same
// paths, on the host and port the CUE proxy used.
//
// What has no equivalent is reported: a warning where the node behaves
// differently or an operator has to act, a note where a setting is simply
// not needed. ${VAR} and ${VAR:-default} references are carried over as
// they are written, for the node to read from its environment at start.
// The result is checked with the node's own checks before it is returned.
package cueimport

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ssemesh/ssemesh/node"
)

// Options name the files of a conversion.
type Options struct {
	// Source is the CUE configuration's file name, for messages and the
	// header of the result.
	Source string
	// Target is the file the result will be written to ("" for standard
	// output); the header names it.
	Target string
}

// Message is one thing a conversion reports: the CUE key it is about and
// what became of it.
type Message struct {
	Key  string
	Text string
}

func (m Message) String() string { return m.Key + ": " + m.Text }

// EnvVar is an environment variable the converted configuration reads.
type EnvVar struct {
	Name string
	// Optional is set when every reference has a default.
	Optional bool
}

// Result is a converted configuration.
type Result struct {
	// YAML is the ssemesh configuration, with a header comment that names
	// the source and lists the warnings and notes.
	YAML []byte
	// Warnings are differences an operator should act on or know of.
	Warnings []Message
	// Notes are settings left out because ssemesh does not need them.
	Notes []Message
	// Backends is the number of back ends converted.
	Backends int
	// Env lists the variables the configuration references, in order of
	// first use.
	Env []EnvVar
}

// output is the converted configuration before it is written.
type output struct {
	listen      text
	listenHint  []string
	adminListen text
	adminToken  text
	adminHint   []string
	logLevel    text
	logFormat   string
	// accessLog is set when the CUE proxy wrote a request log.
	accessLog   bool
	cors        *outCORS
	contextPath string
	backends    []outBackend
	// trustedProxies are the front ends whose X-Forwarded-For names the
	// client.
	trustedProxies []string
}

// perIPConnections is ssemesh's default limits.per_ip.connections.
const perIPConnections = 1000

// topLevel are the hints for top-level Dropwizard keys ssemesh has no
// place for; other unknown keys get a generic warning.
var topLevel = map[string]string{
	"metrics": "Dropwizard's metric reporters have no equivalent: ssemesh serves Prometheus metrics at /metrics on the admin listener",
	"health":  "Dropwizard's health checks have no equivalent: ssemesh answers /healthz and /readyz on the admin listener",
}

// Convert converts the CUE SSE Proxy configuration src. Problems that
// leave nothing to convert (not YAML, no back end, a value of the wrong
// kind) are *node.ConfigError, naming the key and, when known, the line.
func Convert(src []byte, opt Options) (*Result, error) {
	c := &conv{file: opt.Source, vars: vars{}}
	if c.file == "" {
		c.file = "the CUE configuration"
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, &node.ConfigError{Key: c.file, Reason: "not a YAML file: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, c.errAt(item{key: "backends"}, "no back end: the file is empty")
	}
	root := item{n: doc.Content[0]}
	if resolveKind(root) != yaml.MappingNode {
		return nil, c.errAt(root, "want a map of settings at the top level, got %s", kindName(root.n))
	}
	ps, err := c.mapping(root)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		switch p.name {
		case "server", "backends", "cors", "logging":
		default:
			hint, ok := topLevel[p.name]
			if !ok {
				hint = "not a setting ssemesh knows; ignored"
			}
			c.warn(p.name, "%s", hint)
		}
	}
	top := byName(ps)
	out := &output{}
	for _, step := range []func(map[string]item, *output) error{c.server, c.backends, c.cors, c.logging} {
		if err := step(top, out); err != nil {
			return nil, err
		}
	}
	// The CUE proxy documents no limit per client address; ssemesh's
	// would count every client behind the installer's nginx, on this host,
	// as 127.0.0.1 and refuse the 1001st.
	out.trustedProxies = []string{"127.0.0.1", "::1"}
	c.warn("trusted_proxies", "set to this host (127.0.0.1, ::1), for an nginx in front on the same host as the CUE installer sets up: ssemesh allows each client address %d streams (limits.per_ip.connections) and reads the address from X-Forwarded-For only from trusted proxies. Add a load balancer or an nginx on another host", perIPConnections)
	body, err := out.encode()
	if err != nil {
		return nil, fmt.Errorf("writing the ssemesh configuration: %w", err)
	}
	if err := c.check(body); err != nil {
		return nil, err
	}
	res := &Result{Warnings: c.warnings, Notes: c.notes, Backends: len(out.backends), Env: c.env()}
	res.YAML = append(header(opt, c.file, res), body...)
	return res, nil
}

// check runs the node's own checks on the result, as a node would read it
// with the variables that have a default unset and a sample value for the
// others, so that a result ssemesh would refuse is never written. A
// default ssemesh cannot use is reported like any other problem.
func (c *conv) check(body []byte) error {
	var defaults, samples []string
	lookup := func(name string) (string, bool) {
		e, ok := c.vars[name]
		if !ok || e.always {
			return "", false
		}
		return e.kind.sample(name), true
	}
	for _, v := range c.env() {
		if v.Optional {
			defaults = append(defaults, v.Name)
		} else {
			samples = append(samples, v.Name)
		}
	}
	if err := validate(body, lookup); err != nil {
		var with []string
		if len(defaults) > 0 {
			with = append(with, "the defaults of "+strings.Join(defaults, ", "))
		}
		if len(samples) > 0 {
			with = append(with, "sample values for "+strings.Join(samples, ", "))
		}
		if len(with) == 0 {
			return fmt.Errorf("%s: ssemesh refuses the converted configuration: %w", c.file, err)
		}
		return fmt.Errorf("%s: ssemesh refuses the converted configuration with %s: %w", c.file, strings.Join(with, " and "), err)
	}
	return nil
}

func validate(body []byte, lookup func(string) (string, bool)) error {
	cfg, err := node.ParseConfig(body, lookup)
	if err != nil {
		return err
	}
	return cfg.Validate()
}

// env lists the referenced variables in order of first use.
func (c *conv) env() []EnvVar {
	out := make([]EnvVar, 0, len(c.vars))
	for name, e := range c.vars {
		out = append(out, EnvVar{Name: name, Optional: e.always})
	}
	sort.Slice(out, func(i, j int) bool { return c.vars[out[i].Name].first < c.vars[out[j].Name].first })
	return out
}

// encode writes the ssemesh configuration.
func (o *output) encode() ([]byte, error) {
	doc := mapNode()
	listen := keyNode("listen")
	listen.HeadComment = strings.Join(o.listenHint, "\n")
	doc.Content = append(doc.Content, listen, strNode(o.listen))

	admin := mapNode()
	adminListen := keyNode("listen")
	adminListen.HeadComment = strings.Join(o.adminHint, "\n")
	admin.Content = append(admin.Content, adminListen, strNode(o.adminListen))
	if len(o.adminToken.segs) > 0 {
		admin.Content = append(admin.Content, keyNode("token"), strNode(o.adminToken))
	}
	doc.Content = append(doc.Content, keyNode("admin"), admin)

	log := mapNode(keyNode("level"), strNode(o.logLevel))
	if o.logFormat != "" {
		log.Content = append(log.Content, keyNode("format"), keyNode(o.logFormat))
	}
	doc.Content = append(doc.Content, keyNode("log"), log)

	if o.accessLog {
		al := mapNode(keyNode("enabled"), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"}, keyNode("format"), keyNode("json"))
		doc.Content = append(doc.Content, keyNode("access_log"), al)
	}

	if o.cors != nil {
		origins := &yaml.Node{Kind: yaml.SequenceNode}
		for _, t := range o.cors.origins {
			origins.Content = append(origins.Content, strNode(t))
		}
		cors := mapNode(keyNode("allowed_origins"), origins)
		switch {
		case o.cors.credRef.hasRefs():
			// Unquoted, so that the value the variable holds is read as
			// a boolean.
			cors.Content = append(cors.Content, keyNode("allow_credentials"), keyNode(o.cors.credRef.ssemesh()))
		case o.cors.credentials:
			cors.Content = append(cors.Content, keyNode("allow_credentials"), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
		}
		doc.Content = append(doc.Content, keyNode("cors"), cors)
	}

	if len(o.trustedProxies) > 0 {
		tp := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, p := range o.trustedProxies {
			tp.Content = append(tp.Content, keyNode(p))
		}
		doc.Content = append(doc.Content, keyNode("trusted_proxies"), tp)
	}

	list := &yaml.Node{Kind: yaml.SequenceNode}
	for _, b := range o.backends {
		e := mapNode(keyNode("name"), keyNode(b.name), keyNode("uri"), strNode(b.uri))
		if b.mount != "" {
			e.Content = append(e.Content, keyNode("mount"), strNode(literal(b.mount)))
		}
		if len(b.headers) > 0 {
			h := mapNode()
			for _, hd := range b.headers {
				h.Content = append(h.Content, strNode(literal(hd.name)), strNode(hd.value))
			}
			e.Content = append(e.Content, keyNode("headers"), h)
		}
		if b.creds {
			e.Content = append(e.Content, keyNode("credentials"), mapNode(keyNode("username"), strNode(b.user), keyNode("password"), strNode(b.pass)))
		}
		list.Content = append(list.Content, e)
	}
	doc.Content = append(doc.Content, keyNode("backends"), list)

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func mapNode(content ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Content: content}
}

// keyNode is a plain string written as it is: keys and values ssemesh
// defines.
func keyNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// strNode writes a text as ssemesh reads it: a literal '$' doubled, and a
// value with references in single quotes, so that whatever the variable
// holds stays one string (only a "'" in it would end the string).
func strNode(t text) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t.ssemesh()}
	if t.hasRefs() {
		n.Style = yaml.SingleQuotedStyle
	}
	return n
}

// header is the comment at the top of the result: where it comes from, how
// to check it, what it reads from the environment, and every message.
func header(opt Options, source string, res *Result) []byte {
	var b strings.Builder
	target := opt.Target
	if target != "" {
		wrap(&b, "# ", "# ", fmt.Sprintf("%s, converted by ssemesh import-cue from %s.", target, source))
	} else {
		target = "FILE"
		wrap(&b, "# ", "# ", fmt.Sprintf("ssemesh configuration converted by ssemesh import-cue from %s.", source))
	}
	fmt.Fprintf(&b, "# Check it where the node runs, in its environment:\n#   ssemesh run --config %s --check\n", target)
	var need, optional []string
	for _, e := range res.Env {
		if e.Optional {
			optional = append(optional, e.Name)
		} else {
			need = append(need, e.Name)
		}
	}
	if len(need) > 0 {
		wrap(&b, "# ", "#   ", "Needs in the environment (the node refuses to start without them): "+strings.Join(need, ", ")+".")
	}
	if len(optional) > 0 {
		wrap(&b, "# ", "#   ", "Reads from the environment when set (else their defaults apply): "+strings.Join(optional, ", ")+".")
	}
	for _, sec := range []struct {
		title string
		msgs  []Message
	}{
		{"Warnings (see docs/migrating-from-cue.md):", res.Warnings},
		{"Notes:", res.Notes},
	} {
		if len(sec.msgs) == 0 {
			continue
		}
		b.WriteString("#\n# " + sec.title + "\n")
		for _, m := range sec.msgs {
			wrap(&b, "# - ", "#   ", m.String())
		}
	}
	b.WriteString("\n")
	return []byte(b.String())
}

// wrap writes s as comment lines of at most about 78 columns.
func wrap(b *strings.Builder, first, rest, s string) {
	const width = 78
	prefix, n := first, 0
	b.WriteString(prefix)
	n = len(prefix)
	for i, w := range strings.Fields(s) {
		if i > 0 && n+1+len(w) > width {
			b.WriteString("\n" + rest)
			n = len(rest)
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	b.WriteByte('\n')
}
