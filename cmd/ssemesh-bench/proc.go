package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is Linux's USER_HZ, the unit of utime and stime in
// /proc/PID/stat; it is 100 on every architecture Go supports on Linux.
const clockTicks = 100

// procSample is one reading of a process's memory and CPU counters.
type procSample struct {
	RSSKB      int64   // VmRSS
	CPUSeconds float64 // utime + stime
}

// readProc reads /proc/<pid>/status and /proc/<pid>/stat; pid "self" reads
// the calling process.
func readProc(pid string) (procSample, error) {
	var s procSample
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return s, fmt.Errorf("reading status of process %s: %w", pid, err)
	}
	if s.RSSKB, err = parseVmRSS(status); err != nil {
		return s, fmt.Errorf("process %s: %w", pid, err)
	}
	stat, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return s, fmt.Errorf("reading stat of process %s: %w", pid, err)
	}
	if s.CPUSeconds, err = parseCPUSeconds(stat); err != nil {
		return s, fmt.Errorf("process %s: %w", pid, err)
	}
	return s, nil
}

// parseVmRSS extracts VmRSS in kB from /proc/PID/status.
func parseVmRSS(status []byte) (int64, error) {
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", line)
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no VmRSS line (kernel thread or zombie?)")
}

// parseCPUSeconds returns utime+stime from /proc/PID/stat. The command name
// in field 2 may contain spaces and parentheses, so fields are counted from
// the last ')'.
func parseCPUSeconds(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat %q", stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("stat has only %d fields", len(f)+2)
	}
	u, err := strconv.ParseUint(f[utime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime %q: %w", f[utime], err)
	}
	s, err := strconv.ParseUint(f[stime], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime %q: %w", f[stime], err)
	}
	return float64(u+s) / clockTicks, nil
}
