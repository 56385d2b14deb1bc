package node

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/ssemesh/ssemesh/internal/meshauth"
)

// ViaHeader carries a stream's path through the mesh, child first, so a
// node can refuse a request that would close a loop. It is read only from
// requests that prove mesh membership (meshauth.Header).
const ViaHeader = "X-Ssemesh-Via"

// peerRequest is a request from another node of the mesh, proven with the
// mesh secret.
type peerRequest struct {
	node string   // the node that sent it
	via  []string // the stream's ancestry, that node last
}

var errNoSecret = errors.New("this node has no mesh.secret to check mesh credentials with")

// authenticate tells a child node from a client. A request without mesh
// credentials is a client, whatever else it carries (an ancestry header
// from a client is ignored). A request with credentials that do not
// verify is refused: it comes from a node with another secret (or a
// forger), and a silent downgrade to client would hide the
// misconfiguration.
func (n *Node) authenticate(r *http.Request) (*peerRequest, error) {
	if id, ok := n.tls.meshPeer(r); ok {
		// Mutual TLS: the certificate proves which node sent the request,
		// for the whole connection.
		ids := parseVia(strings.Join(r.Header.Values(ViaHeader), ","))
		if len(ids) == 0 || ids[len(ids)-1] != id {
			last := ""
			if len(ids) > 0 {
				last = ids[len(ids)-1]
			}
			return nil, errPeerName(id, last)
		}
		return &peerRequest{node: id, via: ids}, nil
	}
	proof := r.Header.Get(meshauth.Header)
	if proof == "" {
		return nil, nil
	}
	if n.live().verifier == nil {
		return nil, errNoSecret
	}
	via := strings.Join(r.Header.Values(ViaHeader), ",")
	id, err := n.live().verifier.Verify(proof, meshauth.PurposeStream, requestTarget(r), via)
	if err != nil {
		return nil, err
	}
	ids := parseVia(via)
	if len(ids) == 0 || ids[len(ids)-1] != id {
		return nil, fmt.Errorf("the ancestry %q does not end with the proven node %q", quoteForError(via), id)
	}
	return &peerRequest{node: id, via: ids}, nil
}

// requestTarget is what a proof covers: the escaped path and the query.
func requestTarget(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return r.URL.EscapedPath()
	}
	return r.URL.EscapedPath() + "?" + r.URL.RawQuery
}

// parseVia splits the ancestry header.
func parseVia(v string) []string {
	var out []string
	for _, id := range strings.Split(v, ",") {
		if id = strings.TrimSpace(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// signStream completes a request to a parent node (or a chained back end):
// the ancestry with this node last, and the proof over it, made afresh for
// every attempt.
func (n *Node) signStream(req *http.Request, ancestry []string) {
	via := strings.Join(append(append([]string(nil), ancestry...), n.cfg.NodeID), ",")
	req.Header.Set(ViaHeader, via)
	if n.live().signer != nil {
		// With mutual TLS alone, the client certificate is the proof.
		req.Header.Set(meshauth.Header, n.live().signer.Sign(meshauth.PurposeStream, requestTarget(req), via))
	}
}

// peerAdmin reports whether an admin request proves mesh membership: how
// peers gather the topology report without the admin token, which never
// leaves the node.
func (n *Node) peerAdmin(r *http.Request) bool {
	if _, ok := n.tls.meshPeer(r); ok {
		return true
	}
	proof := r.Header.Get(meshauth.Header)
	if proof == "" || n.live().verifier == nil {
		return false
	}
	_, err := n.live().verifier.Verify(proof, meshauth.PurposeAdmin, requestTarget(r), "")
	return err == nil
}
