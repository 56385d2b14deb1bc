package sse

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// interopScript connects the npm "eventsource" client to each URL in turn
// and prints, per URL, the messages it dispatched. The stream's end closes
// the client so that no reconnection (with whatever retry the case set)
// follows.
const interopScript = `
const { EventSource } = require("eventsource");
async function observe(url) {
  return new Promise((resolve) => {
    const got = [];
    const es = new EventSource(url);
    const dispatch = es.dispatchEvent.bind(es);
    es.dispatchEvent = (ev) => {
      if (ev instanceof MessageEvent) got.push({ type: ev.type, data: ev.data });
      return dispatch(ev);
    };
    es.onerror = () => { es.close(); resolve(got); };
  });
}
(async () => {
  const out = [];
  for (const url of process.argv.slice(2)) out.push(await observe(url));
  process.stdout.write(JSON.stringify(out));
})();
`

type interopMessage struct {
	Type string `json:"type"`
	Data string `json:"data"`
}

// TestInteropNodeEventSource checks transparency with a client written
// elsewhere: the npm eventsource package must dispatch the same messages
// from a case's raw stream as from its re-encoding. It needs node and the
// package, so it runs only when SSE_INTEROP_NODE_MODULES names a
// node_modules folder that holds eventsource.
//
// The comparison is of type and data. That client reports each event's own
// id as lastEventId instead of the persistent one, so ids are checked by the
// unit tests against the spec instead.
func TestInteropNodeEventSource(t *testing.T) {
	modules := os.Getenv("SSE_INTEROP_NODE_MODULES")
	if modules == "" {
		t.Skip("SSE_INTEROP_NODE_MODULES not set")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	script := filepath.Join(t.TempDir(), "observe.js")
	if err := os.WriteFile(script, []byte(interopScript), 0o600); err != nil {
		t.Fatal(err)
	}

	bodies := make(map[string][]byte)
	var urls []string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range parserCases {
		var enc []byte
		for _, e := range parseString(t, tc.input) {
			enc = AppendEvent(enc, e)
		}
		raw := []byte(tc.input)
		if strings.HasSuffix(tc.input, "\r") {
			// That client waits for a possible LF after a stream-final CR and
			// drops the line at the end of the stream; a comment line after
			// it changes nothing for a spec-conforming client.
			raw = append(raw, ": end\n"...)
		}
		for kind, body := range map[string][]byte{"raw": raw, "enc": enc} {
			path := fmt.Sprintf("/%s/%d", kind, i)
			bodies[path] = body
		}
		urls = append(urls, fmt.Sprintf("http://%s/raw/%d", ln.Addr(), i), fmt.Sprintf("http://%s/enc/%d", ln.Addr(), i))
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := bodies[r.URL.Path]
		if !ok {
			// Refusing a reconnection ends the client for good.
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		// Two writes with a flush between them, so the client sees the
		// stream in more than one chunk.
		half := len(body) / 2
		_, _ = w.Write(body[:half])
		http.NewResponseController(w).Flush()
		_, _ = w.Write(body[half:])
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})

	cmd := exec.Command(node, append([]string{script}, urls...)...)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var observed [][]interopMessage
	if err := json.Unmarshal(out, &observed); err != nil {
		t.Fatalf("decoding node output %q: %v", out, err)
	}
	if len(observed) != len(urls) {
		t.Fatalf("node observed %d streams, want %d", len(observed), len(urls))
	}
	for i, tc := range parserCases {
		raw, enc := observed[2*i], observed[2*i+1]
		if fmt.Sprint(raw) != fmt.Sprint(enc) {
			t.Errorf("%s: client sees %q directly but %q through the encoder", tc.name, raw, enc)
		}
		// Where the bytes are valid UTF-8 the client's view must also match
		// the package's own Observer.
		if !utf8.ValidString(tc.input) || strings.HasPrefix(tc.input, "\xEF\xBB\xBF") {
			continue
		}
		o := Observer{Retry: -1}
		var want []interopMessage
		for _, e := range tc.want {
			if m, ok := o.Apply(e); ok {
				want = append(want, interopMessage{Type: m.Type, Data: m.Data})
			}
		}
		if fmt.Sprint(raw) != fmt.Sprint(want) {
			t.Errorf("%s: client sees %q, Observer %q", tc.name, raw, want)
		}
	}
}
