package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/ssemesh/ssemesh/internal/buildinfo"
)

var versionCommand = command{
	name:     "version",
	synopsis: "ssemesh version [--json]",
	summary:  "print the version, commit, Go version and platform",
	about: `Prints which build this is: the release version (or the Go pseudo-version
of an untagged commit), the commit and its time, the Go version and the
platform. The "node started" log line and the ssemesh_build_info metric
carry the version, the commit and the Go version.`,
}

func cmdVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON: version, revision, time, modified, go, platform")
	if err := parseFlags(fs, args, &versionCommand, stdout, nil); err != nil {
		return err
	}
	bi := buildinfo.Get()
	if !*asJSON {
		fmt.Fprintln(stdout, bi.String())
		return nil
	}
	out, err := json.MarshalIndent(map[string]any{
		"version": bi.Version, "revision": bi.Revision, "time": bi.Time, "modified": bi.Modified,
		"go": bi.GoVersion, "platform": bi.Platform,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("version: %w", err)
	}
	fmt.Fprintln(stdout, string(out))
	return nil
}
