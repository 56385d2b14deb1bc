package node

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/relay"
)

// Codes of the refusals the node makes itself; the relay's (relay.Code*)
// name the stream's own outcomes. A code is what a client is told, with a
// fixed message: addresses, node ids and configured URIs stay in the log
// and the admin API.
const (
	codeNotFound      = "not_found"
	codeMethod        = "method_not_allowed"
	codeBadPath       = "bad_path"
	codeBadQuery      = "bad_query"
	codeLoop          = "loop"
	codeMeshAuth      = "mesh_auth"
	codeMaxClients    = "max_clients"
	codeMaxStreams    = "max_streams"
	codeIPConnections = "ip_connections"
	codeIPNewStreams  = "ip_new_streams"
	codeIPTable       = "ip_table_full"
	codeNoInstance    = "no_instance"
	codeBusy          = "busy"
	codeInternal      = "internal"
)

// messages are the client-facing texts of the codes.
var messages = map[string]string{
	codeNotFound:                  "no stream is mounted at this path",
	codeMethod:                    "streams are read with GET",
	codeBadPath:                   "the path is not allowed",
	codeBadQuery:                  "the query string is not allowed",
	codeLoop:                      "the request would close a loop in the mesh",
	codeMeshAuth:                  "mesh credentials were refused",
	codeMaxClients:                "the node is at its client limit; retry later or elsewhere",
	codeMaxStreams:                "the node is at its stream limit; retry later or elsewhere",
	codeIPConnections:             "too many open streams from this address",
	codeIPNewStreams:              "too many new streams from this address; retry later",
	codeIPTable:                   "the node tracks too many clients; retry later",
	codeNoInstance:                "the back end has no available instance",
	codeBusy:                      "the node is admitting many clients; retry later or elsewhere",
	codeInternal:                  "internal error",
	relay.CodeStreamEnded:         "the upstream ended the stream",
	relay.CodeUpstreamStatus:      "the upstream refused the stream",
	relay.CodeUpstreamContentType: "the upstream did not answer with an event stream",
	relay.CodeUpstreamRedirect:    "the upstream redirected the stream elsewhere",
	relay.CodeUpstreamUnreachable: "the upstream could not be reached",
	relay.CodeUpstreamTimeout:     "the upstream did not answer in time",
	relay.CodeNoUpstream:          "no upstream is available for this stream",
	relay.CodeStreamClosing:       "the stream closed while connecting; retry",
	relay.CodeShuttingDown:        "the node is shutting down; retry elsewhere",
}

// httpError is a refusal rendered as JSON.
type httpError struct {
	Status     int    `json:"status"`
	Code       string `json:"error"`
	Message    string `json:"message"`
	RetryAfter int    `json:"retry_after,omitempty"`
	Mounts     []any  `json:"mounts,omitempty"`
	// detail explains the refusal to the operator (log); never sent.
	detail string
	// header is sent with the refusal (an auth server's WWW-Authenticate).
	header http.Header
}

func (e *httpError) Error() string {
	if e.detail != "" {
		return e.Code + ": " + e.detail
	}
	return e.Code
}

// refuse builds a refusal with code's message and an operator's detail.
func refuse(status int, code, detail string) *httpError {
	return &httpError{Status: status, Code: code, Message: messages[code], detail: detail}
}

// asHTTPError turns any error into the refusal a client may see.
func asHTTPError(err error) *httpError {
	var he *httpError
	var re *relay.Error
	switch {
	case errors.As(err, &he):
		return he
	case errors.As(err, &re):
		code := re.Code
		msg, ok := messages[code]
		if !ok {
			if code == "" {
				code = relay.CodeUpstreamStatus
			}
			msg = "the stream was refused" // a code a newer parent node sent
		}
		return &httpError{Status: re.Status, Code: code, Message: msg, RetryAfter: re.RetryAfter, detail: re.Reason}
	}
	return &httpError{Status: http.StatusInternalServerError, Code: codeInternal, Message: messages[codeInternal], detail: err.Error()}
}

// renderError is the one place refusals become responses. Each is counted
// (ssemesh_requests_refused_total{reason}) and logged, at most once per
// code every few seconds whatever the flood.
func (n *Node) renderError(w http.ResponseWriter, r *http.Request, err error) {
	he := asHTTPError(err)
	n.relay.Metrics().Refused(he.Code)
	n.logs.Log("refused:"+he.Code, n.log.WithFields(logrus.Fields{
		"status": he.Status, "reason": he.Code, "detail": he.detail,
		"path": quoteForError(r.URL.EscapedPath()), "client": r.RemoteAddr,
	}), logrus.InfoLevel, "request refused")
	h := w.Header()
	for k, vs := range he.header {
		h[k] = vs
	}
	if he.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(he.RetryAfter))
	}
	h.Set("Cache-Control", "no-cache")
	// A child node reads the code to tell this node's own refusals from
	// the stream's outcome it relays.
	h.Set(relay.ErrorHeader, he.Code)
	if he.Status == http.StatusNoContent {
		// 204 tells an EventSource to stop for good; it cannot carry a
		// body.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(he.Status)
	_ = json.NewEncoder(w).Encode(he)
}

// notFound answers a path no mount serves; the mounts are listed only
// when the operator chose to expose them.
func (n *Node) notFound() error {
	he := refuse(http.StatusNotFound, codeNotFound, "")
	if n.live().cfg.ExposeMounts {
		mounts := n.mountList()
		he.Mounts = make([]any, 0, len(mounts))
		for _, m := range mounts {
			he.Mounts = append(he.Mounts, map[string]any{"name": m.spec.Name, "mount": m.spec.Mount, "prefix": m.spec.Prefix})
		}
	}
	return he
}
