package sse

import (
	"bytes"
	"errors"
	"fmt"
	"math"
)

// DefaultMaxEventBytes is a limit suited to upstream streams: large enough for
// multi-megabyte JSON payloads, small enough that one misbehaving back end
// cannot exhaust a node's memory.
const DefaultMaxEventBytes = 4 << 20

// ErrTooLarge reports that a line or a pending block exceeded the parser's
// limit. The stream cannot be resynchronised safely afterwards.
var ErrTooLarge = errors.New("sse: line or event exceeds size limit")

// utf8BOM is the byte order mark one of which is ignored at stream start.
const utf8BOM = "\xEF\xBB\xBF"

// retainBytes bounds the capacity the parser keeps between blocks, so one
// rare huge event does not pin megabytes per stream for the connection's
// lifetime.
const retainBytes = 64 << 10

// Parser is an incremental WHATWG event-stream parser for one connection.
// Use NewParser; the zero value is not usable. A Parser is not safe for
// concurrent use.
type Parser struct {
	max int
	err error

	// started is set once the stream's first bytes have been checked for a
	// BOM; bomN counts BOM bytes matched so far when the check is pending,
	// because the BOM can be split across chunks.
	started bool
	bomN    int

	// skipLF is set when the previous chunk ended in CR: an LF opening the
	// next chunk completes that CRLF rather than ending an empty line.
	skipLF bool

	partial []byte // start of a line whose end has not arrived yet
	lines   uint64

	// The pending block. Values are kept as bytes so that lines which do not
	// complete an observable block cost no allocation.
	data    []byte
	hasData bool
	id      []byte
	hasID   bool
	typ     []byte
	retry   int64

	// Streams repeat event types and sometimes ids; reusing the previous
	// string avoids an allocation per event for them.
	lastType string
	lastID   string
}

// NewParser returns a parser that refuses any line, and any block's data,
// longer than maxEventBytes. A value below 1 selects DefaultMaxEventBytes.
func NewParser(maxEventBytes int) *Parser {
	if maxEventBytes < 1 {
		maxEventBytes = DefaultMaxEventBytes
	}
	p := &Parser{max: maxEventBytes}
	p.Reset()
	return p
}

// Reset prepares the parser for a new connection: a BOM is accepted again and
// any partial line or block is discarded, as a browser does on reconnect.
// Buffers are kept for reuse.
func (p *Parser) Reset() {
	p.err = nil
	p.started = false
	p.bomN = 0
	p.skipLF = false
	p.partial = p.partial[:0]
	p.resetBlock()
}

// Lines returns how many complete lines (comments and blank lines included)
// the parser has seen. A caller compares it before and after Feed to learn
// whether the upstream is alive even when it sends only heartbeat comments.
func (p *Parser) Lines() uint64 { return p.lines }

// Feed consumes the next chunk of the stream, split anywhere, and calls emit
// for every complete observable block. Feed copies what it keeps of chunk,
// so the caller may reuse it at once. emit must not call Feed. After
// ErrTooLarge every call returns the same error until Reset.
func (p *Parser) Feed(chunk []byte, emit func(Event)) error {
	if p.err != nil {
		return p.err
	}
	if !p.started {
		var prefix []byte
		chunk, prefix = p.stripBOM(chunk)
		if len(prefix) > 0 {
			// Bytes that looked like a BOM but were not one are content.
			if err := p.feed(prefix, emit); err != nil {
				return err
			}
		}
	}
	return p.feed(chunk, emit)
}

// stripBOM consumes a leading BOM, possibly spread over several chunks. When
// the stream turns out not to start with one, it returns the BOM bytes that
// were held back so the caller can parse them as content.
func (p *Parser) stripBOM(chunk []byte) (rest, heldBack []byte) {
	for len(chunk) > 0 {
		if chunk[0] != utf8BOM[p.bomN] {
			p.started = true
			n := p.bomN
			p.bomN = 0
			return chunk, []byte(utf8BOM[:n])
		}
		p.bomN++
		chunk = chunk[1:]
		if p.bomN == len(utf8BOM) {
			p.started = true
			p.bomN = 0
			return chunk, nil
		}
	}
	return chunk, nil
}

func (p *Parser) feed(chunk []byte, emit func(Event)) error {
	if len(chunk) == 0 {
		return nil
	}
	if p.skipLF {
		p.skipLF = false
		if chunk[0] == '\n' {
			chunk = chunk[1:]
		}
	}
	// Positions of the next CR and LF are remembered across lines, so a chunk
	// of many lines is scanned once per byte however its lines end: calling
	// IndexByte from each line start would be quadratic for CR-only streams.
	nextCR, nextLF := -2, -2
	pos := 0
	for pos < len(chunk) {
		if nextCR != -1 && nextCR < pos {
			nextCR = indexFrom(chunk, pos, '\r')
		}
		if nextLF != -1 && nextLF < pos {
			nextLF = indexFrom(chunk, pos, '\n')
		}
		end := nextLF
		if nextCR >= 0 && (end < 0 || nextCR < end) {
			end = nextCR
		}
		if end < 0 {
			break
		}
		var line []byte
		if len(p.partial) > 0 {
			if len(p.partial)+end-pos > p.max {
				return p.fail(len(p.partial) + end - pos)
			}
			p.partial = appendLimited(p.partial, chunk[pos:end], p.max)
			line = p.partial
		} else {
			if end-pos > p.max {
				return p.fail(end - pos)
			}
			line = chunk[pos:end]
		}
		next := end + 1
		if chunk[end] == '\r' {
			if next < len(chunk) {
				if chunk[next] == '\n' {
					next++
				}
			} else {
				p.skipLF = true
			}
		}
		if err := p.processLine(line, emit); err != nil {
			return err
		}
		if len(p.partial) > 0 {
			p.partial = trim(p.partial)
		}
		pos = next
	}
	if rest := chunk[pos:]; len(rest) > 0 {
		if len(p.partial)+len(rest) > p.max {
			return p.fail(len(p.partial) + len(rest))
		}
		p.partial = appendLimited(p.partial, rest, p.max)
	}
	return nil
}

// appendLimited appends like append but never lets capacity exceed limit,
// which callers guarantee the result fits in: append's own growth would
// overshoot the limit by up to a quarter on large buffers.
func appendLimited(dst, src []byte, limit int) []byte {
	return append(reserve(dst, len(dst)+len(src), limit), src...)
}

// reserve returns dst with capacity for need bytes, growing geometrically
// but never past limit (or need, should need exceed it).
func reserve(dst []byte, need, limit int) []byte {
	if need <= cap(dst) {
		return dst
	}
	grown := min(max(2*cap(dst), need, 512), max(limit, need))
	b := make([]byte, len(dst), grown)
	copy(b, dst)
	return b
}

func indexFrom(b []byte, from int, c byte) int {
	i := bytes.IndexByte(b[from:], c)
	if i < 0 {
		return -1
	}
	return from + i
}

// trim empties a buffer, dropping it when a rare large value has grown it
// beyond what is worth keeping.
func trim(b []byte) []byte {
	if cap(b) > retainBytes {
		return nil
	}
	return b[:0]
}

func (p *Parser) fail(n int) error {
	p.err = fmt.Errorf("sse: %d bytes pending, limit %d: %w", n, p.max, ErrTooLarge)
	p.partial = nil
	p.data = nil
	return p.err
}

func (p *Parser) processLine(line []byte, emit func(Event)) error {
	p.lines++
	if len(line) == 0 {
		p.dispatch(emit)
		return nil
	}
	if line[0] == ':' {
		return nil
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		n := len(p.data) + len(value)
		if p.hasData {
			n++
		}
		if n > p.max {
			return p.fail(n)
		}
		p.data = reserve(p.data, n, p.max)
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	case "event":
		p.typ = append(p.typ[:0], value...)
	case "id":
		// An id containing NUL is ignored so that it can always be sent
		// back in a Last-Event-ID header.
		if bytes.IndexByte(value, 0) < 0 {
			p.id = append(p.id[:0], value...)
			p.hasID = true
		}
	case "retry":
		if v, ok := parseRetry(value); ok {
			p.retry = v
		}
	}
	return nil
}

// parseRetry accepts one or more ASCII digits. Values beyond int64 are
// ignored like any other invalid retry field, because no client can honour
// a reconnection time of three hundred million years either way. An empty
// value is ignored too: it is not a number.
func parseRetry(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

func (p *Parser) dispatch(emit func(Event)) {
	e := Event{HasID: p.hasID, HasData: p.hasData, Retry: p.retry}
	if e.Observable() {
		if p.hasID {
			if string(p.id) != p.lastID {
				p.lastID = string(p.id)
			}
			e.ID = p.lastID
		}
		if p.hasData {
			e.Data = string(p.data)
			if len(p.typ) > 0 {
				if string(p.typ) != p.lastType {
					p.lastType = string(p.typ)
				}
				e.Type = p.lastType
			}
		}
		emit(e)
	}
	p.resetBlock()
}

func (p *Parser) resetBlock() {
	p.data = trim(p.data)
	p.hasData = false
	p.id = trim(p.id)
	p.hasID = false
	p.typ = trim(p.typ)
	p.retry = -1
}
