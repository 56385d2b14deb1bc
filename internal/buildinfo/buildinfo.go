// Package buildinfo says which build of ssemesh is running: the version,
// the commit it was built from, when, and with which Go, for `ssemesh
// version`, the start-up log line and the ssemesh_build_info metric.
//
// A release build sets the version, commit and date with the linker
// (`make release`: -X github.com/ssemesh/ssemesh/internal/buildinfo.version=…);
// any other build reads what the Go toolchain recorded in the binary
// (runtime/debug.ReadBuildInfo: the module version and, when the build
// stamped it, the VCS revision and commit time).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the linker for release builds; empty otherwise.
var (
	version string
	commit  string
	date    string
)

// Info describes a build.
type Info struct {
	Version   string // "v1.4.0", a git describe, or "dev"
	Revision  string // the commit, "" when unknown
	Time      string // the commit or build time (RFC 3339), "" when unknown
	Modified  bool   // built from a tree with uncommitted changes
	GoVersion string
	Platform  string // GOOS/GOARCH
}

// Get reads the running binary's build information.
func Get() Info {
	i := Info{Version: version, Revision: commit, Time: date, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if i.Revision == "" {
					i.Revision = s.Value
				}
			case "vcs.time":
				if i.Time == "" {
					i.Time = s.Value
				}
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	// A release built from a tree with uncommitted changes says so in its
	// version (git describe --dirty).
	if strings.HasSuffix(i.Version, "-dirty") {
		i.Modified = true
	}
	return i
}

// ShortRevision is the commit's first 12 characters.
func (i Info) ShortRevision() string {
	if len(i.Revision) > 12 {
		return i.Revision[:12]
	}
	return i.Revision
}

// String is the one-line form `ssemesh version` prints.
func (i Info) String() string {
	s := "ssemesh " + i.Version
	if i.Revision != "" {
		s += " (commit " + i.ShortRevision()
		if i.Modified {
			s += ", modified"
		}
		if i.Time != "" {
			s += ", " + i.Time
		}
		s += ")"
	}
	return s + fmt.Sprintf(" %s %s", i.GoVersion, i.Platform)
}
