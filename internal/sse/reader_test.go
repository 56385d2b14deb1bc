package sse

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func readAll(r *Reader) ([]Event, error) {
	var got []Event
	for {
		e, err := r.Next()
		if err != nil {
			return got, err
		}
		got = append(got, e)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReader(t *testing.T) {
	const stream = "id: 1\ndata: a\n\n: ping\n\ndata: b\r\n\r\ndata: unterminated\n"
	want := []Event{withID("1", msg("a")), msg("b")}
	boom := errors.New("connection reset")
	tests := []struct {
		name    string
		src     io.Reader
		want    []Event
		wantErr error
	}{
		{"whole", strings.NewReader(stream), want, io.EOF},
		{"one byte reads", iotest.OneByteReader(strings.NewReader(stream)), want, io.EOF},
		{"data with EOF", iotest.DataErrReader(strings.NewReader(stream)), want, io.EOF},
		{"half reads", iotest.HalfReader(strings.NewReader(stream)), want, io.EOF},
		{"read error after events", io.MultiReader(strings.NewReader(stream), iotest.ErrReader(boom)), want, boom},
		{"timeout error", iotest.TimeoutReader(strings.NewReader(stream)), want, iotest.ErrTimeout},
		{"no progress", zeroReader{}, nil, io.ErrNoProgress},
		{"too large", strings.NewReader("data: ok\n\ndata: " + strings.Repeat("x", 100) + "\n\n"), []Event{msg("ok")}, ErrTooLarge},
		{"empty", strings.NewReader(""), nil, io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			limit := DefaultMaxEventBytes
			if tc.wantErr == ErrTooLarge {
				limit = 64
			}
			r := NewReader(tc.src, limit)
			got, err := readAll(r)
			assertEvents(t, "events", got, tc.want)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == io.EOF && err != io.EOF {
				t.Fatalf("end of stream must be io.EOF itself, got %#v", err)
			}
			// The error is sticky.
			if _, again := r.Next(); !errors.Is(again, tc.wantErr) {
				t.Fatalf("second Next after end = %v, want %v", again, tc.wantErr)
			}
		})
	}
}

func TestReaderLines(t *testing.T) {
	r := NewReader(strings.NewReader(": a\n: b\n\ndata: x\n\n"), 0)
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if r.Lines() != 5 {
		t.Fatalf("Lines() = %d, want 5", r.Lines())
	}
}
