package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/backend"
)

// backendCommand serves internal/backend until ctx ends. Unlike
// ssemesh-bench backend it listens on any address: the drill's back end
// lives on a host of its own, inside a namespace.
func backendCommand(fs *flag.FlagSet) func(context.Context, logrus.FieldLogger) error {
	listen := fs.String("listen", "", "address to listen on, host:port")
	rate := fs.Float64("rate", 5, "events per second on every stream")
	history := fs.Int("history", 10000, "events kept per stream for Last-Event-ID resumption")
	heartbeat := fs.Duration("heartbeat", 15*time.Second, "comment line after this much silence")
	return func(ctx context.Context, log logrus.FieldLogger) error {
		if *listen == "" {
			return errors.New("--listen is required")
		}
		cfg := backend.Config{Rate: *rate, Format: backend.FormatBench, History: *history, Heartbeat: *heartbeat}
		if err := cfg.Validate(); err != nil {
			return err
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
		log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "rate": *rate}).Info("faultkit: back end serving; stats at " + backend.StatsPath)
		select {
		case <-ctx.Done():
		case err := <-serveErr:
			return fmt.Errorf("serving: %w", err)
		}
		b.Close()
		shutCtx, shutCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer shutCancel()
		if err := srv.Shutdown(shutCtx); err != nil {
			_ = srv.Close()
		}
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
		return nil
	}
}
