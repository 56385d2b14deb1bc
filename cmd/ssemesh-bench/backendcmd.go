package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/backend"
)

// runBackend serves internal/backend until ctx ends.
func runBackend(ctx context.Context, args []string, stderr io.Writer, log logrus.FieldLogger) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7000", "loopback address to listen on")
	rate := fs.Float64("rate", 1, "events per second on every stream (0: none)")
	size := fs.Int("size", 200, "payload size in bytes")
	format := fs.String("format", backend.FormatBench, "payload format: bench or changelog")
	history := fs.Int("history", 10000, "events kept per stream for Last-Event-ID resumption")
	heartbeat := fs.Duration("heartbeat", 15*time.Second, "comment line after this much silence (0: none)")
	retry := fs.Duration("retry", 0, "retry: value sent on connect (0: none)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if err := checkListen(*listen); err != nil {
		return usageError{err}
	}
	cfg := backend.Config{
		Rate: *rate, PayloadSize: *size, Format: *format, History: *history,
		Heartbeat: *heartbeat, Retry: *retry,
	}
	if err := cfg.Validate(); err != nil {
		return usageError{err}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", *listen, err)
	}
	b := backend.New(cfg, log)
	// No WriteTimeout: it would cut the streams; the back end sets
	// per-write deadlines itself.
	srv := &http.Server{Handler: withConnections(b), ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { b.Run(ctx) })
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- srv.Serve(ln) })

	log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "rate": *rate, "size": *size, "format": *format}).
		Info("ssemesh-bench: back end serving; stats at " + backend.StatsPath + ", connection counts at " + connectionsPath)
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("serving: %w", err)
	}
	// Ending the streams first lets Shutdown find idle connections only.
	b.Close()
	shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer shutCancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	log.Info("ssemesh-bench: back end stopped")
	return nil
}

// connectionsPath answers with the back end's SSE connections over all
// streams: {"open": N, "total": M, "streams": S}, open now and accepted
// ever. It is what "load --backend-stats" samples: in a healthy tree one
// connection per stream stays open.
const connectionsPath = "/_backend/connections"

// connCounts is the body of connectionsPath.
type connCounts struct {
	Open    int `json:"open"`
	Total   int `json:"total"`
	Streams int `json:"streams"`
}

// withConnections serves connectionsPath in front of the back end.
func withConnections(b *backend.Backend) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != connectionsPath {
			b.ServeHTTP(w, r)
			return
		}
		var c connCounts
		for _, k := range b.StreamKeys() {
			st := b.Stats(k)
			c.Open += st.Open
			c.Total += st.Total
			c.Streams++
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(c)
	})
}
