package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The amphora paths a sandbox replaces. The reference agent hard-codes
// several of them (the haproxy user/group snippet, the unit directory,
// its access log, the rsyslog socket, the netns name), so each agent runs
// in a private mount namespace in which they are bind mounts of
// directories under the sandbox root. Both agents get the same layout and
// byte-identical configuration files apart from their ports.
const (
	confDir  = "/etc/octavia"
	baseDir  = "/var/lib/octavia"
	unitDir  = "/usr/lib/systemd/system"
	logDir   = "/var/log"
	syslogAt = "/run/rsyslog/octavia" // the amphora's rsyslog socket directory
	nsName   = "amphora-haproxy"
	confFile = confDir + "/amphora-agent.conf"
	ugFile   = baseDir + "/haproxy-default-user-group.conf"
	initComm = "/proc/1/comm"
)

// binds maps sandbox root subdirectories onto amphora paths.
var binds = []struct{ sub, target string }{
	{"etc", confDir},
	{"lib", baseDir},
	{"units", unitDir},
	{"log", logDir},
}

// Sandbox is one private mount namespace, kept alive by a holder process
// (this binary re-executed as "holder"), with a private /run holding its
// own "amphora-haproxy" network namespace (lo up).
type Sandbox struct {
	Name   string
	Root   string // host directory
	holder *exec.Cmd
	exited chan struct{}
	syslog *net.UnixConn
	logged chan int // the syslog reader's message count, when it stops
}

// NewSandbox prepares root and starts the holder.
func NewSandbox(ctx context.Context, work, name string) (*Sandbox, error) {
	root := filepath.Join(work, name)
	s := &Sandbox{Name: name, Root: root, exited: make(chan struct{})}
	for _, d := range []string{"etc/certs", "etc/interfaces", "lib/certs", "units", "log", "syslog", "bin", "state"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	files := map[string]string{
		// systemd is not PID 1 here: the reference reads /proc/1/comm to
		// choose its init system and needs "systemd" to accept uploads.
		"comm": "systemd\n",
		// The shim stands in for systemctl: the reference only runs
		// "systemctl enable" during an upload and logs failures.
		"bin/systemctl": "#!/bin/sh\n# amphora-agent benchmark sandbox: no systemd here; every call succeeds\nexit 0\n",
		// What the amphora image provides (Debian: nogroup).
		"lib/haproxy-default-user-group.conf": "global\n    group nogroup\n",
	}
	for rel, content := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(rel, "bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(filepath.Join(root, rel), []byte(content), mode); err != nil {
			return nil, err
		}
	}
	// The amphora's rsyslog: the reference's gunicorn logs every request
	// to /run/rsyslog/octavia/log and prints a traceback per record when
	// nobody listens there.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(root, "syslog", "log"), Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("sandbox %s: syslog socket: %w", name, err)
	}
	if err := os.Chmod(filepath.Join(root, "syslog", "log"), 0o666); err != nil {
		conn.Close()
		return nil, err
	}
	s.syslog, s.logged = conn, make(chan int, 1)
	go func() {
		n, buf := 0, make([]byte, 1<<16)
		for {
			if _, _, err := conn.ReadFromUnix(buf); err != nil {
				s.logged <- n
				return
			}
			n++
		}
	}()
	self, err := os.Executable()
	if err != nil {
		s.closeSyslog()
		return nil, err
	}
	logf, err := os.Create(filepath.Join(root, "state", "holder.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(self, "holder", root, strconv.Itoa(os.Getpid()))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Go makes "/" recursively private in the child right after unshare.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.closeSyslog()
		return nil, fmt.Errorf("sandbox %s: start holder: %w", name, err)
	}
	s.holder = cmd
	go func() { _ = cmd.Wait(); close(s.exited) }()
	ready := filepath.Join(root, "state", "ready")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			s.closeSyslog()
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("sandbox %s: holder exited: %s", name, log)
		case <-ctx.Done():
			s.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("sandbox %s: holder not ready after 20s", name)
		}
	}
}

// Host returns the host path of a path inside the sandbox.
func (s *Sandbox) Host(inside string) string {
	for _, b := range binds {
		if inside == b.target || strings.HasPrefix(inside, b.target+"/") {
			return filepath.Join(s.Root, b.sub, strings.TrimPrefix(inside, b.target))
		}
	}
	return inside
}

// Command runs argv inside the sandbox's mount namespace (and, with
// netns, inside its amphora-haproxy network namespace). nsenter execs
// argv in place: the pid of the command is the pid of argv.
func (s *Sandbox) Command(netns bool, argv ...string) *exec.Cmd {
	hp := s.holder.Process.Pid
	args := []string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", hp)}
	if netns {
		args = append(args, fmt.Sprintf("--net=/proc/%d/root/run/netns/%s", hp, nsName))
	}
	args = append(args, "--")
	args = append(args, argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = sandboxEnv(s.Root)
	cmd.Dir = s.Root
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// sandboxEnv is the environment of everything started in a sandbox: the
// same for both agents, with the systemctl shim first on PATH (it is also
// bind-mounted over /usr/bin/systemctl when that exists).
func sandboxEnv(root string) []string {
	return []string{
		"PATH=" + filepath.Join(root, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(root, "state"),
		"LANG=C.UTF-8",
	}
}

// Close stops the holder, which first kills whatever still runs in its
// namespace; the namespaces vanish with their last process.
func (s *Sandbox) Close() {
	defer s.closeSyslog()
	if s.holder == nil || s.holder.Process == nil {
		return
	}
	_ = s.holder.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.holder.Process.Kill()
		<-s.exited
	}
}

func (s *Sandbox) closeSyslog() {
	if s.syslog != nil {
		s.syslog.Close()
		<-s.logged
		s.syslog = nil
	}
}

// runHolder is the "holder" subcommand: it sets up the mounts of a
// sandbox in the (fresh, private) mount namespace it was started in, then
// waits until the harness stops it or dies, and kills every process left
// in the namespace before exiting.
func runHolder(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: holder ROOT HARNESS_PID")
	}
	root := args[0]
	parent, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	if err := holderMounts(root); err != nil {
		return err
	}
	for _, argv := range [][]string{
		{"ip", "netns", "add", nsName},
		{"ip", "-n", nsName, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "state", "ready"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case <-sig:
			break wait
		case <-tick.C:
			if os.Getppid() != parent {
				break wait // the harness died without cleaning up
			}
		}
	}
	killNamespace()
	return nil
}

func holderMounts(root string) error {
	mount := func(src, target, fstype string, flags uintptr, data string) error {
		if err := unix.Mount(src, target, fstype, flags, data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", src, target, err)
		}
		return nil
	}
	// A private /run: the netns bind mounts and the rsyslog socket stay
	// in here, so both agents can use the literal "amphora-haproxy".
	if err := mount("abench-run", "/run", "tmpfs", 0, "mode=0755,size=16m"); err != nil {
		return err
	}
	for _, d := range []string{"/run/netns", "/run/lock", syslogAt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := mount(filepath.Join(root, "syslog"), syslogAt, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	for _, b := range binds {
		// The octavia-agent package creates these; creating a missing one
		// leaves an empty directory on the host.
		if err := os.MkdirAll(b.target, 0o755); err != nil {
			return err
		}
		if err := mount(filepath.Join(root, b.sub), b.target, "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	if err := mount(filepath.Join(root, "comm"), initComm, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if _, err := os.Stat("/usr/bin/systemctl"); err == nil {
		if err := mount(filepath.Join(root, "bin", "systemctl"), "/usr/bin/systemctl", "", unix.MS_BIND, ""); err != nil {
			return err
		}
	}
	return nil
}

// killNamespace ends every other process of this mount namespace (agents,
// haproxy, their helpers: only the harness starts processes in it), TERM
// first, KILL after 3 s.
func killNamespace() {
	self := os.Getpid()
	mine := mountNS(self)
	members := func() []int {
		var out []int
		for _, st := range allStats() {
			if st.PID != self && st.State != 'Z' && mountNS(st.PID) == mine {
				out = append(out, st.PID)
			}
		}
		return out
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		left := members()
		if len(left) == 0 {
			return
		}
		for _, p := range left {
			_ = syscall.Kill(p, sig)
		}
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && len(members()) > 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}
