//go:build tools

// Package tools pins the Consul agent as a dependency of this module.
//
// Consul's own go.mod carries replace directives, which makes
// `go install github.com/hashicorp/consul@version` fail. Replace directives
// of dependencies are ignored, so requiring Consul from this small module
// and running `go build github.com/hashicorp/consul` here builds the agent
// from the module proxy alone. The build tag keeps this file out of every
// normal build; it exists so `go mod tidy` records Consul's dependency graph
// in go.sum.
package tools

import _ "github.com/hashicorp/consul"
