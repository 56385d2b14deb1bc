// Package demo runs ssemesh's embedded default: a synthetic change-log back
// end and a mesh of eight nodes in front of it (2 roots, 2 relays, 4
// leaves, real gossip on loopback), in one process, with nothing installed.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
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

	// The mesh: 2 roots next to the back end, 2 relays, 4 leaves, joined by
	// real memberlist gossip on loopback. Every node knows the back end
	// (static config); the topology decides who actually connects to it.
	layout := []struct {
		id   string
		tier int
	}{
		{"root-1", 0}, {"root-2", 0}, {"relay-1", 1}, {"relay-2", 1},
		{"leaf-1", 2}, {"leaf-2", 2}, {"leaf-3", 2}, {"leaf-4", 2},
	}
	var nodes []*node.Node
	stopNodes := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for i := len(nodes) - 1; i >= 0; i-- {
			_ = nodes[i].Shutdown(sctx)
		}
	}
	// The nodes prove membership to each other with a secret of this run.
	secret, err := randomSecret()
	if err != nil {
		stopBackend()
		return err
	}
	var seeds []string
	for _, l := range layout {
		ncfg := node.DefaultConfig()
		ncfg.NodeID = l.id
		ncfg.Listen, ncfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
		if l.id == "leaf-1" {
			ncfg.Listen, ncfg.Admin.Listen = cfg.Listen, cfg.Admin
		}
		ncfg.Log = cfg.Log
		ncfg.Drain = node.Duration(2 * time.Second)
		ncfg.CORS.AllowedOrigins = []string{"*"}
		ncfg.Mesh.DC, ncfg.Mesh.Tier = "dc1", l.tier
		ncfg.Mesh.Gossip.Bind = "127.0.0.1:0"
		ncfg.Mesh.Gossip.Seeds = seeds
		ncfg.Mesh.Gossip.Fast = true
		ncfg.Mesh.Handoff = node.Duration(3 * time.Second)
		ncfg.Mesh.Secret = secret
		ncfg.Backends = []node.BackendSpec{{Name: "changelog", URI: "http://" + bln.Addr().String() + ChangelogPath, DC: "dc1"}}
		n, err := node.New(ncfg, log)
		if err == nil {
			err = n.Start()
		}
		if err != nil {
			stopNodes()
			stopBackend()
			return fmt.Errorf("demo: node %s: %w", l.id, err)
		}
		nodes = append(nodes, n)
		if seeds == nil {
			seeds = []string{n.GossipAddr()}
		}
	}
	leaf := nodes[4]
	url := "http://" + leaf.Addr() + ChangelogPath
	fmt.Fprintf(out, `ssemesh demo running: a synthetic back end and a mesh of 2 roots, 2 relays and 4 leaves
  back end (synthetic change log): http://%s%s
  a leaf's client URL:             %s
  the leaf's admin API:            http://%s/  (topology page; also /v1/topology?format=text)
  other leaves:                   `, bln.Addr(), ChangelogPath, url, leaf.AdminAddr())
	for _, n := range nodes[5:] {
		fmt.Fprintf(out, " http://%s%s", n.Addr(), ChangelogPath)
	}
	fmt.Fprintf(out, `

watch it:
  curl -N %s
resume after event 5:
  curl -N -H 'Last-Event-ID: 5' %s
see the tree:
  go run ./cmd/ssemesh topology --admin http://%s

Ctrl-C stops.
`, url, url, leaf.AdminAddr())

	<-ctx.Done()
	stopNodes()
	stopBackend()
	return nil
}

func randomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("demo: mesh secret: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// errWriter lets the logger share the demo's output.
type errWriter struct{ w io.Writer }

func (e errWriter) Write(p []byte) (int, error) { return e.w.Write(p) }
