package relay

import (
	"io"
	"net"
	"testing"
)

// TestNonBlockingWriteAllocatesNothing guards the fan-out's garbage: a
// write to a subscriber's socket runs for every subscriber and every
// event, so one allocation there is tens of thousands per event.
func TestNonBlockingWriteAllocatesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c := &client{raw: raw}
	b := make([]byte, 200)
	written := 0
	allocs := testing.AllocsPerRun(1000, func() {
		n, err := c.rawWrite(b)
		if err != nil {
			t.Fatal(err)
		}
		written += n
	})
	if allocs != 0 || written == 0 {
		t.Fatalf("%.2f allocations per write (%d bytes written); want none", allocs, written)
	}
}
