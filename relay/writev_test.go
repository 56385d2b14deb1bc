package relay

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// socketPair is a connected pair of TCP-like stream sockets: the writer's
// end as a net.Conn with a descriptor, and the reader's.
func socketPair(t *testing.T, sndbuf int) (w net.Conn, r net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sndbuf > 0 {
		if err := syscall.SetsockoptInt(fds[0], syscall.SOL_SOCKET, syscall.SO_SNDBUF, sndbuf); err != nil {
			t.Fatal(err)
		}
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		_ = f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns[i] = c
	}
	return conns[0], conns[1]
}

func rawOf(t *testing.T, c net.Conn) syscall.RawConn {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestWriteBuffers writes buffer lists that take several writev calls
// (more buffers than one call takes, empty ones, more bytes than the
// socket holds, so that the write waits for the reader) and checks that
// the reader gets exactly their concatenation and the count is right.
func TestWriteBuffers(t *testing.T) {
	many := make([][]byte, 3*writevMax+5)
	for i := range many {
		many[i] = []byte(strings.Repeat(string(rune('a'+i%26)), i%7))
	}
	big := make([][]byte, 40)
	for i := range big {
		big[i] = bytes.Repeat([]byte{byte(i)}, 32<<10)
	}
	tests := []struct {
		name string
		bufs [][]byte
	}{
		{"one buffer", [][]byte{[]byte("data: x\n\n")}},
		{"empty buffers around data", [][]byte{nil, {}, []byte("a"), nil, []byte("bc"), {}}},
		{"only empty buffers", [][]byte{nil, {}}},
		{"more buffers than one call takes, some empty", many},
		{"more bytes than the socket holds", big},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, r := socketPair(t, 16<<10)
			want := bytes.Join(tc.bufs, nil)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(r)
				got <- b
			}()
			_ = w.SetWriteDeadline(time.Now().Add(10 * time.Second))
			n, err := writeBuffers(rawOf(t, w), tc.bufs)
			if err != nil || n != int64(len(want)) {
				t.Fatalf("writeBuffers: %d, %v; want %d, nil", n, err, len(want))
			}
			_ = w.Close()
			if b := <-got; !bytes.Equal(b, want) {
				t.Fatalf("reader got %d bytes, want %d (equal: %v)", len(b), len(want), bytes.Equal(b, want))
			}
		})
	}
}

// TestWriteBuffersHonoursTheDeadline: a socket nobody reads fills up; the
// write gives up at its deadline with the deadline error (the client's
// write_timeout), having written part of the data.
func TestWriteBuffersHonoursTheDeadline(t *testing.T) {
	w, _ := socketPair(t, 16<<10)
	bufs := [][]byte{bytes.Repeat([]byte("x"), 4<<20)}
	_ = w.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := writeBuffers(rawOf(t, w), bufs)
	if !errors.Is(err, os.ErrDeadlineExceeded) || reasonFor(err) != ReasonWriteTimeout {
		t.Fatalf("err %v, want the deadline", err)
	}
	if n <= 0 || n >= 4<<20 {
		t.Fatalf("wrote %d bytes, want part of %d", n, 4<<20)
	}
}

// TestWriteBuffersToAClosedPeer: a reader that went away is a write error.
func TestWriteBuffersToAClosedPeer(t *testing.T) {
	w, r := socketPair(t, 0)
	_ = r.Close()
	_ = w.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := writeBuffers(rawOf(t, w), [][]byte{[]byte("a"), []byte("b")}); err == nil || reasonFor(err) != ReasonWriteError {
		t.Fatalf("err %v, want a write error", err)
	}
}
