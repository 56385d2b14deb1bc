package main

import "syscall"

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (linux/in.h; the
// same on every architecture).
const ipBindAddressNoPort = 24

// sourceControl makes a client socket bound to a source address take its
// port only when it connects. The ~28,000 ephemeral ports of a source
// address then count per destination, as the kernel picks a port free for
// that 4-tuple, and ports whose connections wait in TIME_WAIT after an
// earlier run or a reconnect can serve again (loopback allows it).
func sourceControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	return serr
}
