package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
)

// cmdTopology prints the mesh's tree as one node sees it.
func cmdTopology(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("topology", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a adminFlags
	a.register(fs)
	format := fs.String("format", "tree", "tree, json or dot (Graphviz)")
	stream := fs.String("stream", "", "show only this stream (its path and query as clients ask for it)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ssemesh topology --admin host:port [--token T] [--format tree|json|dot] [--stream S]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
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
