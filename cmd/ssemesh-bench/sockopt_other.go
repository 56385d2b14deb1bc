//go:build !linux

package main

import "syscall"

// sourceControl leaves the socket as it is: only Linux has
// IP_BIND_ADDRESS_NO_PORT.
var sourceControl func(network, address string, c syscall.RawConn) error
