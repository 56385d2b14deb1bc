package node

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
	"github.com/ssemesh/ssemesh/relay"
)

// End states: how a stream's first answer ends for a client. A browser's
// EventSource, given anything but 200 with text/event-stream, fails the
// connection for good (WHATWG "fail the connection"); given 200 with an
// event stream, it is open. A node must give its clients the same end
// state the back end gives a direct client, at once, whatever the back end
// does with the connection afterwards, and a chain of nodes the same answer
// (status and code) as a single node.

// endStateCase is an upstream's first answer.
type endStateCase struct {
	name   string
	answer func(w http.ResponseWriter, r *http.Request)
	// direct is false when a direct client has nothing to compare (the
	// upstream cannot be reached at all); single node and chain are still
	// compared.
	direct bool
}

// hold keeps a refused answer's connection open with its body unfinished,
// as some back ends do.
func hold(w http.ResponseWriter, r *http.Request, status int, ctype, body string) {
	if ctype == "-" {
		w.Header()["Content-Type"] = nil
	} else if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
	_ = http.NewResponseController(w).Flush()
	<-r.Context().Done()
}

func endStateCases() []endStateCase {
	return []endStateCase{
		{"204 ends the stream", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }, true},
		{"404", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, true},
		{"401 with a challenge", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("WWW-Authenticate", `Basic realm="cs"`)
			http.Error(w, "who are you", http.StatusUnauthorized)
		}, true},
		{"503 with Retry-After", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "9")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}, true},
		{"500 event stream held open", func(w http.ResponseWriter, r *http.Request) {
			hold(w, r, http.StatusInternalServerError, "text/event-stream", "data: not for you\n\n")
		}, true},
		{"200 text/plain held open", func(w http.ResponseWriter, r *http.Request) {
			hold(w, r, http.StatusOK, "text/plain", "hello")
		}, true},
		{"200 without Content-Type held open", func(w http.ResponseWriter, r *http.Request) {
			hold(w, r, http.StatusOK, "-", "hello")
		}, true},
		{"200 event stream", func(w http.ResponseWriter, r *http.Request) {
			hold(w, r, http.StatusOK, "text/event-stream", "data: hi\n\n")
		}, true},
	}
}

// outcome is what one request ended in.
type outcome struct {
	status int
	code   string // the node's error code; "" for an upstream or a stream
	open   bool   // an EventSource would be open (else it failed for good)
}

func (o outcome) String() string {
	return fmt.Sprintf("%d %q open=%v", o.status, o.code, o.open)
}

func outcomeOf(resp *http.Response) outcome {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return outcome{
		status: resp.StatusCode,
		code:   resp.Header.Get(relay.ErrorHeader),
		open:   resp.StatusCode == http.StatusOK && mt == "text/event-stream",
	}
}

// fetchOutcome makes one request and returns how it ended, closing it.
func fetchOutcome(url string) (outcome, error) {
	c, resp, err := ssetest.DialStatus(url, nil)
	if err != nil {
		return outcome{}, err
	}
	o := outcomeOf(resp)
	if c != nil {
		c.Close()
	} else {
		resp.Body.Close()
	}
	return o, nil
}

// endStateUpstream answers /d/<case> at once and /n/<case> when the case's
// gate opens, so that a second client can join a node's stream while its
// first connect is pending. Gates are per entry (a node, or a chain) since
// each opens its own upstream request. cases may be changed until the first
// request.
type endStateUpstream struct {
	*ssetest.Upstream
	cases []endStateCase
	gates ssetest.Gates
}

func newEndStateUpstream(t *testing.T, cases []endStateCase) *endStateUpstream {
	u := &endStateUpstream{cases: cases}
	u.Upstream = ssetest.Serve(t, func(r ssetest.Request) ssetest.Response {
		// Paths: /d/<case> or /<entry>/<case>.
		entry, num, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		i, err := strconv.Atoi(num)
		if err != nil || i < 0 || i >= len(u.cases) {
			return ssetest.Response{Handler: http.NotFound}
		}
		resp := ssetest.Response{Handler: u.cases[i].answer}
		if entry != "d" {
			resp.HeaderGate = u.gates.Get(r.URL.Path)
		}
		return resp
	})
	return u
}

// playEndStates runs every case through each entry (name -> the node the
// clients use and the path prefix its back end maps to the upstream's
// /<name>/), two clients per case, the second joining while the first
// connect is pending. It returns the outcomes by entry and case.
func playEndStates(t *testing.T, up *endStateUpstream, upAddr string, entries map[string]*Node) map[string][]outcome {
	t.Helper()
	got := map[string][]outcome{}
	for name, n := range entries {
		got[name] = make([]outcome, len(up.cases))
		for i, tc := range up.cases {
			url := fmt.Sprintf("http://%s/%s/%d", n.Addr(), name, i)
			results := make(chan outcome, 2)
			errs := make(chan error, 2)
			start := func() {
				go func() {
					o, err := fetchOutcome(url)
					if err != nil {
						errs <- err
						return
					}
					results <- o
				}()
			}
			start()
			ssetest.Eventually(t, name+": first client waiting on "+tc.name, 5*time.Second, func() bool { return n.waiting.Load() == 1 })
			start()
			ssetest.Eventually(t, name+": second client waiting on "+tc.name, 5*time.Second, func() bool { return n.waiting.Load() == 2 })
			opened := time.Now()
			up.gates.Open(fmt.Sprintf("/%s/%d", name, i))
			var both []outcome
			for len(both) < 2 {
				select {
				case o := <-results:
					both = append(both, o)
				case err := <-errs:
					t.Fatalf("%s, %s: %v", name, tc.name, err)
				case <-time.After(3 * time.Second):
					t.Fatalf("%s, %s: no answer within 3s of the upstream's (a refused body held open must not block the node)", name, tc.name)
				}
			}
			if both[0] != both[1] {
				t.Errorf("%s, %s: the first client got %s, the one that joined while it connected %s", name, tc.name, both[0], both[1])
			}
			t.Logf("%s, %s: %s after %s", name, tc.name, both[0], time.Since(opened).Round(time.Millisecond))
			got[name][i] = both[0]
			ssetest.Eventually(t, name+": stream released after "+tc.name, 5*time.Second, func() bool { return n.waiting.Load() == 0 })
		}
	}
	return got
}

// compareWithDirect checks every entry's EventSource end state against a
// direct client's.
func compareWithDirect(t *testing.T, up *endStateUpstream, upAddr string, got map[string][]outcome) {
	t.Helper()
	for i, tc := range up.cases {
		if !tc.direct {
			continue
		}
		direct, err := fetchOutcome(fmt.Sprintf("http://%s/d/%d", upAddr, i))
		if err != nil {
			t.Fatalf("direct %s: %v", tc.name, err)
		}
		for name, os := range got {
			if os[i].open != direct.open {
				t.Errorf("%s: direct %s, through %s %s: an EventSource would end differently", tc.name, direct, name, os[i])
			}
			if !direct.open && direct.status >= 400 && os[i].status != direct.status {
				t.Errorf("%s: direct status %d, through %s %d", tc.name, direct.status, name, os[i].status)
			}
			if direct.status == http.StatusNoContent && os[i].status != http.StatusNoContent {
				t.Errorf("%s: direct 204 (end for good), through %s %s", tc.name, name, os[i])
			}
		}
	}
}

func TestEndStates(t *testing.T) {
	up := newEndStateUpstream(t, endStateCases())
	upAddr := up.Addr()
	cfg := testConfig(BackendSpec{Name: "single", URI: "http://" + upAddr + "/single/", Mount: "/single", Prefix: true})
	one := 1
	cfg.Relay.ConnectRetries = one
	n := startNode(t, cfg)
	got := playEndStates(t, up, upAddr, map[string]*Node{"single": n})
	compareWithDirect(t, up, upAddr, got)
}
