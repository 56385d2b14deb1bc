package ssetest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/sse"
)

// Client is a real HTTP client reading one event stream over its own
// connection; a goroutine parses the body and queues the blocks as the
// parser emits them (up to ClientBuffer ahead of the test).
type Client struct {
	// Resp is the stream's response; its body belongs to the client.
	Resp *http.Response

	events chan sse.Event
	done   chan struct{}
	err    error
	cancel context.CancelFunc
	gate   <-chan struct{}
}

// ClientBuffer is how many blocks a Client queues before its reader stops
// reading (and the server sees a slow client).
const ClientBuffer = 4096

// HTTPClient is what Dial and DialStatus connect with: a connection per
// stream and bodies as the server sent them.
var HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}

// Dial opens a stream with the extra request headers and fails the test
// unless it answers 200. The client is closed when the test ends.
func Dial(t testing.TB, url string, header http.Header) *Client {
	t.Helper()
	c, resp, err := DialStatus(url, header)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if c == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, body)
	}
	t.Cleanup(c.Close)
	return c
}

// DialStatus opens a stream. For a 200 answer it returns a client reading
// it; for any other it returns the response, body unread, and a nil client.
// The caller closes whichever it gets.
func DialStatus(url string, header http.Header) (*Client, *http.Response, error) {
	return DialWith(HTTPClient, url, header, nil)
}

// DialWith is DialStatus through hc (another source address, TLS, say). A
// non-nil gate holds the client's reader until it is closed, so that the
// stream backs up at the server.
func DialWith(hc *http.Client, url string, header http.Header, gate <-chan struct{}) (*Client, *http.Response, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// The refusal's body stays readable until the caller closes it.
		resp.Body = cancelOnClose{resp.Body, cancel}
		return nil, resp, nil
	}
	c := &Client{Resp: resp, events: make(chan sse.Event, ClientBuffer), done: make(chan struct{}), cancel: cancel, gate: gate}
	go c.read()
	return c, resp, nil
}

// Read reads resp, an event stream opened some other way (over TLS, or by
// a client a test configured itself), as a Client; Close closes its body.
func Read(resp *http.Response) *Client {
	c := &Client{Resp: resp, events: make(chan sse.Event, ClientBuffer), done: make(chan struct{}), cancel: func() {}}
	go c.read()
	return c
}

// cancelOnClose is a body whose Close also ends its request.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func (c *Client) read() {
	// done closes before events, so that Err is settled for whoever sees
	// events close.
	defer close(c.events)
	defer close(c.done)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-c.Resp.Request.Context().Done():
			return
		}
	}
	r := sse.NewReader(bufio.NewReaderSize(c.Resp.Body, 64<<10), sse.DefaultMaxEventBytes)
	for {
		ev, err := r.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				c.err = err
			}
			return
		}
		c.events <- ev
	}
}

// Close disconnects the client and waits for its reader. It may be called
// more than once.
func (c *Client) Close() {
	c.cancel()
	c.Resp.Body.Close()
	<-c.done
}

// Events is every block the client reads (data, id-only and retry-only
// ones), closed when the stream ends.
func (c *Client) Events() <-chan sse.Event { return c.events }

// Err is why the stream ended, when it did not end cleanly (EOF or Close).
// It is set once Events is closed.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Next returns the next block with data (id-only and retry-only blocks
// are skipped), and fails the test if none comes within d or the stream
// ends.
func (c *Client) Next(t testing.TB, d time.Duration) sse.Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				t.Fatalf("stream ended (err %v) while waiting for an event", c.Err())
			}
			if ev.HasData {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no event within %s", d)
		}
	}
}

// NextBlock returns the next block of any kind (id-only and retry-only
// blocks included), and fails the test if none comes within d.
func (c *Client) NextBlock(t testing.TB, d time.Duration) sse.Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatalf("stream ended (err %v) while waiting for a block", c.Err())
		}
		return ev
	case <-timer.C:
		t.Fatalf("no block within %s", d)
	}
	return sse.Event{}
}

// IDs reads n events with data, each within d of the one before, and
// returns their ids.
func (c *Client) IDs(t testing.TB, n int, d time.Duration) []string {
	t.Helper()
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, c.Next(t, d).ID)
	}
	return out
}

// TryIDs is IDs for goroutines other than the test's: it returns the ids
// read so far and an error instead of failing. d bounds the whole read.
func (c *Client) TryIDs(n int, d time.Duration) ([]string, error) {
	out := make([]string, 0, n)
	timer := time.NewTimer(d)
	defer timer.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return out, errors.New("stream ended early")
			}
			if ev.HasData {
				out = append(out, ev.ID)
			}
		case <-timer.C:
			return out, errors.New("timed out")
		}
	}
	return out, nil
}

// ExpectEnd waits for the server to end the stream and returns the blocks
// read before the end; it fails the test if the stream is still open
// after d.
func (c *Client) ExpectEnd(t testing.TB, d time.Duration) []sse.Event {
	t.Helper()
	var got []sse.Event
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-timer.C:
			t.Fatalf("stream still open after %s", d)
		}
	}
}
