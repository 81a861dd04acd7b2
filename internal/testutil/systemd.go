package testutil

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/procfs"
)

// SystemdManager is a real, private systemd manager for tests on a
// machine whose PID 1 is not systemd: "systemd --user" run as root in its
// own mount namespace, where /run/systemd is a private tmpfs holding
// /run/systemd/system (so sd_booted() is true) and a /run/systemd/private
// link to the manager's private socket. Inside that mount namespace,
// code written for the system manager (D-Bus on /run/systemd/private,
// plain systemctl) talks to this manager. It has its own cgroup subtree,
// so MainPID tracking and KillMode work, and it is removed with everything
// it started when the test ends.
type SystemdManager struct {
	Dir     string // state directory (XDG_RUNTIME_DIR is Dir/run)
	UnitDir string // where units are written: XDG_CONFIG_HOME/systemd/user
	PID     int    // the manager's pid
	cgroups []string
}

// RequireSystemd skips the test when the systemd binaries or root are missing.
func RequireSystemd(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a private systemd manager needs root (mount namespace, cgroups)")
	}
	for _, p := range []string{"/lib/systemd/systemd", "/usr/bin/systemctl", "/usr/bin/unshare", "/usr/bin/nsenter"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed (apt-get install systemd util-linux)", p)
		}
	}
}

// startManagerScript runs inside "unshare -m --propagation slave": the
// manager's private view of /run/systemd, its cgroups, then the manager.
const startManagerScript = `set -e
dir="$1"; shift
mount -t tmpfs -o mode=755 tmpfs /run/systemd
mkdir -p /run/systemd/system
ln -s "$dir/run/systemd/private" /run/systemd/private
for cg in "$@"; do
  mkdir -p "$cg/init.scope"
  echo $$ > "$cg/init.scope/cgroup.procs"
done
echo $$ > "$dir/manager.pid"
exec /lib/systemd/systemd --user
`

// StartSystemdManager starts a private manager and stops it (with every
// unit it runs) when the test ends.
func StartSystemdManager(t testing.TB) *SystemdManager {
	t.Helper()
	RequireSystemd(t)
	m := &SystemdManager{Dir: "/run/tsd-" + RandomSuffix(4)}
	m.UnitDir = filepath.Join(m.Dir, "config", "systemd", "user")
	for _, d := range []string{filepath.Join(m.Dir, "run"), m.UnitDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Service output goes to the manager's log (there is no journald).
	if err := os.WriteFile(filepath.Join(m.Dir, "config", "systemd", "user.conf"),
		[]byte("[Manager]\nDefaultStandardOutput=inherit\nDefaultStandardError=inherit\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.cgroups = ownCgroups(filepath.Base(m.Dir))
	t.Cleanup(m.stop)
	logf, err := os.Create(filepath.Join(m.Dir, "manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"-m", "--propagation", "slave", "--", "/bin/sh", "-c", startManagerScript, "sdm", m.Dir}, m.cgroups...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(m.env(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_LOG_TARGET=console")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m.PID == 0 {
			if data, err := os.ReadFile(filepath.Join(m.Dir, "manager.pid")); err == nil {
				m.PID, _ = strconv.Atoi(strings.TrimSpace(string(data)))
			}
		}
		if m.PID != 0 {
			out, _ := m.Systemctl("show", "--property=SystemState", "--value")
			if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
				return m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(m.Dir, "manager.log"))
	t.Fatalf("systemd --user did not come up within 20s:\n%s", log)
	return nil
}

func (m *SystemdManager) env() []string {
	return []string{
		"XDG_RUNTIME_DIR=" + filepath.Join(m.Dir, "run"),
		"XDG_CONFIG_HOME=" + filepath.Join(m.Dir, "config"),
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + filepath.Join(m.Dir, "run", "bus"),
		"HOME=" + m.Dir,
	}
}

// Prefix runs a command inside the manager's mount namespace (where
// /run/systemd/private reaches it), in the current directory: use it as
// Options.Prefix for an agent driving this manager as the system manager.
func (m *SystemdManager) Prefix() []string {
	wd, _ := os.Getwd()
	return append([]string{"nsenter", "-t", strconv.Itoa(m.PID), "-m", "--wd=" + wd, "--", "env"}, m.env()...)
}

// Systemctl runs "systemctl --user ARGS" against the manager.
func (m *SystemdManager) Systemctl(args ...string) (string, error) {
	cmd := exec.Command("systemctl", append([]string{"--user"}, args...)...)
	cmd.Env = append(m.env(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Log returns what the manager and its services printed.
func (m *SystemdManager) Log() string {
	data, _ := os.ReadFile(filepath.Join(m.Dir, "manager.log"))
	return string(data)
}

// stop ends the manager ("exit" stops its units first), kills whatever is
// left in its cgroups, and removes the cgroups and the state directory.
func (m *SystemdManager) stop() {
	if m.PID != 0 {
		_, _ = m.Systemctl("exit")
		for i := 0; i < 100 && procfs.Alive(m.PID); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		_ = syscall.Kill(m.PID, syscall.SIGKILL)
	}
	for i := 0; i < 50; i++ {
		left := false
		for _, cg := range m.cgroups {
			for _, pid := range cgroupPIDs(cg) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			removeCgroupTree(cg)
			if _, err := os.Stat(cg); err == nil {
				left = true
			}
		}
		if !left {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = os.RemoveAll(m.Dir)
}

// ownCgroups returns, for each cgroup hierarchy systemd uses (v1
// name=systemd and v2), a new directory next to the test's own cgroup.
func ownCgroups(name string) []string {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var base string
		switch {
		case parts[1] == "name=systemd":
			base = "/sys/fs/cgroup/systemd"
		case parts[0] == "0" && parts[1] == "":
			if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
				base = "/sys/fs/cgroup/unified"
			} else if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
				base = "/sys/fs/cgroup"
			}
		}
		if base == "" {
			continue
		}
		dir := filepath.Join(base, parts[2], name)
		if err := os.MkdirAll(dir, 0o755); err == nil {
			out = append(out, dir)
		}
	}
	return out
}

func cgroupPIDs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
		return nil
	})
	return pids
}

// removeCgroupTree removes empty cgroup directories depth-first.
func removeCgroupTree(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeCgroupTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir)
}
