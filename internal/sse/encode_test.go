package sse

import (
	"strings"
	"testing"
)

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		name string
		in   Event
		want string
	}{
		{"data", msg("hello"), "data: hello\n\n"},
		{"empty data", msg(""), "data\n\n"},
		{"multi-line data", msg("a\n\nb\n"), "data: a\ndata\ndata: b\ndata\n\n"},
		{"leading space kept", msg(" a"), "data:  a\n\n"},
		{"full", Event{ID: "7", HasID: true, Type: "upd", Data: "x", HasData: true, Retry: 1500},
			"id: 7\nevent: upd\nretry: 1500\ndata: x\n\n"},
		{"empty id resets", idOnly(""), "id\n\n"},
		{"id only", idOnly("9"), "id: 9\n\n"},
		{"retry only", retryOnly(0), "retry: 0\n\n"},
		{"type without data dropped", Event{Type: "t", Retry: 5}, "retry: 5\n\n"},
		{"data ignored without HasData", Event{Data: "x", ID: "1", HasID: true, Retry: -1}, "id: 1\n\n"},
		{"id ignored without HasID", Event{ID: "1", Data: "x", HasData: true, Retry: -1}, "data: x\n\n"},
		{"nothing observable", Event{Retry: -1}, "\n"},
		{"CR and CRLF in data split lines", msg("a\rb\r\nc\n\rd"), "data: a\ndata: b\ndata: c\ndata\ndata: d\n\n"},
		{"CR LF NUL dropped from id", withID("a\r\nb\x00c", msg("x")), "id: abc\ndata: x\n\n"},
		{"CR LF dropped from type", typed("a\rb\nc", "x"), "event: abc\ndata: x\n\n"},
		{"invalid UTF-8 kept", withID("\xc3", typed("\xe2", "\xff")), "id: \xc3\nevent: \xe2\ndata: \xff\n\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendEvent([]byte("prefix|"), tc.in)
			if string(got) != "prefix|"+tc.want {
				t.Fatalf("AppendEvent(%+v) = %q, want %q", tc.in, got, "prefix|"+tc.want)
			}
		})
	}
}

func TestAppendEventRoundTrip(t *testing.T) {
	// Every event the parser produces must come back unchanged.
	var stream strings.Builder
	for _, tc := range parserCases {
		stream.WriteString(tc.input)
		// Close any block a case left open so the cases stay independent.
		stream.WriteString("\n\n")
	}
	events := parseString(t, stream.String())
	if len(events) < 40 {
		t.Fatalf("only %d events from the cases; the round trip would prove little", len(events))
	}
	var enc []byte
	for _, e := range events {
		enc = AppendEvent(enc, e)
	}
	assertEvents(t, "re-parsed", parseString(t, string(enc)), events)
}

func TestAppendComment(t *testing.T) {
	tests := []struct{ text, want string }{
		{"", ":\n\n"},
		{"ping", ": ping\n\n"},
		{"a\r\nb\rc\nd", ": a  b c d\n\n"},
	}
	for _, tc := range tests {
		got := AppendComment([]byte("x"), tc.text)
		if string(got) != "x"+tc.want {
			t.Fatalf("AppendComment(%q) = %q, want %q", tc.text, got, "x"+tc.want)
		}
		// A comment must not disturb a client: nothing observable, and the
		// event after it intact.
		evs, err := feedChunks(NewParser(DefaultMaxEventBytes), append(got[1:], "data: b\n\n"...))
		if err != nil {
			t.Fatal(err)
		}
		assertEvents(t, "after comment", evs, []Event{msg("b")})
	}
}

func TestObserver(t *testing.T) {
	o := Observer{Retry: -1}
	steps := []struct {
		in       Event
		want     Message
		dispatch bool
		wantID   string
		retry    int64
	}{
		{msg("a"), Message{Type: "message", Data: "a"}, true, "", -1},
		{idOnly("1"), Message{}, false, "1", -1},
		// lastEventId persists across blocks that carry no id.
		{typed("t", "b"), Message{Type: "t", Data: "b", LastEventID: "1"}, true, "1", -1},
		{withID("2", msg("c")), Message{Type: "message", Data: "c", LastEventID: "2"}, true, "2", -1},
		{retryOnly(300), Message{}, false, "2", 300},
		{Event{HasID: true, Retry: -1}, Message{}, false, "", 300},
		{msg("d"), Message{Type: "message", Data: "d"}, true, "", 300},
	}
	for i, s := range steps {
		got, ok := o.Apply(s.in)
		if ok != s.dispatch || got != s.want {
			t.Fatalf("step %d: Apply(%+v) = %+v, %v; want %+v, %v", i, s.in, got, ok, s.want, s.dispatch)
		}
		if o.LastEventID != s.wantID || o.Retry != s.retry {
			t.Fatalf("step %d: observer %+v, want id %q retry %d", i, o, s.wantID, s.retry)
		}
	}
}

func TestObservable(t *testing.T) {
	tests := []struct {
		e    Event
		want bool
	}{
		{Event{Retry: -1}, false},
		{Event{Type: "x", Retry: -1}, false},
		{msg(""), true},
		{idOnly(""), true},
		{retryOnly(0), true},
	}
	for _, tc := range tests {
		if got := tc.e.Observable(); got != tc.want {
			t.Fatalf("%+v.Observable() = %v, want %v", tc.e, got, tc.want)
		}
	}
}
