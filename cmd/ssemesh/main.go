// Command ssemesh runs an SSE proxy mesh node and talks to running ones.
//
//	ssemesh run --config node.yaml      a node in front of SSE back ends
//	ssemesh demo                        a synthetic back end and an 8-node mesh, nothing installed
//	ssemesh topology --admin host:port  the mesh's tree, from any node
//	ssemesh status --admin host:port    one node's summary
//	ssemesh reload --admin host:port    re-read a node's configuration
//	ssemesh health                      exit 0 when the local node is healthy (container probes)
//	ssemesh import-cue sse-proxy.yaml   convert a CUE SSE Proxy configuration
//	ssemesh version
//
// This is the only place that reads flags and the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"unicode"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/cmd/ssemesh/demo"
	"github.com/ssemesh/ssemesh/node"
)

// exitUsage is the exit code for bad flags or configuration.
const exitUsage = 2

// entry is one subcommand.
type entry struct {
	order int // place in `ssemesh help`
	cmd   *command
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is filled in init: the help command lists it.
var commands map[string]entry

func init() {
	commands = map[string]entry{
		"run":        {0, &runCommand, cmdRun},
		"demo":       {1, &demoCommand, cmdDemo},
		"topology":   {2, &topologyCommand, cmdTopology},
		"status":     {3, &statusCommand, cmdStatus},
		"reload":     {4, &reloadCommand, cmdReload},
		"health":     {5, &healthCommand, cmdHealth},
		"import-cue": {6, &importCUECommand, cmdImportCue},
		"version":    {7, &versionCommand, cmdVersion},
		"help":       {8, &helpCommand, cmdHelp},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printCommands(stderr)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	name := args[0]
	switch name {
	case "--help", "-h":
		name = "help"
	case "--version", "-v":
		name = "version"
	}
	e, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "ssemesh: unknown command %q\n\n", args[0])
		printCommands(stderr)
		return exitUsage
	}
	err := e.run(ctx, args[1:], stdout, stderr)
	if err == nil || errors.Is(err, errHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "ssemesh:", err)
	var ce *node.ConfigError
	if errors.As(err, &ce) || errors.Is(err, errUsage) {
		return exitUsage
	}
	return 1
}

// errUsage marks bad flags, arguments or environment values: exit 2.
var errUsage = errors.New("usage")

var helpCommand = command{
	name:     "help",
	synopsis: "ssemesh help [command]",
	summary:  "show the commands, or one command's flags and environment",
}

func cmdHelp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "--help" || args[0] == "-h" {
		printCommands(stdout)
		return nil
	}
	e, ok := commands[args[0]]
	if !ok {
		return fmt.Errorf("%w: help: unknown command %q (see ssemesh help)", errUsage, args[0])
	}
	return e.run(ctx, []string{"--help"}, stdout, stderr)
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// splitEnv splits an environment variable's list at commas and white space.
func (m *multiFlag) splitEnv(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
}

// uriFlag is a repeatable flag whose values are URIs, which may hold
// commas: its environment variable separates them by white space only.
type uriFlag struct{ multiFlag }

func (u *uriFlag) splitEnv(v string) []string { return strings.Fields(v) }

// onHangup turns SIGHUP, which a supervisor sends to reload and a closed
// terminal sends too, into reload: it never stops the node. The returned
// function stops the watch.
func onHangup(ctx context.Context, log logrus.FieldLogger, reload func() error) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-hup:
				if err := reload(); err != nil {
					log.WithError(err).Warn("SIGHUP received: reload refused; the node keeps running as it was")
				} else {
					log.Info("SIGHUP received: reloaded")
				}
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-stopped
	}
}

var demoCommand = command{
	name:     "demo",
	synopsis: "ssemesh demo [flags]",
	summary:  "run a synthetic back end and an 8-node mesh in one process, nothing installed",
	about: `Starts a synthetic SSE back end and a mesh of eight nodes (two roots, two
relays, four leaves) on loopback, prints where to point a browser or curl,
and runs until interrupted.`,
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := demo.DefaultConfig()
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "the client listener of the node the demo points at, `host:port`")
	fs.StringVar(&cfg.Admin, "admin", cfg.Admin, "that node's admin listener, `host:port`")
	fs.StringVar(&cfg.BackendAddr, "backend-listen", cfg.BackendAddr, "the synthetic back end's listener, `host:port` (port 0: any free port)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "events per second the back end sends")
	fs.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "debug, info, warn or error")
	if err := parseFlags(fs, args, &demoCommand, stdout, nil); err != nil {
		return err
	}
	log, err := node.NewLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	stopHUP := onHangup(ctx, log, func() error { return nil })
	defer stopHUP()
	return demo.Run(ctx, cfg, stdout)
}
