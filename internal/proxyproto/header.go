package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
)

// Header is what a PROXY header says about a connection.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Source is the client's address and Destination the address it
	// connected to. Both are zero when the header carries no TCP address:
	// a v2 LOCAL command (the balancer's own health check), v1 UNKNOWN, or
	// a v2 family or protocol other than TCP over IPv4 or IPv6 (UNSPEC,
	// UNIX, UDP), which the spec lets a receiver treat as UNSPEC. The
	// connection then keeps its real addresses.
	Source, Destination netip.AddrPort
}

var (
	// ErrInvalid is wrapped by every error about bytes that are not a valid
	// PROXY header.
	ErrInvalid = errors.New("proxyproto: invalid header")
	// errShort means the bytes so far are a valid start of a header, which
	// needs more of them.
	errShort = errors.New("proxyproto: header incomplete")
)

const (
	// v1MaxLen is the longest v1 line, CRLF included (spec 2.1: "PROXY
	// UNKNOWN" with two full IPv6 addresses and ports).
	v1MaxLen = 107
	// v2FixedLen is the v2 signature, version and command, family and
	// protocol, and the length of what follows.
	v2FixedLen = 16

	cmdLocal = 0x0
	cmdProxy = 0x1

	tlvCRC32C = 0x03
)

var (
	v1Sig = []byte("PROXY ")
	v2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// parse reads the header at the start of b. It returns the header and its
// length in bytes (never more than the header claims: the CRLF of a v1
// line, 16 plus the length field of v2), errShort when b is a valid but
// incomplete start of a header, or an error wrapping ErrInvalid. A v2
// header longer than maxLen bytes is invalid.
//
// A prefix of a valid header is always errShort, and a byte that cannot
// start or continue a header is reported as soon as it is seen: a peer
// sending garbage is refused at its first byte, not after a timeout.
func parse(b []byte, maxLen int) (Header, int, error) {
	if len(b) == 0 {
		return Header{}, 0, errShort
	}
	switch b[0] {
	case v1Sig[0]:
		return parseV1(b)
	case v2Sig[0]:
		return parseV2(b, maxLen)
	}
	return Header{}, 0, invalid("no PROXY signature")
}

// hasPrefix reports whether b and sig agree on their common length.
func hasPrefix(b, sig []byte) bool {
	n := min(len(b), len(sig))
	return bytes.Equal(b[:n], sig[:n])
}

// parseV1 reads "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY
// UNKNOWN ...\r\n" (spec 2.1).
func parseV1(b []byte) (Header, int, error) {
	if !hasPrefix(b, v1Sig) {
		return Header{}, 0, invalid("no PROXY signature")
	}
	head := b[:min(len(b), v1MaxLen)]
	lf := bytes.IndexByte(head, '\n')
	if lf < 0 {
		// A CR must be the line's end: one followed by anything else is
		// refused now rather than when the line grows too long.
		if cr := bytes.IndexByte(head, '\r'); cr >= 0 && cr < len(head)-1 {
			return Header{}, 0, invalid("v1: CR without LF")
		}
		if len(b) >= v1MaxLen {
			return Header{}, 0, invalid("v1: no CRLF within %d bytes", v1MaxLen)
		}
		return Header{}, 0, errShort
	}
	if b[lf-1] != '\r' {
		return Header{}, 0, invalid("v1: LF without CR")
	}
	line := b[:lf-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return Header{}, 0, invalid("v1: CR without LF")
	}
	n := lf + 1
	proto, rest, _ := bytes.Cut(line[len(v1Sig):], []byte(" "))
	var is4 bool
	switch string(proto) {
	case "UNKNOWN":
		// The receiver "must ignore anything presented before the CRLF".
		return Header{Version: 1}, n, nil
	case "TCP4":
		is4 = true
	case "TCP6":
	default:
		return Header{}, 0, invalid("v1: unknown protocol %q", proto)
	}
	var f [4][]byte
	for i := range 3 {
		var ok bool
		if f[i], rest, ok = bytes.Cut(rest, []byte(" ")); !ok {
			return Header{}, 0, invalid("v1: want 4 fields after %s", proto)
		}
	}
	f[3] = rest
	src, err := v1Addr(f[0], is4)
	if err != nil {
		return Header{}, 0, invalid("v1: source address: %v", err)
	}
	dst, err := v1Addr(f[1], is4)
	if err != nil {
		return Header{}, 0, invalid("v1: destination address: %v", err)
	}
	sport, ok := v1Port(f[2])
	if !ok {
		return Header{}, 0, invalid("v1: source port %q", f[2])
	}
	dport, ok := v1Port(f[3])
	if !ok {
		return Header{}, 0, invalid("v1: destination port %q", f[3])
	}
	return Header{Version: 1, Source: netip.AddrPortFrom(src, sport), Destination: netip.AddrPortFrom(dst, dport)}, n, nil
}

// v1Addr parses an address of the line's family. netip refuses leading
// zeros in IPv4, as the spec does.
func v1Addr(s []byte, is4 bool) (netip.Addr, error) {
	a, err := netip.ParseAddr(string(s))
	switch {
	case err != nil:
		return netip.Addr{}, err
	case is4 && !a.Is4():
		return netip.Addr{}, fmt.Errorf("%q is not IPv4", s)
	case !is4 && (!a.Is6() || a.Zone() != ""):
		return netip.Addr{}, fmt.Errorf("%q is not IPv6", s)
	}
	return a, nil
}

// v1Port parses a decimal port without leading zeros.
func v1Port(s []byte) (uint16, bool) {
	if len(s) == 0 || len(s) > 5 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	v := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return uint16(v), v <= 0xFFFF
}

// parseV2 reads the binary header (spec 2.2): the 12-byte signature,
// version 2 and a command, family and protocol, a big-endian length, then
// that many bytes: addresses, then TLVs.
func parseV2(b []byte, maxLen int) (Header, int, error) {
	if !hasPrefix(b, v2Sig) {
		return Header{}, 0, invalid("no PROXY signature")
	}
	if len(b) < v2FixedLen {
		return Header{}, 0, errShort
	}
	if v := b[12] >> 4; v != 2 {
		return Header{}, 0, invalid("v2: version %d", v)
	}
	cmd, famProto := b[12]&0x0F, b[13]
	total := v2FixedLen + int(binary.BigEndian.Uint16(b[14:16]))
	if total > maxLen {
		return Header{}, 0, invalid("v2: header of %d bytes, more than the %d accepted", total, maxLen)
	}
	// addrLen is the address block of the combinations the spec lists; TLVs
	// follow it. Of other valid combinations the layout is unknown, so
	// their block is skipped whole.
	addrLen := -1
	switch cmd {
	case cmdLocal:
		// "discard the protocol block including the family".
	case cmdProxy:
		if fam, proto := famProto>>4, famProto&0x0F; fam > 3 || proto > 2 {
			return Header{}, 0, invalid("v2: family and protocol %#02x", famProto)
		}
		switch famProto {
		case 0x11, 0x12: // TCP, UDP over IPv4
			addrLen = 12
		case 0x21, 0x22: // TCP, UDP over IPv6
			addrLen = 36
		case 0x31, 0x32: // UNIX stream, datagram
			addrLen = 216
		}
		if total-v2FixedLen < addrLen {
			return Header{}, 0, invalid("v2: %d address bytes for family and protocol %#02x, want %d", total-v2FixedLen, famProto, addrLen)
		}
	default:
		return Header{}, 0, invalid("v2: command %#x", cmd)
	}
	if len(b) < total {
		return Header{}, 0, errShort
	}
	h := Header{Version: 2}
	if addrLen < 0 {
		return h, total, nil
	}
	a := b[v2FixedLen:]
	switch famProto {
	case 0x11:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	case 0x21:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])), binary.BigEndian.Uint16(a[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])), binary.BigEndian.Uint16(a[34:36]))
	}
	if err := checkTLVs(b[:total], v2FixedLen+addrLen); err != nil {
		return Header{}, 0, err
	}
	return h, total, nil
}

// checkTLVs walks the type-length-value entries of hdr from off: they
// must fill the header exactly. Their values are not used, except that a
// CRC32C entry must match the header, as the spec requires of a receiver
// that checks it.
func checkTLVs(hdr []byte, off int) error {
	for off < len(hdr) {
		if len(hdr)-off < 3 {
			return invalid("v2: truncated TLV at byte %d", off)
		}
		typ, n, v := hdr[off], int(binary.BigEndian.Uint16(hdr[off+1:off+3])), off+3
		if n > len(hdr)-v {
			return invalid("v2: TLV %#02x of %d bytes overruns the header", typ, n)
		}
		if typ == tlvCRC32C {
			if n != 4 {
				return invalid("v2: CRC32C TLV of %d bytes", n)
			}
			if !crcMatches(hdr, v) {
				return invalid("v2: CRC32C mismatch")
			}
		}
		off = v + n
	}
	return nil
}

// crcMatches checks the big-endian CRC32C at hdr[at:at+4] against the
// checksum of hdr with those four bytes zeroed.
func crcMatches(hdr []byte, at int) bool {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, hdr[:at])
	c = crc32.Update(c, castagnoli, zero[:])
	c = crc32.Update(c, castagnoli, hdr[at+4:])
	return c == binary.BigEndian.Uint32(hdr[at:at+4])
}
