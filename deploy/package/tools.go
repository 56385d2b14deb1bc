//go:build tools

// Package tools pins nfpm, the tool that builds ssemesh's Debian package.
//
// Requiring nfpm from this small module keeps its dependency graph out of
// ssemesh's own go.mod, and `go run github.com/goreleaser/nfpm/v2/cmd/nfpm`
// inside this directory builds the pinned version from the module proxy
// alone. The build tag keeps this file out of every normal build; it
// exists so `go mod tidy` records nfpm's dependency graph in go.sum.
package tools

import _ "github.com/goreleaser/nfpm/v2/cmd/nfpm"
