package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/meshauth"
	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

// Tests of a node facing hostile clients and back ends: each one is an
// attack found by probing a node, played with real sockets against a real
// second server that stands in for the attacker's host.

// recorder is an HTTP server that records every request it gets: the
// attacker's host, or a back end whose requests a test inspects.
type recorder struct {
	addr string
	mu   sync.Mutex
	reqs []*http.Request
}

func newRecorder(t *testing.T, h http.HandlerFunc) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.addr = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, r.Clone(context.Background()))
		rec.mu.Unlock()
		if h == nil {
			http.Error(w, "attacker's host", http.StatusTeapot)
			return
		}
		h(w, r)
	}))
	return rec
}

func (rec *recorder) requests() []*http.Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]*http.Request(nil), rec.reqs...)
}

// eventStream answers a stream that sends one event and stays open.
func eventStream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "id: 1\ndata: hello\n\n")
	_ = http.NewResponseController(w).Flush()
	<-r.Context().Done()
}

// dialResult is a stream opened off the test goroutine, or why not.
type dialResult struct {
	c   *ssetest.Client
	err error
}

// dialLater opens a stream in the background: for requests that wait while
// a stream connects.
func dialLater(url string, h http.Header) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		c, resp, err := ssetest.DialStatus(url, h)
		if err == nil && c == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		ch <- dialResult{c, err}
	}()
	return ch
}

// eventStreamAfter answers eventStream once gate is closed: the stream's
// first connect stays pending until the test lets it go on.
func eventStreamAfter(gate chan struct{}, w http.ResponseWriter, r *http.Request) {
	select {
	case <-gate:
	case <-r.Context().Done():
		return
	}
	eventStream(w, r)
}

// status GETs url and returns the status, the error code and the body.
func status(t *testing.T, url string, h http.Header) (int, string, string) {
	t.Helper()
	c, resp, err := ssetest.DialStatus(url, h)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if c != nil {
		c.Close()
		return http.StatusOK, "", ""
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get(relay.ErrorHeader), string(body)
}

func TestPrefixMountStaysOnTheBackEndHost(t *testing.T) {
	evil := newRecorder(t, nil)
	be := newRecorder(t, eventStream)
	n := startNode(t, testConfig(BackendSpec{Name: "feeds", URI: "http://" + be.addr + "/", Mount: "/feeds/", Prefix: true,
		Credentials: &Credentials{Username: "proxy", Password: "pw"}, Headers: map[string]string{"X-Api-Key": "k"}}))
	base := "http://" + n.Addr()

	// '@' and ':' are path characters: the request goes to the back end,
	// with them in its path.
	if st, code, body := status(t, base+"/feeds/@"+evil.addr+"/x", nil); st != http.StatusOK {
		t.Fatalf("/feeds/@host/x: %d %s %s", st, code, body)
	}
	for _, p := range []string{"/feeds//" + evil.addr + "/x", "/feeds/%2F%2F" + evil.addr + "/x", "/feeds/..;/..;/x"} {
		if st, code, _ := status(t, base+p, nil); st != http.StatusBadRequest || code != codeBadPath {
			t.Errorf("%s: %d %s, want 400 bad_path", p, st, code)
		}
	}
	if got := evil.requests(); len(got) > 0 {
		t.Fatalf("the attacker's host got %s %s with Authorization %q", got[0].Method, got[0].URL, got[0].Header.Get("Authorization"))
	}
	reqs := be.requests()
	if len(reqs) != 1 || reqs[0].URL.Path != "/@"+evil.addr+"/x" || reqs[0].Header.Get("Authorization") == "" {
		t.Fatalf("back end requests %v, want one for /@%s/x with the credentials", reqs, evil.addr)
	}
}

func TestRedirectsStayInTheBackEndOrigin(t *testing.T) {
	evil := newRecorder(t, eventStream)
	be := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, "http://"+evil.addr+"/elsewhere?stolen=1", http.StatusFound)
		case "/moved":
			http.Redirect(w, r, "/here", http.StatusTemporaryRedirect)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		case "/here":
			eventStream(w, r)
		}
	})
	backend := func(name, path string) BackendSpec {
		return BackendSpec{Name: name, URI: "http://" + be.addr + path + "?apikey=SECRET", Mount: "/" + name,
			Headers: map[string]string{"X-Api-Key": "k"}, Credentials: &Credentials{Username: "proxy", Password: "pw"}}
	}
	n := startNode(t, testConfig(backend("away", "/away"), backend("moved", "/moved"), backend("loop", "/loop")))
	base := "http://" + n.Addr()

	if st, code, body := status(t, base+"/away", nil); st != http.StatusBadGateway || code != relay.CodeUpstreamRedirect || strings.Contains(body, evil.addr) {
		t.Fatalf("redirect to another origin: %d %s %s; want 502 %s naming no host", st, code, body, relay.CodeUpstreamRedirect)
	}
	if got := evil.requests(); len(got) > 0 {
		t.Fatalf("the other origin got a request with X-Api-Key %q, Authorization %q, Referer %q",
			got[0].Header.Get("X-Api-Key"), got[0].Header.Get("Authorization"), got[0].Header.Get("Referer"))
	}
	// A redirect within the origin is followed, as EventSource does.
	c := ssetest.Dial(t, base+"/moved", nil)
	if ev := c.Next(t, 5*time.Second); ev.Data != "hello" {
		t.Fatalf("after a same-origin redirect got %+v", ev)
	}
	for _, r := range be.requests() {
		if r.URL.Path == "/here" && (r.Header.Get("X-Api-Key") != "k" || r.Header.Get("Referer") != "") {
			t.Fatalf("followed redirect sent X-Api-Key %q Referer %q, want the configured header and no Referer", r.Header.Get("X-Api-Key"), r.Header.Get("Referer"))
		}
	}
	if st, code, _ := status(t, base+"/loop", nil); st != http.StatusBadGateway || code != relay.CodeUpstreamRedirect {
		t.Fatalf("endless redirects: %d %s, want 502 %s", st, code, relay.CodeUpstreamRedirect)
	}
}

func TestAncestryFromAClientIsIgnored(t *testing.T) {
	be, n, url := oneBackend(t, backend.Config{}, nil)
	// The node's own id in the ancestry would be a loop if it came from a
	// node; from a client it is nothing.
	c := ssetest.Dial(t, url, http.Header{ViaHeader: {"root-a, " + n.ID()}})
	be.Publish(streamPath, 1)
	if got := c.IDs(t, 1, 5*time.Second); got[0] != "1" {
		t.Fatalf("client with a forged ancestry got %v", got)
	}
	if n.Relay().ChildClients() != 0 {
		t.Fatalf("a client with an ancestry header counts as %d child nodes", n.Relay().ChildClients())
	}
	// Credentials that do not verify are refused, not taken for a client:
	// a node with the wrong secret must learn of it.
	forged := meshauth.NewSigner(n.ID(), "another-secret-of-32-characters!!")
	h := http.Header{ViaHeader: {"x"}, meshauth.Header: {forged.Sign(meshauth.PurposeStream, streamPath, "x")}}
	if st, code, _ := status(t, url, h); st != http.StatusUnauthorized || code != codeMeshAuth {
		t.Fatalf("forged mesh credentials: %d %s, want 401 %s", st, code, codeMeshAuth)
	}
}

func TestConfiguredQueryParametersWin(t *testing.T) {
	be := newRecorder(t, eventStream)
	n := startNode(t, testConfig(BackendSpec{Name: "q", URI: "http://" + be.addr + "/q?apikey=SECRET", Mount: "/q", QueryParams: []string{"lang"}}))
	ssetest.Dial(t, "http://"+n.Addr()+"/q?apikey=ATTACKER&lang=en&cachebust=1", nil)
	reqs := be.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d back-end requests, want 1", len(reqs))
	}
	if q := reqs[0].URL.Query(); len(q["apikey"]) != 1 || q.Get("apikey") != "SECRET" || q.Get("lang") != "en" || q.Has("cachebust") {
		t.Fatalf("back end got query %q, want apikey=SECRET (only) and lang=en", reqs[0].URL.RawQuery)
	}
}

func TestHostilePathsNeverReachTheBackEnd(t *testing.T) {
	be := newRecorder(t, eventStream)
	n := startNode(t, testConfig(BackendSpec{Name: "p", URI: "http://" + be.addr + "/base/", Mount: "/p/", Prefix: true}))
	for _, p := range []string{
		"/p/..;/secret", "/p/%5C..%5Csecret", "/p/a%00b", "/p/%252e%252e/x", "/p/a%2Fb", "/p/%2e%2e/x",
		"/p/a%0d%0ab", "/p/a%7f", "/p/./x", "/p//x",
	} {
		if st, code, body := status(t, "http://"+n.Addr()+p, nil); st != http.StatusBadRequest || code != codeBadPath || !strings.Contains(body, messages[codeBadPath]) {
			t.Errorf("%s: %d %s %s, want 400 %s", p, st, code, body, codeBadPath)
		}
	}
	if got := be.requests(); len(got) != 0 {
		t.Fatalf("the back end got %d requests, first %q", len(got), got[0].RequestURI)
	}
}

func TestAbsoluteFormRequestIsNotRedirected(t *testing.T) {
	_, n, _ := oneBackend(t, backend.Config{}, nil)
	for _, target := range []string{"http://evil.example/webservice/../x", "http://evil.example//x", "/webservice/escenic/../x"} {
		conn, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conn.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("GET %s: %d Location %q, want 400 without a redirect", target, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

func TestErrorBodiesRevealNothing(t *testing.T) {
	down := BackendSpec{Name: "down", URI: "http://127.0.0.1:1/x?apikey=SECRET", Mount: "/x"}
	n := startNode(t, testConfig(down))
	st, code, body := status(t, "http://"+n.Addr()+"/x", nil)
	if st != http.StatusBadGateway || code != relay.CodeUpstreamUnreachable {
		t.Fatalf("unreachable back end: %d %s", st, code)
	}
	for _, secret := range []string{"127.0.0.1", ":1", "SECRET", "dial", "refused", n.ID()} {
		if strings.Contains(body, secret) {
			t.Errorf("error body %s names %q", body, secret)
		}
	}
	var e struct {
		Status         int
		Error, Message string
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != code || e.Message == "" {
		t.Fatalf("error body %s: want JSON with the code and a message (%v)", body, err)
	}
}

// adminStreams reads /v1/streams.
func adminStreams(t *testing.T, n *Node) []streamView {
	t.Helper()
	resp, err := http.Get("http://" + n.AdminAddr() + "/v1/streams")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Streams []streamView }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Streams
}

func TestAdminDefaults(t *testing.T) {
	be := newRecorder(t, eventStream)
	n := startNode(t, testConfig(BackendSpec{Name: "a", URI: "http://" + be.addr + "/x?apikey=SECRET", Mount: "/x"}))
	ssetest.Dial(t, "http://"+n.Addr()+"/x", nil)
	resp, err := http.Get("http://" + n.AdminAddr() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("pprof answered %d by default, want 404 (off)", resp.StatusCode)
	}
	streams := adminStreams(t, n)
	if len(streams) != 1 || strings.Contains(streams[0].Upstream, "SECRET") || !strings.Contains(streams[0].Upstream, "apikey=REDACTED") {
		t.Fatalf("/v1/streams shows %+v, want the upstream with its query values redacted", streams)
	}
}

func TestHostileLastEventIDFailsNoOne(t *testing.T) {
	gate := make(chan struct{})
	var mu sync.Mutex
	var sent []string
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
		eventStreamAfter(gate, w, r)
	}))
	n := startNode(t, testConfig(BackendSpec{Name: "h", URI: "http://" + up + "/h"}))
	url := "http://" + n.Addr() + "/h"
	long := http.Header{"Last-Event-ID": {strings.Repeat("9", relay.MaxLastEventIDBytes+1)}}

	// The first client opens the stream with an id no header can carry;
	// two more join while it connects.
	first := dialLater(url+"?lastEventId=a%0d%0aX-Evil:%201", nil)
	ssetest.Eventually(t, "stream connecting", 5*time.Second, func() bool { return n.waiting.Load() == 1 })
	second := dialLater(url, nil)
	third := dialLater(url+"?lastEventId=n%00ul", long)
	ssetest.Eventually(t, "all three waiting", 5*time.Second, func() bool { return n.waiting.Load() == 3 })
	close(gate)
	for i, ch := range []<-chan dialResult{first, second, third} {
		r := <-ch
		if r.err != nil {
			t.Fatalf("client %d: %v", i+1, r.err)
		}
		if ev := r.c.Next(t, 5*time.Second); ev.Data != "hello" {
			t.Fatalf("client %d got %+v", i+1, ev)
		}
		r.c.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 1 || sent[0] != "" {
		t.Fatalf("upstream got Last-Event-ID %q, want one request without", sent)
	}
	if got := n.ignoredIDs.Load(); got != 2 {
		t.Fatalf("%d ids counted as ignored, want 2", got)
	}
}

func TestRefusedIDIsOnlyItsClientsGap(t *testing.T) {
	// A syntactically valid id the back end refuses (400) must not become
	// the answer of the other subscribers of the stream it opened.
	gate := make(chan struct{})
	up := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Last-Event-ID") == "bogus" {
			http.Error(w, "no such id", http.StatusBadRequest)
			return
		}
		eventStreamAfter(gate, w, r)
	}))
	n := startNode(t, testConfig(BackendSpec{Name: "h", URI: "http://" + up + "/h"}))
	url := "http://" + n.Addr() + "/h"
	firstC := dialLater(url, http.Header{"Last-Event-ID": {"bogus"}})
	ssetest.Eventually(t, "stream connecting", 5*time.Second, func() bool { return n.waiting.Load() == 1 })
	secondC := dialLater(url, nil)
	ssetest.Eventually(t, "second waiting", 5*time.Second, func() bool { return n.waiting.Load() == 2 })
	close(gate)
	r1, r2 := <-firstC, <-secondC
	if r1.err != nil || r2.err != nil {
		t.Fatalf("a subscriber was refused: first %v, second %v", r1.err, r2.err)
	}
	first, second := r1.c, r2.c
	defer first.Close()
	defer second.Close()
	if ev := second.Next(t, 5*time.Second); ev.Data != "hello" {
		t.Fatalf("second got %+v", ev)
	}
	ev := first.Next(t, 5*time.Second)
	if ev.Type != "ssemesh-gap" {
		t.Fatalf("the client with the refused id got %+v first, want the gap event", ev)
	}
	if ev := first.Next(t, 5*time.Second); ev.Data != "hello" {
		t.Fatalf("after its gap the first client got %+v", ev)
	}
}
