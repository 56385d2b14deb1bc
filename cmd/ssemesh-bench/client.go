package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
)

// maxLine bounds one SSE line; a longer one fails the connection rather than
// growing a buffer without limit.
const maxLine = 1 << 20

// streamConn is one HTTP/1.1 SSE connection. It is hand-rolled on a raw TCP
// connection, with one goroutine and two small buffers, because net/http's
// transport costs two extra goroutines and more buffers per connection, which
// matters at tens of thousands of clients per machine.
type streamConn struct {
	dialer      *net.Dialer
	addr        string // host:port to dial
	host        string // Host header
	requestURI  string
	timeout     time.Duration // connect and response-header timeout
	lastEventID string
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

// session connects and delivers every dispatched event's data to onEvent
// until the stream ends, fails or ctx ends. onConnect runs once the response
// headers have been accepted. It keeps lastEventID up to date for the next
// session, by WHATWG rules: an id takes effect when its event is dispatched.
func (c *streamConn) session(ctx context.Context, onConnect func(), onEvent func(data []byte)) error {
	conn, err := c.dialer.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	// Closing the connection is what unblocks a read when the run ends.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: ssemesh-bench\r\n", c.requestURI, c.host)
	if c.lastEventID != "" {
		fmt.Fprintf(&req, "Last-Event-ID: %s\r\n", c.lastEventID)
	}
	req.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(c.timeout))
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
	_ = conn.SetDeadline(time.Time{})
	onConnect()
	return c.read(resp.Body, onEvent)
}

// read parses the event stream. Lines end in LF or CRLF (a lone CR, legal
// but unused by any known server, is not supported); event types and retry
// are ignored.
func (c *streamConn) read(body io.Reader, onEvent func(data []byte)) error {
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
	var se statusError
	var ne net.Error
	switch {
	case err == nil:
		return "none"
	case errors.As(err, &se):
		return se.Error()
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
	if len(msg) > 80 {
		msg = msg[:80]
	}
	return strings.TrimSpace(msg)
}
