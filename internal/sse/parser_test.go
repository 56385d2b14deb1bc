package sse

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func msg(data string) Event { return Event{Data: data, HasData: true, Retry: -1} }

func typed(typ, data string) Event { return Event{Type: typ, Data: data, HasData: true, Retry: -1} }

func withID(id string, e Event) Event {
	e.ID, e.HasID = id, true
	return e
}

func retryOnly(v int64) Event { return Event{Retry: v} }

func idOnly(id string) Event { return Event{ID: id, HasID: true, Retry: -1} }

// feedChunks parses chunks in order with one parser.
func feedChunks(p *Parser, chunks ...[]byte) ([]Event, error) {
	var got []Event
	emit := func(e Event) { got = append(got, e) }
	for _, c := range chunks {
		if err := p.Feed(c, emit); err != nil {
			return got, err
		}
	}
	return got, nil
}

func parseString(t *testing.T, s string) []Event {
	t.Helper()
	got, err := feedChunks(NewParser(DefaultMaxEventBytes), []byte(s))
	if err != nil {
		t.Fatalf("Feed(%q): %v", s, err)
	}
	return got
}

func assertEvents(t *testing.T, how string, got, want []Event) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %+v\n want %+v", how, got, want)
	}
}

var parserCases = []struct {
	name  string
	input string
	want  []Event
}{
	{"LF", "data: a\n\n", []Event{msg("a")}},
	{"CR", "data: a\r\r", []Event{msg("a")}},
	{"CRLF", "data: a\r\n\r\n", []Event{msg("a")}},
	{"mixed line ends", "data: a\rdata: b\ndata: c\r\n\n", []Event{msg("a\nb\nc")}},
	{"LF then CR is two line ends", "data: a\n\rdata: b\n\n", []Event{msg("a"), msg("b")}},
	{"CR CR LF is a line end then a blank line", "data: a\r\r\ndata: b\n\n", []Event{msg("a"), msg("b")}},
	{"several events", "data: 1\n\ndata: 2\n\n\n\ndata: 3\n\n", []Event{msg("1"), msg("2"), msg("3")}},

	{"BOM stripped", "\xEF\xBB\xBFdata: a\n\n", []Event{msg("a")}},
	{"only one BOM stripped", "\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n", []Event{msg("b")}},
	{"BOM after start is content", "data: a\n\n\xEF\xBB\xBFdata: b\n\n", []Event{msg("a")}},
	{"BOM prefix is content", "\xEF\xBBdata: a\n\ndata: b\n\n", []Event{msg("b")}},
	{"BOM prefix then line end", "\xEF\xBB\ndata: b\n\n", []Event{msg("b")}},
	{"BOM then blank line", "\xEF\xBB\xBF\ndata: b\n\n", []Event{msg("b")}},

	{"comments ignored", ": hi\ndata: a\n:\n: data: b\n\n", []Event{msg("a")}},
	{"comment-only block dropped", ": ping\n\n:\n\n", nil},

	{"field without colon", "data\n\n", []Event{msg("")}},
	{"two empty data lines", "data\ndata\n\n", []Event{msg("\n")}},
	{"one leading space stripped", "data:  a\n\n", []Event{msg(" a")}},
	{"no space after colon", "data:a\n\n", []Event{msg("a")}},
	{"only a space after colon", "data: \n\n", []Event{msg("")}},
	{"tab kept", "data:\ta\n\n", []Event{msg("\ta")}},
	{"colon in value", "data: a: b\n\n", []Event{msg("a: b")}},
	{"trailing spaces kept", "data: a  \n\n", []Event{msg("a  ")}},

	{"multi-line data", "data: a\ndata: b\ndata\n\n", []Event{msg("a\nb\n")}},
	{"event type", "event: add\ndata: x\n\n", []Event{typed("add", "x")}},
	{"last event type wins", "event: a\nevent: b\ndata: x\n\n", []Event{typed("b", "x")}},
	{"empty event type is message", "event: a\nevent\ndata: x\n\n", []Event{msg("x")}},
	{"event type reset per block", "event: a\n\ndata: x\n\n", []Event{msg("x")}},
	{"event type only is not observable", "event: add\n\n", nil},
	{"event type after data", "data: x\nevent: late\n\n", []Event{typed("late", "x")}},

	{"id with data", "id: 1\ndata: x\n\n", []Event{withID("1", msg("x"))}},
	{"id only", "id: 7\n\n", []Event{idOnly("7")}},
	{"last id wins", "id: 1\nid: 2\ndata: x\n\n", []Event{withID("2", msg("x"))}},
	{"empty id resets", "id\n\nid:\n\nid: \n\n", []Event{idOnly(""), idOnly(""), idOnly("")}},
	{"id with NUL ignored", "id: 1\nid: a\x00b\ndata: x\n\n", []Event{withID("1", msg("x"))}},
	{"only id with NUL not observable", "id: \x00\n\n", nil},
	{"id not carried to next block", "id: 1\n\ndata: x\n\n", []Event{idOnly("1"), msg("x")}},
	{"id with spaces", "id:  a b \n\n", []Event{idOnly(" a b ")}},

	{"retry", "retry: 1000\n\n", []Event{retryOnly(1000)}},
	{"retry zero", "retry: 0\n\n", []Event{retryOnly(0)}},
	{"retry leading zeros decimal", "retry: 03000\n\n", []Event{retryOnly(3000)}},
	{"retry with data", "retry: 5\ndata: x\n\n", []Event{{Data: "x", HasData: true, Retry: 5}}},
	{"retry non-digit ignored", "retry: 10a\n\n", nil},
	{"retry negative ignored", "retry: -1\n\n", nil},
	{"retry plus ignored", "retry: +5\n\n", nil},
	{"retry two spaces ignored", "retry:  5\n\n", nil},
	{"retry empty ignored", "retry\n\nretry:\n\n", nil},
	{"retry non-ASCII digit ignored", "retry: \u0661\n\n", nil},
	{"retry max int64", "retry: 9223372036854775807\n\n", []Event{retryOnly(9223372036854775807)}},
	{"retry overflow ignored", "retry: 9223372036854775808\n\n", nil},
	{"retry huge ignored", "retry: 99999999999999999999999\n\n", nil},
	{"invalid retry keeps earlier", "retry: 1\nretry: x\n\n", []Event{retryOnly(1)}},
	{"last retry wins", "retry: 1\nretry: 2\n\n", []Event{retryOnly(2)}},

	{"unknown fields ignored", "foo: bar\nDATA: x\n data: y\ndata : z\nretry2: 1\n\n", nil},
	{"unknown field with data", "foo: bar\ndata: x\n\n", []Event{msg("x")}},

	{"unterminated last block dropped", "data: a\n\ndata: b\n", []Event{msg("a")}},
	{"unterminated last line dropped", "data: a\n\ndata: b", []Event{msg("a")}},
	{"unterminated id dropped", "id: 1\n", nil},

	{"invalid UTF-8 passed through", "data: \xff\xfe\x80\nid: \xc3\nevent: \xe2\x82\n\n",
		[]Event{withID("\xc3", typed("\xe2\x82", "\xff\xfe\x80"))}},
	{"multibyte runes", "data: héllo ☃ 𝄞\n\n", []Event{msg("héllo ☃ 𝄞")}},
	{"everything", "\xEF\xBB\xBF: open\r\nretry: 250\rid: 42\nevent: upd\ndata: {\"a\":1}\r\ndata:\r\n\r\n",
		[]Event{{ID: "42", HasID: true, Type: "upd", Data: "{\"a\":1}\n", HasData: true, Retry: 250}}},
}

func TestParserCases(t *testing.T) {
	for _, tc := range parserCases {
		t.Run(tc.name, func(t *testing.T) {
			input := []byte(tc.input)
			got := parseString(t, tc.input)
			assertEvents(t, "whole", got, tc.want)
			assertEvents(t, "reference", referenceParse(input), tc.want)

			// Every split into two chunks, including empty ones, and one byte at
			// a time: the result must not depend on how the stream arrives.
			for i := 0; i <= len(input); i++ {
				got, err := feedChunks(NewParser(DefaultMaxEventBytes), input[:i], nil, input[i:])
				if err != nil {
					t.Fatalf("split at %d: %v", i, err)
				}
				assertEvents(t, fmt.Sprintf("split at %d", i), got, tc.want)
			}
			var bytewise [][]byte
			for i := range input {
				bytewise = append(bytewise, input[i:i+1])
			}
			got, err := feedChunks(NewParser(DefaultMaxEventBytes), bytewise...)
			if err != nil {
				t.Fatalf("byte by byte: %v", err)
			}
			assertEvents(t, "byte by byte", got, tc.want)
		})
	}
}

func TestCRAtChunkEnd(t *testing.T) {
	p := NewParser(DefaultMaxEventBytes)
	var got []Event
	emit := func(e Event) { got = append(got, e) }

	// The CR completes the blank line at once: the event must not wait for
	// the next chunk, or a stream using CRLF would lag one chunk behind.
	if err := p.Feed([]byte("data: a\r\n\r"), emit); err != nil {
		t.Fatal(err)
	}
	assertEvents(t, "after CR", got, []Event{msg("a")})
	if p.Lines() != 2 {
		t.Fatalf("Lines() = %d after two lines, want 2", p.Lines())
	}
	// This LF belongs to the CR above; were it taken as a line end of its
	// own, it would dispatch nothing visible but count a line, and the
	// following "data: b" block would still parse, so check the count too.
	if err := p.Feed([]byte("\ndata: b\r"), emit); err != nil {
		t.Fatal(err)
	}
	if p.Lines() != 3 {
		t.Fatalf("Lines() = %d, want 3: CR then LF across chunks must be one line end", p.Lines())
	}
	// A CR after a chunk-final CR is a second line end: it dispatches.
	if err := p.Feed([]byte("\r"), emit); err != nil {
		t.Fatal(err)
	}
	assertEvents(t, "after CR CR", got, []Event{msg("a"), msg("b")})
	// Only one LF is swallowed.
	if err := p.Feed([]byte("\n\ndata: c\n\n"), emit); err != nil {
		t.Fatal(err)
	}
	assertEvents(t, "end", got, []Event{msg("a"), msg("b"), msg("c")})
	if p.Lines() != 7 {
		t.Fatalf("Lines() = %d, want 7", p.Lines())
	}
}

func TestCRLFSplitInsideData(t *testing.T) {
	// If the LF after a chunk-final CR were a line end of its own, the
	// empty line would dispatch "a" alone and "b" as a second event.
	got, err := feedChunks(NewParser(DefaultMaxEventBytes),
		[]byte("data: a\r"), []byte("\ndata: b\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, "events", got, []Event{msg("a\nb")})
}

func TestBOMSplitAcrossChunks(t *testing.T) {
	for _, chunks := range [][]string{
		{"\xEF", "\xBB", "\xBF", "data: a\n\n"},
		{"\xEF\xBB", "\xBFdata: a\n\n"},
		{"\xEF", "", "\xBB\xBFdata: a\n\n"},
		{"", "\xEF\xBB\xBFd", "ata: a\n\n"},
	} {
		var in [][]byte
		for _, c := range chunks {
			in = append(in, []byte(c))
		}
		got, err := feedChunks(NewParser(DefaultMaxEventBytes), in...)
		if err != nil {
			t.Fatal(err)
		}
		assertEvents(t, fmt.Sprintf("%q", chunks), got, []Event{msg("a")})
	}
	// A held-back BOM prefix that turns out to be content must be parsed as
	// the start of the first line.
	got, err := feedChunks(NewParser(DefaultMaxEventBytes), []byte("\xEF\xBB"), []byte("\n\ndata: a\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, "held back prefix", got, []Event{msg("a")})
}

func TestResetAcceptsBOMAgain(t *testing.T) {
	p := NewParser(DefaultMaxEventBytes)
	if _, err := feedChunks(p, []byte("\xEF\xBB\xBFdata: a\n\ndata: pending")); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	got, err := feedChunks(p, []byte("\xEF\xBB\xBFdata: b\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	assertEvents(t, "after Reset", got, []Event{msg("b")})
}

func TestLinesCountsHeartbeats(t *testing.T) {
	p := NewParser(DefaultMaxEventBytes)
	steps := []struct {
		chunk string
		want  uint64
	}{
		{": ping\n", 1},
		{": pi", 1},
		{"ng\r", 2},
		{"\n", 2},
		{"\n", 3},
		{"data: x", 3},
		{"\r\n\r\n", 5},
	}
	for _, s := range steps {
		if err := p.Feed([]byte(s.chunk), func(Event) {}); err != nil {
			t.Fatal(err)
		}
		if got := p.Lines(); got != s.want {
			t.Fatalf("after %q Lines() = %d, want %d", s.chunk, got, s.want)
		}
	}
}

func TestLargeDataLine(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	stream := append(append([]byte("data: "), payload...), "\n\n"...)
	p := NewParser(DefaultMaxEventBytes)
	var chunks [][]byte
	for b := stream; len(b) > 0; {
		n := min(len(b), 4096)
		chunks = append(chunks, b[:n])
		b = b[n:]
	}
	got, err := feedChunks(p, chunks...)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Data != string(payload) {
		t.Fatalf("got %d events, want one carrying the 1 MiB line", len(got))
	}
	// Whole, too: the line is then parsed in place without the carry buffer.
	got, err = feedChunks(NewParser(DefaultMaxEventBytes), stream)
	if err != nil || len(got) != 1 || got[0].Data != string(payload) {
		t.Fatalf("whole: %d events, err %v", len(got), err)
	}
}

func TestTooLarge(t *testing.T) {
	const limit = 1024
	line := func(n int) string { return "data: " + strings.Repeat("x", n-len("data: ")) }
	tests := []struct {
		name    string
		chunks  []string
		wantErr bool
		want    []Event
	}{
		{"line at limit", []string{line(limit) + "\n\n"}, false, []Event{msg(strings.Repeat("x", limit-6))}},
		{"line at limit split", []string{line(limit)[:500], line(limit)[500:] + "\n\n"}, false, []Event{msg(strings.Repeat("x", limit-6))}},
		{"line over limit in one chunk", []string{"data: a\n\n" + line(limit+1) + "\n\n"}, true, []Event{msg("a")}},
		{"line over limit split", []string{line(limit + 1)[:700], line(limit + 1)[700:] + "\n"}, true, nil},
		{"unterminated line over limit", []string{line(limit + 1)}, true, nil},
		{"block data over limit", []string{strings.Repeat("data: 0123456789\n", 100) + "\n"}, true, nil},
		// 7 lines of 127 bytes, one of 128 and 7 joining LFs: exactly 1024.
		{"block data at limit", []string{"data: " + strings.Repeat("y", 128) + "\n" + strings.Repeat("data: "+strings.Repeat("y", 127)+"\n", 7) + "\n"}, false,
			[]Event{msg(strings.Repeat("y", 128) + strings.Repeat("\n"+strings.Repeat("y", 127), 7))}},
		{"block data one over limit", []string{"data: " + strings.Repeat("y", 129) + "\n" + strings.Repeat("data: "+strings.Repeat("y", 127)+"\n", 7) + "\n"}, true, nil},
		{"comments do not accumulate", []string{strings.Repeat(": "+strings.Repeat("z", 100)+"\n", 100) + "data: ok\n\n"}, false, []Event{msg("ok")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(limit)
			var in [][]byte
			for _, c := range tc.chunks {
				in = append(in, []byte(c))
			}
			got, err := feedChunks(p, in...)
			assertEvents(t, "events", got, tc.want)
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			// The parser stays failed: the caller must reconnect.
			if err := p.Feed([]byte("\n\ndata: x\n\n"), func(Event) { t.Fatal("emit after failure") }); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Feed after failure = %v, want ErrTooLarge", err)
			}
			p.Reset()
			got, err = feedChunks(p, []byte("data: again\n\n"))
			if err != nil {
				t.Fatalf("after Reset: %v", err)
			}
			assertEvents(t, "after Reset", got, []Event{msg("again")})
		})
	}
}

func TestTooLargeBoundsMemory(t *testing.T) {
	const limit = 1 << 20
	p := NewParser(limit)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	var fed, maxCap int
	var err error
	for fed < 16*limit {
		if err = p.Feed(chunk, func(Event) {}); err != nil {
			break
		}
		fed += len(chunk)
		maxCap = max(maxCap, cap(p.partial))
	}
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("fed %d bytes without a line end: err = %v, want ErrTooLarge", fed, err)
	}
	if fed > limit {
		t.Fatalf("accepted %d bytes of one line, limit %d", fed, limit)
	}
	if maxCap > limit {
		t.Fatalf("carry buffer grew to %d bytes, limit %d", maxCap, limit)
	}
	if p.partial != nil || p.data != nil {
		t.Fatal("failed parser still holds its buffers")
	}
}

func TestRetainedBuffersShrink(t *testing.T) {
	p := NewParser(DefaultMaxEventBytes)
	big := "data: " + strings.Repeat("x", 1<<20)
	if _, err := feedChunks(p, []byte(big[:100]), []byte(big[100:]+"\n\n")); err != nil {
		t.Fatal(err)
	}
	if cap(p.partial) > retainBytes || cap(p.data) > retainBytes {
		t.Fatalf("parser keeps %d+%d bytes after a large event", cap(p.partial), cap(p.data))
	}
}

func TestNewParserDefaultLimit(t *testing.T) {
	for _, n := range []int{0, -5} {
		if p := NewParser(n); p.max != DefaultMaxEventBytes {
			t.Fatalf("NewParser(%d) limit = %d, want %d", n, p.max, DefaultMaxEventBytes)
		}
	}
}

func TestParserAllocations(t *testing.T) {
	p := NewParser(DefaultMaxEventBytes)
	// Lines that complete no observable block must not allocate once the
	// parser is warm: heartbeats and unknown fields are the common case on
	// idle streams.
	quiet := []byte(": ping\nevent: x\nfoo: bar\n\n: ping\r\n\r\n")
	noop := func(Event) {}
	if err := p.Feed(quiet, noop); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = p.Feed(quiet, noop) }); n != 0 {
		t.Fatalf("quiet lines: %v allocations per run, want 0", n)
	}

	// An event costs its Data and, when new, its ID; a repeated type is
	// shared.
	var stream []byte
	const events = 50
	for i := range events {
		stream = fmt.Appendf(stream, "id: %d\nevent: update\ndata: {\"n\":%d}\n\n", i, i)
	}
	if err := p.Feed(stream, noop); err != nil {
		t.Fatal(err)
	}
	perEvent := testing.AllocsPerRun(20, func() { _ = p.Feed(stream, noop) }) / events
	if perEvent > 2 {
		t.Fatalf("%.2f allocations per event, want at most 2", perEvent)
	}
}
