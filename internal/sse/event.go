package sse

// Event is one block of the stream (the lines up to a blank line), with what a
// browser's EventSource would take from it.
//
// Event is comparable with ==, which the tests and callers that deduplicate
// rely on.
type Event struct {
	// ID is the value of the last valid id field in the block.
	ID string
	// HasID reports that the block carried a valid id field. An empty ID with
	// HasID set resets a client's lastEventId and must be forwarded as such.
	HasID bool
	// Type is the event field; "" means "message". It is cleared when the
	// block has no data, because a browser discards it without effect then.
	Type string
	// Data is the block's data lines joined with "\n".
	Data string
	// HasData reports at least one data field, even an empty one: only then
	// does a browser dispatch an event.
	HasData bool
	// Retry is the last valid retry field in milliseconds, -1 when none.
	Retry int64
}

// Observable reports whether a block changes anything a client can see:
// it dispatches an event, sets lastEventId, or sets the reconnection time.
func (e Event) Observable() bool {
	return e.HasData || e.HasID || e.Retry >= 0
}

// Message is an event as a browser's EventSource dispatches it.
type Message struct {
	Type        string // "message" when the stream named no type
	Data        string
	LastEventID string
}

// Observer applies blocks the way a browser EventSource does. It exists so
// tests and tools can compare what two streams look like to a client rather
// than how they are spelt.
//
// The zero value starts with an empty lastEventId and Retry 0; set Retry to
// -1 (or the client's default) first when "never set" must be told apart.
type Observer struct {
	LastEventID string
	Retry       int64
}

// Apply updates the observer with one block and returns the message a
// browser would dispatch for it, if any. The id is applied even when nothing
// is dispatched, because EventSource updates lastEventId before it checks for
// an empty data buffer.
func (o *Observer) Apply(e Event) (Message, bool) {
	if e.HasID {
		o.LastEventID = e.ID
	}
	if e.Retry >= 0 {
		o.Retry = e.Retry
	}
	if !e.HasData {
		return Message{}, false
	}
	typ := e.Type
	if typ == "" {
		typ = "message"
	}
	return Message{Type: typ, Data: e.Data, LastEventID: o.LastEventID}, true
}
