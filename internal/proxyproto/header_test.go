package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// v1 is a version 1 line for a TCP connection from src to dst.
func v1(src, dst netip.AddrPort) []byte {
	proto := "TCP4"
	if src.Addr().Is6() {
		proto = "TCP6"
	}
	return []byte("PROXY " + proto + " " + src.Addr().String() + " " + dst.Addr().String() + " " +
		strconv.Itoa(int(src.Port())) + " " + strconv.Itoa(int(dst.Port())) + "\r\n")
}

// v2 is a version 2 header: the signature, version 2 with cmd, famProto,
// the length, then addr and tlvs as they are.
func v2(cmd, famProto byte, addr, tlvs []byte) []byte {
	b := append([]byte{}, v2Sig...)
	b = append(b, 0x20|cmd, famProto)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addr)+len(tlvs)))
	b = append(b, addr...)
	return append(b, tlvs...)
}

// v2Addr is the address block of a TCP connection from src to dst, with
// its family and protocol byte.
func v2Addr(src, dst netip.AddrPort) (byte, []byte) {
	var b []byte
	famProto := byte(0x21)
	if src.Addr().Is4() {
		famProto = 0x11
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return famProto, binary.BigEndian.AppendUint16(b, dst.Port())
}

// v2TCP is a v2 PROXY header for a TCP connection from src to dst.
func v2TCP(src, dst netip.AddrPort, tlvs []byte) []byte {
	fp, a := v2Addr(src, dst)
	return v2(cmdProxy, fp, a, tlvs)
}

func tlv(typ byte, value []byte) []byte {
	b := binary.BigEndian.AppendUint16([]byte{typ}, uint16(len(value)))
	return append(b, value...)
}

// withCRC appends a CRC32C TLV to a v2 header and fills it in.
func withCRC(h []byte) []byte {
	h = append(h, tlv(tlvCRC32C, make([]byte, 4))...)
	binary.BigEndian.PutUint16(h[14:16], uint16(len(h)-v2FixedLen))
	binary.BigEndian.PutUint32(h[len(h)-4:], crc32.Checksum(h, castagnoli))
	return h
}

// awsHeader is a header as AWS NLB sends it through a VPC endpoint: TCP
// over IPv4, then CRC32C, the endpoint id (type 0xEA) and NOOP padding.
var awsHeader = append([]byte{
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
	0x21, 0x11, 0x00, 0x54,
	0xac, 0x1f, 0x07, 0x71, 0xac, 0x1f, 0x0a, 0x1f, 0xc8, 0xf2, 0x00, 0x50,
	0x03, 0x00, 0x04, 0xe8, 0xd6, 0x89, 0x2d,
	0xea, 0x00, 0x17, 0x01, 'v', 'p', 'c', 'e', '-', '0', '8', 'd', '2', 'b', 'f', '1', '5', 'f', 'a', 'c', '5', '0', '0', '1', 'c', '9',
	0x04, 0x00, 0x24,
}, make([]byte, 36)...)

var (
	src4, dst4 = ap("203.0.113.7:4242"), ap("198.51.100.1:443")
	src6, dst6 = ap("[2001:db8::7]:4242"), ap("[2001:db8:1::1]:443")
)

// validHeaders are headers parse accepts, with what it makes of them.
var validHeaders = []struct {
	name     string
	in       []byte
	src, dst netip.AddrPort
}{
	{"v1 tcp4", v1(src4, dst4), src4, dst4},
	{"v1 tcp6", v1(src6, dst6), src6, dst6},
	{"v1 tcp4 longest", []byte("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"), ap("255.255.255.255:65535"), ap("255.255.255.255:65535")},
	{"v1 tcp6 ports 0", []byte("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ::1 0 0\r\n"), ap("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:0"), ap("[::1]:0")},
	{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), netip.AddrPort{}, netip.AddrPort{}},
	{"v1 unknown longest", []byte("PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), netip.AddrPort{}, netip.AddrPort{}},
	{"v2 tcp4", v2TCP(src4, dst4, nil), src4, dst4},
	{"v2 tcp6", v2TCP(src6, dst6, nil), src6, dst6},
	{"v2 local", v2(cmdLocal, 0x00, nil, nil), netip.AddrPort{}, netip.AddrPort{}},
	{"v2 local with addresses", v2(cmdLocal, 0x11, make([]byte, 12), nil), netip.AddrPort{}, netip.AddrPort{}},
	{"v2 local ignores the family", v2(cmdLocal, 0xFF, []byte{1, 2, 3}, nil), netip.AddrPort{}, netip.AddrPort{}},
	{"v2 unspec", v2(cmdProxy, 0x00, nil, nil), netip.AddrPort{}, netip.AddrPort{}},
	{"v2 udp4 keeps the real addresses", v2(cmdProxy, 0x12, make([]byte, 12), nil), netip.AddrPort{}, netip.AddrPort{}},
	{"v2 unix", v2(cmdProxy, 0x31, make([]byte, 216), nil), netip.AddrPort{}, netip.AddrPort{}},
	{"v2 tlvs", v2TCP(src4, dst4, bytes.Join([][]byte{tlv(0x01, []byte("h2")), tlv(0x02, []byte("example.com")), tlv(0x04, nil), tlv(0x20, []byte{1, 0, 0, 0, 0})}, nil)), src4, dst4},
	{"v2 crc32c", withCRC(v2TCP(src6, dst6, tlv(0x05, []byte("id")))), src6, dst6},
	{"v2 aws nlb", awsHeader, ap("172.31.7.113:51442"), ap("172.31.10.31:80")},
}

func TestParseValid(t *testing.T) {
	for _, tc := range validHeaders {
		t.Run(tc.name, func(t *testing.T) {
			in := append(append([]byte{}, tc.in...), "GET / HTTP/1.1\r\n"...)
			h, n, err := parse(in, DefaultMaxHeader)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if n != len(tc.in) {
				t.Fatalf("consumed %d bytes, the header has %d", n, len(tc.in))
			}
			if h.Source != tc.src || h.Destination != tc.dst {
				t.Fatalf("addresses %v -> %v, want %v -> %v", h.Source, h.Destination, tc.src, tc.dst)
			}
			want := 1
			if tc.in[0] == v2Sig[0] {
				want = 2
			}
			if h.Version != want {
				t.Fatalf("version %d, want %d", h.Version, want)
			}
		})
	}
}

// Every prefix of a valid header asks for more, so a header split into
// any number of segments is read whole.
func TestParsePrefixesAreShort(t *testing.T) {
	for _, tc := range validHeaders {
		for k := range len(tc.in) {
			if _, _, err := parse(tc.in[:k], DefaultMaxHeader); err != errShort {
				t.Fatalf("%s: prefix of %d bytes: %v, want errShort", tc.name, k, err)
			}
		}
	}
}

func TestParseInvalid(t *testing.T) {
	crcBad := withCRC(v2TCP(src4, dst4, nil))
	crcBad[len(crcBad)-1] ^= 1
	tests := []struct {
		name, in string
		why      string // in the error
	}{
		{"http request", "GET / HTTP/1.1\r\n", "signature"},
		{"tls hello", "\x16\x03\x01\x02\x00", "signature"},
		{"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature"},
		{"v1 no space", "PROXYTCP4", "signature"},
		{"v1 too long", "PROXY UNKNOWN " + strings.Repeat("x", 100), "107"},
		{"v1 crlf at 108", "PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n", "107"},
		{"v1 lone lf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR"},
		{"v1 lone cr", "PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", "CR without LF"},
		{"v1 lone cr, no lf yet", "PROXY TCP4 1.2\rx", "CR without LF"},
		{"v1 unknown protocol", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"},
		{"v1 unknown glued", "PROXY UNKNOWNX\r\n", "protocol"},
		{"v1 tcp4 alone", "PROXY TCP4\r\n", "fields"},
		{"v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "fields"},
		{"v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "port"},
		{"v1 double space", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "address"},
		{"v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "port"},
		{"v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n", "source port"},
		{"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "destination port"},
		{"v1 port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 80\r\n", "source port"},
		{"v1 port long", "PROXY TCP4 1.2.3.4 5.6.7.8 000001 80\r\n", "source port"},
		{"v1 port hex", "PROXY TCP4 1.2.3.4 5.6.7.8 0x50 80\r\n", "source port"},
		{"v1 ipv4 leading zero", "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "source address"},
		{"v1 ipv6 in tcp4", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "source address"},
		{"v1 ipv4 in tcp6", "PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "destination address"},
		{"v1 ipv6 zone", "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "source address"},
		{"v2 bad signature", "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c", "signature"},
		{"v2 version 1", string(v2Sig) + "\x11\x11\x00\x00", "version"},
		{"v2 version 3", string(v2Sig) + "\x31\x11\x00\x00", "version"},
		{"v2 command 2", string(v2(2, 0x11, make([]byte, 12), nil)), "command"},
		{"v2 family 4", string(v2(cmdProxy, 0x41, make([]byte, 12), nil)), "family"},
		{"v2 protocol 3", string(v2(cmdProxy, 0x13, make([]byte, 12), nil)), "family"},
		{"v2 tcp4 short addresses", string(v2(cmdProxy, 0x11, make([]byte, 11), nil)), "address bytes"},
		{"v2 tcp6 ipv4-sized", string(v2(cmdProxy, 0x21, make([]byte, 12), nil)), "address bytes"},
		{"v2 unix short", string(v2(cmdProxy, 0x31, make([]byte, 36), nil)), "address bytes"},
		{"v2 too large", string(v2Sig) + "\x21\x11\xff\xff", "more than"},
		{"v2 just too large", string(v2(cmdProxy, 0x11, make([]byte, DefaultMaxHeader-15), nil)), "more than"},
		{"v2 truncated tlv", string(v2TCP(src4, dst4, []byte{0x04, 0x00})), "truncated TLV"},
		{"v2 tlv overrun", string(v2TCP(src4, dst4, []byte{0x04, 0x00, 0x05, 1, 2})), "overruns"},
		{"v2 crc mismatch", string(crcBad), "CRC32C mismatch"},
		{"v2 crc length", string(v2TCP(src4, dst4, tlv(tlvCRC32C, []byte{1, 2, 3}))), "CRC32C TLV"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parse([]byte(tc.in), DefaultMaxHeader)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("parse: %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("parse: %v, want it to say %q", err, tc.why)
			}
		})
	}
}

// A v2 header is refused as soon as its fixed part shows it cannot be
// valid, without waiting for the length it claims.
func TestParseV2RefusesEarly(t *testing.T) {
	for _, in := range [][]byte{
		[]byte(string(v2Sig) + "\x21\x11\xff\xff"),
		[]byte(string(v2Sig) + "\x21\x51\x01\x00"),
		[]byte(string(v2Sig) + "\x21\x21\x00\x0c"),
	} {
		if _, _, err := parse(in, DefaultMaxHeader); !errors.Is(err, ErrInvalid) {
			t.Errorf("% x: %v, want ErrInvalid", in, err)
		}
	}
}

func TestParseRespectsMaxHeader(t *testing.T) {
	h := v2TCP(src4, dst4, tlv(0x04, make([]byte, 300)))
	if _, n, err := parse(h, len(h)); err != nil || n != len(h) {
		t.Fatalf("header of exactly the bound: %d, %v", n, err)
	}
	if _, _, err := parse(h, len(h)-1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("header one byte over the bound: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, tc := range validHeaders {
		f.Add(tc.in)
		f.Add(append(append([]byte{}, tc.in...), "GET / HTTP/1.1\r\n\r\n"...))
	}
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n"))
	f.Add([]byte(string(v2Sig) + "\x21\x11\x00\x10"))
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1024
		h, n, err := parse(in, limit)
		if err != nil {
			if h != (Header{}) || n != 0 {
				t.Fatalf("error %v with header %+v and length %d", err, h, n)
			}
			if err != errShort && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is neither short nor invalid", err)
			}
			if err == errShort && len(in) >= limit {
				t.Fatalf("%d bytes still short of a header of at most %d", len(in), limit)
			}
			return
		}
		if n <= 0 || n > len(in) || n > limit {
			t.Fatalf("consumed %d of %d bytes", n, len(in))
		}
		switch h.Version {
		case 1:
			if n > v1MaxLen || !bytes.HasSuffix(in[:n], []byte("\r\n")) || bytes.IndexByte(in[:n-1], '\n') >= 0 {
				t.Fatalf("v1 header %q is not one line of at most %d bytes", in[:n], v1MaxLen)
			}
		case 2:
			if want := v2FixedLen + int(binary.BigEndian.Uint16(in[14:16])); n != want {
				t.Fatalf("v2 consumed %d bytes, the header claims %d", n, want)
			}
		default:
			t.Fatalf("version %d", h.Version)
		}
		if h.Source.IsValid() != h.Destination.IsValid() {
			t.Fatalf("one address of %+v", h)
		}
		// The header stands alone: what follows it changes nothing, and
		// every shorter prefix asks for more.
		if h2, n2, err := parse(in[:n], limit); err != nil || h2 != h || n2 != n {
			t.Fatalf("header alone: %+v %d %v, with what follows: %+v %d", h2, n2, err, h, n)
		}
		for k := range n {
			if _, _, err := parse(in[:k], limit); err != errShort {
				t.Fatalf("prefix of %d of a %d-byte header: %v", k, n, err)
			}
		}
		// What it says survives being written again.
		if h.Source.IsValid() {
			re := v1(h.Source, h.Destination)
			if h.Version == 2 {
				re = v2TCP(h.Source, h.Destination, nil)
			}
			if h2, _, err := parse(re, limit); err != nil || h2 != h {
				t.Fatalf("re-encoded %q: %+v %v, want %+v", re, h2, err, h)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"v1-tcp4", v1(src4, dst4)},
		{"v1-tcp6", v1(src6, dst6)},
		{"v2-tcp4", v2TCP(src4, dst4, nil)},
		{"v2-aws", awsHeader},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := parse(tc.in, DefaultMaxHeader); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
