package node

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/iplimit"
	"github.com/ssemesh/ssemesh/relay"
)

// mount is one back end as this node serves it.
type mount struct {
	spec      BackendSpec
	instances []*url.URL  // upstream base URLs: the config's uri, or Consul's passing instances
	header    http.Header // extra upstream headers, Authorization included
	dc        string      // the back end's data centre, "" when unknown
	tls       *tls.Config // for https instances; nil uses the system's roots
	// configured names the query parameters the instances' URIs set;
	// clients cannot set them.
	configured map[string]bool
	// version names what the back end's requests are made of (headers,
	// credentials, TLS): a stream whose version changes reconnects, make
	// before break, even when its URL stays the same.
	version string
}

func newMount(b BackendSpec, tc *tls.Config) (*mount, error) {
	m := &mount{spec: b, header: http.Header{}, dc: b.DC, configured: map[string]bool{}, tls: tc}
	if b.URI != "" {
		u, err := url.Parse(b.URI)
		if err != nil {
			return nil, &ConfigError{Key: "backends." + b.Name + ".uri", Reason: err.Error()}
		}
		m.addInstance(u)
	}
	for k, v := range b.Headers {
		m.header.Set(k, v)
	}
	if b.Credentials != nil {
		tok := base64.StdEncoding.EncodeToString([]byte(b.Credentials.Username + ":" + b.Credentials.Password))
		m.header.Set("Authorization", "Basic "+tok)
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%q %v %p", b.URI, m.header, tc)
	if b.TLS != nil {
		fmt.Fprintf(sum, " %+v", *b.TLS)
	}
	m.version = hex.EncodeToString(sum.Sum(nil)[:8])
	return m, nil
}

// staticMounts builds the mounts of the configured back ends that have a
// uri (the others name back ends Consul announces). A back end that fails
// is left out; the first failure is returned.
func (n *Node) staticMounts(backends []BackendSpec) ([]*mount, error) {
	var ms []*mount
	var first error
	for _, b := range backends {
		if b.URI == "" {
			continue
		}
		tc, err := n.tls.upstreamFor(b)
		var m *mount
		if err == nil {
			m, err = newMount(b, tc)
		}
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		ms = append(ms, m)
	}
	return ms, first
}

// addInstance adds an upstream base URL. For a prefix mount the base path
// ends in '/', so the client's path below the mount is appended as path
// segments below it, never onto its last segment (or its host).
func (m *mount) addInstance(u *url.URL) {
	c := *u
	c.User = nil
	c.Fragment, c.RawFragment = "", ""
	if m.spec.Prefix && !strings.HasSuffix(c.Path, "/") {
		c.Path += "/"
		if c.RawPath != "" {
			c.RawPath += "/"
		}
	}
	for k := range queryKeys(c.RawQuery) {
		m.configured[k] = true
	}
	m.instances = append(m.instances, &c)
}

// upstreamURL is the back end's URL for a stream on instance i.
func (m *mount) upstreamURL(i int, path, query string) (*url.URL, error) {
	return upstreamURL(m.instances[i%len(m.instances)], m.spec.Prefix, mountRest(m.spec.Mount, path), query)
}

func (n *Node) handleStream(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.ProtoMajor == 2 {
		n.h2Requests.Add(1)
	} else {
		n.h1Requests.Add(1)
	}
	n.cors(w, r)
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := n.serveStream(w, r, start); err != nil {
		n.refuseClient(w, r, start, err)
	}
}

// refuseClient answers a request on the client listener with err, and
// writes its access log entry.
func (n *Node) refuseClient(w http.ResponseWriter, r *http.Request, start time.Time, err error) {
	n.renderError(w, r, err)
	n.logRefused(r, start, asHTTPError(err))
}

func (n *Node) serveStream(w http.ResponseWriter, r *http.Request, start time.Time) error {
	path := r.URL.EscapedPath()
	if err := checkClientPath(path); err != nil {
		return refuse(http.StatusBadRequest, codeBadPath, err.Error())
	}
	m := n.findMount(path)
	if m == nil {
		return n.notFound()
	}
	peer, err := n.authenticate(r)
	if err != nil {
		return refuse(http.StatusUnauthorized, codeMeshAuth, err.Error())
	}
	var via []string
	if peer != nil {
		via = peer.via
		for _, id := range via {
			if id == n.cfg.NodeID {
				return refuse(http.StatusLoopDetected, codeLoop, fmt.Sprintf("node %s is already on this stream's path (%s)", n.cfg.NodeID, strings.Join(via, " <- ")))
			}
		}
	}
	if len(m.instances) == 0 && n.mesh == nil {
		he := refuse(http.StatusServiceUnavailable, codeNoInstance, "back end "+m.spec.Name+" has no passing instance")
		he.RetryAfter = n.live().cfg.Limits.RetryAfter
		return he
	}
	cq, err := parseClientQuery(r.URL.RawQuery, m.spec.QueryParams, m.configured)
	if err != nil {
		return refuse(http.StatusBadRequest, codeBadQuery, err.Error())
	}
	key := path
	if cq.identity != "" {
		key += "?" + cq.identity
	}
	lastID, hasLastID := cq.lastID, cq.hasID
	if vs, ok := r.Header["Last-Event-Id"]; ok && len(vs) > 0 {
		lastID, hasLastID = vs[0], true
	}
	if hasLastID && !relay.ValidLastEventID(lastID) {
		// No browser sends such an id; it would only break the upstream
		// request. The client starts live instead.
		n.ignoredIDs.Add(1)
		n.logs.Log("bad-last-event-id", n.log.WithField("client", r.RemoteAddr).WithField("bytes", len(lastID)), logrus.InfoLevel,
			"Last-Event-ID with CR, LF or NUL, or over 1 KiB, ignored")
		lastID, hasLastID = "", false
	}

	req := relay.Request{Key: key, LastEventID: lastID, HasLastEventID: hasLastID, Child: peer != nil}
	var client netip.Addr
	if peer == nil {
		// Child nodes are not counted per address: a leaf holds many
		// streams for its own clients.
		client = n.clientAddr(r)
		release, why := n.live().perIP.Acquire(client)
		if why != iplimit.OK {
			return n.ipRefusal(why, 0, client)
		}
		req.Done = release
		req.AllowCatchUp = func() bool {
			_, why := n.live().perIP.Allow(client)
			return why == iplimit.OK
		}
	}
	handed := false
	defer func() {
		if !handed && req.Done != nil {
			req.Done()
		}
	}()
	if peer == nil {
		exp, err := n.authorize(r, m, path, client)
		if err != nil {
			return err
		}
		req.Expires = exp
	}

	// Admission: waiting subscribers count too, so a flood cannot overshoot
	// the limit while its streams connect. The place is taken before the
	// check: a burst of requests checking at once would otherwise all see
	// the same free places and pass together.
	for {
		w := n.waiting.Load()
		if n.relay.Clients()+int(w) >= n.live().cfg.Limits.MaxClients {
			he := refuse(http.StatusServiceUnavailable, codeMaxClients, fmt.Sprintf("limits.max_clients is %d", n.live().cfg.Limits.MaxClients))
			he.RetryAfter = n.live().cfg.Limits.RetryAfter
			return he
		}
		if n.waiting.CompareAndSwap(w, w+1) {
			break
		}
	}
	defer n.waiting.Add(-1)
	if !n.relay.Has(key) {
		if n.relay.Streams() >= n.live().cfg.Limits.MaxStreams {
			he := refuse(http.StatusServiceUnavailable, codeMaxStreams, fmt.Sprintf("limits.max_streams is %d", n.live().cfg.Limits.MaxStreams))
			he.RetryAfter = n.live().cfg.Limits.RetryAfter
			return he
		}
		if peer == nil {
			if wait, why := n.live().perIP.Allow(client); why != iplimit.OK {
				return n.ipRefusal(why, wait, client)
			}
		}
	}
	if peer == nil {
		// Paced after the limits, so that the ones waiting count against
		// max_clients; child nodes are structural and never wait.
		ok, waited, retry := n.live().pacer.Wait(r.Context())
		switch {
		case ok:
			if waited > 0 {
				n.admitWaits.Add(1)
				n.admitWaitNanos.Add(uint64(waited))
			}
		case retry > 0:
			he := refuse(http.StatusServiceUnavailable, codeBusy, fmt.Sprintf("admission queue over limits.admit.max_wait: turn in %s", retry.Round(time.Millisecond)))
			he.RetryAfter = int(retry/time.Second) + 1
			return he
		default:
			return nil // the client went away while waiting: nothing to answer
		}
	}

	req.Target = n.route(key, path, cq.identity, m.spec.Name, via).target
	var resume *string
	if hasLastID {
		resume = &lastID
	}
	req.Ended = n.streamEnded(r, start, client, peer, key, m.spec.Name, resume)
	handed = true
	return n.relay.Serve(w, r, req)
}

// ipRefusal answers a client over its per-address limits.
func (n *Node) ipRefusal(why iplimit.Refusal, wait time.Duration, client netip.Addr) error {
	var he *httpError
	switch why {
	case iplimit.Connections:
		he = refuse(http.StatusTooManyRequests, codeIPConnections, fmt.Sprintf("%s holds limits.per_ip.connections (%d) streams", client, n.live().cfg.Limits.PerIP.Connections))
		he.RetryAfter = max(n.live().cfg.Limits.RetryAfter, 1)
	case iplimit.RateLimited:
		he = refuse(http.StatusTooManyRequests, codeIPNewStreams, fmt.Sprintf("%s is over limits.per_ip.new_streams (%g/s, burst %d)", client, n.live().cfg.Limits.PerIP.NewStreams, n.live().cfg.Limits.PerIP.Burst))
		he.RetryAfter = max(int(math.Ceil(wait.Seconds())), 1)
	default:
		he = refuse(http.StatusServiceUnavailable, codeIPTable, "the per-address table is full")
		he.RetryAfter = max(n.live().cfg.Limits.RetryAfter, 1)
	}
	return he
}

// cors answers browsers on other origins when configured to.
func (n *Node) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || len(n.live().cfg.CORS.AllowedOrigins) == 0 {
		return
	}
	allowed := false
	for _, o := range n.live().cfg.CORS.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			allowed = true
			break
		}
	}
	if !allowed {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if n.live().cfg.CORS.AllowCredentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Last-Event-ID, Cache-Control, Authorization")
		h.Set("Access-Control-Max-Age", "600")
	}
}

func newStdLogger(l logrus.FieldLogger) *log.Logger { return log.New(stdLogWriter{l}, "", 0) }

// matches reports whether a client path is served by m.
func (m *mount) matches(path string) bool {
	if !m.spec.Prefix {
		return path == m.spec.Mount
	}
	if !strings.HasPrefix(path, m.spec.Mount) {
		return false
	}
	rest := path[len(m.spec.Mount):]
	return rest == "" || strings.HasSuffix(m.spec.Mount, "/") || strings.HasPrefix(rest, "/")
}
