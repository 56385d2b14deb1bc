package sse

import (
	"strconv"
	"strings"
)

// AppendEvent appends the canonical wire form of e to dst: an id line when
// HasID ("id" alone for an empty id), an event line when Type is set and the
// block has data, a retry line when Retry >= 0, one data line per line of
// Data when HasData ("data" alone for an empty line), then a blank line.
//
// Parsing the result yields e for every e the parser can produce. Values the
// format cannot carry are adjusted so that one field never turns into
// several: CR and LF are dropped from ID and Type, NUL from ID (a receiver
// would ignore the whole id), and Data is split into lines at CR, LF and
// CRLF, which a receiver joins with LF.
func AppendEvent(dst []byte, e Event) []byte {
	if e.HasID {
		dst = appendField(dst, "id", singleLine(e.ID, true))
	}
	if e.HasData {
		// A type that sanitises to nothing is omitted rather than written
		// as an empty event field: both mean "message", and the omission
		// keeps the encoding canonical.
		if typ := singleLine(e.Type, false); typ != "" {
			dst = appendField(dst, "event", typ)
		}
	}
	if e.Retry >= 0 {
		dst = append(dst, "retry: "...)
		dst = strconv.AppendInt(dst, e.Retry, 10)
		dst = append(dst, '\n')
	}
	if e.HasData {
		data := e.Data
		for {
			i := strings.IndexAny(data, "\r\n")
			if i < 0 {
				dst = appendData(dst, data)
				break
			}
			dst = appendData(dst, data[:i])
			if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
				i++
			}
			data = data[i+1:]
		}
	}
	return append(dst, '\n')
}

func appendData(dst []byte, line string) []byte {
	if line == "" {
		return append(dst, "data\n"...)
	}
	dst = append(dst, "data: "...)
	dst = append(dst, line...)
	return append(dst, '\n')
}

// appendField writes a single-line field, "name" alone when value is empty.
func appendField(dst []byte, name, value string) []byte {
	dst = append(dst, name...)
	if value != "" {
		dst = append(dst, ": "...)
		dst = append(dst, value...)
	}
	return append(dst, '\n')
}

// singleLine drops the bytes that would break a field into several lines
// (and NUL when dropNUL, for ids). It returns value itself, without copying,
// in the usual case where there is nothing to drop.
func singleLine(value string, dropNUL bool) string {
	bad := func(c byte) bool { return c == '\r' || c == '\n' || (c == 0 && dropNUL) }
	i := 0
	for i < len(value) && !bad(value[i]) {
		i++
	}
	if i == len(value) {
		return value
	}
	b := make([]byte, i, len(value))
	copy(b, value[:i])
	for ; i < len(value); i++ {
		if !bad(value[i]) {
			b = append(b, value[i])
		}
	}
	return string(b)
}

// AppendComment appends a comment block (": text" and a blank line), the
// heartbeat that keeps intermediaries from closing an idle stream. CR and LF
// in text become spaces so the comment stays one line; the blank line that
// follows cannot disturb a client because comments are only written between
// complete events.
func AppendComment(dst []byte, text string) []byte {
	dst = append(dst, ':')
	if text != "" {
		dst = append(dst, ' ')
		for i := 0; i < len(text); i++ {
			c := text[i]
			if c == '\r' || c == '\n' {
				c = ' '
			}
			dst = append(dst, c)
		}
	}
	return append(dst, '\n', '\n')
}
