//go:build !linux

package consultest

import (
	"os/exec"
	"syscall"
)

// sysProcAttr returns nil: only Linux can tie the agent's life to the test
// binary's, elsewhere t.Cleanup is the only guard.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// startProcess starts cmd and reaps it from a goroutine that closes exited.
func startProcess(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}
