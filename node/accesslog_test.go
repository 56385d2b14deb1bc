package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/internal/ssetest"
)

// readAccessLog parses the JSON lines of an access log file.
func readAccessLog(t *testing.T, path string) []accessEntry {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []accessEntry
	for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e accessEntry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// rawStream is a client on a bare socket, so the test knows exactly how
// many body bytes it received.
type rawStream struct {
	conn net.Conn
	br   *bufio.Reader
	body bytes.Buffer
}

func openRawStream(t *testing.T, addr, path string, header map[string]string) *rawStream {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nAccept: text/event-stream\r\n"
	for k, v := range header {
		req += k + ": " + v + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %v %v", resp, err)
	}
	return &rawStream{conn: conn, br: br}
}

// until reads body bytes until want has appeared in the body.
func (s *rawStream) until(t *testing.T, want string) {
	t.Helper()
	buf := make([]byte, 4096)
	for !strings.Contains(s.body.String(), want) {
		n, err := s.br.Read(buf)
		s.body.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading until %q: %v; body so far %q", want, err, s.body.String())
		}
	}
}

// toEOF reads the rest of the body.
func (s *rawStream) toEOF(t *testing.T) {
	t.Helper()
	if _, err := io.Copy(&s.body, s.br); err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
}

func TestAccessLogRecordsASession(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	be, n, url := oneBackend(t, backend.Config{}, func(c *Config) {
		c.AccessLog = AccessLogConfig{Enabled: true, Format: "json", Path: logPath}
		c.TrustedProxies = []string{"127.0.0.1/32"}
	})

	// A first client opens the stream; five events fill the buffer.
	first := ssetest.Dial(t, url, nil)
	be.Publish(streamPath, 5)
	if got := first.IDs(t, 5, 5*time.Second); got[4] != "5" {
		t.Fatalf("first client got %v", got)
	}

	// The session under test: behind a trusted proxy, resuming after 2.
	start := time.Now()
	s := openRawStream(t, n.Addr(), streamPath, map[string]string{"Last-Event-ID": "2", "X-Forwarded-For": "203.0.113.9"})
	s.until(t, "id: 5\n")
	be.Publish(streamPath, 2)
	s.until(t, "id: 7\n")
	// The back end ends the stream: every client is closed with the
	// upstream's end, and the session's byte count is exactly what it read.
	be.SetStatus(streamPath, http.StatusNoContent, "")
	be.Cut(streamPath)
	s.toEOF(t)
	took := time.Since(start)

	// A refused request is logged too.
	resp, err := http.Get("http://" + n.Addr() + "/nowhere?q=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	var entries []accessEntry
	ssetest.Eventually(t, "three access log lines", 5*time.Second, func() bool {
		entries = readAccessLog(t, logPath)
		return len(entries) >= 3
	})
	var session, refused *accessEntry
	for i := range entries {
		switch {
		case entries[i].Client == "203.0.113.9":
			session = &entries[i]
		case entries[i].Status == http.StatusNotFound:
			refused = &entries[i]
		}
	}
	if session == nil || refused == nil {
		t.Fatalf("entries %+v: want the session and the 404", entries)
	}
	if session.ResumeID == nil || *session.ResumeID != "2" {
		t.Errorf("resume_id %v, want 2", session.ResumeID)
	}
	got := *session
	got.ResumeID = nil
	want := accessEntry{
		Time: session.Time, Client: "203.0.113.9", Peer: "127.0.0.1", Method: "GET", Stream: streamPath,
		Backend: "changelog", Proto: "HTTP/1.1", Status: http.StatusOK, Duration: session.Duration,
		Events: 5, Bytes: int64(s.body.Len()), Reason: "upstream_ended",
	}
	if got != want {
		t.Errorf("session entry\n got %+v\nwant %+v", got, want)
	}
	if session.Duration <= 0 || session.Duration > took.Seconds()+1 || time.Since(session.Time) > time.Minute {
		t.Errorf("duration %.3fs (session took %.3fs), time %v", session.Duration, took.Seconds(), session.Time)
	}
	if refused.Stream != "/nowhere" || refused.Reason != codeNotFound || refused.Client != "127.0.0.1" || refused.Events != 0 {
		t.Errorf("refusal entry %+v", *refused)
	}
}

func TestAccessLogReopensOnReload(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	_, addr := startBackend(t, backend.Config{})
	cfg := testConfig(BackendSpec{Name: "changelog", URI: "http://" + addr + streamPath})
	cfg.AccessLog = AccessLogConfig{Enabled: true, Path: logPath}
	n := startNode(t, cfg)
	next := cfg
	n.EnableReload(func() (Config, error) { return next, nil }, nil)

	refuse := func() {
		resp, err := http.Get("http://" + n.Addr() + "/nowhere")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	refuse()
	ssetest.Eventually(t, "a JSON line", 5*time.Second, func() bool { return len(readAccessLog(t, logPath)) == 1 })

	// Log rotation: the file is moved away, then the node is told to
	// reload; it writes to a new file at the path, in the format now asked.
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	next.AccessLog.Format = "text"
	if res := n.Reload(); res.Result != "ok" {
		t.Fatalf("reload: %+v", res)
	}
	refuse()
	var text string
	ssetest.Eventually(t, "a text line in the new file", 5*time.Second, func() bool {
		raw, _ := os.ReadFile(logPath)
		text = string(raw)
		return strings.HasSuffix(text, "\n")
	})
	for _, kv := range []string{"client=127.0.0.1", "method=GET", "stream=/nowhere", "status=404", "reason=not_found", "events=0", "bytes=0", "proto=HTTP/1.1"} {
		if !strings.Contains(text, kv) {
			t.Errorf("text line %q lacks %s", text, kv)
		}
	}
	if old := readAccessLog(t, rotated); len(old) != 1 {
		t.Errorf("rotated file holds %d lines, want the 1 written before", len(old))
	}

	// A path the node cannot open refuses the reload and keeps the log.
	next.AccessLog.Path = filepath.Join(dir, "missing", "access.log")
	if res := n.Reload(); res.Result != "refused" || !strings.Contains(res.Error, "access_log.path") {
		t.Fatalf("reload with an unwritable path: %+v", res)
	}
	refuse()
	ssetest.Eventually(t, "a second text line", 5*time.Second, func() bool {
		raw, _ := os.ReadFile(logPath)
		return strings.Count(string(raw), "\n") == 2
	})
}

func TestAccessLogTextQuotesHostileValues(t *testing.T) {
	e := accessEntry{Time: time.Unix(0, 0), Client: "192.0.2.1", Method: "GET", Stream: "/a b\"c\n=d", Proto: "HTTP/1.1", Status: 400, Reason: "bad_path"}
	var b bytes.Buffer
	e.appendText(&b)
	line := b.String()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("one entry must be one line: %q", line)
	}
	if !strings.Contains(line, `stream="/a b\"c\n=d"`) {
		t.Fatalf("hostile path not quoted: %q", line)
	}
}
