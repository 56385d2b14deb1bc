package node

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
)

// The page is one HTML document with its script and style inlined, so that
// it needs no second request (which could not carry the bearer token) and
// nothing from outside the node.
//
//go:embed ui/index.html ui/app.js ui/style.css
var uiFiles embed.FS

const (
	uiStyleMark  = "/*SSEMESH_STYLE*/"
	uiScriptMark = "/*SSEMESH_SCRIPT*/"
)

// pageHandler serves the topology page. It is built once per admin router.
type pageHandler struct {
	body []byte
	csp  string
}

// newPageHandler assembles the page from the embedded files. The files are
// part of the binary, so a failure here is a build defect and panics.
func newPageHandler() *pageHandler {
	p, err := buildPage()
	if err != nil {
		panic(err)
	}
	return p
}

func buildPage() (*pageHandler, error) {
	read := func(name string) ([]byte, error) {
		b, err := uiFiles.ReadFile("ui/" + name)
		if err != nil {
			return nil, fmt.Errorf("node: reading embedded page %s: %w", name, err)
		}
		return b, nil
	}
	html, err := read("index.html")
	if err != nil {
		return nil, err
	}
	style, err := read("style.css")
	if err != nil {
		return nil, err
	}
	script, err := read("app.js")
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(html, []byte(uiStyleMark)) || !bytes.Contains(html, []byte(uiScriptMark)) {
		return nil, fmt.Errorf("node: embedded page lacks the %s or %s marker", uiStyleMark, uiScriptMark)
	}
	html = bytes.Replace(html, []byte(uiStyleMark), style, 1)
	html = bytes.Replace(html, []byte(uiScriptMark), script, 1)
	// The policy allows exactly the inlined script and style, and requests
	// to this origin only: an injected tag or a third-party resource would
	// not run.
	csp := fmt.Sprintf("default-src 'none'; script-src '%s'; style-src '%s'; connect-src 'self'; img-src 'self' data:; "+
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'", cspHash(script), cspHash(style))
	return &pageHandler{body: html, csp: csp}, nil
}

func cspHash(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

func (p *pageHandler) serve(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(p.body)))
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(p.body)
}

// ServeHTTP serves the page with 200.
func (p *pageHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	p.serve(w, http.StatusOK)
}

// pageGate answers the page with 401 when a token is configured and the
// request lacks it. The body is still the page: a browser cannot attach a
// bearer token to a navigation, so the page's script asks for the token and
// sends it with its own API requests. The page holds no data of its own.
func (n *Node) pageGate(p *pageHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			n.renderError(w, r, &httpError{Status: http.StatusNotFound, Code: "not_found", Message: "no admin endpoint at " + r.URL.Path})
			return
		}
		if n.live().cfg.Admin.Token != "" && !n.presentsAdminToken(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ssemesh"`)
			p.serve(w, http.StatusUnauthorized)
			return
		}
		p.serve(w, http.StatusOK)
	})
}
