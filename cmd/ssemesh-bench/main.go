// Command ssemesh-bench measures an ssemesh node under load.
//
//	ssemesh-bench backend --listen 127.0.0.1:7000 --rate 1 --size 200
//	ssemesh-bench load --url http://127.0.0.1:8080/bench --clients 10000 --node-pid PID
//	ssemesh-bench load --url https://127.0.0.1:8443/bench --ca ca.crt --proto h2 --clients 10000 --node-pid PID
//	ssemesh-bench load --urls leaf-0=http://127.0.0.1:8200/bench,leaf-1=http://127.0.0.1:8201/bench \
//		--clients 20000 --sources 127.0.0.2 --node-pids leaf-0=PID0,leaf-1=PID1 \
//		--backend-stats http://127.0.0.1:7000/_backend/connections --storm-at 10s --storm-cmd 'kill -9 PID0'
//
// "backend" serves synthetic SSE streams in the bench format (each event's
// data carries its sequence number and send time), and its SSE connection
// counts at /_backend/connections. "load" opens many SSE clients against a
// node (or the back end itself), or against several at once, spread over
// several loopback source addresses and worker processes, and reports loss,
// duplicates, delivery latency and the node's memory and CPU cost, including
// the CPU of accepting the clients. Over https a client has a TLS connection
// of its own (--proto http1) or is an HTTP/2 stream sharing one with
// --h2-streams others (--proto h2). "worker" is the per-process half of
// "load" and is not meant to be run by hand.
//
// With several URLs the clients are dealt out evenly and fail over as a
// browser behind a load balancer would: after a dropped stream or a refusal
// a client reconnects with Last-Event-ID to another URL, after the stream's
// retry: value (or --retry) with jitter, no sooner than a 503's or 429's
// Retry-After. Loss and duplicates are counted per client across all its
// sessions. The report has a table per URL, the cost of the nodes named by
// --node-pids, the back end's connection count sampled every second, and,
// with --storm-cmd, how fast the clients were served again after the fault
// it causes.
//
// All traffic stays on 127.0.0.0/8: other hosts are refused.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage: ssemesh-bench <command> [flags]

commands:
  backend   serve synthetic SSE streams in the bench format
  load      open SSE clients against one or more URLs and report loss, latency and cost
  worker    one process of a load run (started by load)

Run "ssemesh-bench <command> -h" for the flags of a command.
`

// run executes one subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	log := logrus.New()
	log.SetOutput(stderr)
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	var err error
	switch args[0] {
	case "backend":
		err = runBackend(ctx, args[1:], stderr, log)
	case "load":
		err = runLoad(ctx, args[1:], stdout, stderr, log)
	case "worker":
		err = runWorkerCommand(ctx, args[1:], os.Stdin, stdout, stderr, log)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "ssemesh-bench: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case isUsageError(err):
		fmt.Fprintf(stderr, "ssemesh-bench %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "ssemesh-bench %s: %v\n", args[0], err)
		return 1
	}
}

// usageError marks a bad command line, answered with exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func isUsageError(err error) bool {
	_, ok := err.(usageError)
	return ok
}
