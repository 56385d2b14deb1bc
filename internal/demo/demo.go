// Package demo runs ssemesh's embedded default: a synthetic change-log back
// end and a node in front of it, in one process, with nothing installed.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/ssemesh/ssemesh/internal/backend"
	"github.com/ssemesh/ssemesh/node"
)

// Config tunes the demo.
type Config struct {
	Listen      string  // the node's client listener
	Admin       string  // the node's admin listener
	BackendAddr string  // the synthetic back end's listener
	Rate        float64 // events per second
	Log         node.LogConfig
}

// DefaultConfig listens on the usual loopback ports.
func DefaultConfig() Config {
	return Config{
		Listen:      "127.0.0.1:8080",
		Admin:       "127.0.0.1:9090",
		BackendAddr: "127.0.0.1:0",
		Rate:        1,
		Log:         node.LogConfig{Level: "info", Format: "text"},
	}
}

// ChangelogPath is where the synthetic back end serves its change log, and
// where the node mounts it.
const ChangelogPath = "/webservice/escenic/changelog/sse"

// Run starts the demo, prints how to watch it to out, and runs until ctx ends.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	log, err := node.NewLogger(cfg.Log, io.Discard)
	if err != nil {
		return err
	}
	log.SetOutput(errWriter{out})

	be := backend.New(backend.Config{Rate: cfg.Rate, Retry: 3 * time.Second}, log.WithField("component", "backend"))
	bln, err := net.Listen("tcp", cfg.BackendAddr)
	if err != nil {
		return fmt.Errorf("demo: back end listen %s: %w", cfg.BackendAddr, err)
	}
	bsrv := &http.Server{Handler: be, ReadHeaderTimeout: 5 * time.Second}
	bctx, bcancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { defer func() { done <- struct{}{} }(); be.Run(bctx) }()
	go func() {
		defer func() { done <- struct{}{} }()
		if err := bsrv.Serve(bln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("demo back end failed")
		}
	}()
	stopBackend := func() {
		bcancel()
		be.Close()
		_ = bsrv.Close()
		<-done
		<-done
	}

	ncfg := node.DefaultConfig()
	ncfg.Listen = cfg.Listen
	ncfg.Admin.Listen = cfg.Admin
	ncfg.Log = cfg.Log
	ncfg.Drain = node.Duration(2 * time.Second)
	ncfg.NodeID = "demo-node"
	ncfg.CORS.AllowedOrigins = []string{"*"}
	ncfg.Backends = []node.BackendSpec{{Name: "changelog", URI: "http://" + bln.Addr().String() + ChangelogPath}}
	n, err := node.New(ncfg, log)
	if err != nil {
		stopBackend()
		return err
	}
	if err := n.Start(); err != nil {
		stopBackend()
		return err
	}
	url := "http://" + n.Addr() + ChangelogPath
	fmt.Fprintf(out, `ssemesh demo running
  back end (synthetic change log): http://%s%s
  node client URL:                 %s
  node admin:                      http://%s/v1/streams

watch it:
  curl -N %s
resume after event 5:
  curl -N -H 'Last-Event-ID: 5' %s

Ctrl-C stops.
`, bln.Addr(), ChangelogPath, url, n.AdminAddr(), url, url)

	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = n.Shutdown(sctx)
	stopBackend()
	return err
}

// errWriter lets the logger share the demo's output.
type errWriter struct{ w io.Writer }

func (e errWriter) Write(p []byte) (int, error) { return e.w.Write(p) }
