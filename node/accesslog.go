package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/ssemesh/ssemesh/relay"
)

// AccessLogConfig turns on one line per client stream, written when the
// stream ends (or is refused): who, what, how long, how much, and why it
// ended. Off by default: at tens of thousands of clients it is a lot of
// lines, and the metrics carry the totals.
type AccessLogConfig struct {
	Enabled bool `yaml:"enabled"`
	// Format is json (default) or text (key=value pairs).
	Format string `yaml:"format"`
	// Path is the file to append to; empty or "stdout" is standard output,
	// "stderr" standard error. A reload (SIGHUP) reopens the file, so
	// logrotate can move it away and signal the node.
	Path string `yaml:"path"`
}

// validate checks the access log keys.
func (c AccessLogConfig) validate() error {
	switch c.Format {
	case "", "json", "text":
	default:
		return &ConfigError{Key: "access_log.format", Reason: fmt.Sprintf("%q: want json or text", c.Format)}
	}
	return nil
}

// accessEntry is one access log line.
type accessEntry struct {
	Time     time.Time `json:"time"`
	Client   string    `json:"client"`         // the client's address (X-Forwarded-For from trusted proxies)
	Peer     string    `json:"peer,omitempty"` // the TCP peer when it is not the client (a proxy)
	Node     string    `json:"node,omitempty"` // a child node's id, for mesh subscriptions
	Method   string    `json:"method"`
	Stream   string    `json:"stream"` // the path and the query parameters that name the stream
	Backend  string    `json:"backend,omitempty"`
	Proto    string    `json:"proto"`
	Status   int       `json:"status"`
	Duration float64   `json:"duration"` // seconds, from the request to the stream's end
	Events   uint64    `json:"events"`
	Bytes    int64     `json:"bytes"`
	ResumeID *string   `json:"resume_id,omitempty"` // the Last-Event-ID the client resumed from
	Reason   string    `json:"reason"`              // why it ended, or the refusal's error code
}

// accessLog writes access entries. It lives as long as the node; a
// reload reconfigures it in place, so a stream that ends during a reload
// writes to the old file or the new one, never to a closed one.
type accessLog struct {
	mu     sync.Mutex
	w      io.Writer // nil: off
	f      *os.File  // the file w writes to, when it is one we opened
	text   bool
	buf    bytes.Buffer
	failed bool // the last write failed; logged once until one succeeds
	onErr  func(error)
}

// configure opens the log as c says, closing the file it wrote to before
// (a reload reopens the same path: log rotation).
func (a *accessLog) configure(c AccessLogConfig) error {
	var w io.Writer
	var f *os.File
	if c.Enabled {
		switch c.Path {
		case "", "stdout":
			w = os.Stdout
		case "stderr":
			w = os.Stderr
		default:
			var err error
			f, err = os.OpenFile(c.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
			if err != nil {
				return &ConfigError{Key: "access_log.path", Reason: err.Error()}
			}
			w = f
		}
	}
	a.mu.Lock()
	old := a.f
	a.w, a.f, a.text = w, f, c.Format == "text"
	a.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// on reports whether entries are written; callers skip building them
// otherwise.
func (a *accessLog) on() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.w != nil
}

// write appends one line.
func (a *accessLog) write(e *accessEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.w == nil {
		return
	}
	a.buf.Reset()
	if a.text {
		e.appendText(&a.buf)
	} else {
		_ = json.NewEncoder(&a.buf).Encode(e)
	}
	_, err := a.w.Write(a.buf.Bytes())
	switch {
	case err != nil && !a.failed:
		a.failed = true
		if a.onErr != nil {
			a.onErr(err)
		}
	case err == nil:
		a.failed = false
	}
}

// close closes the file the log writes to.
func (a *accessLog) close() {
	a.mu.Lock()
	f := a.f
	a.w, a.f = nil, nil
	a.mu.Unlock()
	if f != nil {
		_ = f.Close()
	}
}

// appendText renders the entry as key=value pairs, values quoted when
// they hold spaces, quotes or are empty.
func (e *accessEntry) appendText(b *bytes.Buffer) {
	kv := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		if v == "" || needsQuote(v) {
			b.WriteString(strconv.Quote(v))
		} else {
			b.WriteString(v)
		}
	}
	kv("time", e.Time.UTC().Format(time.RFC3339Nano))
	kv("client", e.Client)
	if e.Peer != "" {
		kv("peer", e.Peer)
	}
	if e.Node != "" {
		kv("node", e.Node)
	}
	kv("method", e.Method)
	kv("stream", e.Stream)
	if e.Backend != "" {
		kv("backend", e.Backend)
	}
	kv("proto", e.Proto)
	kv("status", strconv.Itoa(e.Status))
	kv("duration", strconv.FormatFloat(e.Duration, 'f', 3, 64))
	kv("events", strconv.FormatUint(e.Events, 10))
	kv("bytes", strconv.FormatInt(e.Bytes, 10))
	if e.ResumeID != nil {
		kv("resume_id", *e.ResumeID)
	}
	kv("reason", e.Reason)
	b.WriteByte('\n')
}

func needsQuote(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '=' || r == '\\' || r >= 0x7f {
			return true
		}
	}
	return false
}

// maxLoggedPath bounds the path written for a refused request: the client
// chose it, and a log line should not be a megabyte.
const maxLoggedPath = 1024

// accessBase fills what every entry of r carries.
func (n *Node) accessBase(r *http.Request, client netip.Addr, peer *peerRequest) *accessEntry {
	e := &accessEntry{Method: r.Method, Proto: r.Proto}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if peer != nil {
		e.Client, e.Node = host, peer.node
	} else {
		if !client.IsValid() {
			client = n.clientAddr(r)
		}
		e.Client = client.String()
		if e.Client != host {
			e.Peer = host
		}
	}
	return e
}

// logRefused writes the access entry of a request refused before its
// stream started.
func (n *Node) logRefused(r *http.Request, start time.Time, he *httpError) {
	if !n.access.on() {
		return
	}
	e := n.accessBase(r, netip.Addr{}, nil)
	e.Time = time.Now().UTC()
	e.Duration = e.Time.Sub(start).Seconds()
	e.Stream = r.URL.EscapedPath()
	if len(e.Stream) > maxLoggedPath {
		e.Stream = e.Stream[:maxLoggedPath] + "..."
	}
	e.Status, e.Reason = he.Status, he.Code
	n.access.write(e)
}

// streamEnded returns the relay's Ended callback for a stream served to
// r, or nil with the access log off. The callback holds the entry's
// strings, not the request: a stream outlives its handler by hours.
func (n *Node) streamEnded(r *http.Request, start time.Time, client netip.Addr, peer *peerRequest, stream, backend string, resume *string) func(relay.End) {
	if !n.access.on() {
		return nil
	}
	base := n.accessBase(r, client, peer)
	base.Stream, base.Backend, base.ResumeID, base.Status = stream, backend, resume, http.StatusOK
	return func(end relay.End) {
		e := *base
		e.Time = time.Now().UTC()
		e.Duration = e.Time.Sub(start).Seconds()
		e.Events, e.Bytes, e.Reason = end.Events, end.Bytes, end.Reason
		n.access.write(&e)
	}
}
