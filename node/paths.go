package node

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// A client's path and query choose a stream and nothing else: never the
// upstream's scheme, host or port, never a path outside the back end's
// own, never a query parameter the configuration set. The functions here
// are that mapping; they touch no network, so they are tested (and fuzzed)
// on their own.

// maxPathBytes and maxQueryBytes bound what a client path and query may
// add to a stream key, and so to every key in the stream table.
const (
	maxPathBytes  = 2048
	maxQueryBytes = 4096
)

// lastEventIDParam is the query parameter browsers use to resume (an
// EventSource cannot set headers); the node consumes it.
const lastEventIDParam = "lastEventId"

var (
	errPathForm  = errors.New("the path must start with '/' and use only URL path characters")
	errPathLong  = fmt.Errorf("the path is longer than %d bytes", maxPathBytes)
	errQueryLong = fmt.Errorf("the query is longer than %d bytes", maxQueryBytes)
)

// checkClientPath refuses a path (escaped, as the client sent it) that a
// back end or a proxy in front of it could read as something else than a
// plain path under the mount: dot segments, also with path parameters
// ("..;/", which Tomcat and Spring treat as "..") or percent-encoded;
// encoded slashes, backslashes or percent signs (a second decoding would
// turn them into the former); control characters; empty segments; and any
// byte outside the URL path alphabet.
func checkClientPath(p string) error {
	if len(p) > maxPathBytes {
		return errPathLong
	}
	if p == "" || p[0] != '/' {
		return errPathForm
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return errors.New("the path has a malformed percent-encoding")
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			switch {
			case d < 0x20 || d == 0x7f:
				return errors.New("the path has an encoded control character")
			case d == '/' || d == '\\' || d == '%' || d == '.':
				return fmt.Errorf("the path has an encoded %q", rune(d))
			}
			i += 2
		case !isPathChar(c):
			return errPathForm
		}
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		if seg == "" && i != len(segs)-1 {
			return errors.New("the path has an empty segment (//)")
		}
		name, _, _ := strings.Cut(seg, ";")
		if name == "." || name == ".." {
			return errors.New("the path has a dot segment")
		}
	}
	return nil
}

// isPathChar reports the bytes RFC 3986 allows unencoded in a path:
// unreserved, sub-delims, ':', '@' and '/'.
func isPathChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// clientQuery is what a client's query string means to the node.
type clientQuery struct {
	identity string // the allowed parameters, canonical: part of the stream key
	lastID   string // the lastEventId parameter
	hasID    bool
}

// parseClientQuery keeps the parameters of raw that are on the back end's
// allow-list and not set by its configured URI (configured values win), in
// a canonical order so that one stream has one key, and takes out the
// browser's lastEventId. Everything else is dropped: a parameter the back
// end does not define a stream by would only open more upstream
// connections for the same stream.
func parseClientQuery(raw string, allowed []string, configured map[string]bool) (clientQuery, error) {
	var q clientQuery
	if raw == "" {
		return q, nil
	}
	if len(raw) > maxQueryBytes {
		return q, errQueryLong
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, errors.New("the query is malformed")
	}
	if ids, ok := vals[lastEventIDParam]; ok && len(ids) > 0 {
		q.lastID, q.hasID = ids[0], true
	}
	keep := url.Values{}
	for _, k := range allowed {
		if vs, ok := vals[k]; ok && !configured[k] && k != lastEventIDParam {
			keep[k] = vs
		}
	}
	q.identity = keep.Encode() // sorted by key
	return q, nil
}

// queryKeys lists the parameter names of a configured URI's query.
func queryKeys(raw string) map[string]bool {
	keys := map[string]bool{}
	vals, _ := url.ParseQuery(raw)
	for k := range vals {
		keys[k] = true
	}
	return keys
}

// joinQuery appends the client's canonical parameters to the configured
// query, which is passed on exactly as configured.
func joinQuery(configured, client string) string {
	switch {
	case configured == "":
		return client
	case client == "":
		return configured
	}
	return configured + "&" + client
}

// mountRest is the part of an escaped client path below a mount, without a
// leading '/': what a prefix mount appends to its upstream path.
func mountRest(mountPath, p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, mountPath), "/")
}

// upstreamURL is the back end's URL for a stream: the instance's base URL,
// with, for a prefix mount, the client's path below the mount appended to
// the base path (which ends in '/'), and the client's canonical query after
// the configured one. It is built field by field on a copy of the base, and
// checked: scheme, host and port are the base's and the path stays under
// the base path, whatever the client sent.
func upstreamURL(base *url.URL, prefix bool, rest, query string) (*url.URL, error) {
	u := *base
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	u.RawQuery = joinQuery(base.RawQuery, query)
	basePath := base.EscapedPath()
	if prefix && rest != "" {
		raw := basePath + rest
		p, err := url.PathUnescape(raw)
		if err != nil {
			return nil, fmt.Errorf("upstream path: %w", err)
		}
		u.Path, u.RawPath = p, raw
	}
	if u.Scheme != base.Scheme || u.Host != base.Host || !strings.HasPrefix(u.EscapedPath(), basePath) {
		return nil, fmt.Errorf("upstream URL %s leaves the back end %s", redactURL(&u), redactURL(base))
	}
	return &u, nil
}

// parentURL is a parent node's URL for a stream key (escaped path and
// canonical query): the child asks for exactly the key its clients asked
// for.
func parentURL(scheme, addr, key string) (*url.URL, error) {
	p, q, _ := strings.Cut(key, "?")
	path, err := url.PathUnescape(p)
	if err != nil {
		return nil, fmt.Errorf("stream key: %w", err)
	}
	u := &url.URL{Scheme: scheme, Host: addr, Path: path, RawPath: p, RawQuery: q}
	if u.Host != addr {
		return nil, fmt.Errorf("parent address %q is not a host:port", addr)
	}
	return u, nil
}

// redactURL shows a URL without credentials and with every query value
// replaced, for logs and the admin API: a configured URI's query often
// carries a key.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		vals, err := url.ParseQuery(c.RawQuery)
		if err != nil {
			c.RawQuery = "REDACTED"
		} else {
			keys := make([]string, 0, len(vals))
			for k := range vals {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, 0, len(keys))
			for _, k := range keys {
				parts = append(parts, url.QueryEscape(k)+"=REDACTED")
			}
			c.RawQuery = strings.Join(parts, "&")
		}
	}
	return c.String()
}
