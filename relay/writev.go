package relay

import (
	"sync"
	"syscall"
	"unsafe"
)

// writevMax is how many buffers one writev takes: enough for a catch-up
// of small events in one call, a 2 KiB array while the call lasts.
const writevMax = 128

// writevOp is one blocking write of several buffers to a raw socket.
//
// It exists for memory: net.Buffers.WriteTo on a net.Conn makes the
// connection's poll.FD allocate an iovec array at its first writev and
// keep it for the connection's life, about 0.2 KiB for each of tens of
// thousands of subscribers whose only multi-buffer write was the replay
// that opened their stream. These arrays are pooled and held only during
// the call.
type writevOp struct {
	bufs [][]byte
	n    int64
	err  error
	iov  []syscall.Iovec
	fn   func(fd uintptr) bool
}

var writevOps = sync.Pool{New: func() any {
	op := &writevOp{iov: make([]syscall.Iovec, 0, writevMax)}
	op.fn = op.write
	return op
}}

// writeBuffers writes all of bufs to raw, waiting for room in the socket
// as long as its write deadline allows; it returns the bytes written.
func writeBuffers(raw syscall.RawConn, bufs [][]byte) (int64, error) {
	op := writevOps.Get().(*writevOp)
	op.bufs, op.n, op.err = bufs, 0, nil
	err := raw.Write(op.fn)
	n, werr := op.n, op.err
	op.bufs, op.err = nil, nil
	writevOps.Put(op)
	if err != nil {
		return n, err
	}
	return n, werr
}

// write is called by RawConn.Write with the descriptor; returning false
// waits until the socket is writable (or the deadline passes) and calls
// it again.
func (op *writevOp) write(fd uintptr) bool {
	for {
		iov := op.iov[:0]
		for _, b := range op.bufs {
			if len(iov) == writevMax {
				break
			}
			if len(b) == 0 {
				continue
			}
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
		if len(iov) == 0 {
			op.bufs = nil
			return true
		}
		r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		clear(iov) // the pooled array must not keep the buffers alive
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			op.err = e
			return true
		}
		if r == 0 {
			op.err = errClientGone
			return true
		}
		op.n += int64(r)
		op.consume(int(r))
	}
}

// consume drops the first m bytes written from bufs.
func (op *writevOp) consume(m int) {
	for len(op.bufs) > 0 {
		b := op.bufs[0]
		if len(b) > m {
			op.bufs[0] = b[m:]
			return
		}
		m -= len(b)
		op.bufs = op.bufs[1:]
	}
}
