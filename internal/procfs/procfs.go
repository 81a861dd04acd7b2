// Package procfs reads pid files and what the agent needs of a process
// from /proc: whether it lives, its command name and its command line.
package procfs

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// ParsePID returns the pid on the first line of a pid file's content, 0
// when that line holds no positive number, and the line itself.
func ParsePID(data []byte) (pid int, line string) {
	line, _, _ = strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, line
	}
	return pid, line
}

// ReadPID returns the pid on the first line of the pid file at path, 0
// when the file cannot be read or holds no pid.
func ReadPID(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := ParsePID(data)
	return pid
}

// Stat is what the agent reads of /proc/<pid>/stat.
type Stat struct {
	Comm  string // command name, without the parentheses
	State byte   // R, S, D, Z (zombie), X (dead), ...
	PPID  int
	PGID  int
}

// Gone reports a zombie or dead process: it holds nothing any more.
func (s Stat) Gone() bool { return s.State == 'Z' || s.State == 'X' }

// ParseStat reads the content of /proc/<pid>/stat, "pid (comm) state ppid
// pgrp ...", where comm may hold spaces and ')'.
func ParseStat(data []byte) (Stat, bool) {
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open || end+2 >= len(data) {
		return Stat{}, false
	}
	st := Stat{Comm: string(data[open+1 : end]), State: data[end+2]}
	if f := strings.Fields(string(data[end+2:])); len(f) >= 3 {
		st.PPID, _ = strconv.Atoi(f[1])
		st.PGID, _ = strconv.Atoi(f[2])
	}
	return st, true
}

// ReadStat reads /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	st, ok := ParseStat(data)
	if !ok {
		return Stat{}, &os.PathError{Op: "parse", Path: "/proc/" + strconv.Itoa(pid) + "/stat", Err: os.ErrInvalid}
	}
	return st, nil
}

// Alive reports whether pid is a live process: it exists and is neither
// a zombie nor dead.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	st, err := ReadStat(pid)
	return err == nil && !st.Gone()
}

// Cmdline returns the argv of a live process (empty for zombies and
// kernel threads).
func Cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil, nil
	}
	return strings.Split(string(b), "\x00"), nil
}
