// Package sse parses and encodes text/event-stream, following the WHATWG
// event-stream interpretation
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
//
// Every ssemesh node parses its upstream once and re-encodes each block once
// for all of its subscribers. The promise is transparency: a client reading
// through the mesh observes exactly the events (type, data, lastEventId,
// retry) it would observe connected to the back end, however the bytes were
// chunked on the way. The rules below are the ones that promise rests on.
//
// # Lines
//
//   - A line ends at CR, LF or CRLF, mixed freely. A CR that ends one chunk
//     and an LF that starts the next are one line end, not two; the line is
//     processed at the CR, without waiting for the next chunk.
//   - One UTF-8 BOM (EF BB BF) is ignored at the very start of a stream,
//     also when it arrives split over several chunks. A second BOM, or one
//     later in the stream, is content (it makes the first field name
//     unknown, as in a browser).
//   - Bytes are never decoded. Line ends, colons and spaces are ASCII and
//     cannot occur inside a UTF-8 sequence, so splitting raw bytes gives the
//     same lines as decoding first; invalid UTF-8 is passed through
//     unchanged, and a browser replaces it identically from identical bytes.
//
// # Fields
//
//   - A line starting with ':' is a comment and is ignored. Comments still
//     count as lines (Parser.Lines), so heartbeats show upstream liveness.
//   - "name: value" splits at the first colon, and exactly one space after
//     the colon is removed. A line without a colon is a field with an empty
//     value, so "data" alone is an empty data line.
//   - data: appends a line; the block's lines are joined with LF.
//   - event: sets the type; "" means "message".
//   - id: sets the id, unless the value contains NUL, in which case the
//     field is ignored. An empty id is valid and resets the client's
//     lastEventId, so it is kept (HasID) and forwarded.
//   - retry: sets the reconnection time when the value is one or more ASCII
//     digits; anything else, including an empty value, a sign or a space,
//     is ignored. A value beyond int64 is ignored as well, as an
//     unrepresentable number.
//   - Any other field name is ignored. Names are case-sensitive.
//
// # Blocks
//
// A blank line ends a block. A block is emitted only when it is observable:
// it has a data field (a browser dispatches an event), an id field (the
// browser's lastEventId changes even without an event) or a retry field. A
// block with only an event field or only comments changes nothing a client
// can see and is dropped; the type is cleared on blocks without data for the
// same reason. The id does not carry over to later blocks in Event; Observer
// shows how a client carries it.
//
// At the end of a stream an unterminated last block is discarded, as a
// browser does. A browser applies a retry field as soon as it reads the
// line, so a retry in such a discarded block is the one thing this loses;
// back ends send retry in complete blocks in practice.
//
// # Limits
//
// A Parser refuses a line, or a block's data, larger than its limit with
// ErrTooLarge, having buffered at most the limit; the connection must then be
// dropped and reopened. DefaultMaxEventBytes is 4 MiB.
//
// # Encoding
//
// AppendEvent writes a canonical form (id, event, retry, then data lines and
// a blank line) that parses back to the same Event. AppendComment writes a
// heartbeat comment block.
package sse
