package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
)

var topologyCommand = adminCommand("topology",
	"ssemesh topology [--admin host:port] [--format tree|json|dot] [--stream S]",
	"print the mesh's tree from any node's admin API",
	`Prints the mesh as the node at --admin sees it: back ends, roots, relays and
leaves, with each node's clients and streams, and each stream's path from the
back end down.`)

// cmdTopology prints the mesh's tree as one node sees it.
func cmdTopology(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("topology", flag.ContinueOnError)
	var a adminFlags
	a.register(fs)
	format := fs.String("format", "tree", "`format`: tree, json or dot (Graphviz)")
	stream := fs.String("stream", "", "show only this `stream` (its path and query as clients ask for it)")
	if err := parseFlags(fs, args, &topologyCommand, stdout, os.LookupEnv); err != nil {
		return err
	}
	q := url.Values{}
	switch *format {
	case "tree":
		q.Set("format", "text")
	case "json":
	case "dot":
		q.Set("format", "dot")
	default:
		return fmt.Errorf("%w: --format %q: want tree, json or dot", errUsage, *format)
	}
	if *stream != "" {
		q.Set("stream", *stream)
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	_, body, err := c.get(ctx, "/v1/topology", q)
	if err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if _, err := stdout.Write(body); err != nil {
		return fmt.Errorf("topology: writing output: %w", err)
	}
	return nil
}
