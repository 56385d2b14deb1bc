package sse

import (
	"fmt"
	"strings"
	"testing"
)

// event200 is a typical upstream event of about 200 bytes on the wire.
func event200(i int) Event {
	data := fmt.Sprintf(`{"id":%d,"type":"article","state":"published","title":"%s"}`, i, strings.Repeat("t", 100))
	return Event{ID: fmt.Sprint(1_000_000 + i), HasID: true, Type: "update", Data: data, HasData: true, Retry: -1}
}

func BenchmarkParse200(b *testing.B) {
	const events = 1000
	var stream []byte
	for i := range events {
		stream = AppendEvent(stream, event200(i))
	}
	p := NewParser(DefaultMaxEventBytes)
	n := 0
	emit := func(Event) { n++ }
	b.SetBytes(int64(len(stream) / events))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += events {
		// Read-sized chunks, so lines cross chunk boundaries as they do live.
		for s := stream; len(s) > 0; {
			c := min(len(s), 4096)
			if err := p.Feed(s[:c], emit); err != nil {
				b.Fatal(err)
			}
			s = s[c:]
		}
	}
	if n == 0 {
		b.Fatal("no events parsed")
	}
}

func BenchmarkAppendEvent200(b *testing.B) {
	e := event200(1)
	buf := AppendEvent(nil, e)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEvent(buf[:0], e)
	}
}
