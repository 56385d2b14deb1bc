package sse

import (
	"errors"
	"fmt"
	"io"
)

// readBufferSize matches a typical TCP read; larger buffers only help
// streams that are already backlogged.
const readBufferSize = 32 << 10

// maxEmptyReads mirrors bufio: a reader returning no data and no error this
// many times in a row is broken, and spinning on it would hang the caller.
const maxEmptyReads = 100

// Reader is a pull-style wrapper that parses an io.Reader with a Parser.
// It is not safe for concurrent use.
type Reader struct {
	src    io.Reader
	parser *Parser
	buf    []byte
	queue  []Event
	head   int
	err    error
	emit   func(Event)
}

// NewReader returns a Reader over r. maxEventBytes has the meaning it has for
// NewParser.
func NewReader(r io.Reader, maxEventBytes int) *Reader {
	rd := &Reader{src: r, parser: NewParser(maxEventBytes)}
	// One closure for the Reader's lifetime rather than one per read.
	rd.emit = func(e Event) { rd.queue = append(rd.queue, e) }
	return rd
}

// Lines reports the complete lines parsed so far; see Parser.Lines.
func (r *Reader) Lines() uint64 { return r.parser.Lines() }

// Next returns the next observable block. It returns io.EOF at the end of the
// stream, dropping an unterminated last block as a browser does; any other
// error is the read or parse error, wrapped. Events parsed before an error
// are returned before it.
func (r *Reader) Next() (Event, error) {
	empty := 0
	for {
		if r.head < len(r.queue) {
			e := r.queue[r.head]
			r.queue[r.head] = Event{} // release the strings as soon as consumed
			r.head++
			if r.head == len(r.queue) {
				r.queue, r.head = r.queue[:0], 0
			}
			return e, nil
		}
		if r.err != nil {
			return Event{}, r.err
		}
		if r.buf == nil {
			r.buf = make([]byte, readBufferSize)
		}
		n, err := r.src.Read(r.buf)
		if n > 0 {
			empty = 0
			if perr := r.parser.Feed(r.buf[:n], r.emit); perr != nil {
				r.err = perr
				continue
			}
		}
		switch {
		case errors.Is(err, io.EOF):
			r.err = io.EOF
		case err != nil:
			r.err = fmt.Errorf("sse: reading stream: %w", err)
		case n == 0:
			empty++
			if empty >= maxEmptyReads {
				r.err = fmt.Errorf("sse: reading stream: %w", io.ErrNoProgress)
			}
		}
	}
}
