package node

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
)

// adminRouter serves the operator's endpoints on the admin listener.
func (n *Node) adminRouter() http.Handler {
	r := mux.NewRouter()
	r.SkipClean(true) // see clientRouter
	r.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	}).Methods(http.MethodGet)
	r.HandleFunc("/readyz", n.readyz).Methods(http.MethodGet)
	api := r.PathPrefix("/v1").Subrouter()
	api.Use(n.requireToken)
	api.HandleFunc("/streams", n.streamsReport).Methods(http.MethodGet)
	api.HandleFunc("/auth", n.authHandler).Methods(http.MethodGet)
	api.HandleFunc("/reload", n.reloadHandler).Methods(http.MethodPost)
	api.HandleFunc(strings.TrimPrefix(gatherPath, "/v1"), n.gatherHandler).Methods(http.MethodGet)
	n.operatorRoutes(r, api)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n.renderError(w, req, &httpError{Status: http.StatusNotFound, Code: "not_found", Message: "no admin endpoint at " + req.URL.Path})
	})
	return r
}

func (n *Node) readyz(w http.ResponseWriter, _ *http.Request) {
	if !n.ready.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining"})
		return
	}
	body := map[string]any{"status": "ready", "clients": n.relay.Clients(), "streams": n.relay.Streams()}
	// An auth server that is down refuses clients (fail closed) but does
	// not make the node unready: another node would refuse them too.
	// Names only: /readyz is open, and the detail (the auth server's
	// address and error) is for the token holders of /v1/auth.
	var down []map[string]string
	for _, a := range n.authReports() {
		if !a.Healthy {
			down = append(down, map[string]string{"backend": a.Backend})
		}
	}
	if len(down) > 0 {
		body["auth_unavailable"] = down
	}
	writeJSON(w, http.StatusOK, body)
}

// requireToken guards operator endpoints with the configured bearer token.
// A peer gathering the topology report proves mesh membership instead
// (peerAdmin): the token is never sent to another node.
func (n *Node) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := n.live().cfg.Admin.Token; tok != "" && !n.presentsAdminToken(r) && !(r.URL.Path == gatherPath && n.peerAdmin(r)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ssemesh"`)
			n.renderError(w, r, &httpError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing or wrong bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// streamView is one stream in /v1/streams.
type streamView struct {
	Key          string    `json:"stream"`
	Upstream     string    `json:"upstream"`
	State        string    `json:"state"`
	Clients      int       `json:"clients"`
	EventsIn     uint64    `json:"events_in"`
	Reconnects   uint64    `json:"reconnects"`
	LastEventID  string    `json:"last_event_id"`
	Buffered     int       `json:"buffered_events"`
	BufferBytes  int64     `json:"buffered_bytes"`
	BufferSpanMs int64     `json:"buffer_span_ms"`
	LastError    string    `json:"last_error,omitempty"`
	Opened       time.Time `json:"opened"`
}

func (n *Node) streamsReport(w http.ResponseWriter, _ *http.Request) {
	infos := n.relay.StreamInfo()
	out := make([]streamView, 0, len(infos))
	for _, i := range infos {
		v := streamView{Key: i.Key, Upstream: i.Upstream, State: i.State, Clients: i.Clients, EventsIn: i.EventsIn,
			Reconnects: i.Reconnects, LastEventID: i.LastEventID, Buffered: i.Buffered, BufferBytes: i.BufferBytes,
			LastError: i.LastError, Opened: i.Opened}
		if !i.OldestAt.IsZero() {
			v.BufferSpanMs = time.Since(i.OldestAt).Milliseconds()
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": n.cfg.NodeID, "streams": out})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
