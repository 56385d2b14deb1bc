package node

import (
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/clientauth"
)

// authDefault labels the top-level auth in metrics and reports.
const authDefault = "default"

// authorizers holds who may read which stream: one clientauth.Auth per back
// end with an auth of its own, and the top-level one for every other back
// end (those found in Consul included).
type authorizers struct {
	def    *clientauth.Auth
	byName map[string]*clientauth.Auth
}

func newAuthorizers(cfg Config, log logrus.FieldLogger) (*authorizers, error) {
	a := &authorizers{byName: map[string]*clientauth.Auth{}}
	l := log.WithField("component", "auth")
	if cfg.Auth != nil {
		def, err := clientauth.New(*cfg.Auth, l.WithField("backend", authDefault))
		if err != nil {
			return nil, &ConfigError{Key: "auth", Reason: err.Error()}
		}
		a.def = def
	}
	for _, b := range cfg.Backends {
		if b.Auth == nil {
			continue
		}
		one, err := clientauth.New(*b.Auth, l.WithField("backend", b.Name))
		if err != nil {
			a.close()
			return nil, &ConfigError{Key: "backends." + b.Name + ".auth", Reason: err.Error()}
		}
		a.byName[b.Name] = one
	}
	return a, nil
}

// forBackend is the authorizer of a back end and its label; nil when anyone
// may read it.
func (a *authorizers) forBackend(name string) (*clientauth.Auth, string) {
	if one, ok := a.byName[name]; ok {
		return one, name
	}
	return a.def, authDefault
}

// each calls f for every authorizer, by label in order.
func (a *authorizers) each(f func(label string, au *clientauth.Auth)) {
	labels := make([]string, 0, len(a.byName)+1)
	for name := range a.byName {
		labels = append(labels, name)
	}
	sort.Strings(labels)
	if a.def != nil {
		f(authDefault, a.def)
	}
	for _, l := range labels {
		f(l, a.byName[l])
	}
}

func (a *authorizers) close() {
	a.each(func(_ string, au *clientauth.Auth) { au.Close() })
}

// authorize asks a client's back end whether it may read the stream. It
// returns when the client's credentials run out (zero: never), or the
// refusal to answer. Child nodes are never asked: authorization happens
// once, at the node the client reached.
func (n *Node) authorize(r *http.Request, m *mount, path string, client netip.Addr) (time.Time, error) {
	au, label := n.live().auth.forBackend(m.spec.Name)
	if au == nil {
		return time.Time{}, nil
	}
	q := r.URL.Query()
	_, rest := clientauth.StripToken(q)
	uri := path
	if enc := rest.Encode(); enc != "" {
		uri += "?" + enc
	}
	dec := au.Check(r.Context(), clientauth.Request{Header: r.Header, Path: path, Query: q, ClientAddr: client.String(), OriginalURI: uri})
	if dec.Allow {
		return dec.Expires, nil
	}
	he := &httpError{Status: dec.Status, Code: "auth_" + strings.TrimPrefix(dec.Reason, "auth_"), detail: fmt.Sprintf("auth %s: %s", label, dec.Detail)}
	switch dec.Status {
	case http.StatusUnauthorized:
		he.Message = "credentials are missing or not accepted"
	case http.StatusForbidden:
		he.Message = "these credentials may not read this stream"
	default:
		he.Status = http.StatusServiceUnavailable
		he.Message = "authorization is unavailable; retry later"
		he.RetryAfter = max(n.live().cfg.Limits.RetryAfter, 1)
	}
	if v := dec.Header.Get("WWW-Authenticate"); v != "" {
		he.header = http.Header{"Www-Authenticate": {v}}
	}
	return time.Time{}, he
}

// authReport is the state of every authorizer, for /v1/auth and /readyz.
type authReport struct {
	Backend  string            `json:"backend"`
	Healthy  bool              `json:"healthy"`
	Detail   string            `json:"detail,omitempty"`
	Allowed  uint64            `json:"allowed"`
	Refused  map[string]uint64 `json:"refused"`
	Requests uint64            `json:"auth_requests"`
	Hits     uint64            `json:"cache_hits"`
}

func (n *Node) authReports() []authReport {
	var out []authReport
	n.live().auth.each(func(label string, au *clientauth.Auth) {
		ok, detail := au.Healthy()
		st := au.Stats()
		out = append(out, authReport{Backend: label, Healthy: ok, Detail: detail, Allowed: st.Allowed, Refused: st.Refused, Requests: st.AuthRequests, Hits: st.CacheHits})
	})
	return out
}

func (n *Node) authHandler(w http.ResponseWriter, _ *http.Request) {
	reps := n.authReports()
	if reps == nil {
		reps = []authReport{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": n.cfg.NodeID, "auth": reps})
}
