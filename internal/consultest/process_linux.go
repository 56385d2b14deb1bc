package consultest

import (
	"os/exec"
	"runtime"
	"syscall"
)

// sysProcAttr asks the kernel to kill the agent when the test binary dies,
// also when it is killed or times out without running cleanups, so no agent
// outlives the tests.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// startProcess starts cmd from a goroutine locked to its OS thread and keeps
// that goroutine (and thread) alive until the process has been reaped.
// Pdeathsig fires when the forking *thread* exits, not the process; without
// the lock the Go runtime could retire that thread and kill a healthy agent.
func startProcess(cmd *exec.Cmd) (*process, error) {
	p := &process{cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Deliberately never unlocked: the thread ends with this goroutine,
		// which is only after the child has exited.
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.exited)
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}
