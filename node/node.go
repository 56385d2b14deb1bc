// Package node is the composition root of an ssemesh node: configuration,
// the client and admin listeners, stream routing, and lifecycle.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/buildinfo"
	"github.com/ssemesh/ssemesh/internal/proxyproto"
	"github.com/ssemesh/ssemesh/internal/ratelog"
	"github.com/ssemesh/ssemesh/mesh"
	"github.com/ssemesh/ssemesh/relay"
)

// Node is one running ssemesh node.
type Node struct {
	cfg   Config
	log   logrus.FieldLogger
	relay *relay.Relay
	// access writes the access log (access_log); reconfigured by reloads.
	access accessLog
	// proxyStats counts PROXY protocol outcomes; nil without proxy_protocol.
	proxyStats func() proxyproto.Stats

	mounts atomic.Pointer[[]*mount]
	// mountsMu serialises rebuilding the mount table (a new mesh view, a
	// reload); consulFound is what Consul announced last.
	mountsMu    sync.Mutex
	consulFound []mesh.Backend

	mesh *mesh.Mesh
	// streams and view are the relay and the mesh as routing sees them
	// (seams.go): routes, avoidance and re-parenting reach them only
	// through these, so they are tested with fakes. view is nil outside
	// a mesh.
	streams streamRelay
	view    meshView
	routing *router
	stop    chan struct{} // closed when shutdown begins

	// cur holds the settings a reload may change (settings.go); reloadMu
	// makes reloads one at a time.
	cur      atomic.Pointer[settings]
	reloadMu sync.Mutex
	// source re-reads the configuration for a reload; setLevel applies a
	// new log level. Both nil until EnableReload.
	source       func() (Config, error)
	setLevel     func(logrus.Level)
	reloadCounts reloadCounts
	// tls holds the certificates of the listeners, the mesh and the back
	// ends, re-read when their files change; stopTLS ends the watch.
	tls     *tlsState
	stopTLS context.CancelFunc
	// logs keeps floods of refusals from flooding the log.
	logs       *ratelog.Logger
	ignoredIDs atomic.Uint64 // Last-Event-IDs from clients that could not be used
	// admitWaits counts subscribers admitted after waiting for their turn
	// (limits.admit), admitWaitNanos their total wait.
	admitWaits, admitWaitNanos atomic.Uint64
	// h1Requests and h2Requests count stream requests by protocol.
	h1Requests, h2Requests atomic.Uint64
	// peerClient asks other nodes' admin APIs for the topology report.
	peerClient *http.Client

	srv, adminSrv *http.Server
	ln, adminLn   net.Listener

	ready    atomic.Bool
	waiting  atomic.Int64 // subscribers admitted but not yet attached
	started  time.Time
	stopOnce sync.Once
	wg       sync.WaitGroup

	// lifeMu orders Start against Shutdown and Kill, which may come in any
	// order and from any goroutine: running says Start succeeded, ended
	// that the node is stopped for good (stopping, or a Start that failed).
	lifeMu  sync.Mutex
	running bool
	ended   bool
}

var (
	errStarted = errors.New("node: already started")
	errEnded   = errors.New("node: stopped (Shutdown, Kill or a failed Start): build a new node")
)

// New builds a node from a validated configuration. log may be nil (a logger
// is built from cfg.Log).
func New(cfg Config, log logrus.FieldLogger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		l, err := NewLogger(cfg.Log, os.Stderr)
		if err != nil {
			return nil, err
		}
		log = l
	}
	if cfg.NodeID == "" {
		h, _ := os.Hostname()
		cfg.NodeID = h + "-" + portOf(cfg.Listen)
	}
	log = log.WithField("node", cfg.NodeID)
	r, err := relay.New(cfg.Relay, log)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	tlsSt, err := newTLSState(cfg, log)
	if err != nil {
		r.Close()
		return nil, err
	}
	st, err := newSettings(cfg, nil, log)
	if err != nil {
		r.Close()
		return nil, err
	}
	n := &Node{
		cfg:     cfg,
		log:     log.WithField("component", "node"),
		relay:   r,
		streams: r,
		stop:    make(chan struct{}),
		tls:     tlsSt,
		stopTLS: func() {},
		logs:    ratelog.New(10 * time.Second),
		peerClient: &http.Client{
			Transport: &http.Transport{
				MaxIdleConnsPerHost: 2,
				IdleConnTimeout:     30 * time.Second,
			},
			// A peer's answer is its own: a redirect elsewhere is not
			// followed with this node's proof.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if tlsSt.meshCA != nil {
		n.peerClient.Transport.(*http.Transport).DialTLSContext = tlsSt.dialPeer
	}
	n.routing = newRouter(cfg.NodeID, r, cfg.Mesh.AvoidFor.D(), n.mountDC, n.log)
	n.cur.Store(st)
	ms, err := n.staticMounts(cfg.Backends)
	if err == nil {
		n.access.onErr = func(err error) {
			n.log.WithError(err).Error("access log: write failed; lines are lost until a write succeeds")
		}
		err = n.access.configure(cfg.AccessLog)
	}
	if err != nil {
		st.auth.close()
		r.Close()
		return nil, err
	}
	n.setMounts(ms)
	return n, nil
}

// NewLogger builds the process logger from the log section.
func NewLogger(c LogConfig, out io.Writer) (*logrus.Logger, error) {
	lvl, err := parseLevel(c.Level)
	if err != nil {
		return nil, &ConfigError{Key: "log.level", Reason: err.Error()}
	}
	l := logrus.New()
	l.SetOutput(out)
	l.SetLevel(lvl)
	if c.Format == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	}
	return l, nil
}

func parseLevel(s string) (logrus.Level, error) {
	switch s {
	case "", "info":
		return logrus.InfoLevel, nil
	case "debug", "warn", "error", "trace":
		return logrus.ParseLevel(s)
	}
	return 0, fmt.Errorf("want trace, debug, info, warn or error, got %q", s)
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return p
}

// Relay exposes the node's relay (for reports and tests).
func (n *Node) Relay() *relay.Relay { return n.relay }

// ID is the node's identity in the mesh.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addr is the client listener's address once started.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// AdminAddr is the admin listener's address once started ("" if disabled).
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// Start opens both listeners and serves in the background. It may be
// called once; a node that failed to start, or was stopped, is not
// started again.
func (n *Node) Start() error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	switch {
	case n.ended:
		return errEnded
	case n.running:
		return errStarted
	}
	if err := n.start(); err != nil {
		n.ended = true
		return err
	}
	n.running = true
	return nil
}

func (n *Node) start() error {
	ln, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		return fmt.Errorf("node: listen %s: %w", n.cfg.Listen, err)
	}
	n.ln = ln
	if n.cfg.Admin.Listen != "" {
		aln, err := net.Listen("tcp", n.cfg.Admin.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("node: admin listen %s: %w", n.cfg.Admin.Listen, err)
		}
		n.adminLn = aln
	}
	n.srv = &http.Server{
		Handler:           n.clientRouter(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// No WriteTimeout: it would cut every stream. Writes carry their
		// own deadlines in the relay.
		ErrorLog: newStdLogger(n.log.WithField("component", "http")),
	}
	n.started = time.Now()
	// Over TLS, the relay writes sealed records to hijacked HTTP/1.1
	// subscribers without blocking (relay.Listener); HTTP/2 clients are
	// served through their response writers.
	n.serve(n.srv, n.clientListener(ln), n.tls.client, "clients")
	if n.adminLn != nil {
		n.adminSrv = &http.Server{
			Handler:           n.adminRouter(),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       60 * time.Second,
			ErrorLog:          newStdLogger(n.log.WithField("component", "admin")),
		}
		n.serve(n.adminSrv, n.adminLn, n.tls.admin, "admin")
	}

	if n.cfg.Mesh.Enabled() {
		if err := n.startMesh(); err != nil {
			_ = n.srv.Close()
			if n.adminSrv != nil {
				_ = n.adminSrv.Close()
			}
			n.wg.Wait()
			n.relay.Close()
			n.live().auth.close()
			return err
		}
	}
	// TLS files are watched from here on; shutdown stops the watch.
	tctx, tcancel := context.WithCancel(context.Background())
	n.stopTLS = tcancel
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.tls.run(tctx)
	}()
	n.ready.Store(true)
	if host, _, _ := net.SplitHostPort(n.cfg.Admin.Listen); n.adminLn != nil && n.live().cfg.Admin.Token == "" && !isLoopbackHost(host) {
		n.log.WithField("admin", n.AdminAddr()).Warn("admin.insecure_no_token is set: the admin listener is reachable from other hosts without a token; anyone who reaches it reads the topology and every stream")
	}
	bi := buildinfo.Get()
	n.log.WithFields(logrus.Fields{"version": bi.Version, "revision": bi.ShortRevision(), "go": bi.GoVersion, "listen": n.Addr(), "admin": n.AdminAddr(), "backends": len(n.mountList()), "mesh": n.cfg.Mesh.Enabled()}).Info("node started")
	return nil
}

// clientListener is what the client server accepts from: with TLS, the
// relay's listener (non-blocking TLS writes); under a PROXY protocol reader for the
// trusted proxies' connections when proxy_protocol is on. The trusted list
// is read per connection, so a reload's trusted_proxies apply at once.
func (n *Node) clientListener(ln net.Listener) net.Listener {
	cl := ln
	if n.tls.client != nil {
		// Only TLS needs the capture; a plain connection is written
		// through its socket as it is, and the wrapper would cost every
		// client its size.
		cl = relay.Listener(ln)
	}
	if !n.cfg.ProxyProtocol {
		return cl
	}
	pl := proxyproto.NewListener(cl, proxyproto.Config{
		Trusted: func(a netip.Addr) bool { return isTrusted(a.Unmap(), n.live().trusted) },
		OnError: func(peer netip.Addr, err error) {
			n.logs.Log("proxy-protocol", n.log.WithField("peer", peer.String()).WithError(err), logrus.WarnLevel,
				"connection from a trusted proxy without a valid PROXY header closed")
		},
	})
	n.proxyStats = pl.Stats
	return pl
}

// serve runs srv on ln, over TLS with tc (HTTP/2 and HTTP/1.1) when tc is
// set.
func (n *Node) serve(srv *http.Server, ln net.Listener, tc *tls.Config, name string) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		var err error
		if tc != nil {
			srv.TLSConfig = tc
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.WithError(err).WithField("listener", name).Error("listener failed")
		}
	}()
}

// ReloadTLS re-reads every TLS file at once (SIGHUP). A file that fails is
// kept as it was, and the error says which.
func (n *Node) ReloadTLS() error { return n.tls.reload() }

// Shutdown drains the node: readiness goes 503, new clients are refused,
// existing ones are closed spread over the drain period with a retry hint,
// then upstreams close. It returns when everything stopped or ctx ended.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.stopOnce.Do(func() {
		if !n.end() {
			return
		}
		n.ready.Store(false)
		close(n.stop)
		n.stopTLS()
		if n.mesh != nil {
			n.leaveMesh(ctx)
		}
		n.log.WithField("drain", n.live().cfg.Drain.D()).Info("shutting down: draining clients")
		// Stop accepting first; Shutdown closes the listener at once and
		// then waits for handlers, which the drain below ends.
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			_ = n.srv.Shutdown(ctx)
		}()
		n.relay.Drain(ctx, n.live().cfg.Drain.D())
		n.relay.Close()
		n.live().auth.close()
		select {
		case <-stopped:
		case <-ctx.Done():
			err = ctx.Err()
		}
		_ = n.srv.Close()
		if n.adminSrv != nil {
			_ = n.adminSrv.Close()
		}
		if n.mesh != nil {
			_ = n.mesh.Shutdown()
		}
		n.wg.Wait()
		n.access.close()
		n.log.Info("stopped")
	})
	return err
}

// end marks the node stopped for good, waiting for a Start in progress,
// and reports whether it was running. A node that never ran has only what
// New built to release.
func (n *Node) end() bool {
	n.lifeMu.Lock()
	running := n.running
	n.ended = true
	n.lifeMu.Unlock()
	if !running {
		close(n.stop)
		n.relay.Close()
		n.live().auth.close()
		n.access.close()
	}
	return running
}

// Run starts the node and drains it when ctx ends.
func (n *Node) Run(ctx context.Context) error {
	if err := n.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	// The budget covers every step of a graceful stop in turn: leaving the
	// mesh (bounded at 5 s), the handoff of child nodes, the client drain,
	// and a margin for closing what is left.
	budget := n.live().cfg.Drain.D() + 15*time.Second
	if n.cfg.Mesh.Enabled() {
		budget += 5*time.Second + n.cfg.Mesh.Handoff.D()
	}
	sctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	return n.Shutdown(sctx)
}

// stdLogger adapts net/http's error log to logrus.
type stdLogWriter struct{ log logrus.FieldLogger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}

// clientRouter routes mounts; everything else is a JSON 404 (never an open proxy).
func (n *Node) clientRouter() http.Handler {
	r := mux.NewRouter()
	// No path cleaning: mux would answer a path with dot segments with a
	// redirect built from the request's own URL, host included, so an
	// absolute-form request could make the node redirect a client to any
	// host. Paths are checked, and refused, as they are (checkClientPath).
	r.SkipClean(true)
	// Mounts change at run time (back ends come and go in Consul), so one
	// route matches against the current mount table.
	r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool {
		return n.findMount(req.URL.EscapedPath()) != nil
	}).Methods(http.MethodGet, http.MethodOptions).HandlerFunc(n.handleStream)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		if err := checkClientPath(req.URL.EscapedPath()); err != nil {
			n.refuseClient(w, req, start, refuse(http.StatusBadRequest, codeBadPath, err.Error()))
			return
		}
		n.refuseClient(w, req, start, n.notFound())
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Allow", "GET, OPTIONS")
		n.refuseClient(w, req, time.Now(), refuse(http.StatusMethodNotAllowed, codeMethod, "method "+quoteForError(req.Method)))
	})
	return r
}
