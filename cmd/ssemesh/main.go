// Command ssemesh runs an SSE proxy mesh node.
//
//	ssemesh run --config node.yaml      a node in front of SSE back ends
//	ssemesh demo                        a synthetic back end and an 8-node mesh, nothing installed
//	ssemesh topology --admin host:port  the mesh's tree, from any node
//	ssemesh status --admin host:port    one node's summary
//	ssemesh reload --admin host:port    re-read a node's configuration
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
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/ssemesh/ssemesh/internal/demo"
	"github.com/ssemesh/ssemesh/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitUsage is the exit code for bad flags or configuration.
const exitUsage = 2

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "topology":
		err = cmdTopology(ctx, args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(ctx, args[1:], stdout, stderr)
	case "reload":
		err = cmdReload(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "ssemesh", version)
		return 0
	case "help", "--help", "-h":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "ssemesh: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "ssemesh:", err)
	var ce *node.ConfigError
	if errors.As(err, &ce) || errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		return exitUsage
	}
	return 1
}

var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: ssemesh <command> [flags]

commands:
  run       run a node (ssemesh run --config node.yaml, or flags only)
  demo      run a synthetic back end and an 8-node mesh in one process
  topology  print the mesh's tree from any node's admin API
            (ssemesh topology --admin 127.0.0.1:9090 [--format tree|json|dot] [--stream S])
  status    print a one-screen summary of one node (ssemesh status --admin 127.0.0.1:9090)
  reload    make a node re-read its configuration and TLS files, as SIGHUP does (ssemesh reload --admin 127.0.0.1:9090)
  version   print the version

Run "ssemesh <command> -h" for a command's flags.
`)
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration file")
	listen := fs.String("listen", "", "client listener host:port (overrides listen)")
	admin := fs.String("admin", "", "admin listener host:port (overrides admin.listen)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	logFormat := fs.String("log-format", "", "text or json (overrides log.format)")
	maxClients := fs.Int("max-clients", 0, "client limit (overrides limits.max_clients)")
	nodeID := fs.String("node-id", "", "node identity in the mesh (default host-port)")
	dc := fs.String("dc", "", "data centre (overrides mesh.dc)")
	tier := fs.Int("tier", -1, "tier: 0 = root next to the back ends, higher = further out (overrides mesh.tier)")
	consul := fs.String("consul", "", "Consul agent host:port; enables back-end discovery and self-registration (overrides mesh.consul.address)")
	gossip := fs.String("gossip", "", "gossip bind host:port; enables the mesh (overrides mesh.gossip.bind)")
	advertise := fs.String("advertise", "", "host peers and Consul use to reach this node's listeners (overrides mesh.advertise)")
	check := fs.Bool("check", false, "check the configuration, print the result and exit (0 = valid)")
	var seeds multiFlag
	fs.Var(&seeds, "seed", "gossip address of a node to join (repeatable; overrides mesh.gossip.seeds)")
	var backends multiFlag
	fs.Var(&backends, "backend", "name=uri of a back end, mounted at the uri's path (repeatable)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	build := func() (node.Config, error) {
		cfg := node.DefaultConfig()
		if *configPath != "" {
			var err error
			if cfg, err = node.LoadConfig(*configPath, os.LookupEnv); err != nil {
				return cfg, err
			}
		}
		if *listen != "" {
			cfg.Listen = *listen
		}
		if *admin != "" {
			cfg.Admin.Listen = *admin
		}
		if *logLevel != "" {
			cfg.Log.Level = *logLevel
		}
		if *logFormat != "" {
			cfg.Log.Format = *logFormat
		}
		if *maxClients != 0 {
			cfg.Limits.MaxClients = *maxClients
		}
		if *nodeID != "" {
			cfg.NodeID = *nodeID
		}
		if *dc != "" {
			cfg.Mesh.DC = *dc
		}
		if *tier >= 0 {
			cfg.Mesh.Tier = *tier
		}
		if *consul != "" {
			cfg.Mesh.Consul.Address = *consul
			if cfg.Mesh.Consul.Datacenter == "" {
				cfg.Mesh.Consul.Datacenter = cfg.Mesh.DC
			}
		}
		if *gossip != "" {
			cfg.Mesh.Gossip.Bind = *gossip
		}
		if len(seeds) > 0 {
			cfg.Mesh.Gossip.Seeds = seeds
		}
		if *advertise != "" {
			cfg.Mesh.Advertise = *advertise
		}
		if cfg.Mesh.Consul.Address != "" && cfg.Mesh.Gossip.Bind == "" {
			cfg.Mesh.Gossip.Bind = "0.0.0.0:7946"
		}
		for _, b := range backends {
			spec, err := node.ParseBackendFlag(b)
			if err != nil {
				return cfg, err
			}
			cfg.Backends = append(cfg.Backends, spec)
		}
		node.ApplySecretEnv(&cfg, os.LookupEnv)
		return cfg, nil
	}
	cfg, err := build()
	if err != nil {
		return err
	}
	// Key errors first: a misspelt key is the likelier cause of a file that
	// seems to configure no back end.
	if err := cfg.Validate(); err != nil {
		return err
	}
	if len(cfg.Backends) == 0 && cfg.Mesh.Consul.Address == "" && cfg.Mesh.Tier == 0 {
		return &node.ConfigError{Key: "backends", Reason: "no back end configured (use a config file, --backend name=uri, or --consul to discover them)"}
	}
	if *check {
		fmt.Fprintf(stdout, "configuration ok: %d back end(s) configured, mesh %v\n", len(cfg.Backends), cfg.Mesh.Enabled())
		return nil
	}
	log, err := node.NewLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	n, err := node.New(cfg, log)
	if err != nil {
		return err
	}
	// A reload builds the configuration as above: the file and the
	// environment as they are now, the flags as they were given.
	n.EnableReload(build, log.SetLevel)
	stopHUP := onHangup(ctx, log, func() error {
		if res := n.Reload(); res.Result != "ok" {
			return errors.New(res.Error)
		}
		return nil
	})
	defer stopHUP()
	return n.Run(ctx)
}

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

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := demo.DefaultConfig()
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "node client listener")
	fs.StringVar(&cfg.Admin, "admin", cfg.Admin, "node admin listener")
	fs.StringVar(&cfg.BackendAddr, "backend-listen", cfg.BackendAddr, "synthetic back end listener")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "events per second")
	fs.StringVar(&cfg.Log.Level, "log-level", cfg.Log.Level, "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	log, err := node.NewLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	stopHUP := onHangup(ctx, log, func() error { return nil })
	defer stopHUP()
	return demo.Run(ctx, cfg, stdout)
}
