package cueimport

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// reservedHeaders are the header names ssemesh refuses in a back end's
// headers (node/config_validate.go), with the reason a warning gives.
var reservedHeaders = map[string]string{
	"Last-Event-Id":     "ssemesh sets it itself, to resume a stream",
	"Accept":            "ssemesh sets it itself, to text/event-stream",
	"Connection":        "a hop-by-hop header, which ssemesh's HTTP client manages",
	"Content-Length":    "ssemesh's HTTP client manages it",
	"Transfer-Encoding": "ssemesh's HTTP client manages it",
	"Te":                "a hop-by-hop header, which ssemesh's HTTP client manages",
	"Trailer":           "a hop-by-hop header, which ssemesh's HTTP client manages",
	"Upgrade":           "a hop-by-hop header, which ssemesh's HTTP client manages",
	"X-Ssemesh-Via":     "ssemesh sets it on requests between its nodes",
	"X-Ssemesh-Auth":    "ssemesh sets it on requests between its nodes",
}

// outBackend is one converted back end.
type outBackend struct {
	it      item
	name    string
	uri     text
	mount   string // "" when the path is known only at start
	headers []outHeader
	user    text
	pass    text
	creds   bool
	// path and host are the uri's, when they do not depend on the
	// environment; pathKnown tells an empty path from an unknown one.
	path      string
	pathKnown bool
	host      string
	warnings  []Message
}

func (b *outBackend) warn(key, format string, args ...any) {
	b.warnings = append(b.warnings, Message{Key: key, Text: fmt.Sprintf(format, args...)})
}

type outHeader struct {
	name  string
	value text
}

// backends converts the back ends: names, mounts, headers and
// credentials.
func (c *conv) backends(top map[string]item, out *output) error {
	it, ok := top["backends"]
	if !ok {
		return c.errAt(item{key: "backends"}, "no back end: the CUE proxy configuration lists none, and ssemesh needs at least one")
	}
	it.key = "backends"
	entries, err := c.list(it)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return c.errAt(it, "no back end: the list is empty, and ssemesh needs at least one")
	}
	// Each back end's warnings are kept with it, so that they come in file
	// order with those the mounts add once all back ends are read.
	for _, e := range entries {
		mark := len(c.warnings)
		b, err := c.backend(e)
		if err != nil {
			return err
		}
		b.warnings = append(b.warnings, c.warnings[mark:]...)
		c.warnings = c.warnings[:mark]
		out.backends = append(out.backends, b)
	}
	c.nameBackends(out.backends)
	if err := c.mountBackends(out.backends, out.contextPath); err != nil {
		return err
	}
	for _, b := range out.backends {
		c.warnings = append(c.warnings, b.warnings...)
	}
	return nil
}

// backend reads one entry.
func (c *conv) backend(it item) (outBackend, error) {
	ps, err := c.mapping(it)
	if err != nil {
		return outBackend{}, err
	}
	if it.null() {
		return outBackend{}, c.errAt(it, "empty entry: a back end needs a uri")
	}
	b := outBackend{it: it}
	fields := byName(ps)
	for _, p := range ps {
		switch p.name {
		case "uri", "httpHeaders", "credentials":
		default:
			c.warn(p.val.key, "not a back-end setting ssemesh knows; ignored")
		}
	}
	if ci, ok := fields["credentials"]; ok {
		if err := c.credentials(ci, &b); err != nil {
			return b, err
		}
	}
	ui, ok := fields["uri"]
	if !ok || ui.null() {
		return b, c.errAt(it, "no uri: a back end needs one")
	}
	if b.uri, err = c.scalar(ui); err != nil {
		return b, err
	}
	if err := c.analyseURI(ui, &b); err != nil {
		return b, err
	}
	if hi, ok := fields["httpHeaders"]; ok {
		if err := c.headers(hi, &b); err != nil {
			return b, err
		}
	}
	return b, nil
}

// analyseURI checks the uri as ssemesh will, and finds its host and path
// for the name and the mount. A uri with references is read twice, with
// two different values for them: what is the same both times does not
// depend on the environment.
func (c *conv) analyseURI(it item, b *outBackend) error {
	if !b.uri.hasRefs() {
		u, err := url.Parse(b.uri.plain())
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c.errAt(it, "want an absolute http or https URL, got %q", b.uri.plain())
		}
		changed := false
		if u.User != nil {
			changed = true
			pw, _ := u.User.Password()
			if b.creds {
				c.warn(it.key, "the login in the uri is dropped: ssemesh takes it from credentials only, which this back end has")
			} else {
				b.user, b.pass, b.creds = literal(u.User.Username()), literal(pw), true
				c.warn(it.key, "the login in the uri moves to credentials: ssemesh refuses a login in a uri")
			}
			u.User = nil
		}
		if u.Fragment != "" {
			changed = true
			c.warn(it.key, "the fragment #%s is dropped: it is never sent to a server, and ssemesh refuses it", u.Fragment)
			u.Fragment, u.RawFragment = "", ""
		}
		if changed {
			b.uri = literal(u.String())
		}
		b.path, b.pathKnown, b.host = u.Path, true, u.Hostname()
		return nil
	}
	c.vars.use(b.uri, kindURI)
	// The two readings: each reference's default (or "0"), then the same
	// with "1" appended, which keeps a scheme, host or port well-formed.
	var us [2]*url.URL
	for i, suffix := range []string{"", "1"} {
		u, err := url.Parse(b.uri.value(func(r ref) string {
			if r.def == "" {
				return "0" + suffix
			}
			return r.def + suffix
		}))
		if err != nil || u.Host == "" || u.Opaque != "" {
			break
		}
		us[i] = u
	}
	if us[0] == nil || us[1] == nil {
		c.warn(it.key, "the path of %s is known only at start: its mount is not checked against the other back ends' (ssemesh refuses to start if two are the same)", b.uri.source())
		return nil
	}
	if us[0].Path == us[1].Path {
		b.path, b.pathKnown = us[0].Path, true
	} else {
		c.warn(it.key, "the path of %s is known only at start: its mount is not checked against the other back ends' (ssemesh refuses to start if two are the same)", b.uri.source())
	}
	if us[0].Hostname() == us[1].Hostname() {
		b.host = us[0].Hostname()
	}
	return nil
}

// credentials reads the back end's login.
func (c *conv) credentials(it item, b *outBackend) error {
	ps, err := c.mapping(it)
	if err != nil {
		return err
	}
	for _, p := range ps {
		switch p.name {
		case "username":
			if b.user, err = c.scalar(p.val); err != nil {
				return err
			}
			if !b.user.hasRefs() && strings.ContainsAny(b.user.plain(), ":\r\n\x00") {
				return c.errAt(p.val, "a username with ':', CR, LF or NUL cannot be sent with HTTP basic authentication")
			}
		case "password":
			if b.pass, err = c.scalar(p.val); err != nil {
				return err
			}
			if !b.pass.hasRefs() && strings.ContainsAny(b.pass.plain(), "\r\n\x00") {
				return c.errAt(p.val, "a password with CR, LF or NUL cannot be sent with HTTP basic authentication")
			}
		default:
			c.warn(p.val.key, "not a credentials setting ssemesh knows; ignored")
		}
	}
	switch {
	case len(b.user.segs) > 0:
		b.creds = true
	case len(b.pass.segs) > 0:
		return c.errAt(it, "a password without a username: ssemesh needs both")
	default:
		c.warn(it.key, "empty: the back end is reached without a login")
	}
	c.vars.use(b.user, kindText)
	c.vars.use(b.pass, kindText)
	return nil
}

// headers reads httpHeaders, dropping the names ssemesh refuses.
func (c *conv) headers(it item, b *outBackend) error {
	ps, err := c.mapping(it)
	if err != nil {
		return err
	}
	seen := map[string]string{}
	for _, p := range ps {
		key := p.val.key
		canon := http.CanonicalHeaderKey(p.name)
		if !validHeaderName(p.name) {
			c.warn(key, "dropped: %q is not a valid header name", p.name)
			continue
		}
		if why, ok := reservedHeaders[canon]; ok {
			c.warn(key, "dropped: %s", why)
			continue
		}
		if first, dup := seen[canon]; dup {
			c.warn(key, "dropped: the same header as %s", first)
			continue
		}
		v, err := c.scalar(p.val)
		if err != nil {
			return err
		}
		if !v.hasRefs() && !validHeaderValue(v.plain()) {
			c.warn(key, "dropped: the value has a character a header cannot carry (CR, LF, NUL or another control character)")
			continue
		}
		seen[canon] = p.name
		c.vars.use(v, kindText)
		b.headers = append(b.headers, outHeader{name: p.name, value: v})
	}
	return nil
}

// validHeaderName: an RFC 9110 token, as ssemesh checks it.
func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		ch := h[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0) {
			return false
		}
	}
	return true
}

// validHeaderValue: no control characters but horizontal tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if ch := v[i]; ch < 0x20 && ch != '\t' || ch == 0x7f {
			return false
		}
	}
	return true
}

// nameBackends gives each back end a name: the last two segments of its
// uri's path, else its host. Names several back ends would share get the
// host in front, then a number.
func (c *conv) nameBackends(bs []outBackend) {
	base := make([]string, len(bs))
	count := map[string]int{}
	for i, b := range bs {
		base[i] = pathName(b.path)
		if base[i] == "" {
			base[i] = sanitize(b.host)
		}
		if base[i] == "" {
			base[i] = fmt.Sprintf("backend-%d", i+1)
		}
		count[base[i]]++
	}
	used := map[string]bool{}
	for i := range bs {
		name := base[i]
		if count[name] > 1 && bs[i].host != "" && sanitize(bs[i].host) != name {
			name = sanitize(bs[i].host + "-" + name)
		}
		candidate := name
		for n := 2; used[candidate]; n++ {
			suffix := fmt.Sprintf("-%d", n)
			candidate = truncate(name, 64-len(suffix)) + suffix
		}
		used[candidate] = true
		bs[i].name = candidate
	}
}

// pathName is the last two segments of a path, as a name.
func pathName(p string) string {
	var segs []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	if len(segs) > 2 {
		segs = segs[len(segs)-2:]
	}
	return sanitize(strings.Join(segs, "-"))
}

// sanitize makes s a back-end name: other characters become '-', and the
// name starts with a letter or digit and has at most 64 characters.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '_' || ch == '.' || ch == '-' {
			b.WriteByte(ch)
		} else {
			b.WriteByte('-')
		}
	}
	out := strings.TrimLeft(b.String(), "_.-")
	for strings.Contains(out, "--") {
		out = strings.ReplaceAll(out, "--", "-")
	}
	return strings.TrimRight(truncate(out, 64), "-")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// mountBackends sets each back end's mount: its uri's path, below the
// context path. The CUE proxy did not document what it did with several
// back ends on one path; ssemesh serves one stream per path, so the first
// keeps the path and the others move below their name, with a warning.
func (c *conv) mountBackends(bs []outBackend, contextPath string) error {
	owner := map[string]int{}
	for i := range bs {
		b := &bs[i]
		if !b.pathKnown {
			if contextPath != "" {
				b.warn(b.it.key+".uri", "its path is known only at start, so the mount cannot include %s: set mount by hand", contextPath)
			}
			continue
		}
		p := b.path
		if p == "" {
			p = "/"
		}
		mount := p
		if contextPath != "" {
			mount = contextPath + p
		}
		first, dup := owner[mount]
		if !dup {
			owner[mount] = i
			b.mount = mount
			continue
		}
		moved := "/" + b.name + mount
		if mount == "/" {
			moved = "/" + b.name
		}
		if other, taken := owner[moved]; taken {
			return c.errAt(b.it, "path %s is already %s's, and so is %s", mount, bs[other].name, moved)
		}
		owner[moved] = i
		b.mount = moved
		b.warn(b.it.key, "%s has the same path as %s (%s), and the CUE proxy's choice between them is not documented: ssemesh serves %s there and this back end at %s; point the clients that need it there, or give it another mount",
			b.name, bs[first].it.key, mount, bs[first].name, moved)
	}
	return nil
}
