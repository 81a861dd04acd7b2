package keepalived

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// startKeepalived runs a real keepalived (VRRP only, empty configuration)
// in a network namespace of its own, so it cannot touch the host network.
func startKeepalived(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	bin := testutil.RequireBinary(t, "keepalived")
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare --net")
	}
	conf := filepath.Join(dir, "ka.conf")
	if err := os.WriteFile(conf, []byte("global_defs {\n    router_id hbtest\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "ka.log")
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// unshare execs keepalived: the pid we hold is keepalived's.
	cmd := exec.Command("unshare", "--net", bin, "-n", "-l", "-P", "-f", conf,
		"-p", filepath.Join(dir, "ka.pid"), "-r", filepath.Join(dir, "vrrp.pid"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(dir, "ka.pid"))
		return err == nil && strings.TrimSpace(string(b)) == fmt.Sprint(cmd.Process.Pid),
			fmt.Sprintf("pid file: %q %v; output: %s", b, err, testutil.ReadFile(logPath))
	})
	return cmd
}

// TestVRRPStatus: what the heartbeat gate and the status command see of
// the VRRP keepalived.
func TestVRRPStatus(t *testing.T) {
	dir := testutil.ShortDir(t, "kv")
	p := Paths{Dir: dir}
	conf, pid := p.Config(), p.PIDFile()
	check := func(wantDown bool, wantReason string) {
		t.Helper()
		configured, reason := p.Status()
		down := configured && reason != ""
		if down != wantDown || !strings.Contains(reason, wantReason) {
			t.Errorf("Status = %v, %q; want down=%v, %q", configured, reason, wantDown, wantReason)
		}
	}
	writePid := func(s string) {
		t.Helper()
		if err := os.WriteFile(pid, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	check(false, "") // SINGLE topology: no VRRP configuration
	if err := os.WriteFile(conf, []byte("vrrp_instance x {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(true, "is missing")
	writePid("not-a-pid\n")
	check(true, "holds no pid")

	// A process that exited (reaped): its pid is gone.
	done := exec.Command("true")
	if err := done.Run(); err != nil {
		t.Fatal(err)
	}
	writePid(fmt.Sprintf("%d\n", done.Process.Pid))
	check(true, "is not running")

	// The pid was reused by another program: signal 0 would succeed, the
	// reference would keep sending; we do not (E9).
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	writePid(fmt.Sprintf("%d\n", other.Process.Pid))
	check(true, `is "sleep", not keepalived`)

	// The real thing.
	ka := startKeepalived(t, dir)
	if err := os.Rename(filepath.Join(dir, "ka.pid"), pid); err != nil {
		t.Fatal(err)
	}
	check(false, "")

	// keepalived killed but not yet reaped: a zombie is not running.
	if err := ka.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		_, reason := p.Status()
		return strings.Contains(reason, "has exited"), reason
	})
	_, _ = ka.Process.Wait()
	check(true, "is not running")
}
