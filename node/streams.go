package node

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/relay"
)

// mount is one back end as this node serves it.
type mount struct {
	spec   BackendSpec
	base   *url.URL
	header http.Header // extra upstream headers, Authorization included
	label  string      // the back end's URL without credentials
}

func newMount(b BackendSpec) (*mount, error) {
	u, err := url.Parse(b.URI)
	if err != nil {
		return nil, &ConfigError{Key: "backends." + b.Name + ".uri", Reason: err.Error()}
	}
	h := http.Header{}
	for k, v := range b.Headers {
		h.Set(k, v)
	}
	if b.Credentials != nil {
		tok := base64.StdEncoding.EncodeToString([]byte(b.Credentials.Username + ":" + b.Credentials.Password))
		h.Set("Authorization", "Basic "+tok)
	}
	return &mount{spec: b, base: u, header: h, label: u.Redacted()}, nil
}

func sortedMounts(ms []*mount) []*mount {
	out := append([]*mount(nil), ms...)
	sort.SliceStable(out, func(i, j int) bool { return len(out[i].spec.Mount) > len(out[j].spec.Mount) })
	return out
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
	ms := make([]any, 0, len(n.mounts))
	for _, m := range n.mounts {
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

func (n *Node) streamHandler(m *mount) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.cors(w, r)
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := n.serveStream(w, r, m); err != nil {
			n.renderError(w, r, err)
		}
	})
}

func (n *Node) serveStream(w http.ResponseWriter, r *http.Request, m *mount) error {
	path := r.URL.EscapedPath()
	suffix := ""
	if m.spec.Prefix {
		suffix = strings.TrimPrefix(path, m.spec.Mount)
		if !strings.HasSuffix(m.spec.Mount, "/") && suffix != "" && !strings.HasPrefix(suffix, "/") {
			return n.notFound(r) // "/feeds" must not capture "/feedsX"
		}
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

	upstream := m.base.Scheme + "://" + m.base.Host + m.base.EscapedPath() + suffix
	if q := joinQuery(m.base.RawQuery, query); q != "" {
		upstream += "?" + q
	}
	target := relay.Target{URL: upstream, Header: m.header, Label: m.label}
	return n.relay.Serve(w, r, relay.Request{
		Key:            key,
		Target:         func() (relay.Target, error) { return target, nil },
		LastEventID:    lastID,
		HasLastEventID: hasLastID,
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
