package node

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/relay"
)

// mount is one back end as this node serves it.
type mount struct {
	spec      BackendSpec
	instances []*url.URL  // upstream base URLs: the config's uri, or Consul's passing instances
	header    http.Header // extra upstream headers, Authorization included
	dc        string      // the back end's data centre, "" when unknown
}

func newMount(b BackendSpec) (*mount, error) {
	m := &mount{spec: b, header: http.Header{}, dc: b.DC}
	if b.URI != "" {
		u, err := url.Parse(b.URI)
		if err != nil {
			return nil, &ConfigError{Key: "backends." + b.Name + ".uri", Reason: err.Error()}
		}
		m.instances = []*url.URL{u}
	}
	for k, v := range b.Headers {
		m.header.Set(k, v)
	}
	if b.Credentials != nil {
		tok := base64.StdEncoding.EncodeToString([]byte(b.Credentials.Username + ":" + b.Credentials.Password))
		m.header.Set("Authorization", "Basic "+tok)
	}
	return m, nil
}

// upstreamURL is the back end's URL for a client path and query on
// instance i.
func (m *mount) upstreamURL(i int, path, query string) (string, string) {
	base := m.instances[i%len(m.instances)]
	suffix := ""
	if m.spec.Prefix {
		suffix = strings.TrimPrefix(path, m.spec.Mount)
	}
	u := base.Scheme + "://" + base.Host + base.EscapedPath() + suffix
	if q := joinQuery(base.RawQuery, query); q != "" {
		u += "?" + q
	}
	return u, base.Redacted()
}

// httpError is a refusal rendered as JSON.
type httpError struct {
	Status     int    `json:"status"`
	Reason     string `json:"error"`
	RetryAfter int    `json:"retry_after,omitempty"`
	Mounts     []any  `json:"mounts,omitempty"`
	Upstream   int    `json:"upstream_status,omitempty"`
}

func (e *httpError) Error() string { return e.Reason }

// renderError is the one place refusals become responses.
func (n *Node) renderError(w http.ResponseWriter, r *http.Request, err error) {
	var he *httpError
	var re *relay.Error
	switch {
	case errors.As(err, &he):
	case errors.As(err, &re):
		he = &httpError{Status: re.Status, Reason: re.Reason, RetryAfter: re.RetryAfter, Upstream: re.Upstream}
	default:
		he = &httpError{Status: http.StatusInternalServerError, Reason: err.Error()}
	}
	if he.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(he.RetryAfter))
	}
	w.Header().Set("Cache-Control", "no-cache")
	lvl := logrus.DebugLevel
	if he.Status >= 500 {
		lvl = logrus.WarnLevel
	}
	n.log.WithFields(logrus.Fields{"status": he.Status, "path": r.URL.Path, "client": r.RemoteAddr}).Log(lvl, he.Reason)
	if he.Status == http.StatusNoContent {
		// 204 tells an EventSource to stop for good; it cannot carry a body,
		// so the reason travels in a header.
		w.Header().Set("X-Ssemesh-Reason", he.Reason)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.Status)
	_ = json.NewEncoder(w).Encode(he)
}

func (n *Node) notFound(r *http.Request) error {
	mounts := n.mountList()
	ms := make([]any, 0, len(mounts))
	for _, m := range mounts {
		ms = append(ms, map[string]any{"name": m.spec.Name, "mount": m.spec.Mount, "prefix": m.spec.Prefix})
	}
	return &httpError{Status: http.StatusNotFound, Reason: fmt.Sprintf("no stream is mounted at %s", r.URL.Path), Mounts: ms}
}

// splitQuery removes the browser-side lastEventId parameter (it is a resume
// point, not part of the stream's identity) and returns it.
func splitQuery(raw string) (rest string, lastEventID string, has bool) {
	if raw == "" {
		return "", "", false
	}
	parts := strings.Split(raw, "&")
	kept := parts[:0]
	for _, p := range parts {
		k, v, _ := strings.Cut(p, "=")
		if k == "lastEventId" {
			if dv, err := url.QueryUnescape(v); err == nil {
				lastEventID, has = dv, true
			}
			continue
		}
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "&"), lastEventID, has
}

// ViaHeader carries a stream's path through the mesh, child first, so a
// node can refuse a request that would close a loop.
const ViaHeader = "X-Ssemesh-Via"

func (n *Node) handleStream(w http.ResponseWriter, r *http.Request) {
	n.cors(w, r)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := n.serveStream(w, r); err != nil {
		n.renderError(w, r, err)
	}
}

// parseVia reads the ancestry header.
func parseVia(h http.Header) []string {
	var out []string
	for _, v := range h.Values(ViaHeader) {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				out = append(out, id)
			}
		}
	}
	return out
}

func (n *Node) serveStream(w http.ResponseWriter, r *http.Request) error {
	path := r.URL.EscapedPath()
	m := n.findMount(path)
	if m == nil {
		return n.notFound(r)
	}
	via := parseVia(r.Header)
	for _, id := range via {
		if id == n.cfg.NodeID {
			n.relay.Metrics().Refused("loop")
			return &httpError{Status: http.StatusLoopDetected, Reason: fmt.Sprintf("loop: node %s is already on this stream's path (%s)", n.cfg.NodeID, strings.Join(via, " <- "))}
		}
	}
	if len(m.instances) == 0 && n.mesh == nil {
		return &httpError{Status: http.StatusServiceUnavailable, Reason: fmt.Sprintf("back end %s has no passing instance", m.spec.Name), RetryAfter: n.cfg.Limits.RetryAfter}
	}
	query, qid, hasQID := splitQuery(r.URL.RawQuery)
	key := path
	if query != "" {
		key += "?" + query
	}
	lastID, hasLastID := qid, hasQID
	if vs, ok := r.Header["Last-Event-Id"]; ok && len(vs) > 0 {
		lastID, hasLastID = vs[0], true
	}

	// Admission: waiting subscribers count too, so a flood cannot overshoot
	// the limit while its streams connect.
	if n.relay.Clients()+int(n.waiting.Load()) >= n.cfg.Limits.MaxClients {
		n.relay.Metrics().Refused("max_clients")
		return &httpError{Status: http.StatusServiceUnavailable, Reason: fmt.Sprintf("node is at its client limit (%d)", n.cfg.Limits.MaxClients), RetryAfter: n.cfg.Limits.RetryAfter}
	}
	if !n.relay.Has(key) && n.relay.Streams() >= n.cfg.Limits.MaxStreams {
		n.relay.Metrics().Refused("max_streams")
		return &httpError{Status: http.StatusServiceUnavailable, Reason: fmt.Sprintf("node is at its stream limit (%d)", n.cfg.Limits.MaxStreams), RetryAfter: n.cfg.Limits.RetryAfter}
	}
	n.waiting.Add(1)
	defer n.waiting.Add(-1)

	rt := n.route(key, path, query, m.spec.Name, via)
	return n.relay.Serve(w, r, relay.Request{
		Key:            key,
		Target:         rt.target,
		LastEventID:    lastID,
		HasLastEventID: hasLastID,
		Child:          len(via) > 0,
	})
}

func joinQuery(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "&" + b
}

// cors answers browsers on other origins when configured to.
func (n *Node) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || len(n.cfg.CORS.AllowedOrigins) == 0 {
		return
	}
	allowed := false
	for _, o := range n.cfg.CORS.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			allowed = true
			break
		}
	}
	if !allowed {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if n.cfg.CORS.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Last-Event-ID, Cache-Control, Authorization")
		h.Set("Access-Control-Max-Age", "600")
	}
}

func newStdLogger(l logrus.FieldLogger) *log.Logger { return log.New(stdLogWriter{l}, "", 0) }

// matches reports whether a client path is served by m.
func (m *mount) matches(path string) bool {
	if !m.spec.Prefix {
		return path == m.spec.Mount
	}
	if !strings.HasPrefix(path, m.spec.Mount) {
		return false
	}
	rest := path[len(m.spec.Mount):]
	return rest == "" || strings.HasSuffix(m.spec.Mount, "/") || strings.HasPrefix(rest, "/")
}
