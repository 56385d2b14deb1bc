package node

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// esBlock is one raw upstream block; id names the block a Last-Event-ID
// resumes after ("" for blocks that are no resume point).
type esBlock struct {
	id  string
	raw string
}

// esBlocks mixes what EventSource implementations most often get wrong:
// CRLF and CR line ends, multi-line data, a custom type, an empty id that
// resets lastEventId, retry, two spaces after the colon, an empty data
// line, multibyte UTF-8 and a comment.
var esBlocks = []esBlock{
	{"1", "retry: 2500\r\nid: 1\r\ndata: first line\r\ndata: second line\r\n\r\n"},
	{"2", "event: update\r\nid: 2\r\ndata: {\"k\":\"v\"}\r\n\r\n"},
	{"", ": just a comment\r\n\r\n"},
	{"3", "id: 3\r\ndata: café ☕ 😀 ünïcödé\r\n\r\n"},
	{"", "id\r\ndata: after reset\r\n\r\n"},
	{"4", "id: 4\revent: update\rdata:  two spaces\r\r"},
	{"", "data\n\n"},
	{"5", "id: 5\ndata: last\ndata:\n\n"},
}

const esTypes = "update"

// esWant is what client.js prints for esBlocks, one JSON line per message.
// The npm eventsource package reports a message's own id as lastEventId ("" for
// a block without one) where a browser repeats the last id in force; that
// makes it see a node that adds ids to blocks which had none.
var esWant = []string{
	`{"type":"message","data":"first line\nsecond line","lastEventId":"1"}`,
	`{"type":"update","data":"{\"k\":\"v\"}","lastEventId":"2"}`,
	`{"type":"message","data":"café ☕ 😀 ünïcödé","lastEventId":"3"}`,
	`{"type":"message","data":"after reset","lastEventId":""}`,
	`{"type":"update","data":" two spaces","lastEventId":"4"}`,
	`{"type":"message","data":"","lastEventId":""}`,
	`{"type":"message","data":"last\n","lastEventId":"5"}`,
}

// esUpstream replays esBlocks after the request's Last-Event-ID (all of
// them without one) and then holds the stream. The first connection of
// /es/live waits until live is closed.
func esUpstream(t *testing.T, live <-chan struct{}) *ssetest.Upstream {
	return ssetest.Serve(t, func(r ssetest.Request) ssetest.Response {
		from := 0
		if id := r.Header.Get("Last-Event-ID"); id != "" {
			from = -1
			for i, b := range esBlocks {
				if b.id == id {
					from = i + 1
				}
			}
			if from < 0 {
				return ssetest.Response{Handler: func(w http.ResponseWriter, _ *http.Request) {
					http.Error(w, "unknown Last-Event-ID", http.StatusNotFound)
				}}
			}
		}
		resp := ssetest.Response{
			Header: http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}, "Cache-Control": {"no-cache"}},
			Hold:   true,
		}
		for _, b := range esBlocks[from:] {
			resp.Body = append(resp.Body, b.raw)
		}
		if r.URL.Path == "/es/live" && r.PathN == 0 {
			resp.Gate = live
		}
		return resp
	})
}

// esClient locates test/eventsource/client.js and its dependencies, or
// skips (fails on CI) when they are not installed.
func esClient(t *testing.T) (nodeBin, dir string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "test", "eventsource"))
	if err != nil {
		t.Fatal(err)
	}
	missing := ""
	nodeBin, err = exec.LookPath("node")
	if err != nil {
		missing = "the node binary is not on PATH"
	} else if _, err := os.Stat(filepath.Join(dir, "node_modules", "eventsource")); err != nil {
		missing = "test/eventsource/node_modules has no eventsource package"
	}
	if missing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: run scripts/install-test-deps.sh", missing)
		}
		t.Skipf("%s: run scripts/install-test-deps.sh to enable this test", missing)
	}
	return nodeBin, dir
}

// esRun is one client.js process reading count messages from url.
type esRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	cancel context.CancelFunc
}

func startES(t *testing.T, nodeBin, dir, url string, count int, lastEventID string) *esRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	r := &esRun{cancel: cancel}
	r.cmd = exec.CommandContext(ctx, nodeBin, "client.js", url, strconv.Itoa(count), lastEventID, esTypes)
	r.cmd.Dir = dir
	// Loopback must never go through a proxy the environment names.
	r.cmd.Env = append(os.Environ(), "EVENTSOURCE_TIMEOUT_MS=20000", "NO_PROXY=127.0.0.1", "no_proxy=127.0.0.1")
	r.cmd.Stdout = &r.stdout
	r.cmd.Stderr = &r.stderr
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting client.js: %v", err)
	}
	t.Cleanup(func() {
		// A process the test already waited for is left alone.
		if r.cmd.ProcessState == nil {
			cancel()
			_ = r.cmd.Wait()
		}
	})
	return r
}

// wait returns the printed messages, one per line.
func (r *esRun) wait(t *testing.T) []string {
	t.Helper()
	err := r.cmd.Wait()
	r.cancel()
	if err != nil {
		t.Fatalf("client.js %q: %v; stderr:\n%s", r.cmd.Args[2:], err, r.stderr.String())
	}
	out := strings.TrimSuffix(r.stdout.String(), "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

func runES(t *testing.T, nodeBin, dir, url string, count int, lastEventID string) []string {
	t.Helper()
	return startES(t, nodeBin, dir, url, count, lastEventID).wait(t)
}

func diffLines(got, want []string) string {
	for i := 0; i < len(got) && i < len(want); i++ {
		if got[i] != want[i] {
			return "line " + strconv.Itoa(i) + ": got " + got[i] + ", want " + want[i]
		}
	}
	if len(got) != len(want) {
		return "got " + strconv.Itoa(len(got)) + " lines, want " + strconv.Itoa(len(want)) + ":\n" + strings.Join(got, "\n")
	}
	return ""
}

func TestEventSourceClientThroughNode(t *testing.T) {
	nodeBin, dir := esClient(t)
	live := make(chan struct{})
	up := esUpstream(t, live)
	upAddr := up.Addr()
	n := startNode(t, testConfig(BackendSpec{Name: "es", URI: "http://" + upAddr + "/es/", Mount: "/es", Prefix: true}))
	directURL := "http://" + upAddr + "/es/direct"
	nodeURL := "http://" + n.Addr() + "/es"

	direct := runES(t, nodeBin, dir, directURL, len(esWant), "")
	if d := diffLines(direct, esWant); d != "" {
		t.Fatalf("direct from the upstream: %s", d)
	}

	// A subscriber joins a live stream at its head, so the upstream is held
	// back until client.js is attached. A second subscriber then keeps the
	// stream and its ring alive for the resume below.
	es := startES(t, nodeBin, dir, nodeURL+"/live", len(esWant), "")
	ssetest.Eventually(t, "client.js attached to the node", 15*time.Second, func() bool { return n.Relay().Clients() == 1 })
	holder := ssetest.Dial(t, nodeURL+"/live", nil)
	close(live)
	if d := diffLines(es.wait(t), direct); d != "" {
		t.Fatalf("through the node vs direct: %s", d)
	}
	// Each block's own id, as the node forwards it (an empty id stays an id).
	if got, want := holder.IDs(t, len(esWant), 5*time.Second), []string{"1", "2", "3", "", "4", "", "5"}; !slices.Equal(got, want) {
		t.Fatalf("a second subscriber saw ids %q, want %q", got, want)
	}

	// Resuming after id 2 skips the first two messages.
	const resumeFrom = "2"
	tail := len(esWant) - 2
	directResumed := runES(t, nodeBin, dir, directURL, tail, resumeFrom)
	if d := diffLines(directResumed, esWant[2:]); d != "" {
		t.Fatalf("direct resume from %s: %s", resumeFrom, d)
	}
	tests := []struct {
		name string
		path string
	}{
		// The node still holds the stream: the ring answers.
		{"from the ring", "/live"},
		// No stream yet: the node opens its upstream from the client's id.
		{"opening the stream", "/fresh"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runES(t, nodeBin, dir, nodeURL+tc.path, tail, resumeFrom)
			if d := diffLines(got, directResumed); d != "" {
				t.Fatalf("resume through the node vs direct: %s", d)
			}
		})
	}

	if got := up.LastEventIDs("/es/live"); len(got) != 1 {
		t.Errorf("the ring must answer the resume: upstream saw %d connections for /es/live (Last-Event-IDs %q)", len(got), got)
	}
	if got := up.LastEventIDs("/es/fresh"); len(got) != 1 || got[0] != resumeFrom {
		t.Errorf("upstream saw Last-Event-IDs %q for /es/fresh, want one connection resuming from %q", got, resumeFrom)
	}
}
