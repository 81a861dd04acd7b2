package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat: USER_HZ, which
// the kernel fixes at 100 for user space on every Linux architecture.
const userHZ = 100

// procStat is what the benchmark needs from /proc/<pid>/stat.
type procStat struct {
	PID, PPID int
	Comm      string
	State     byte
	// CPU in clock ticks: own user and system time (all threads, live and
	// exited), and the times of the children this process has waited for.
	UTime, STime, CUTime, CSTime uint64
	StartTime                    uint64 // ticks after boot; tells a recycled pid apart
}

// Ticks is the process's CPU time including its reaped descendants.
func (s procStat) Ticks() uint64 { return s.UTime + s.STime + s.CUTime + s.CSTime }

func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// comm may contain spaces and parentheses: the fields start after the
	// last ')'.
	open := bytes.IndexByte(data, '(')
	end := bytes.LastIndexByte(data, ')')
	if open < 0 || end < open || end+2 >= len(data) {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(data[end+2:]))
	// f[0] is field 3 (state); utime is field 14, starttime field 22.
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(i int) uint64 {
		v, _ := strconv.ParseUint(f[i], 10, 64)
		return v
	}
	ppid, _ := strconv.Atoi(f[1])
	return procStat{
		PID: pid, PPID: ppid, Comm: string(data[open+1 : end]), State: f[0][0],
		UTime: num(11), STime: num(12), CUTime: num(13), CSTime: num(14), StartTime: num(19),
	}, nil
}

// allStats reads the stat of every process on the machine.
func allStats() []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]procStat, 0, len(entries))
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// treeStats returns root and all its live (or not yet reaped) descendants,
// found by walking parent links over the whole /proc; root first. Empty
// when root is gone.
func treeStats(root int) []procStat {
	all := allStats()
	kids := map[int][]procStat{}
	var top *procStat
	for i := range all {
		kids[all[i].PPID] = append(kids[all[i].PPID], all[i])
		if all[i].PID == root {
			top = &all[i]
		}
	}
	if top == nil {
		return nil
	}
	out := []procStat{*top}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i].PID]...)
	}
	return out
}

// cpuTicks sums Ticks over a process set.
//
// CPU of a process tree over a window is cpuTicks(tree at end) -
// cpuTicks(tree at start). That is exact for every process: one alive at
// both ends counts its difference; one born in the window counts whole;
// one that died in the window and was reaped by a member of the tree
// moves its final total into that parent's CUTime/CSTime (and its value at
// the start is subtracted); a zombie not yet reaped still shows its own
// times. Only a process re-parented out of the tree (a daemonizing child)
// would escape, and neither agent has one.
func cpuTicks(sts []procStat) uint64 {
	var t uint64
	for _, s := range sts {
		t += s.Ticks()
	}
	return t
}

func ticksToSeconds(t uint64) float64 { return float64(t) / userHZ }

// memSample is the memory of a process tree at one moment.
type memSample struct {
	RSSKiB, PSSKiB int64
	AnonKiB        int64 // Pss_Anon: heap, stacks, runtime
	FileKiB        int64 // Pss_File: mapped files, the program's own pages first
	Procs          int
	Comms          []string
}

// treeMemory sums VmRSS (/proc/<pid>/status) and Pss
// (/proc/<pid>/smaps_rollup) over the tree of root. RSS counts a page
// shared by a forked worker and its parent twice; PSS splits it between
// them, so PSS is the fair figure for a forking agent.
func treeMemory(root int) memSample {
	var m memSample
	for _, st := range treeStats(root) {
		if st.State == 'Z' {
			continue
		}
		rss := kibField(fmt.Sprintf("/proc/%d/status", st.PID), "VmRSS:")
		pss := kibField(fmt.Sprintf("/proc/%d/smaps_rollup", st.PID), "Pss:")
		if rss < 0 || pss < 0 {
			continue // exited meanwhile
		}
		m.RSSKiB += rss
		m.PSSKiB += pss
		m.AnonKiB += max(kibField(fmt.Sprintf("/proc/%d/smaps_rollup", st.PID), "Pss_Anon:"), 0)
		m.FileKiB += max(kibField(fmt.Sprintf("/proc/%d/smaps_rollup", st.PID), "Pss_File:"), 0)
		m.Procs++
		m.Comms = append(m.Comms, cmdName(st))
	}
	return m
}

// kibField returns the value of a "Name:   123 kB" line, -1 when the file
// or the line is missing.
func kibField(path, name string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				return -1
			}
			v, err := strconv.ParseInt(fs[0], 10, 64)
			if err != nil {
				return -1
			}
			return v
		}
	}
	return -1
}

// memoryMedian takes n samples interval apart and returns the one with
// the median PSS (the sample stays internally consistent).

// split is PSS by kind, for the progress lines.
func (m memSample) split() string {
	return fmt.Sprintf("anon %.1f MiB, file %.1f MiB", mib(m.AnonKiB), mib(m.FileKiB))
}
func memoryMedian(root, n int, interval time.Duration) memSample {
	samples := make([]memSample, 0, n)
	for i := range n {
		if i > 0 {
			time.Sleep(interval)
		}
		samples = append(samples, treeMemory(root))
	}
	slices.SortFunc(samples, func(a, b memSample) int { return int(a.PSSKiB - b.PSSKiB) })
	return samples[len(samples)/2]
}

// mountNS returns the mount namespace link of a process ("mnt:[4026...]").
func mountNS(pid int) string {
	l, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "mnt"))
	return l
}

// cmdName is a short name of a process for the report: gunicorn's
// process title ("gunicorn: worker [gunicorn]" -> "gunicorn: worker"),
// else the base names of the interpreter and script or of the binary.
func cmdName(st procStat) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.PID))
	if err != nil || len(data) == 0 {
		return st.Comm
	}
	args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
	if strings.HasPrefix(args[0], "gunicorn:") {
		f := strings.Fields(args[0])
		return strings.Join(f[:min(2, len(f))], " ")
	}
	name := filepath.Base(args[0])
	if strings.HasPrefix(name, "python") && len(args) > 1 {
		name += " " + filepath.Base(args[1])
	}
	return name
}
