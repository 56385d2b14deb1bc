package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

var healthCommand = func() command {
	c := adminCommand("health",
		"ssemesh health [--admin host:port] [--ready] [--timeout 5s]",
		"exit 0 when a node is healthy: for container and supervisor probes",
		`Asks a node's /healthz (the process serves) or, with --ready, /readyz (it
accepts clients: started and not draining) and exits 0 when it answers 200. With no --admin and no SSEMESH_ADMIN it asks 127.0.0.1:9090,
the default admin listener. Prints nothing unless it fails, so a probe's log
stays quiet.`)
	c.notes = "Exit status: 0 healthy (or ready), 1 not, 2 usage error."
	return c
}()

// cmdHealth is a probe a scratch container can run: it needs no shell, no
// curl, only the binary it already has.
func cmdHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	var a adminFlags
	a.register(fs)
	ready := fs.Bool("ready", false, "ask /readyz instead of /healthz")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this `duration`")
	if err := parseFlags(fs, args, &healthCommand, stdout, os.LookupEnv); err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if _, _, err := c.get(ctx, path, nil); err != nil {
		return fmt.Errorf("health: %w", err)
	}
	return nil
}
