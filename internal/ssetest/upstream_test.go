package ssetest

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ssemesh/ssemesh/internal/sse"
)

const ioWait = 5 * time.Second

// TestUpstreamAnswers plays one response per case to a plain HTTP client
// and checks the status, headers and body on the wire.
func TestUpstreamAnswers(t *testing.T) {
	tests := []struct {
		name   string
		resp   Response
		status int
		ctype  string // "-": none
		header map[string]string
		body   string
	}{
		{"event stream by default", Response{Body: []string{"data: a\n\n", "data: b\n\n"}}, 200, "text/event-stream", map[string]string{"Cache-Control": "no-cache"}, "data: a\n\ndata: b\n\n"},
		{"own content type", Response{Header: http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, Body: []string{"data: x\n\n"}}, 200, "text/event-stream; charset=utf-8", nil, "data: x\n\n"},
		{"no content type at all", Response{Header: http.Header{"Content-Type": nil}, Body: []string{"<html>"}}, 200, "-", nil, "<html>"},
		{"refusal with headers", Response{Status: 503, Header: http.Header{"Retry-After": {"7"}, "X-Ssemesh-Error": {"busy"}}, Body: []string{"busy\n"}}, 503, "-", map[string]string{"Retry-After": "7", "X-Ssemesh-Error": "busy"}, "busy\n"},
		{"204", Response{Status: 204}, 204, "-", nil, ""},
		{"handler", Response{Handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }}, 404, "text/plain; charset=utf-8", nil, "404 page not found\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := Serve(t, Always(tc.resp))
			resp, err := http.Get(u.URL + "/s")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			ctype := resp.Header.Get("Content-Type")
			if _, ok := resp.Header["Content-Type"]; !ok {
				ctype = "-"
			}
			if resp.StatusCode != tc.status || ctype != tc.ctype || string(body) != tc.body {
				t.Fatalf("answer %d %q %q, want %d %q %q", resp.StatusCode, ctype, body, tc.status, tc.ctype, tc.body)
			}
			for k, v := range tc.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if u.Hits() != 1 || u.PathHits("/s") != 1 || u.PathHits("/t") != 0 {
				t.Fatalf("hits %d, on /s %d, on /t %d; want 1, 1, 0", u.Hits(), u.PathHits("/s"), u.PathHits("/t"))
			}
		})
	}
}

// TestUpstreamSteps is a back end that refuses before it answers, the last
// step repeating.
func TestUpstreamSteps(t *testing.T) {
	u := Serve(t, Steps(Response{Status: 503}, Response{Status: 500}, Response{Body: []string{Data("1", "x")}}))
	var got []int
	for range 5 {
		resp, err := http.Get(u.URL + "/s")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got = append(got, resp.StatusCode)
	}
	if want := []int{503, 500, 200, 200, 200}; !slices.Equal(got, want) || u.Hits() != 5 {
		t.Fatalf("statuses %v after %d hits, want %v after 5", got, u.Hits(), want)
	}
}

// TestUpstreamAndClient plays scripts to the kit's client: gates, holds,
// the end of a stream, ids and the Last-Event-ID record.
func TestUpstreamAndClient(t *testing.T) {
	blocks := []string{
		Data("1", "a"),
		"id: 2\n\n",     // id only
		"retry: 50\n\n", // retry only
		Data("3", "b"),
		": comment\n\n",
		Data("", "c"),
	}
	tests := []struct {
		name string
		hold bool
		gate bool // the body waits for a gate
	}{
		{"ends", false, false},
		{"held", true, false},
		{"gated and held", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g Gates
			u := Serve(t, func(r Request) Response {
				resp := Response{Body: blocks, Hold: tc.hold}
				if tc.gate && r.PathN == 0 {
					resp.Gate = g.Get(r.URL.Path)
				}
				return resp
			})
			c := Dial(t, u.URL+"/s", http.Header{"Last-Event-Id": {"0"}})
			if c.Resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("content type %q", c.Resp.Header.Get("Content-Type"))
			}
			if tc.gate {
				select {
				case ev := <-c.Events():
					t.Fatalf("a gated body sent %+v", ev)
				case <-time.After(50 * time.Millisecond):
				}
				g.Open("/s")
			}
			if ev := c.Next(t, ioWait); ev.ID != "1" || ev.Data != "a" {
				t.Fatalf("first event %+v", ev)
			}
			if ev := c.NextBlock(t, ioWait); !ev.HasID || ev.ID != "2" || ev.HasData {
				t.Fatalf("id-only block read as %+v", ev)
			}
			// Next skips the retry-only block.
			if got := c.IDs(t, 2, ioWait); !slices.Equal(got, []string{"3", ""}) {
				t.Fatalf("ids %q", got)
			}
			if tc.hold {
				f := &fakeT{}
				if msg := f.run(func(tb testing.TB) { c.ExpectEnd(tb, 50*time.Millisecond) }); msg != "stream still open after 50ms" {
					t.Fatalf("ExpectEnd on a held stream failed with %q", msg)
				}
				if msg := f.run(func(tb testing.TB) { c.Next(tb, 20*time.Millisecond) }); msg != "no event within 20ms" {
					t.Fatalf("Next on a quiet stream failed with %q", msg)
				}
				c.Close()
			} else {
				if rest := c.ExpectEnd(t, ioWait); len(rest) != 0 {
					t.Fatalf("blocks after the last: %+v", rest)
				}
				if c.Err() != nil {
					t.Fatalf("a clean end reports %v", c.Err())
				}
				f := &fakeT{}
				if msg := f.run(func(tb testing.TB) { c.Next(tb, ioWait) }); !strings.HasPrefix(msg, "stream ended") {
					t.Fatalf("Next after the end failed with %q", msg)
				}
			}
			// A second connection, without Last-Event-ID.
			c2 := Dial(t, u.URL+"/s", nil)
			if got, err := c2.TryIDs(1, ioWait); err != nil || !slices.Equal(got, []string{"1"}) {
				t.Fatalf("TryIDs = %q, %v", got, err)
			}
			if got := u.LastEventIDs("/s"); !slices.Equal(got, []string{"0", "<none>"}) {
				t.Fatalf("Last-Event-IDs %q", got)
			}
			reqs := u.Requests()
			if len(reqs) != 2 || reqs[1].N != 1 || reqs[1].PathN != 1 {
				t.Fatalf("requests %+v", reqs)
			}
		})
	}
}

func TestClientTryIDsEnds(t *testing.T) {
	u := Serve(t, Always(Response{Body: []string{Data("1", "a")}}))
	c := Dial(t, u.URL+"/", nil)
	got, err := c.TryIDs(2, ioWait)
	if err == nil || err.Error() != "stream ended early" || !slices.Equal(got, []string{"1"}) {
		t.Fatalf("TryIDs past the end = %q, %v", got, err)
	}
	u2 := Serve(t, Always(Response{Hold: true}))
	c2 := Dial(t, u2.URL+"/", nil)
	if _, err := c2.TryIDs(1, 20*time.Millisecond); err == nil || err.Error() != "timed out" {
		t.Fatalf("TryIDs on a quiet stream: %v", err)
	}
}

func TestClientReportsParseErrors(t *testing.T) {
	huge := "data: " + strings.Repeat("x", sse.DefaultMaxEventBytes+1) + "\n\n"
	u := Serve(t, Always(Response{Body: []string{huge}}))
	c := Dial(t, u.URL+"/", nil)
	c.ExpectEnd(t, ioWait)
	if c.Err() == nil {
		t.Fatal("an oversized event ended the stream without an error")
	}
}

func TestDialStatus(t *testing.T) {
	u := Serve(t, Steps(Response{Status: 429, Header: http.Header{"Retry-After": {"1"}}, Body: []string{"slow down"}}, Response{Hold: true}))
	c, resp, err := DialStatus(u.URL+"/", nil)
	if err != nil || c != nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("DialStatus of a refusal = %v, %v, %v", c, resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "slow down" {
		t.Fatalf("refusal body %q left for the caller, want %q", body, "slow down")
	}
	f := &fakeT{}
	if msg := f.run(func(tb testing.TB) { Dial(tb, u.URL+"/", nil) }); msg != "" {
		t.Fatalf("Dial of a 200: %s", msg)
	}
	if msg := f.run(func(tb testing.TB) { Dial(tb, "http://127.0.0.1:1/", nil) }); !strings.HasPrefix(msg, "GET http://127.0.0.1:1/: ") {
		t.Fatalf("Dial of a closed port failed with %q", msg)
	}
}

// TestDialWithGate holds the reader, so events wait at the server, until
// the gate opens; HeaderGate holds the response itself.
func TestDialWithGate(t *testing.T) {
	headers := make(chan struct{})
	u := Serve(t, Always(Response{HeaderGate: headers, Body: []string{Data("1", "a")}, Hold: true}))
	type dialed struct {
		c   *Client
		err error
	}
	gate := make(chan struct{})
	got := make(chan dialed, 1)
	go func() {
		c, _, err := DialWith(HTTPClient, u.URL+"/", nil, gate)
		got <- dialed{c, err}
	}()
	Eventually(t, "the request to arrive", ioWait, func() bool { return u.Hits() == 1 })
	select {
	case d := <-got:
		t.Fatalf("answered before its header gate opened: %v", d.err)
	case <-time.After(50 * time.Millisecond):
	}
	close(headers)
	d := <-got
	if d.err != nil {
		t.Fatal(d.err)
	}
	defer d.c.Close()
	select {
	case ev := <-d.c.Events():
		t.Fatalf("a gated reader read %+v", ev)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	if ev := d.c.Next(t, ioWait); ev.ID != "1" {
		t.Fatalf("event %+v", ev)
	}
}

func TestEvents(t *testing.T) {
	got := Events(sse.Event{ID: "7", HasID: true, Type: "up", Data: "a\nb", HasData: true, Retry: 10}, sse.Event{Retry: -1, HasData: true})
	want := []string{"id: 7\nevent: up\nretry: 10\ndata: a\ndata: b\n\n", "data\n\n"}
	if !slices.Equal(got, want) {
		t.Fatalf("Events = %q, want %q", got, want)
	}
	if d := Data("", "x"); d != "data: x\n\n" {
		t.Fatalf("Data without id = %q", d)
	}
}

// TestUpstreamCloseEndsHeldStreams: closing the upstream ends a response
// it holds open, as a back end going away does.
func TestUpstreamCloseEndsHeldStreams(t *testing.T) {
	u := NewUpstream(Always(Response{Body: []string{Data("1", "a")}, Hold: true}))
	u.Start()
	c := Dial(t, u.URL+"/", nil)
	c.Next(t, ioWait)
	closed := make(chan struct{})
	go func() { defer close(closed); u.Close() }()
	select {
	case <-closed:
	case <-time.After(ioWait):
		t.Fatal("Close waited for a held response")
	}
	c.ExpectEnd(t, ioWait)
}

func TestReadAnOpenResponse(t *testing.T) {
	u := Serve(t, Always(Response{Body: []string{Data("1", "a"), Data("2", "b")}, Hold: true}))
	resp, err := http.Get(u.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	c := Read(resp)
	defer c.Close()
	if got := c.IDs(t, 2, ioWait); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("ids %q", got)
	}
}
