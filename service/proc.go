package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/procfs"
)

// process is one running instance of a service, watched through a pidfd
// (so a recycled pid can never be mistaken for it) whether the supervisor
// started it (a child) or re-adopted it after an agent restart.
type process struct {
	pid    int
	pgid   int      // its own process group (== pid), 0 when it does not lead one
	f      *os.File // non-blocking pidfd, registered with the runtime poller
	start  time.Time
	logOff int64 // size of the log file when it was started (-1: unknown)
	notify bool  // sends READY=1 to the service's notify socket

	done chan struct{} // closed by the watcher once the process has exited

	// guarded by the owning unit's mu
	exited   bool
	exit     string // how it ended ("exit status 1", "signal killed", "exited")
	stopping bool   // an intentional stop: no restart
}

// openProcess opens a pidfd for pid.
func openProcess(pid int) (*process, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return newProcess(pid, fd), nil
}

// newProcess takes ownership of pidfd.
func newProcess(pid, pidfd int) *process {
	_ = unix.SetNonblock(pidfd, true)
	p := &process{
		pid:    pid,
		f:      os.NewFile(uintptr(pidfd), "pidfd:"+strconv.Itoa(pid)),
		start:  time.Now(),
		logOff: -1,
		done:   make(chan struct{}),
	}
	if pgid, err := unix.Getpgid(pid); err == nil && pgid == pid {
		p.pgid = pgid
	}
	return p
}

// pidfdExited polls the pidfd without blocking: readable means the
// process has terminated.
func pidfdExited(fd int) bool {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0
	}
}

// wait blocks until the process exits (nil) or p.f is closed (error).
func (p *process) wait() error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var exited bool
	err = rc.Read(func(fd uintptr) bool {
		exited = pidfdExited(int(fd))
		return exited
	})
	if err != nil && !exited {
		return err
	}
	return nil
}

// alive reports whether the process still runs (not yet terminated).
func (p *process) alive() bool {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return false
	}
	dead := true
	if err := rc.Control(func(fd uintptr) { dead = pidfdExited(int(fd)) }); err != nil {
		return false
	}
	return !dead
}

// signal sends sig to the process itself (race-free through the pidfd).
func (p *process) signal(sig unix.Signal) error {
	rc, err := p.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return err
	}
	return serr
}

// killGroup sends SIGKILL to what is left of the process's group.
func (p *process) killGroup() {
	if p.pgid > 0 {
		_ = unix.Kill(-p.pgid, unix.SIGKILL)
	}
}

// waitGroupGone waits (at most timeout) until no process of p's group is
// left, so that a stop really frees what the service held (ports, pid
// files). It reports whether the group is gone.
func (p *process) waitGroupGone(timeout time.Duration) bool {
	if p.pgid <= 0 {
		return true
	}
	deadline := time.Now().Add(timeout)
	for {
		if !groupAlive(p.pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupAlive reports whether process group pgid has a member that is not
// a zombie (orphans wait for init to reap them; they hold nothing).
func groupAlive(pgid int) bool {
	if err := unix.Kill(-pgid, 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if st, ok := procfs.ParseStat(b); ok && !st.Gone() && st.PGID == pgid {
			return true
		}
	}
	return false
}

// reap collects the exit status when the process is our child (a zombie
// keeps its pid, so waiting by pid is safe here) and describes the exit.
func (p *process) reap() string {
	var ws unix.WaitStatus
	for {
		wpid, err := unix.Wait4(p.pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || wpid != p.pid {
			return "exited" // not our child (re-adopted): status unknown
		}
		break
	}
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return "exited"
}

// readPIDFile returns the pid stored in path.
func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad content %q", path, bytes.TrimSpace(b))
	}
	return pid, nil
}

// hasEnv reports whether the environment pid started with holds kv.
func hasEnv(pid int, kv string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	for e := range bytes.SplitSeq(b, []byte{0}) {
		if string(e) == kv {
			return true
		}
	}
	return false
}

// cmdlineMatches reports whether a process command line belongs to a
// service started with argv. The wrapper "ip netns exec NS" execs the
// program, so the program's own argv is accepted too. The program's
// arguments must appear in order; extra ones are allowed (haproxy's
// re-exec on reload inserts "-sf <pids>" and "-x <socket>"). argv[0] is
// compared by base name (the kernel keeps it as it was passed).
func cmdlineMatches(cmdline, argv []string) bool {
	if len(cmdline) == 0 || len(argv) == 0 {
		return false
	}
	wants := [][]string{argv}
	if filepath.Base(argv[0]) == "ip" && len(argv) > 4 && argv[1] == "netns" && argv[2] == "exec" {
		wants = append(wants, argv[4:])
	}
	for _, want := range wants {
		if filepath.Base(cmdline[0]) != filepath.Base(want[0]) {
			continue
		}
		i := 1
		for _, arg := range cmdline[1:] {
			if i < len(want) && arg == want[i] {
				i++
			}
		}
		if i == len(want) {
			return true
		}
	}
	return false
}
