package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// command is what a subcommand's help shows: its synopsis, what it does,
// and which environment variables it reads.
type command struct {
	name     string
	synopsis string // after "Usage: "
	summary  string // one line in `ssemesh help`
	about    string // paragraphs under the synopsis
	// env maps flag names to the environment variables that set them when
	// the flag is not given.
	env map[string]string
	// moreEnv lists other environment variables the command reads, with
	// what they are for.
	moreEnv [][2]string
	// notes closes the help (exit codes, precedence).
	notes string
}

// errHelp is a --help that was answered: exit 0.
var errHelp = errors.New("help shown")

// parseFlags parses args with fs the conventional way: --help/-h prints the
// command's help on stdout (errHelp); a bad flag, a stray argument or a bad
// environment value is a usage error naming the problem; flags not given
// are taken from the command's environment variables.
func parseFlags(fs *flag.FlagSet, args []string, c *command, stdout io.Writer, lookup func(string) (string, bool)) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout, c, fs)
			return errHelp
		}
		return fmt.Errorf("%w: %s: %v (see ssemesh %s --help)", errUsage, c.name, err, c.name)
	}
	if fs.NArg() > 0 {
		if a := fs.Arg(0); a == "help" {
			printHelp(stdout, c, fs)
			return errHelp
		}
		return fmt.Errorf("%w: %s: unexpected argument %q (see ssemesh %s --help)", errUsage, c.name, fs.Arg(0), c.name)
	}
	return applyEnv(fs, c.env, lookup)
}

// applyEnv sets every flag that was not given on the command line from its
// environment variable, so precedence is flag, environment, then whatever
// the command does with an unset flag (the file, then the default).
// Repeatable flags take a list (see multiFlag.splitEnv).
func applyEnv(fs *flag.FlagSet, env map[string]string, lookup func(string) (string, bool)) error {
	if len(env) == 0 || lookup == nil {
		return nil
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		name, ok := env[f.Name]
		if err != nil || given[f.Name] || !ok {
			return
		}
		v, set := lookup(name)
		if !set || v == "" {
			return
		}
		values := []string{v}
		if l, list := f.Value.(interface{ splitEnv(string) []string }); list {
			values = l.splitEnv(v)
		}
		for _, x := range values {
			if e := fs.Set(f.Name, x); e != nil {
				err = fmt.Errorf("%w: $%s: invalid value %q: %v", errUsage, name, x, e)
				return
			}
		}
	})
	return err
}

// envFor maps each flag of fs to PREFIX + its name in upper case with
// underscores: --max-clients is SSEMESH_MAX_CLIENTS.
func envFor(fs *flag.FlagSet, prefix string) map[string]string {
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		out[f.Name] = prefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
	})
	return out
}

// printHelp writes the command's help: synopsis, description, every flag
// with its double-dash name, value, default and environment variable.
func printHelp(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s\n", c.synopsis)
	if c.about != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.about))
	}
	var flags []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) > 0 {
		fmt.Fprintln(w, "\nFlags:")
	}
	for _, f := range flags {
		value, usage := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			value = ""
		}
		head := "  --" + f.Name
		if value != "" {
			head += " " + value
		}
		fmt.Fprintln(w, head)
		fmt.Fprintf(w, "        %s\n", usage)
		var extra []string
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "-1" && f.DefValue != "[]" {
			extra = append(extra, "default "+f.DefValue)
		}
		if e, ok := c.env[f.Name]; ok {
			extra = append(extra, "env "+e)
		}
		if len(extra) > 0 {
			fmt.Fprintf(w, "        (%s)\n", strings.Join(extra, "; "))
		}
	}
	if len(c.moreEnv) > 0 {
		fmt.Fprintln(w, "\nEnvironment:")
		for _, e := range c.moreEnv {
			fmt.Fprintf(w, "  %s\n        %s\n", e[0], e[1])
		}
	}
	if c.notes != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.notes))
	}
}

// printCommands writes the top-level usage: every command and its summary.
func printCommands(w io.Writer) {
	fmt.Fprintln(w, "Usage: ssemesh <command> [flags]")
	fmt.Fprintln(w, "\nssemesh is a server-sent events proxy mesh: one upstream connection per stream, every client served.")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return commands[names[i]].order < commands[names[j]].order })
	for _, name := range names {
		fmt.Fprintf(w, "  %-11s %s\n", name, commands[name].cmd.summary)
	}
	fmt.Fprintln(w, "\nRun \"ssemesh <command> --help\" (or \"ssemesh help <command>\") for a command's flags.")
	fmt.Fprintln(w, "Exit status: 0 done, 1 failed, 2 usage or configuration error.")
}

var importCUECommand = command{
	name:     "import-cue",
	synopsis: "ssemesh import-cue [--out FILE] sse-proxy.yaml",
	summary:  "convert a CUE SSE Proxy configuration to an ssemesh one",
	about: `Reads a CUE SSE Proxy (Dropwizard) configuration and writes the equivalent
ssemesh configuration to standard output or --out: the same listeners, the
same client paths, the same back ends with their headers and credentials.
${VAR} and ${VAR:-default} references are kept as they are. What has no
equivalent is reported as a warning on standard error. Check the result with
ssemesh run --check --config FILE.`,
	notes: "Exit status: 0 converted (warnings included), 1 --out could not be written, 2 the file could not be read or converted.",
}
