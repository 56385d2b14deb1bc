package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// nfnetlink_queue, from linux/netfilter/nfnetlink_queue.h and
// linux/netfilter/nfnetlink.h.
const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgMaxLen   = 3
	nfqaCfgMask     = 4
	nfqaCfgFlags    = 5
	nfqaPacketHdr   = 1
	nfqaVerdictHdr  = 2
	nfqnlCfgBind    = 1
	nfqnlCfgUnbind  = 2
	nfqnlCopyMeta   = 1
	nfqaCfgFailOpen = 1

	nfAccept = 1

	solNetlink      = 270
	netlinkNoENOBUF = 5
	nlaTypeMask     = 0x3fff
)

// delayCommand holds every queued packet for --delay, then accepts it.
// Packets leave in the order they arrived, so a TCP stream through the
// queue is delayed, not reordered. With the queue's fail-open flag, a full
// queue lets packets through undelayed instead of dropping them, so the
// only loss on the link is the loss a rule adds on purpose.
func delayCommand(fs *flag.FlagSet) func(context.Context, logrus.FieldLogger) error {
	queue := fs.Uint("queue", 0, "NFQUEUE number to serve")
	delay := fs.Duration("delay", 25*time.Millisecond, "time every packet is held")
	maxLen := fs.Uint("max-queue", 8192, "packets the kernel queues before failing open")
	return func(ctx context.Context, log logrus.FieldLogger) error {
		if *queue > 65535 {
			return fmt.Errorf("--queue %d is over 65535", *queue)
		}
		if *delay < 0 || *delay > 10*time.Second {
			return fmt.Errorf("--delay %v is outside 0..10s", *delay)
		}
		q, err := openQueue(uint16(*queue), uint32(*maxLen))
		if err != nil {
			return err
		}
		defer q.close()
		log.WithFields(logrus.Fields{"queue": *queue, "delay": *delay}).Info("faultkit: delaying queued packets")
		return q.serve(ctx, *delay, log)
	}
}

// nfQueue is one bound nfnetlink queue.
type nfQueue struct {
	fd  int
	num uint16
	seq uint32
	mu  sync.Mutex // serialises sends
}

func openQueue(num uint16, maxLen uint32) (*nfQueue, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	q := &nfQueue{fd: fd, num: num}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		q.close()
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// A large receive buffer keeps bursts from being dropped before they
	// are read; a lost notification would leave its packet queued for good.
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 8<<20)
	_ = syscall.SetsockoptInt(fd, solNetlink, netlinkNoENOBUF, 1)
	tv := syscall.NsecToTimeval(int64(200 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		q.close()
		return nil, fmt.Errorf("netlink receive timeout: %w", err)
	}
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0xffff)
	params[4] = nfqnlCopyMeta
	failOpen := attr(attr(nil, nfqaCfgMask, be32(nfqaCfgFailOpen)), nfqaCfgFlags, be32(nfqaCfgFailOpen))
	steps := []struct {
		what  string
		attrs []byte
	}{
		{"bind", attr(nil, nfqaCfgCmd, []byte{nfqnlCfgBind, 0, 0, 0})},
		{"copy mode", attr(nil, nfqaCfgParams, params)},
		{"queue length", attr(nil, nfqaCfgMaxLen, be32(maxLen))},
		{"fail-open flag", failOpen},
	}
	for _, s := range steps {
		if err := q.request(nfqnlMsgConfig, s.attrs); err != nil {
			q.close()
			return nil, fmt.Errorf("nfqueue %d: %s: %w", num, s.what, err)
		}
	}
	return q, nil
}

func (q *nfQueue) close() {
	if q.fd >= 0 {
		_ = q.send(nfqnlMsgConfig, attr(nil, nfqaCfgCmd, []byte{nfqnlCfgUnbind, 0, 0, 0}), 0)
		_ = syscall.Close(q.fd)
		q.fd = -1
	}
}

func be32(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

// attr appends one netlink attribute, padded to 4 bytes.
func attr(dst []byte, typ uint16, val []byte) []byte {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(4+len(val)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	dst = append(dst, h[:]...)
	dst = append(dst, val...)
	for len(dst)%4 != 0 {
		dst = append(dst, 0)
	}
	return dst
}

// send writes one nfqueue message with the given attributes.
func (q *nfQueue) send(msgType uint16, attrs []byte, flags uint16) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.seq++
	msg := make([]byte, 16+4, 16+4+len(attrs))
	binary.NativeEndian.PutUint32(msg[0:], uint32(16+4+len(attrs)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysQueue<<8|msgType)
	binary.NativeEndian.PutUint16(msg[6:], syscall.NLM_F_REQUEST|flags)
	binary.NativeEndian.PutUint32(msg[8:], q.seq)
	msg[16] = syscall.AF_UNSPEC
	msg[17] = 0 // NFNETLINK_V0
	binary.BigEndian.PutUint16(msg[18:], q.num)
	msg = append(msg, attrs...)
	return syscall.Sendto(q.fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK})
}

// request sends a configuration message and waits for its acknowledgement.
func (q *nfQueue) request(msgType uint16, attrs []byte) error {
	if err := q.send(msgType, attrs, syscall.NLM_F_ACK); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for range 10 {
		n, _, err := syscall.Recvfrom(q.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("reading acknowledgement: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("parsing acknowledgement: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != syscall.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
	return errors.New("no acknowledgement")
}

type heldPacket struct {
	id  uint32
	due time.Time
}

// serve reads queued packets and accepts each once it has been held for
// delay, in arrival order, until ctx ends.
func (q *nfQueue) serve(ctx context.Context, delay time.Duration, log logrus.FieldLogger) error {
	held := make(chan heldPacket, 1<<16)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	verdictErr := make(chan error, 1)
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case p := <-held:
				if d := time.Until(p.due); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-ctx.Done():
						t.Stop()
						return
					case <-t.C:
					}
				}
				if err := q.verdict(p.id, nfAccept); err != nil {
					verdictErr <- fmt.Errorf("verdict for packet %d: %w", p.id, err)
					cancel()
					return
				}
			}
		}
	})
	buf := make([]byte, 1<<16)
	var packets uint64
	for ctx.Err() == nil {
		n, _, err := syscall.Recvfrom(q.fd, buf, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			cancel()
			return fmt.Errorf("reading queue: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			log.WithError(err).Warn("faultkit: unparsable netlink message")
			continue
		}
		for _, m := range msgs {
			if m.Header.Type != nfnlSubsysQueue<<8|nfqnlMsgPacket {
				continue
			}
			id, ok := packetID(m.Data)
			if !ok {
				continue
			}
			packets++
			select {
			case held <- heldPacket{id: id, due: time.Now().Add(delay)}:
			default:
				// More packets in flight than the hold list takes:
				// let this one through at once rather than lose it.
				if err := q.verdict(id, nfAccept); err != nil {
					cancel()
					return fmt.Errorf("verdict for packet %d: %w", id, err)
				}
			}
		}
	}
	select {
	case err := <-verdictErr:
		return err
	default:
	}
	log.WithField("packets", packets).Info("faultkit: delay stopped")
	return nil
}

// packetID finds NFQA_PACKET_HDR in a packet message's attributes.
func packetID(data []byte) (uint32, bool) {
	if len(data) < 4 {
		return 0, false
	}
	b := data[4:] // nfgenmsg
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:]))
		typ := binary.NativeEndian.Uint16(b[2:]) & nlaTypeMask
		if l < 4 || l > len(b) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 4+4 {
			return binary.BigEndian.Uint32(b[4:8]), true
		}
		adv := (l + 3) &^ 3
		if adv > len(b) {
			break
		}
		b = b[adv:]
	}
	return 0, false
}

func (q *nfQueue) verdict(id, verdict uint32) error {
	v := make([]byte, 8)
	binary.BigEndian.PutUint32(v[0:], verdict)
	binary.BigEndian.PutUint32(v[4:], id)
	return q.send(nfqnlMsgVerdict, attr(nil, nfqaVerdictHdr, v), 0)
}
