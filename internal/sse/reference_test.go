package sse

import (
	"strconv"
	"strings"
)

// referenceParse is a deliberately naive transcription of the WHATWG
// event-stream interpretation, written for clarity rather than speed, that
// the incremental parser is checked against. It has no size limit and
// works on the whole stream at once.
func referenceParse(input []byte) []Event {
	s := strings.TrimPrefix(string(input), utf8BOM)
	var (
		out        []Event
		dataBuf    string
		typeBuf    string
		id         string
		hasID      bool
		retry      int64 = -1
		lineEndSet       = "\r\n"
	)
	for {
		i := strings.IndexAny(s, lineEndSet)
		if i < 0 {
			// End of stream: the unterminated line and pending block are
			// discarded.
			return out
		}
		line := s[:i]
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]

		if line == "" {
			e := Event{ID: id, HasID: hasID, Retry: retry}
			if dataBuf != "" {
				e.HasData = true
				e.Data = strings.TrimSuffix(dataBuf, "\n")
				e.Type = typeBuf
			}
			if e.HasData || e.HasID || e.Retry >= 0 {
				out = append(out, e)
			}
			dataBuf, typeBuf, id, hasID, retry = "", "", "", false, -1
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		name, value, found := strings.Cut(line, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch name {
		case "event":
			typeBuf = value
		case "data":
			dataBuf += value + "\n"
		case "id":
			if !strings.Contains(value, "\x00") {
				id, hasID = value, true
			}
		case "retry":
			if value != "" && strings.Trim(value, "0123456789") == "" {
				if v, err := strconv.ParseInt(value, 10, 64); err == nil {
					retry = v
				}
			}
		}
	}
}
