// Package proxyproto reads the PROXY protocol header, version 1 (text) and
// version 2 (binary), that TCP load balancers (HAProxy, AWS NLB, nginx
// stream) put in front of a connection to pass on the client's address, as
// https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt specifies.
//
// Trust decides, never the bytes: a connection whose TCP peer is trusted
// (a balancer) must start with a header, and one that does not is closed;
// a connection from any other peer is handed on as it is, without reading
// anything, so a client that sends a PROXY line of its own only sends
// garbage to the HTTP server and cannot choose its address.
//
// Where the header is read: Accept returns at once, and the header is read
// by the first Read, RemoteAddr, LocalAddr or Header call, that is in the
// goroutine that serves the connection. net/http calls RemoteAddr in that
// goroutine, not in its accept loop (server.go, conn.remoteAddr, since
// golang/go#12943), so a slow or silent balancer connection never holds up
// Accept. Reading the header inside Accept, in one goroutine per
// connection feeding a queue, was the alternative; it costs a goroutine and
// a hand-off per connection, and it would hold every connection that has
// not spoken yet in that queue: AWS NLB by default sends the header only
// with the client's first bytes (target group attribute
// proxy_protocol_v2.client_to_server.header_placement,
// on_first_ack_with_payload), so a browser's idle preconnect would sit
// there for the whole timeout. The one rule this asks of callers: code run
// in the accept loop (http.Server's ConnState and ConnContext hooks) must
// not call RemoteAddr, LocalAddr or Read on a connection.
//
// Bounds: a header must be complete Timeout after Accept, a v2 header is at
// most MaxHeader bytes (v1 is at most 107 by the spec), and at most
// MaxPending trusted connections may be waiting for theirs: past that,
// Accept closes new trusted connections at once instead of waiting.
package proxyproto

import (
	"errors"
	"net/netip"
	"time"
)

// Config sets the trust and the bounds; zero fields take the defaults.
type Config struct {
	// Trusted reports whether a TCP peer is a balancer that sends a PROXY
	// header. Nil trusts nobody. TrustPrefixes builds one.
	Trusted func(netip.Addr) bool
	// Timeout is how long after Accept a trusted peer's header must be
	// complete (default DefaultTimeout).
	Timeout time.Duration
	// MaxHeader bounds a v2 header, TLVs included, in bytes (default
	// DefaultMaxHeader, at least MinMaxHeader, at most 16+65535).
	MaxHeader int
	// MaxPending bounds the trusted connections accepted whose header has
	// not been read yet (default DefaultMaxPending).
	MaxPending int
	// OnError, if set, is told of every trusted connection closed for its
	// header: missing, malformed, late (errors wrapping ErrInvalid,
	// io.ErrUnexpectedEOF or os.ErrDeadlineExceeded), or refused at Accept
	// with ErrTooManyPending. remote is the TCP peer. It is called from the
	// connection's goroutine, and for ErrTooManyPending from the accept
	// loop: it must not block (rate-limited logging).
	OnError func(remote netip.Addr, err error)
}

const (
	// DefaultTimeout is as long as a node gives a client for its request
	// header: behind AWS NLB the PROXY header arrives with the client's
	// first bytes. The spec asks for at least 3 s, a TCP retransmission.
	DefaultTimeout = 10 * time.Second
	// DefaultMaxHeader is eight times the 536 bytes the spec designed a
	// header to fit in, room for every TLV a balancer sends (HAProxy's SSL
	// and unique-id TLVs, the cloud providers' endpoint ids), while the
	// 64 KiB the length field allows would be 64 KiB of memory per
	// connection a peer can claim.
	DefaultMaxHeader = 4096
	// MinMaxHeader fits a v2 header with UNIX addresses and a few TLVs.
	MinMaxHeader = 256
	// DefaultMaxPending bounds what connections waiting for their header
	// hold (a socket and a small buffer each).
	DefaultMaxPending = 1024

	maxV2 = v2FixedLen + 0xFFFF
)

// ErrTooManyPending is reported for a trusted connection closed at Accept
// because MaxPending headers were being waited for.
var ErrTooManyPending = errors.New("proxyproto: too many connections waiting for a PROXY header")

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Timeout < 0:
		return errors.New("timeout: must not be negative")
	case c.MaxHeader != 0 && (c.MaxHeader < MinMaxHeader || c.MaxHeader > maxV2):
		return errors.New("max header: must be between 256 and 65551 bytes")
	case c.MaxPending < 0:
		return errors.New("max pending: must not be negative")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxHeader == 0 {
		c.MaxHeader = DefaultMaxHeader
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	return c
}

// TrustPrefixes returns a Trusted function that trusts the addresses in
// any of prefixes. IPv4 peers of a dual-stack listener are matched as
// IPv4, so IPv4 prefixes are written as IPv4.
func TrustPrefixes(prefixes ...netip.Prefix) func(netip.Addr) bool {
	ps := make([]netip.Prefix, len(prefixes))
	for i, p := range prefixes {
		ps[i] = p.Masked()
	}
	return func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range ps {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
}
