package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// errReloadRefused is a reload the node refused: the exit status says so.
var errReloadRefused = errors.New("reload refused")

// cmdReload asks a node to re-read its configuration (as SIGHUP does) and
// prints what changed.
func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var a adminFlags
	a.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ssemesh reload --admin host:port [--token T] [--ca FILE] [--cert FILE --key FILE]")
		fmt.Fprintln(stderr, "Asks the node to re-read its configuration file and TLS files; exits 0 when it took the new configuration, 1 when it refused it (nothing changed).")
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
	c, err := a.client()
	if err != nil {
		return err
	}
	_, body, err := c.do(ctx, http.MethodPost, "/v1/reload", nil, http.StatusUnprocessableEntity)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	var res struct {
		Result  string   `json:"result"`
		Error   string   `json:"error"`
		Changed []string `json:"changed"`
		Kept    []string `json:"kept"`
		TLS     string   `json:"tls_error"`
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return fmt.Errorf("reload: decoding the answer: %w", err)
	}
	if res.TLS != "" {
		fmt.Fprintf(stderr, "TLS files kept as they were: %s\n", res.TLS)
	}
	if res.Result != "ok" {
		fmt.Fprintf(stderr, "reload refused, nothing changed: %s\n", res.Error)
		return errReloadRefused
	}
	changed := "nothing"
	if len(res.Changed) > 0 {
		changed = strings.Join(res.Changed, ", ")
	}
	fmt.Fprintf(stdout, "reloaded: changed %s\n", changed)
	if len(res.Kept) > 0 {
		fmt.Fprintf(stdout, "changed in the file but kept until a restart: %s\n", strings.Join(res.Kept, ", "))
	}
	return nil
}
