package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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
}

// sseParser reads an event stream and remembers the resume point. It is
// shared by both kinds of session, so that they parse and account for
// events identically.
type sseParser struct {
	lastEventID string
}

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
}

func (e statusError) Error() string {
	if e.code != http.StatusOK {
		return fmt.Sprintf("http status %d", e.code)
	}
	return fmt.Sprintf("content type %q", e.ctype)
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
		return statusError{code: resp.StatusCode, ctype: ctype}
	}
	_ = raw.SetDeadline(time.Time{})
	onConnect()
	return c.read(resp.Body, onEvent)
}

// read parses the event stream. Lines end in LF or CRLF (a lone CR, legal
// but unused by any known server, is not supported); event types and retry
// are ignored.
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
