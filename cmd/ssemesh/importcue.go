package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ssemesh/ssemesh/cmd/ssemesh/cueimport"
	"github.com/ssemesh/ssemesh/node"
)

// cmdImportCue converts a CUE SSE Proxy configuration into an ssemesh
// configuration:
//
//	ssemesh import-cue [--out FILE] sse-proxy.yaml
//
// The result goes to standard output, or to FILE; the warnings go to
// standard error, one line each. A file that cannot be read or converted
// is a configuration error (exit code 2).
func cmdImportCue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("import-cue", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	out := flags.String("out", "", "write the ssemesh configuration to `FILE`, readable by its owner only (default: standard output)")
	parse := func(a []string) error {
		if err := flags.Parse(a); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printHelp(stdout, &importCUECommand, flags)
				return errHelp
			}
			return fmt.Errorf("%w: import-cue: %v (see ssemesh import-cue --help)", errUsage, err)
		}
		return nil
	}
	// Flags may come before or after the file, as operators type them.
	if err := parse(args); err != nil {
		return err
	}
	rest := flags.Args()
	if len(rest) > 0 {
		if err := parse(rest[1:]); err != nil {
			return err
		}
		rest = append([]string{rest[0]}, flags.Args()...)
	}
	if len(rest) == 1 && rest[0] == "help" {
		printHelp(stdout, &importCUECommand, flags)
		return errHelp
	}
	if len(rest) != 1 {
		return fmt.Errorf("%w: import-cue: takes one CUE SSE Proxy configuration file, got %d arguments (see ssemesh import-cue --help)", errUsage, len(rest))
	}
	src := rest[0]
	raw, err := os.ReadFile(src)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return &node.ConfigError{Key: src, Reason: fmt.Sprintf("cannot read the CUE SSE Proxy configuration: %v", err)}
	}
	if *out != "" && sameFile(src, *out) {
		return fmt.Errorf("%w: import-cue: --out %s is the CUE configuration itself", errUsage, *out)
	}
	res, err := cueimport.Convert(raw, cueimport.Options{Source: src, Target: *out})
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		// One line each, even for a key with a line break in it.
		fmt.Fprintln(stderr, "import-cue: warning:", strings.ReplaceAll(w.String(), "\n", `\n`))
	}
	if *out == "" {
		if _, err := stdout.Write(res.YAML); err != nil {
			return fmt.Errorf("import-cue: writing the configuration: %w", err)
		}
		return nil
	}
	if err := writeFileAtomic(*out, res.YAML); err != nil {
		return fmt.Errorf("import-cue: %w", err)
	}
	fmt.Fprintf(stderr, "import-cue: wrote %s: %d back end(s), %d warning(s); check it with: ssemesh run --config %s --check\n", *out, res.Backends, len(res.Warnings), *out)
	return nil
}

// sameFile reports whether two names are one existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// writeFileAtomic replaces name with data in one rename, so that a node
// reloading at that moment never reads half a file. The file is readable
// by its owner only: it may hold the CUE proxy's back-end passwords.
func writeFileAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}
