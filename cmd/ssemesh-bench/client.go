package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// maxLine bounds one SSE line; a longer one fails the connection rather than
// growing a buffer without limit.
const maxLine = 1 << 20

// sseSession is one client's way to the stream: a connection of its own
// (streamConn) or a stream on a shared HTTP/2 connection (h2Stream).
type sseSession interface {
	// session connects and delivers every dispatched event's data to
	// onEvent until the stream ends, fails or ctx ends. onConnect runs
	// once the response headers have been accepted.
	session(ctx context.Context, onConnect func(), onEvent func(data []byte)) error
	// parser is the session's resume state, which its client sets before
	// the session and takes back after it.
	parser() *sseParser
}

// sseParser reads an event stream and remembers the resume point and the
// reconnection time. It is shared by both kinds of session, so that they
// parse and account for events identically, and a client carries it from
// one session to the next, whichever URL that is on, as an EventSource
// does.
type sseParser struct {
	lastEventID string
	// retry is the stream's last retry: value, when hasRetry.
	retry    time.Duration
	hasRetry bool
}

func (c *sseParser) parser() *sseParser { return c }

// streamConn is one HTTP/1.1 SSE connection, plain or in TLS. It is
// hand-rolled on a raw TCP connection, with one goroutine and two small
// buffers, because net/http's transport costs two extra goroutines and more
// buffers per connection, which matters at tens of thousands of clients per
// machine.
type streamConn struct {
	sseParser
	dialer     *net.Dialer
	addr       string // host:port to dial
	host       string // Host header
	requestURI string
	timeout    time.Duration // connect, TLS handshake and response-header timeout
	tls        *tls.Config   // nil: plain HTTP
	dials      *atomic.Int64 // TCP connections established, for the report
}

// statusError is a non-200 or non-SSE answer.
type statusError struct {
	code  int
	ctype string
	// reason is the "error" member of a JSON refusal body (an ssemesh
	// node's error code, such as max_clients); retryAfter its Retry-After.
	reason     string
	retryAfter time.Duration
}

func (e statusError) Error() string {
	switch {
	case e.code == http.StatusOK:
		return fmt.Sprintf("content type %q", e.ctype)
	case e.reason != "":
		return fmt.Sprintf("http status %d %s", e.code, e.reason)
	}
	return fmt.Sprintf("http status %d", e.code)
}

// maxErrorBody bounds what is read of a refusal's body.
const maxErrorBody = 4096

// refusal describes a non-200 or non-SSE response, with the error code of
// a JSON body and the Retry-After header.
func refusal(resp *http.Response, ctype string) statusError {
	se := statusError{code: resp.StatusCode, ctype: ctype}
	if resp.StatusCode == http.StatusOK {
		return se
	}
	se.retryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if ctype == "application/json" {
		var body struct {
			Error string `json:"error"`
		}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if json.Unmarshal(raw, &body) == nil {
			se.reason = sanitizeReason(body.Error)
		}
	}
	return se
}

// sanitizeReason keeps an error code printable and short, as it becomes a
// key of the report.
func sanitizeReason(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
	return truncate(s, 40)
}

// session implements sseSession. It keeps lastEventID up to date for the
// next session, by WHATWG rules: an id takes effect when its event is
// dispatched.
func (c *streamConn) session(ctx context.Context, onConnect func(), onEvent func(data []byte)) error {
	raw, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	if c.dials != nil {
		c.dials.Add(1)
	}
	defer raw.Close()
	// Closing the connection is what unblocks a read when the run ends. The
	// TCP connection is closed, not the TLS one, whose Close would first
	// try to write an alert.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	_ = raw.SetDeadline(time.Now().Add(c.timeout))
	conn := raw
	if c.tls != nil {
		tc := tls.Client(raw, c.tls)
		// Handshake rather than HandshakeContext: the latter starts a
		// goroutine per handshake to watch ctx, which the AfterFunc above
		// already does.
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		conn = tc
	}

	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: ssemesh-bench\r\n", c.requestURI, c.host)
	if c.lastEventID != "" {
		fmt.Fprintf(&req, "Last-Event-ID: %s\r\n", c.lastEventID)
	}
	req.WriteString("\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	br := bufio.NewReaderSize(conn, 2048)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	ctype, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ctype != "text/event-stream" {
		return refusal(resp, ctype)
	}
	_ = raw.SetDeadline(time.Time{})
	onConnect()
	return c.read(resp.Body, onEvent)
}

// read parses the event stream. Lines end in LF or CRLF (a lone CR, legal
// but unused by any known server, is not supported); event types are
// ignored, retry: sets the reconnection time.
func (c *sseParser) read(body io.Reader, onEvent func(data []byte)) error {
	rd := bufio.NewReaderSize(body, 4096)
	var (
		data    []byte
		hasData bool
		idBuf   = c.lastEventID
		long    []byte // a line longer than rd's buffer, assembled
	)
	for {
		chunk, err := rd.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if len(long)+len(chunk) > maxLine {
				return fmt.Errorf("line longer than %d bytes", maxLine)
			}
			long = append(long, chunk...)
			continue
		case err != nil:
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("read: %w", err)
		}
		line := chunk
		if len(long) > 0 {
			long = append(long, chunk...)
			line, long = long, long[:0]
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte{'\n'}), []byte{'\r'})
		if len(line) == 0 {
			// Dispatch: the id becomes the resume point even for an event
			// without data, as WHATWG specifies.
			c.lastEventID = idBuf
			if hasData {
				onEvent(data)
			}
			data, hasData = data[:0], false
		} else if line[0] != ':' {
			field, value, found := bytes.Cut(line, []byte{':'})
			if found {
				value = bytes.TrimPrefix(value, []byte{' '})
			}
			switch string(field) {
			case "data":
				if hasData {
					data = append(data, '\n')
				}
				data = append(data, value...)
				hasData = true
			case "id":
				if bytes.IndexByte(value, 0) < 0 {
					idBuf = string(value)
				}
			case "retry":
				if d, ok := parseRetryField(value); ok {
					c.retry, c.hasRetry = d, true
				}
			}
		}
	}
}

// classify turns a connection error into a short, countable reason.
func classify(err error) string {
	var (
		se        statusError
		ne        net.Error
		notH2     notH2Error
		unknownCA x509.UnknownAuthorityError
		badHost   x509.HostnameError
		badCert   *tls.CertificateVerificationError
	)
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &se):
		return se.Error()
	case errors.As(err, &notH2):
		return notH2.Error()
	case errors.Is(err, errNoH2Stream):
		return errNoH2Stream.Error()
	// Certificate problems are named, not truncated, since they are
	// mistakes in the command line rather than in the node.
	case errors.As(err, &unknownCA):
		return "TLS: certificate signed by unknown authority (check --ca)"
	case errors.As(err, &badHost):
		return "TLS: certificate not valid for " + badHost.Host
	case errors.As(err, &badCert):
		return "TLS: certificate verification failed"
	case errors.Is(err, io.EOF):
		return "stream ended (EOF)"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "stream broken (unexpected EOF)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no free source port (add --sources)"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files (add --procs)"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, net.ErrClosed), errors.Is(err, context.Canceled):
		return "closed by the run"
	}
	msg := err.Error()
	if strings.Contains(msg, "stream error:") {
		// An HTTP/2 RST_STREAM; its error type is not exported.
		return "stream reset (HTTP/2)"
	}
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return strings.TrimSpace(msg)
}
