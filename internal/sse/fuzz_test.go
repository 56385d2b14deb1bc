package sse

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fuzzLimit maps a fuzzer-chosen selector to a size limit: mostly large, so
// the reference comparison applies, sometimes tiny, so the ErrTooLarge paths
// are explored under every split too.
func fuzzLimit(sel uint16) int {
	if sel%4 == 0 {
		return 1 + int(sel>>2)%256
	}
	return 1 << 20
}

// splitAt cuts input into chunks whose lengths come from cuts, one byte
// each (zero gives an empty chunk); the rest is the final chunk.
func splitAt(input, cuts []byte) [][]byte {
	var chunks [][]byte
	for _, c := range cuts {
		n := min(int(c), len(input))
		chunks = append(chunks, input[:n])
		input = input[n:]
	}
	return append(chunks, input)
}

func FuzzParser(f *testing.F) {
	for _, tc := range parserCases {
		f.Add([]byte(tc.input), []byte{1, 3, 0, 7}, uint16(1))
	}
	f.Add([]byte("data: a\r\n\r\n"), []byte{8}, uint16(1))
	f.Add([]byte("\xEF\xBB\xBFdata: a\n\n"), []byte{1, 1, 1}, uint16(1))
	f.Add([]byte("data: 0123456789\ndata: 0123456789\n\n"), []byte{5, 20}, uint16(4*20))

	f.Fuzz(func(t *testing.T, input, cuts []byte, sel uint16) {
		limit := fuzzLimit(sel)

		whole := NewParser(limit)
		wantEvents, wantErr := feedChunks(whole, input)

		split := NewParser(limit)
		got, err := feedChunks(split, splitAt(input, cuts)...)
		if !reflect.DeepEqual(got, wantEvents) {
			t.Fatalf("split %v changed the events:\n whole %+v\n split %+v", cuts, wantEvents, got)
		}
		if errors.Is(err, ErrTooLarge) != errors.Is(wantErr, ErrTooLarge) || (err == nil) != (wantErr == nil) {
			t.Fatalf("split %v: err %v, whole: err %v", cuts, err, wantErr)
		}
		if wantErr != nil {
			return
		}
		if whole.Lines() != split.Lines() {
			t.Fatalf("split %v: %d lines, whole: %d", cuts, split.Lines(), whole.Lines())
		}
		if limit >= len(input) {
			if ref := referenceParse(input); !reflect.DeepEqual(ref, wantEvents) && (len(ref) > 0 || len(wantEvents) > 0) {
				t.Fatalf("differs from the reference:\n parser    %+v\n reference %+v", wantEvents, ref)
			}
		}

		var enc []byte
		for _, e := range wantEvents {
			if !e.Observable() {
				t.Fatalf("emitted a block that is not observable: %+v", e)
			}
			if !e.HasData && (e.Type != "" || e.Data != "") {
				t.Fatalf("type or data without HasData: %+v", e)
			}
			enc = AppendEvent(enc, e)
		}
		again, err := feedChunks(NewParser(len(enc)+1), enc)
		if err != nil {
			t.Fatalf("re-parsing the encoding: %v", err)
		}
		if !reflect.DeepEqual(again, wantEvents) {
			t.Fatalf("re-encoding changed the events:\n before %+v\n after  %+v\n wire %q", wantEvents, again, enc)
		}
	})
}

// carried is what the wire format can carry of e, as AppendEvent documents.
func carried(e Event) Event {
	out := Event{HasID: e.HasID, HasData: e.HasData, Retry: e.Retry}
	if out.Retry < 0 {
		out.Retry = -1
	}
	if e.HasID {
		// Byte-wise, so invalid UTF-8 survives as it does on the wire.
		out.ID = dropBytes(e.ID, "\r\n\x00")
	}
	if e.HasData {
		out.Type = dropBytes(e.Type, "\r\n")
		out.Data = strings.ReplaceAll(strings.ReplaceAll(e.Data, "\r\n", "\n"), "\r", "\n")
	}
	return out
}

func dropBytes(s, set string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(set, s[i]) < 0 {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("1", true, "update", "line 1\nline 2", true, int64(-1))
	f.Add("", true, "", "", true, int64(0))
	f.Add("", false, "ignored", "", false, int64(3000))
	f.Add("a\x00b", true, "t\r\n", "a\rb\r\nc\n", true, int64(-7))
	f.Add(" lead", true, " sp", " \n ", true, int64(9223372036854775807))
	f.Add("\xc3", true, "\xff", "\xe2\x82\n\xac", true, int64(1))
	f.Add("x", false, "", "", false, int64(-1))

	f.Fuzz(func(t *testing.T, id string, hasID bool, typ, data string, hasData bool, retry int64) {
		in := Event{ID: id, HasID: hasID, Type: typ, Data: data, HasData: hasData, Retry: retry}
		want := carried(in)
		enc := AppendEvent(nil, in)
		got, err := feedChunks(NewParser(len(enc)+1), enc)
		if err != nil {
			t.Fatalf("parsing %q: %v", enc, err)
		}
		if !want.Observable() {
			if len(got) != 0 {
				t.Fatalf("%+v encoded as %q gave %+v, want nothing", in, enc, got)
			}
			return
		}
		if len(got) != 1 || got[0] != want {
			t.Fatalf("%+v encoded as %q gave %+v, want %+v", in, enc, got, want)
		}
		// Canonical: encoding what was parsed gives the same bytes.
		if again := AppendEvent(nil, got[0]); string(again) != string(enc) {
			t.Fatalf("encoding is not canonical: %q then %q", enc, again)
		}
	})
}
