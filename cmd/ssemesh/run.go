package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/ssemesh/ssemesh/node"
)

var runCommand = command{
	name:     "run",
	synopsis: "ssemesh run [--config FILE] [flags]",
	summary:  "run a node (ssemesh run --config /etc/ssemesh/ssemesh.yaml, or flags only)",
	about: `Runs a node: it serves SSE streams to clients on its listener and holds one
upstream connection per stream, to the back end (tier 0) or to a parent
node found through gossip and Consul.

Settings come from the configuration file, the flags below and their
environment variables. Each flag overrides its file key; a flag not given
is taken from its environment variable when that is set and not empty.
Precedence: flag, environment variable, file, default. SSEMESH_BACKEND
holds name=uri entries separated by spaces; SSEMESH_SEED, addresses
separated by commas or spaces.

SIGHUP (or ssemesh reload) re-reads the file and the TLS files without
dropping clients; SIGTERM or SIGINT drains the clients over 'drain' and exits.`,
	moreEnv: [][2]string{
		{"SSEMESH_MESH_SECRET", "mesh.secret when the file leaves it empty"},
		{"SSEMESH_GOSSIP_KEY", "mesh.gossip.key when the file leaves it empty"},
		{"SSEMESH_ADMIN_TOKEN", "admin.token when the file leaves it empty"},
		{"${NAME} in the file", "replaced by the variable NAME; ${NAME:-default} when unset or empty; $$ is a literal $"},
		{"GOGC, GOMEMLIMIT", "the Go garbage collector's target and memory limit; a node runs with GOGC=25 unless GOGC is set"},
	},
	notes: `Exit status: 0 after a clean stop or a valid --check, 1 when the node failed,
2 for a usage or configuration error (the message names the key and line).`,
}

// runOptions are `ssemesh run`'s flags, after the environment filled in
// those not given.
type runOptions struct {
	configPath, listen, admin, logLevel, logFormat string
	nodeID, dc, consul, gossip, advertise          string
	maxClients, tier                               int
	check                                          bool
	seeds                                          multiFlag
	backends                                       uriFlag
}

// parseRun reads run's flags, then the SSEMESH_* variables of the flags
// not given.
func parseRun(args []string, stdout io.Writer, lookup func(string) (string, bool)) (*runOptions, error) {
	d := node.DefaultConfig()
	o := &runOptions{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&o.configPath, "config", "", "YAML configuration `file` (see docs/configuration.md)")
	fs.StringVar(&o.listen, "listen", "", "client listener `host:port` (file key listen; default "+d.Listen+")")
	fs.StringVar(&o.admin, "admin", "", "admin listener `host:port` (admin.listen; default "+d.Admin.Listen+")")
	fs.StringVar(&o.logLevel, "log-level", "", "`level`: debug, info, warn or error (log.level; default "+d.Log.Level+")")
	fs.StringVar(&o.logFormat, "log-format", "", "`format`: text or json (log.format; default "+d.Log.Format+")")
	fs.IntVar(&o.maxClients, "max-clients", 0, "client `limit` (limits.max_clients; default "+strconv.Itoa(d.Limits.MaxClients)+")")
	fs.StringVar(&o.nodeID, "node-id", "", "node `id` in the mesh (node_id; default host-port)")
	fs.StringVar(&o.dc, "dc", "", "data centre `name` (mesh.dc; default "+d.Mesh.DC+")")
	fs.IntVar(&o.tier, "tier", -1, "`tier`: 0 = root next to the back ends, higher = further out (mesh.tier; default 0)")
	fs.StringVar(&o.consul, "consul", "", "Consul agent `host:port`; enables back-end discovery and self-registration (mesh.consul.address)")
	fs.StringVar(&o.gossip, "gossip", "", "gossip bind `host:port`; enables the mesh (mesh.gossip.bind)")
	fs.StringVar(&o.advertise, "advertise", "", "`host` peers and Consul use to reach this node's listeners (mesh.advertise)")
	fs.BoolVar(&o.check, "check", false, "check the configuration, print the result and exit: 0 valid, 2 not")
	fs.Var(&o.seeds, "seed", "gossip `host:port` of a node to join; repeatable (mesh.gossip.seeds)")
	fs.Var(&o.backends, "backend", "back end `name=uri`, mounted at the uri's path; repeatable (backends)")
	c := runCommand
	c.env = envFor(fs, "SSEMESH_")
	// --check is an action, not a setting: a stray SSEMESH_CHECK in a unit's
	// environment file would make the node exit at every start.
	delete(c.env, "check")
	if err := parseFlags(fs, args, &c, stdout, lookup); err != nil {
		return nil, err
	}
	return o, nil
}

// build makes the node's configuration: the file (its ${VAR}s from
// lookup), the flags over it, then secrets from the environment where the
// file left them empty. A reload calls it again: the file and the
// environment as they are now, the flags as they were given.
func (o *runOptions) build(lookup func(string) (string, bool)) (node.Config, error) {
	cfg := node.DefaultConfig()
	if o.configPath != "" {
		var err error
		if cfg, err = node.LoadConfig(o.configPath, lookup); err != nil {
			return cfg, err
		}
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Listen, o.listen)
	set(&cfg.Admin.Listen, o.admin)
	set(&cfg.Log.Level, o.logLevel)
	set(&cfg.Log.Format, o.logFormat)
	set(&cfg.NodeID, o.nodeID)
	set(&cfg.Mesh.DC, o.dc)
	set(&cfg.Mesh.Gossip.Bind, o.gossip)
	set(&cfg.Mesh.Advertise, o.advertise)
	if o.maxClients != 0 {
		cfg.Limits.MaxClients = o.maxClients
	}
	if o.tier >= 0 {
		cfg.Mesh.Tier = o.tier
	}
	if o.consul != "" {
		cfg.Mesh.Consul.Address = o.consul
		if cfg.Mesh.Consul.Datacenter == "" {
			cfg.Mesh.Consul.Datacenter = cfg.Mesh.DC
		}
	}
	if len(o.seeds) > 0 {
		cfg.Mesh.Gossip.Seeds = o.seeds
	}
	if cfg.Mesh.Consul.Address != "" && cfg.Mesh.Gossip.Bind == "" {
		cfg.Mesh.Gossip.Bind = "0.0.0.0:7946"
	}
	for _, b := range o.backends.multiFlag {
		spec, err := node.ParseBackendFlag(b)
		if err != nil {
			return cfg, err
		}
		cfg.Backends = append(cfg.Backends, spec)
	}
	node.ApplySecretEnv(&cfg, lookup)
	return cfg, nil
}

// defaultGCPercent is the garbage collector's target for a node when GOGC
// is not in the environment. A node's live heap is almost all connection
// state that lives as long as its clients (about 600 bytes each) and its
// event path allocates nothing per subscriber, so collecting at 25% growth
// instead of Go's 100% costs little CPU (about 7% more per connect, none
// measurable per event) and brings memory from 2.2 to 1.5 KiB per client
// (docs/benchmarks.md).
const defaultGCPercent = 25

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseRun(args, stdout, os.LookupEnv)
	if err != nil {
		return err
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	build := func() (node.Config, error) { return o.build(os.LookupEnv) }
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
	if o.check {
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
