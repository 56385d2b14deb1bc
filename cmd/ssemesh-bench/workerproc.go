package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// readyLine is what a worker process prints once it is set up and waits for
// its schedule on stdin.
const readyLine = "ready"

// readyTimeout bounds the start of one worker process.
const readyTimeout = 60 * time.Second

// schedule is the shared timeline of a run, sent to every worker once all of
// them are ready.
type schedule struct {
	Start time.Time `json:"start"`
	T0    time.Time `json:"t0"`
	T1    time.Time `json:"t1"`
	End   time.Time `json:"end"`
	// With a storm: its part [StormFrom, StormTo) over which the clients
	// it did not disconnect have their latency measured apart.
	StormFrom time.Time `json:"storm_from,omitzero"`
	StormTo   time.Time `json:"storm_to,omitzero"`
}

func (s *workerSpec) setSchedule(sc schedule) {
	s.Start, s.T0, s.T1, s.End = sc.Start, sc.T0, sc.T1, sc.End
	s.StormFrom, s.StormTo = sc.StormFrom, sc.StormTo
}

// workerProc is a started worker process.
type workerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startWorker starts "exe worker --spec ..." and waits until it is ready.
// Its stdin stays open for the schedule and its stdout carries the result.
func startWorker(ctx context.Context, exe string, spec workerSpec, stderr io.Writer) (*workerProc, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encoding spec: %w", err)
	}
	// The process's lifetime is bounded by run's context; this one only
	// bounds the start.
	cmd := exec.Command(exe, "worker", "--spec", string(specJSON))
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", exe, err)
	}
	p := &workerProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	readyCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	// A worker that never gets ready is killed, which ends the read below.
	stop := context.AfterFunc(readyCtx, func() { _ = cmd.Process.Kill() })
	line, err := p.out.ReadString('\n')
	if !stop() || err != nil || strings.TrimSpace(line) != readyLine {
		p.abort()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("interrupted while starting: %w", ctx.Err())
		}
		return nil, fmt.Errorf("process did not get ready (read %q): %w", truncate(line, 200), errors.Join(err, readyCtx.Err()))
	}
	return p, nil
}

// abort kills a worker that will not be given a schedule.
func (p *workerProc) abort() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	_, _ = io.Copy(io.Discard, p.out)
	_ = p.cmd.Wait()
}

// run sends the schedule, then waits for the result. When ctx ends the
// worker is interrupted rather than killed, so it still reports what it
// measured; it is killed only if it does not exit 10s after that.
func (p *workerProc) run(ctx context.Context, sc schedule) (*workerResult, error) {
	msg, err := json.Marshal(sc)
	if err != nil {
		p.abort()
		return nil, fmt.Errorf("encoding schedule: %w", err)
	}
	_, werr := p.stdin.Write(append(msg, '\n'))
	_ = p.stdin.Close()
	if werr != nil {
		p.abort()
		return nil, fmt.Errorf("sending schedule: %w", werr)
	}
	exited := make(chan struct{})
	defer close(exited)
	stop := context.AfterFunc(ctx, func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
		}
	})
	defer stop()
	out, readErr := io.ReadAll(p.out)
	waitErr := p.cmd.Wait()
	if len(bytes.TrimSpace(out)) == 0 {
		return nil, fmt.Errorf("process exited without a result: %w", errors.Join(readErr, waitErr))
	}
	res := newWorkerResult()
	if err := json.Unmarshal(out, res); err != nil {
		return nil, fmt.Errorf("decoding result %q: %w", truncate(string(out), 200), err)
	}
	if waitErr != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("worker process failed: %w", waitErr)
	}
	return res, nil
}
