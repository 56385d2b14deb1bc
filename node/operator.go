package node

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/ssemesh/ssemesh/topology"
)

// operatorRoutes adds the operator's view (topology, page, metrics) to the
// admin router; api is the token-protected /v1 subrouter.
//
// Every route but /healthz and /readyz also passes browserGuard, which runs
// before the token check, so that a page on another origin, or a rebinding
// DNS name, learns nothing from the admin listener, not even whether a
// token is needed.
func (n *Node) operatorRoutes(root, api *mux.Router) {
	guard := newBrowserGuard(n.allowedAdminHosts())
	root.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
				next.ServeHTTP(w, r)
				return
			}
			if err := guard.check(r, n.presentsAdminToken(r) || (r.URL.Path == gatherPath && n.peerAdmin(r))); err != nil {
				n.renderError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	})

	api.HandleFunc("/topology", n.topologyHandler).Methods(http.MethodGet, http.MethodHead)
	api.HandleFunc("/nodes", n.nodesHandler).Methods(http.MethodGet, http.MethodHead)

	metrics := n.metricsHandler()
	if !n.cfg.Admin.MetricsOpen {
		metrics = n.requireToken(metrics)
	}
	root.Handle("/metrics", metrics).Methods(http.MethodGet, http.MethodHead)

	// Without the token the page answers 401, yet its body is the page
	// itself: it holds no data, and its script asks for the token and keeps
	// it for the browser session.
	root.Handle("/", n.pageGate(newPageHandler())).Methods(http.MethodGet, http.MethodHead)

	if n.cfg.Admin.PprofEnabled() {
		// Registered explicitly: importing net/http/pprof also fills
		// http.DefaultServeMux, which no listener of the node serves.
		p := root.PathPrefix("/debug/pprof").Subrouter()
		p.Use(n.requireToken)
		p.HandleFunc("/cmdline", pprof.Cmdline)
		p.HandleFunc("/profile", pprof.Profile)
		p.HandleFunc("/symbol", pprof.Symbol)
		p.HandleFunc("/trace", pprof.Trace)
		p.PathPrefix("/").HandlerFunc(pprof.Index)
	}
}

// topologyHandler serves the tree as JSON, text (?format=text) or Graphviz
// (?format=dot), narrowed by ?stream=.
func (n *Node) topologyHandler(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	format := q.Get("format")
	switch format {
	case "", "json", "text", "dot":
	default:
		n.renderError(w, r, &httpError{Status: http.StatusBadRequest, Code: "bad_request", Message: "unknown format " + quoteForError(format) + ": want json, text or dot"})
		return
	}
	stream := q.Get("stream")
	rep := n.TopologyReport(r.Context(), stream)
	if stream != "" && len(rep.Streams) == 0 {
		n.renderError(w, r, &httpError{Status: http.StatusNotFound, Code: "not_found", Message: "stream " + quoteForError(stream) + " is not in the topology report"})
		return
	}
	switch format {
	case "text":
		writeText(w, "text/plain; charset=utf-8", topology.RenderText(rep, stream))
	case "dot":
		writeText(w, "text/vnd.graphviz; charset=utf-8", topology.RenderDOT(rep, stream))
	default:
		writeJSON(w, http.StatusOK, rep)
	}
}

// nodesView is /v1/nodes: the report's node list without the stream trees.
type nodesView struct {
	Self        string                `json:"self"`
	GeneratedAt string                `json:"generatedAt"`
	Nodes       []topology.NodeReport `json:"nodes"`
	Unreachable []string              `json:"unreachable,omitempty"`
}

func (n *Node) nodesHandler(w http.ResponseWriter, r *http.Request) {
	rep := n.TopologyReport(r.Context(), "")
	nodes := rep.Nodes
	if nodes == nil {
		nodes = []topology.NodeReport{}
	}
	writeJSON(w, http.StatusOK, nodesView{Self: n.cfg.NodeID, GeneratedAt: rep.GeneratedAt, Nodes: nodes, Unreachable: rep.Unreachable})
}

func writeText(w http.ResponseWriter, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(body))
}

// quoteForError quotes a request value for an error message, bounded so a
// huge parameter does not come back in full.
func quoteForError(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strconv.Quote(s)
}

// allowedAdminHosts are the host names, besides IP literals and localhost,
// that requests to the admin listener may name in their Host header: the
// listener's own host when it is a name, and the machine's host name, which
// is what Consul and operators usually reach a node by.
func (n *Node) allowedAdminHosts() []string {
	var names []string
	for _, addr := range []string{n.cfg.Admin.Listen, n.AdminAddr(), n.advertised(n.AdminAddr())} {
		if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
			names = append(names, h)
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		names = append(names, h)
		if short, _, ok := strings.Cut(h, "."); ok {
			names = append(names, short)
		}
	}
	return append(names, n.cfg.Admin.AllowedHosts...)
}

// browserGuard keeps browsers from driving the admin API on behalf of a page
// from elsewhere. The token alone is not enough when none is configured, and
// a loopback listener is not enough either: a page on another site can send
// requests to 127.0.0.1, or rebind its own DNS name to it.
type browserGuard struct {
	names map[string]bool // lower case, no trailing dot
}

func newBrowserGuard(names []string) *browserGuard {
	g := &browserGuard{names: make(map[string]bool, len(names))}
	for _, n := range names {
		g.names[normalizeHost(n)] = true
	}
	return g
}

func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// check returns a 403 *httpError for a request that a browser sent on behalf
// of another origin, or that names a host this node does not answer to.
// authorized is true when the request carries the configured token: a page
// that rebinds a DNS name cannot know it, so such a request may name any
// host (peers reach each other by their advertised admin addresses).
func (g *browserGuard) check(r *http.Request, authorized bool) error {
	if !authorized && r.Host != "" && !g.hostAllowed(r.Host) {
		// DNS rebinding: the browser believes it talks to the attacker's
		// name, and says so in Host.
		return &httpError{Status: http.StatusForbidden, Code: "forbidden", Message: "host " + quoteForError(r.Host) + " is not a name of this admin listener: use its IP address, localhost or a configured name"}
	}
	if origin, ok := r.Header["Origin"]; ok {
		if len(origin) != 1 || !sameOrigin(origin[0], r) {
			return &httpError{Status: http.StatusForbidden, Code: "forbidden", Message: "cross-origin requests to the admin API are refused"}
		}
	}
	// Browsers send Sec-Fetch-Site even where they leave Origin out
	// (cross-site <img> or <script> loads). A top-level navigation is
	// allowed: the page it opens asks for the token itself, and the site
	// that linked to it cannot read the answer.
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		if r.Header.Get("Sec-Fetch-Mode") != "navigate" {
			return &httpError{Status: http.StatusForbidden, Code: "forbidden", Message: "cross-site requests to the admin API are refused"}
		}
	}
	return nil
}

func (g *browserGuard) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = normalizeHost(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if host == "" {
		return false
	}
	if net.ParseIP(host) != nil {
		return true
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	return g.names[host]
}

// presentsAdminToken reports whether a token is configured and r carries it.
func (n *Node) presentsAdminToken(r *http.Request) bool {
	tok := n.live().cfg.Admin.Token
	if tok == "" {
		return false
	}
	got := r.Header.Get("Authorization")
	return subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+tok)) == 1
}

// sameOrigin reports whether origin is the origin the request was sent to.
func sameOrigin(origin string, r *http.Request) bool {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return strings.EqualFold(strings.TrimSuffix(origin, "/"), scheme+"://"+r.Host)
}
