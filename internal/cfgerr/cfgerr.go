// Package cfgerr is the error a configuration check returns: the key at
// fault, by its path in the YAML file, and why. Each package validates its
// own Config with keys relative to it; the package that embeds that Config
// prefixes them with where it sits (Prefix), so an operator reads the full
// path: relay.linger, mesh.gossip.key.
package cfgerr

import (
	"errors"
	"fmt"
	"strings"
)

// Error names one key and what is wrong with it.
type Error struct {
	Key    string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Reason) }

// New is an Error for key.
func New(key, format string, args ...any) *Error {
	return &Error{Key: key, Reason: fmt.Sprintf(format, args...)}
}

// List is several problems found in one pass, so an operator fixes a file
// in one round rather than one error per start.
type List []*Error

// Max bounds a List: past it, the file is likely not a configuration of
// this program at all, and the first problems say so.
const Max = 20

func (es List) Error() string {
	var b strings.Builder
	if len(es) >= Max {
		fmt.Fprintf(&b, "config: %d problems or more (the first %d):", len(es), len(es))
	} else {
		fmt.Fprintf(&b, "config: %d problems:", len(es))
	}
	for _, e := range es {
		fmt.Fprintf(&b, "\n  %s: %s", e.Key, e.Reason)
	}
	return b.String()
}

// Unwrap lets errors.As find an *Error among them.
func (es List) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Prefix puts the path of an embedded section in front of the keys err
// names: Prefix("relay", New("linger", ...)) names relay.linger. An error
// that names no key is named by the section itself.
func Prefix(section string, err error) error {
	if err == nil {
		return nil
	}
	join := func(k string) string {
		if k == "" {
			return section
		}
		if strings.HasPrefix(k, "[") {
			return section + k
		}
		return section + "." + k
	}
	var l List
	if errors.As(err, &l) {
		out := make(List, len(l))
		for i, e := range l {
			out[i] = &Error{Key: join(e.Key), Reason: e.Reason}
		}
		return out
	}
	var e *Error
	if errors.As(err, &e) {
		return &Error{Key: join(e.Key), Reason: e.Reason}
	}
	return &Error{Key: section, Reason: err.Error()}
}
