package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// errReloadRefused is a reload the node refused: the exit status says so.
var errReloadRefused = errors.New("reload refused")

var reloadCommand = func() command {
	c := adminCommand("reload",
		"ssemesh reload [--admin host:port]",
		"make a node re-read its configuration and TLS files, as SIGHUP does",
		`Asks the node to re-read its configuration file and TLS files, as SIGHUP
does, and prints what changed and what waits for a restart.`)
	c.notes = "Exit status: 0 the node took the new configuration, 1 it refused it (nothing changed) or could not be reached, 2 usage error."
	return c
}()

// cmdReload asks a node to re-read its configuration (as SIGHUP does) and
// prints what changed.
func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reload", flag.ContinueOnError)
	var a adminFlags
	a.register(fs)
	if err := parseFlags(fs, args, &reloadCommand, stdout, os.LookupEnv); err != nil {
		return err
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
