package vm

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQMPHotplugAndPower drives a real qemu (a paused pc machine without
// disks: no guest code runs) through the QMP client: a NIC hot-plugged
// the way Nova does it appears as a tap in the test's namespace and as a
// virtio-net PCI device with the port's MAC; reset, power button and quit
// produce their events.
func TestQMPHotplugAndPower(t *testing.T) {
	qemu := requireQEMU(t)
	requireRoot(t)
	ns := testNetns(t, "avmq")
	if err := ns.IP("link", "add", "avmqbr", "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "qmp.sock")
	cmd := exec.Command("ip", "netns", "exec", ns.Name, qemu, "-machine", "pc", "-accel", "tcg", "-m", "64",
		"-nodefaults", "-no-user-config", "-display", "none", "-S", "-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, sock)
	if err != nil {
		t.Fatalf("%v\nqemu: %s", err, out)
	}
	defer q.Close()
	if st, err := q.Status(ctx); err != nil || st != "prelaunch" {
		t.Errorf("status %q, %v; want prelaunch", st, err)
	}

	const mac = "fa:16:3e:12:34:56"
	if err := q.NetdevAddTap(ctx, "net-vip", "avmq-vip"); err != nil {
		t.Fatal(err)
	}
	if err := ns.IP("link", "set", "avmq-vip", "master", "avmqbr"); err != nil {
		t.Fatalf("the tap is not in the namespace qemu runs in: %v", err)
	}
	if err := q.DeviceAddNIC(ctx, "nic-vip", "net-vip", mac); err != nil {
		t.Fatal(err)
	}
	raw, err := q.Execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/nic-vip", "property": "mac"})
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := json.Unmarshal(raw, &got); err != nil || got != mac {
		t.Errorf("hot-plugged NIC mac %s, want %s", raw, mac)
	}
	// A second device on the same backend is refused with qemu's error.
	err = q.DeviceAddNIC(ctx, "nic-dup", "net-vip", mac)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class == "" || qe.Command != "device_add" {
		t.Errorf("device_add on a used netdev: %v, want a QMPError", err)
	}

	n := len(q.Events())
	if err := q.SystemReset(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.WaitEvent(ctx, "RESET", n); err != nil {
		t.Error(err)
	}
	if err := q.SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.WaitEvent(ctx, "POWERDOWN", n); err != nil {
		t.Error(err)
	}
	if err := q.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("qemu still runs after quit")
	}
	if _, _, err := q.WaitEvent(ctx, "SHUTDOWN", n); err != nil {
		t.Error(err)
	}
	// The tap went away with qemu.
	if err := ns.IP("link", "show", "avmq-vip"); err == nil {
		t.Error("tap avmq-vip still exists after qemu exited")
	}
	if _, err := q.Execute(ctx, "query-status", nil); err == nil {
		t.Error("a command after quit succeeded")
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, taps and bridges")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 is not installed")
	}
}

// testNetns creates a namespace prefix-<random> removed at the end.
func testNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	ns, err := CreateNetns(prefix + "-" + randomHex(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Error(err)
		}
	})
	return ns
}

// shortTempDir keeps unix socket paths short whatever the test's name.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "avm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
