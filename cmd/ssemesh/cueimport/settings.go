package cueimport

import (
	"net/url"
	"strings"

	"go.yaml.in/yaml/v3"
)

// outCORS is the converted cors section.
type outCORS struct {
	origins     []text
	credentials bool
	credRef     text // allow_credentials from the environment
}

// cors converts the Jetty CORS filter settings the CUE proxy takes. Only
// the origins and credentials carry over: ssemesh answers preflights with
// its own fixed methods and headers, which are all an EventSource needs.
func (c *conv) cors(top map[string]item, out *output) error {
	it, ok := top["cors"]
	if !ok || it.null() {
		return nil
	}
	it.key = "cors"
	ps, err := c.mapping(it)
	if err != nil {
		return err
	}
	var ignored []string
	for _, p := range ps {
		if p.name != "allowedOrigins" && p.name != "allowCredentials" {
			ignored = append(ignored, p.name)
		}
	}
	if len(ignored) > 0 {
		c.note("cors", "%s: ignored: ssemesh answers preflights itself (methods GET, OPTIONS; headers Last-Event-ID, Cache-Control, Authorization; cached for 600 s), which is what an EventSource needs", strings.Join(ignored, ", "))
	}
	fields := byName(ps)
	oi, ok := fields["allowedOrigins"]
	var raw []item
	switch {
	case !ok || oi.null():
		c.warn("cors.allowedOrigins", `absent: taken as "*", the default of the CORS filter whose settings the CUE proxy's cors section holds`)
		oi = item{key: "cors.allowedOrigins"}
	case resolveKind(oi) == yaml.SequenceNode:
		if raw, err = c.list(oi); err != nil {
			return err
		}
	default:
		raw = []item{oi}
	}
	var origins []text
	wildcard := false
	seen := map[string]bool{}
	add := func(t text) {
		if k := strings.ToLower(t.ssemesh()); !seen[k] {
			seen[k] = true
			origins = append(origins, t)
		}
	}
	if raw == nil {
		wildcard = true
		add(literal("*"))
	}
	for _, r := range raw {
		t, err := c.scalar(r)
		if err != nil {
			return err
		}
		for _, o := range splitList(t) {
			o = o.trimSpace()
			switch {
			case len(o.segs) == 0:
			case o.hasRefs():
				c.vars.use(o, kindOrigin)
				add(o)
			case o.plain() == "*":
				wildcard = true
				add(o)
			default:
				if v, ok := origin(o.plain()); ok {
					add(literal(v))
				} else {
					c.warn(r.key, `%q dropped: ssemesh allows an exact origin (scheme://host[:port]) or "*", not patterns or paths`, o.plain())
				}
			}
		}
	}
	if len(origins) == 0 {
		c.warn(oi.key, "no origin left: ssemesh sends no CORS headers, so pages on other sites cannot open streams")
		return nil
	}
	out.cors = &outCORS{origins: origins}
	ci, ok := fields["allowCredentials"]
	if !ok {
		return nil
	}
	val, ref, err := c.boolean(ci)
	if err != nil {
		return err
	}
	switch {
	case (val || ref.hasRefs()) && wildcard:
		c.warn(ci.key, `dropped: ssemesh refuses credentials with allowedOrigins "*", since any site could then read streams with its visitors' cookies; list the origins and set cors.allow_credentials: true if pages open streams withCredentials`)
	case ref.hasRefs():
		c.vars.use(ref, kindBool)
		out.cors.credRef = ref
	default:
		out.cors.credentials = val
	}
	return nil
}

// origin reads a literal origin as ssemesh writes it: scheme://host[:port],
// a trailing '/' dropped.
func origin(s string) (string, bool) {
	if strings.Contains(s, "*") {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", false
	}
	return u.Scheme + "://" + u.Host, true
}

// levels maps Dropwizard's (logback's) levels to ssemesh's; OFF and ALL
// have no equal and take the nearest.
var levels = map[string]string{
	"TRACE": "trace", "DEBUG": "debug", "INFO": "info", "WARN": "warn", "ERROR": "error",
	"OFF": "error", "ALL": "trace",
}

// levelNote is why OFF and ALL read as another level.
var levelNote = map[string]string{
	"OFF": "ssemesh's log cannot be turned off; error is its quietest level",
	"ALL": "trace is ssemesh's most detailed level",
}

// logging converts the log level and reports what ssemesh's single log
// on standard error cannot do: per-logger levels and other appenders.
func (c *conv) logging(top map[string]item, out *output) error {
	out.logLevel = literal("info")
	it, ok := top["logging"]
	if !ok || it.null() {
		return nil
	}
	it.key = "logging"
	ps, err := c.mapping(it)
	if err != nil {
		return err
	}
	fields := byName(ps)
	root := "INFO"
	if li, ok := fields["level"]; ok && !li.null() {
		if root, err = c.level(li, out); err != nil {
			return err
		}
	}
	for _, p := range ps {
		switch p.name {
		case "level":
		case "loggers":
			if err := c.loggers(p.val, root); err != nil {
				return err
			}
		case "appenders":
			if err := c.appenders(p.val, out); err != nil {
				return err
			}
		default:
			c.note(p.val.key, "no ssemesh equivalent; ignored")
		}
	}
	return nil
}

// level converts logging.level and returns it as Dropwizard reads it.
func (c *conv) level(it item, out *output) (string, error) {
	t, err := c.scalar(it)
	if err != nil {
		return "", err
	}
	if r, whole := t.whole(); whole {
		// The variable's values are Dropwizard levels; the default can be
		// converted, the environment must change.
		root := "INFO"
		if r.hasDef {
			lvl, ok := levels[strings.ToUpper(r.def)]
			if !ok {
				return "", c.errAt(it, "the default %q is not a level (TRACE, DEBUG, INFO, WARN, ERROR, OFF or ALL)", r.def)
			}
			if why, odd := levelNote[strings.ToUpper(r.def)]; odd {
				c.warn(it.key, "%s reads as %s: %s", r.def, lvl, why)
			}
			root, r.def = strings.ToUpper(r.def), lvl
		}
		out.logLevel = text{segs: []segment{{ref: &r}}}
		c.vars.use(out.logLevel, kindLevel)
		c.warn(it.key, "%s must now hold an ssemesh level: trace, debug, info, warn or error, in lower case", r.name)
		return root, nil
	}
	if t.hasRefs() {
		return "", c.errAt(it, "a level built from several parts (%s) cannot be carried over: write the level, or one ${VAR}", t.source())
	}
	v := strings.ToUpper(strings.TrimSpace(t.plain()))
	lvl, ok := levels[v]
	if !ok {
		return "", c.errAt(it, "want TRACE, DEBUG, INFO, WARN, ERROR, OFF or ALL, got %q", t.plain())
	}
	if why, odd := levelNote[v]; odd {
		c.warn(it.key, "%s reads as %s: %s", v, lvl, why)
	}
	out.logLevel = literal(lvl)
	return v, nil
}

// loggers reports the loggers whose level differs from the root's.
func (c *conv) loggers(it item, root string) error {
	ps, err := c.mapping(it)
	if err != nil {
		return err
	}
	var differ []string
	for _, p := range ps {
		li := p.val
		if resolveKind(li) == yaml.MappingNode {
			sub, err := c.mapping(li)
			if err != nil {
				return err
			}
			li = byName(sub)["level"]
		}
		if li.null() {
			continue
		}
		t, err := c.scalar(li)
		if err != nil {
			return err
		}
		if lv := strings.ToUpper(t.source()); lv != root {
			differ = append(differ, p.name+" "+lv)
		}
	}
	if len(differ) > 0 {
		c.warn(it.key, "%s: ssemesh has one level for its whole log (log.level); ignored", strings.Join(differ, ", "))
	}
	return nil
}

// appenders reports where Dropwizard wrote the log, since ssemesh writes
// it to standard error only. A JSON layout carries over as log.format.
func (c *conv) appenders(it item, out *output) error {
	entries, err := c.list(it)
	if err != nil {
		return err
	}
	for _, e := range entries {
		ps, err := c.mapping(e)
		if err != nil {
			return err
		}
		f := byName(ps)
		typ, target := "console", "stdout"
		if t, ok := f["type"]; ok {
			v, err := c.scalar(t)
			if err != nil {
				return err
			}
			typ = strings.ToLower(v.source())
		}
		if t, ok := f["target"]; ok {
			v, err := c.scalar(t)
			if err != nil {
				return err
			}
			target = strings.ToLower(v.source())
		}
		if l, ok := f["layout"]; ok && resolveKind(l) == yaml.MappingNode {
			lp, err := c.mapping(l)
			if err != nil {
				return err
			}
			if t, ok := byName(lp)["type"]; ok {
				if v, err := c.scalar(t); err == nil && strings.EqualFold(v.source(), "json") {
					out.logFormat = "json"
				}
			}
		}
		switch {
		case typ == "console" && target == "stderr":
		case typ == "console":
			c.warn(e.key, "console output went to standard output; ssemesh logs to standard error (a supervisor such as systemd keeps both)")
		case typ == "file":
			where := ""
			if fn, ok := f["currentLogFilename"]; ok {
				if v, err := c.scalar(fn); err == nil {
					where = " (" + v.source() + ")"
				}
			}
			c.warn(e.key, "file appender%s: ssemesh logs to standard error only; let the supervisor keep the log (journald), or redirect standard error to the file", where)
		case typ == "syslog":
			c.warn(e.key, "syslog appender: ssemesh logs to standard error only; journald can forward it to syslog")
		default:
			c.warn(e.key, "%s appender: ssemesh logs to standard error only", typ)
		}
	}
	return nil
}
