package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"sync/atomic"
	"time"
)

// The wire protocols of "load --proto" over https.
const (
	protoHTTP1 = "http1" // one TLS connection per client, HTTP/1.1
	protoH2    = "h2"    // clients as HTTP/2 streams over shared connections
)

// defaultH2Streams is how many clients share one HTTP/2 connection unless
// told otherwise: the stream limit that servers commonly advertise (Go's
// and nginx's are 250 and 128) without being reached.
const defaultH2Streams = 100

var (
	// errHeaderTimeout ends a session that got no response headers within
	// the connect timeout. It wraps os.ErrDeadlineExceeded so that it is
	// counted as a timeout, like a deadline on a connection of its own.
	errHeaderTimeout = fmt.Errorf("no response headers within the connect timeout: %w", os.ErrDeadlineExceeded)
	// errNoH2Stream is errHeaderTimeout for a request that was never sent
	// although its connection carries streams: the node allows fewer
	// concurrent streams per connection than the load puts on it.
	errNoH2Stream = errors.New("no free HTTP/2 stream (node's max concurrent streams below --h2-streams?)")
)

// notH2Error is a response that did not come over HTTP/2 in --proto h2.
type notH2Error struct{ proto string }

func (e notH2Error) Error() string {
	return fmt.Sprintf("response over %s, not HTTP/2", e.proto)
}

// loadCA reads a PEM bundle of certificates to trust.
func loadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", file)
	}
	return pool, nil
}

// clientTLSConfig is the TLS configuration of every client of a run: trust
// caFile (empty: the system roots) or nothing at all, and verify the
// certificate for serverName, the URL's host. Without a session cache, as
// every client is a new visitor, each connection costs the node a full
// handshake: the figure measured.
func clientTLSConfig(caFile string, insecure bool, serverName string) (*tls.Config, error) {
	conf := &tls.Config{
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
		// Only with --insecure, which says so on the terminal.
		InsecureSkipVerify: insecure,
	}
	if caFile != "" {
		pool, err := loadCA(caFile)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// alpn is what the clients of proto offer in the TLS handshake. The h2
// clients offer HTTP/1.1 too, as browsers do, so that a node without HTTP/2
// answers and is reported as such rather than failing the handshake.
func alpn(proto string) []string {
	if proto == protoH2 {
		return []string{"h2", "http/1.1"}
	}
	return []string{"http/1.1"}
}

// checkTLS makes one TLS handshake with addr before the run, so that a
// wrong CA or a node that does not offer HTTP/2 fails the command at once
// and clearly rather than as thousands of failed clients.
func checkTLS(ctx context.Context, addr string, conf *tls.Config, proto string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	conf = conf.Clone()
	conf.NextProtos = alpn(proto)
	tc := tls.Client(raw, conf)
	defer tc.Close()
	if err := tc.HandshakeContext(ctx); err != nil {
		var verr *tls.CertificateVerificationError
		if errors.As(err, &verr) {
			return fmt.Errorf("TLS handshake with %s: %w (give the node's CA with --ca, or skip verification with --insecure)", addr, err)
		}
		return fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	if got := tc.ConnectionState().NegotiatedProtocol; proto == protoH2 && got != "h2" {
		return fmt.Errorf("%s did not choose HTTP/2 in the TLS handshake (ALPN %q): the node does not serve h2 there; --proto http1 measures HTTP/1.1", addr, got)
	}
	return nil
}

// h2Conn is one HTTP/2 connection shared by a block of clients. Each has an
// http.Transport of its own, limited to one connection, because a transport
// pools connections per host: one transport for all clients would put them
// on as few connections as the node's stream limit allows, and the spread
// would be the server's choice rather than --h2-streams.
type h2Conn struct {
	rt *http.Transport
	// streams counts the sessions past their response headers.
	streams atomic.Int64
}

// newH2Conn makes the transport of one block of clients; it dials addr from
// dialer's source address, whatever the URL's host, so that neither DNS nor
// a proxy from the environment can take part.
func newH2Conn(dialer *net.Dialer, addr string, conf *tls.Config, timeout time.Duration, dials *atomic.Int64) *h2Conn {
	conf = conf.Clone()
	conf.NextProtos = alpn(protoH2)
	return &h2Conn{rt: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, "tcp", addr)
			if err == nil {
				dials.Add(1)
			}
			return c, err
		},
		TLSClientConfig:     conf,
		TLSHandshakeTimeout: timeout,
		// Needed for HTTP/2 with a custom dialer and TLS configuration.
		ForceAttemptHTTP2: true,
		MaxConnsPerHost:   1,
		// The hand-rolled clients ask for no compression either.
		DisableCompression: true,
		// Without it, a request finding the connection at the node's
		// stream limit would make the transport dial another one, past
		// MaxConnsPerHost; with it, the request waits for a free stream,
		// and fails with errNoH2Stream if none comes.
		HTTP2: &http.HTTP2Config{StrictMaxConcurrentRequests: true},
	}}
}

// close drops the connection once its streams have ended.
func (c *h2Conn) close() { c.rt.CloseIdleConnections() }

// h2Stream is one client on a shared HTTP/2 connection. net/http runs the
// connection's reader and one goroutine per stream besides the client's
// own; that is the price of HTTP/2 multiplexing without a second HTTP/2
// implementation in this tool.
type h2Stream struct {
	sseParser
	conn    *h2Conn
	url     string
	timeout time.Duration // connect, handshake, stream and response-header timeout
}

// session implements sseSession, with the parser and resume rules of
// streamConn.
func (s *h2Stream) session(ctx context.Context, onConnect func(), onEvent func(data []byte)) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var sent atomic.Bool
	trace := &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(sctx, trace), http.MethodGet, s.url, nil)
	if err != nil {
		return fmt.Errorf("building request: %w", err)
	}
	req.Header = http.Header{
		"Accept":        {"text/event-stream"},
		"Cache-Control": {"no-cache"},
		"User-Agent":    {"ssemesh-bench"},
	}
	if s.lastEventID != "" {
		req.Header.Set("Last-Event-ID", s.lastEventID)
	}
	// A timer of its own, as the transport's timeouts do not cover the
	// wait for a free stream on a connection at its limit.
	timer := time.AfterFunc(s.timeout, func() { cancel(errHeaderTimeout) })
	resp, err := s.conn.rt.RoundTrip(req)
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		if !sent.Load() && s.conn.streams.Load() > 0 {
			return errNoH2Stream
		}
		return errHeaderTimeout
	}
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		return notH2Error{proto: resp.Proto}
	}
	ctype, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || ctype != "text/event-stream" {
		return refusal(resp, ctype)
	}
	s.conn.streams.Add(1)
	defer s.conn.streams.Add(-1)
	onConnect()
	return s.read(resp.Body, onEvent)
}
