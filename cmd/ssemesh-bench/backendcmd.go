package main

import (
	"context"
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
	srv := &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { b.Run(ctx) })
	serveErr := make(chan error, 1)
	wg.Go(func() { serveErr <- srv.Serve(ln) })

	log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "rate": *rate, "size": *size, "format": *format}).
		Info("ssemesh-bench: back end serving; stats at " + backend.StatsPath)
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
