// Command faultkit holds the small programs the network-namespace fault
// drill (scripts/netns-faults.sh, test/netns) runs inside the namespaces it
// builds:
//
//	faultkit backend --listen 10.91.1.20:8080 --rate 5
//	faultkit clients --url http://10.91.2.12:8080/feed/a --clients 100 --stats /tmp/x/cl2.sock
//	faultkit proxy --unix /tmp/x/obs.sock
//	faultkit delay --queue 0 --delay 25ms
//
// "backend" serves internal/backend's synthetic streams (bench format: each
// event's data carries its sequence number and send time) on any address,
// not only loopback. "clients" holds SSE clients that resume with
// Last-Event-ID and count every event they missed or got twice; it serves
// its counters as JSON on a Unix socket. "proxy" lets a process outside the
// namespaces reach addresses inside one: each connection to its Unix socket
// names a host:port and is then spliced to a TCP connection opened from the
// proxy's namespace. "delay" holds every packet an iptables NFQUEUE rule
// hands it for a fixed time before accepting it, for kernels without netem.
//
// Every subcommand runs until SIGINT or SIGTERM.
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: faultkit <command> [flags]

commands:
  backend   serve synthetic SSE streams (bench format) on any address
  clients   hold SSE clients, resume with Last-Event-ID, count loss and duplicates
  proxy     splice connections from a Unix socket to TCP addresses of this namespace
  delay     hold packets queued by iptables NFQUEUE for a fixed time
`

func run(ctx context.Context, args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	log := logrus.New()
	log.SetOutput(stderr)
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cmd func(context.Context, logrus.FieldLogger) error
	switch args[0] {
	case "backend":
		cmd = backendCommand(fs)
	case "clients":
		cmd = clientsCommand(fs)
	case "proxy":
		cmd = proxyCommand(fs)
	case "delay":
		cmd = delayCommand(fs)
	default:
		fmt.Fprintf(stderr, "faultkit: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "faultkit %s: unexpected arguments %q\n", args[0], fs.Args())
		return 2
	}
	if err := cmd(ctx, log.WithField("component", args[0])); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "faultkit %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
