package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuGroup is a cgroup v2 of its own for a process tree, read for the
// tree's exact CPU time (cpu.stat usage_usec: the scheduler's runtime,
// in microseconds, including processes and threads that exited).
//
// /proc/<pid>/stat counts CPU in 10 ms ticks, sampled at the timer
// interrupt: a process that runs 5 ms per second collects about 15
// ticks over 30 heartbeats, so one window's figure swings by a quarter
// from sampling alone. The cgroup's figure does not. cpu.stat exists in
// every cgroup v2, with or without the cpu controller, so a hybrid
// cgroup v1 host (cgroup2 mounted at /sys/fs/cgroup/unified) serves as
// well as a pure v2 one.
type cpuGroup struct {
	dir    string
	parent string // where the processes go back when the group is removed
}

// newCPUGroup creates the cgroup abench-<our pid>-<name> at the root of
// the cgroup2 hierarchy; an error when there is none or it is read-only.
func newCPUGroup(name string) (*cpuGroup, error) {
	root, err := cgroup2Root()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, fmt.Sprintf("abench-%d-%s", os.Getpid(), name))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	return &cpuGroup{dir: dir, parent: root}, nil
}

// cgroup2Root is the mount point of the cgroup2 hierarchy.
func cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted")
}

// add moves the processes (with their threads) into the group; children
// they start later are born in it.
func (g *cpuGroup) add(pids ...int) error {
	for _, pid := range pids {
		if err := os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("move %d into %s: %w", pid, g.dir, err)
		}
	}
	return nil
}

// usage is the CPU time of everything that ran in the group so far.
func (g *cpuGroup) usage() (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("%s/cpu.stat: no usage_usec", g.dir)
}

// remove moves what still runs in the group back to the root and removes
// the group.
func (g *cpuGroup) remove() {
	if data, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs")); err == nil {
		for _, pid := range strings.Fields(string(data)) {
			_ = os.WriteFile(filepath.Join(g.parent, "cgroup.procs"), []byte(pid), 0o644)
		}
	}
	for range 50 {
		if err := os.Remove(g.dir); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond) // exiting processes leave the group a moment later
	}
}

// treePIDs are the pids of a process tree.
func treePIDs(root int) []int {
	var out []int
	for _, st := range treeStats(root) {
		out = append(out, st.PID)
	}
	return out
}
