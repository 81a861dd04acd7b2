package image

// A booted amphora: systemd-nspawn with systemd as PID 1 on the test's
// overlay root, inside a network namespace the test made.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	bootTimeout     = 90 * time.Second
	poweroffTimeout = 60 * time.Second
)

// container is one boot of the amphora.
type container struct {
	t      *testing.T
	name   string
	log    string // systemd-nspawn's console output
	cmd    *exec.Cmd
	exited chan struct{}
	leader int // host pid of the container's PID 1 (systemd)
}

// bootScript mounts the overlay in the command's private mount
// namespace and replaces itself with systemd-nspawn (same pid), so the
// mount disappears with the container.
const bootScript = mountScript + `shift 6
exec systemd-nspawn -D "$root" "$@"
`

// boot starts the container on root inside the network namespace at
// netnsPath and waits until systemd reports the system running (or
// degraded). The container is powered off when the test ends.
func boot(t *testing.T, root *amphoraRoot, name, netnsPath, logPath string) *container {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== boot %s\n", time.Now().Format(time.RFC3339Nano))
	argv := append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c", bootScript, "sh"}, root.args()...)
	// --register=no --keep-unit: no machined, no host system bus needed.
	// With --network-namespace-path (unlike --private-network) nspawn
	// keeps neither CAP_NET_ADMIN nor a writable /proc/sys/net, which root
	// on an amphora VM has and the agent needs (netlink in its namespace,
	// sysctls): grant both, and nothing else.
	argv = append(argv, "--boot", "--register=no", "--keep-unit", "--link-journal=no",
		"--network-namespace-path="+netnsPath, "--capability=CAP_NET_ADMIN",
		"--console=pipe", "--machine="+name)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "SYSTEMD_NSPAWN_API_VFS_WRITABLE=network"}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	c := &container{t: t, name: name, log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		if t.Failed() && c.running() {
			c.diagnose()
		}
		c.poweroff()
	})
	deadline := time.Now().Add(bootTimeout)
	for c.leader == 0 {
		if c.leader = c.findLeader(); c.leader != 0 {
			break
		}
		c.checkAlive(deadline, "no container PID 1")
		time.Sleep(20 * time.Millisecond)
	}
	state := ""
	for {
		out, _ := c.exec(10*time.Second, "systemctl", "is-system-running")
		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		c.checkAlive(deadline, "systemd did not finish booting (state "+state+")")
		time.Sleep(100 * time.Millisecond)
	}
	if state == "degraded" {
		out, _ := c.exec(10*time.Second, "systemctl", "--failed", "--no-legend", "--plain")
		t.Logf("container %s booted degraded; failed units:\n%s", name, out)
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "amphora-") || strings.HasPrefix(line, "haproxy") || strings.HasPrefix(line, "keepalived") {
				t.Errorf("unit failed at boot: %s", line)
			}
		}
	}
	return c
}

// checkAlive fails the test when the container exited or the deadline passed.
func (c *container) checkAlive(deadline time.Time, what string) {
	c.t.Helper()
	select {
	case <-c.exited:
		c.t.Fatalf("container %s exited during boot: %v\n%s", c.name, c.cmd.ProcessState, c.consoleTail())
	default:
	}
	if time.Now().After(deadline) {
		c.t.Fatalf("container %s: %s within %v\n%s", c.name, what, bootTimeout, c.consoleTail())
	}
}

func (c *container) consoleTail() string {
	data, _ := os.ReadFile(c.log)
	return tail(string(data), 40)
}

func (c *container) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// findLeader returns the container's PID 1 as seen from the host: the
// child of systemd-nspawn that is pid 1 of its own pid namespace.
func (c *container) findLeader() int {
	nspawn := strconv.Itoa(c.cmd.Process.Pid)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var ppid string
		var nspid []string
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				ppid = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				nspid = strings.Fields(v)
			}
		}
		if ppid == nspawn && len(nspid) >= 2 && nspid[len(nspid)-1] == "1" {
			pid, _ := strconv.Atoi(e.Name())
			return pid
		}
	}
	return 0
}

// exec runs argv inside the container (all its namespaces), bounded by
// timeout, and returns its combined output.
func (c *container) exec(timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"nsenter", "-t", strconv.Itoa(c.leader), "-m", "-u", "-i", "-n", "-p", "--"}, argv...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	cmd.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("in %s: %s: %w", c.name, strings.Join(argv, " "), err)
	}
	return out.String(), err
}

// mustExec is exec failing the test on error.
func (c *container) mustExec(argv ...string) string {
	c.t.Helper()
	out, err := c.exec(30*time.Second, argv...)
	if err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// show returns properties of a unit (systemctl show -p ...).
func (c *container) show(unit string, props ...string) map[string]string {
	c.t.Helper()
	argv := []string{"systemctl", "show", unit}
	for _, p := range props {
		argv = append(argv, "-p", p)
	}
	out := c.mustExec(argv...)
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// diagnose logs what helps to understand a failure: failed units and
// the journal of the agent and the units it writes.
func (c *container) diagnose() {
	for _, argv := range [][]string{
		{"systemctl", "--failed", "--no-legend", "--plain"},
		{"journalctl", "-b", "--no-pager", "-o", "short-monotonic", "-u", "amphora-agent", "-u", "amphora-netns", "-u", "haproxy-*", "-n", "150"},
		{"ip", "-br", "link"},
		{"ip", "netns", "exec", "amphora-haproxy", "ip", "-br", "addr"},
	} {
		out, err := c.exec(20*time.Second, argv...)
		c.t.Logf("diagnostics: %s (%v):\n%s", strings.Join(argv, " "), err, out)
	}
}

// poweroff shuts the container down cleanly (systemctl poweroff), bounded;
// a container that does not stop is killed (its PID 1 first, which ends
// every process of its pid namespace, then systemd-nspawn).
func (c *container) poweroff() {
	if !c.running() {
		return
	}
	if out, err := c.exec(10*time.Second, "systemctl", "poweroff"); err != nil {
		c.t.Logf("systemctl poweroff: %v %s", err, out)
	}
	select {
	case <-c.exited:
		return
	case <-time.After(poweroffTimeout):
	}
	c.t.Errorf("container %s did not power off within %v: killing it", c.name, poweroffTimeout)
	if c.leader != 0 {
		_ = syscall.Kill(c.leader, syscall.SIGKILL)
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// stop powers the container off and fails the test unless it stopped
// cleanly (systemd-nspawn exit status 0).
func (c *container) stop() {
	c.t.Helper()
	c.poweroff()
	if st := c.cmd.ProcessState; st == nil || !st.Success() {
		c.t.Fatalf("container %s: systemd-nspawn ended with %v\n%s", c.name, st, c.consoleTail())
	}
}

// unitFile returns the path and text of the file a unit was loaded
// from, read through the container's root.
func (c *container) unitFile(unit string) (string, string) {
	c.t.Helper()
	path := c.show(unit, "FragmentPath")["FragmentPath"]
	if path == "" {
		c.t.Fatalf("%s: no unit file", unit)
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.leader), "root", path))
	if err != nil {
		c.t.Fatal(err)
	}
	return path, string(data)
}
