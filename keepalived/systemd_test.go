package keepalived_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// The VRRP keepalived under a real systemd manager (a private user
// manager from testutil): upload installs and enables the
// unit, start/reload/stop go through systemd jobs, and a crashed
// keepalived is restarted by the unit's policy.
func TestVRRPUnderSystemd(t *testing.T) {
	testutil.RequireNetAdmin(t)
	testutil.RequireOctavia(t)
	testutil.RequireBinary(t, "keepalived")
	testutil.RequireSystemd(t)

	// Data plane: the agent's namespace with the VRRP NIC (eth1), its
	// peer in another namespace.
	dp := testutil.NewNetNS(t, "kv-dp")
	peer := testutil.NewNetNS(t, "kv-pr")
	testutil.Veth(t, dp, "eth1", peer, "eth0")
	if err := dp.AddAddr("eth1", "198.51.100.11/24"); err != nil {
		t.Fatal(err)
	}
	if err := peer.AddAddr("eth0", "198.51.100.12/24"); err != nil {
		t.Fatal(err)
	}

	sd := testutil.StartSystemdManager(t)
	unitDir := sd.UnitDir
	// Stand-in for the image's amphora-netns.service (operator-provided,
	// so the agent keeps it): the agent's own rendering would change this
	// host's conntrack sysctls.
	netnsUnit := "[Unit]\nDescription=test stand-in for the amphora namespace unit\nStopWhenUnneeded=true\n\n" +
		"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
	if err := os.WriteFile(filepath.Join(unitDir, "amphora-netns.service"), []byte(netnsUnit), 0o644); err != nil {
		t.Fatal(err)
	}
	systemctl := func(args ...string) string {
		out, _ := sd.Systemctl(args...)
		return strings.TrimSpace(out)
	}

	agentDir := testutil.ShortDir(t, "kvs")
	a := testutil.StartAgent(t, testutil.Options{
		Dir: agentDir,
		Options: map[string]string{
			"amphora_agent/network_namespace":           dp.Name,
			"amphora_agent/service_manager":             "systemd",
			"amphora_agent/systemd_unit_dir":            unitDir,
			"amphora_agent/administrative_log_facility": "2",
			"controller_worker/loadbalancer_topology":   "ACTIVE_STANDBY",
			"amphora_agent/haproxy_user_group_config":   filepath.Join(agentDir, "ug.conf"),
		},
		Prefix: sd.Prefix(),
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s\nmanager log:\n%s", a.Log(), sd.Log())
		}
	})

	other := &kvAmphora{id: testutil.NewUUID(), base: "/var/lib/octavia", vrrpIP: "198.51.100.12"}
	me := &kvAmphora{id: a.AmphoraID, base: a.BasePath, vrrpIP: "198.51.100.11"}
	conf := renderKeepalived(t, testutil.NewUUID(), me, other)[me.id]

	// Before any upload: a clear error, nothing crashes.
	code, _, body := a.Do(http.MethodPut, "/1.0/vrrp/start", nil)
	if code != http.StatusInternalServerError || !strings.Contains(string(body), "no keepalived configuration") {
		t.Errorf("start before upload: %d %s", code, body)
	}

	res := a.Octavia(
		testutil.OctaviaCall{Call: "upload_vrrp_config", Args: []any{conf}},
		testutil.OctaviaCall{Call: "start_vrrp"},
	)
	for i, r := range res {
		if !r.OK {
			t.Fatalf("call %d: %s: %s", i, r.Error, r.Message)
		}
	}
	unit, err := os.ReadFile(filepath.Join(unitDir, "octavia-keepalived.service"))
	if err != nil {
		t.Fatal(err)
	}
	vrrpDir := filepath.Join(a.BasePath, "vrrp")
	wantExec := "ExecStart=/sbin/ip netns exec " + dp.Name + " /usr/sbin/keepalived --log-facility=2 -f " +
		filepath.Join(vrrpDir, "octavia-keepalived.conf") + " -p " + filepath.Join(vrrpDir, "octavia-keepalived.pid")
	if !strings.Contains(string(unit), wantExec) {
		t.Errorf("unit lacks %q:\n%s", wantExec, unit)
	}
	if got := systemctl("is-enabled", "octavia-keepalived"); got != "enabled" {
		t.Errorf("is-enabled: %q", got)
	}
	if got := systemctl("is-active", "octavia-keepalived"); got != "active" {
		t.Fatalf("is-active after start: %q", got)
	}
	pidFile := filepath.Join(vrrpDir, "octavia-keepalived.pid")
	pid := procfs.ReadPID(pidFile)
	if !procfs.Alive(pid) {
		t.Fatalf("keepalived pid %d (from %s) not running", pid, pidFile)
	}
	mainPID := systemctl("show", "-p", "MainPID", "--value", "octavia-keepalived")
	if mainPID != strings.TrimSpace(string(must(os.ReadFile(pidFile)))) {
		t.Errorf("MainPID %s, pid file %d", mainPID, pid)
	}

	action := func(name string) (int, string) {
		t.Helper()
		code, _, body := a.Do(http.MethodPut, "/1.0/vrrp/"+name, nil)
		var r struct{ Message, Details string }
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("%s: %d %s", name, code, body)
		}
		return code, r.Details
	}
	// A crash: the unit restarts keepalived (once its VRRP child is up,
	// so the child's own shutdown on its parent's death is what happens).
	vrrpPID := filepath.Join(vrrpDir, "octavia-keepalived.vrrp.pid")
	testutil.WaitFor(t, 30*time.Second, testutil.Holds("keepalived's VRRP child", func() bool { return procfs.Alive(procfs.ReadPID(vrrpPID)) }))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		p := procfs.ReadPID(pidFile)
		state := systemctl("is-active", "octavia-keepalived")
		if p != pid && procfs.Alive(p) && state == "active" {
			break
		}
		if time.Now().After(deadline) {
			pids, _ := exec.Command("pgrep", "-a", "keepalived").CombinedOutput()
			t.Fatalf("keepalived not restarted by systemd within 60s: pid file %d (killed %d), state %q\n%s\nkeepalived processes:\n%s",
				p, pid, state, systemctl("status", "--no-pager", "-l", "octavia-keepalived"), pids)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid = procfs.ReadPID(pidFile)

	if code, d := action("START"); code != http.StatusAccepted || d != "keepalived reloaded" {
		t.Errorf("start of a running keepalived: %d %q", code, d)
	}
	if p := procfs.ReadPID(pidFile); p != pid {
		t.Errorf("reload changed the pid %d -> %d", pid, p)
	}

	if code, d := action("stop"); code != http.StatusAccepted || d != "keepalived stoped" {
		t.Errorf("stop: %d %q", code, d)
	}
	if got := systemctl("is-active", "octavia-keepalived"); got != "inactive" {
		t.Errorf("is-active after stop: %q", got)
	}
	if procfs.Alive(pid) {
		t.Errorf("keepalived %d survived the stop", pid)
	}
	if code, d := action("reload"); code != http.StatusAccepted || d != "keepalived started" {
		t.Errorf("reload of a stopped keepalived: %d %q", code, d)
	}
	if got := systemctl("is-active", "octavia-keepalived"); got != "active" {
		t.Errorf("is-active after reload-as-start: %q", got)
	}
	if code, d := action("stop"); code != http.StatusAccepted || d != "keepalived stoped" {
		t.Errorf("stop before the reset: %d %q", code, d)
	}

	// A hard reset: systemd starts the enabled unit at boot, before and
	// without the agent, over pid files the last instance left in
	// /var/lib whose pids now name other live processes (here a sleep and
	// this test). keepalived would refuse to start over them ("daemon is
	// already running", a restart loop), and systemd would take the main
	// one's pid for the unit's and signal it; the unit removes them first.
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	for f, p := range map[string]int{pidFile: sleep.Process.Pid, vrrpPID: os.Getpid(),
		filepath.Join(vrrpDir, "octavia-keepalived.check.pid"): os.Getpid()} {
		if err := os.WriteFile(f, []byte(strconv.Itoa(p)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := sd.Systemctl("start", "octavia-keepalived"); err != nil {
		t.Fatalf("start over stale pid files: %v %s\n%s", err, out, systemctl("status", "--no-pager", "-l", "octavia-keepalived"))
	}
	if got := systemctl("is-active", "octavia-keepalived"); got != "active" {
		t.Errorf("is-active after a start over stale pid files: %q", got)
	}
	if p := procfs.ReadPID(pidFile); p == sleep.Process.Pid || !procfs.Alive(p) {
		t.Errorf("pid file names %d after the start", p)
	}
	if !procfs.Alive(sleep.Process.Pid) {
		t.Error("the process a stale pid file named was disturbed")
	}
	if code, d := action("stop"); code != http.StatusAccepted || d != "keepalived stoped" {
		t.Errorf("final stop: %d %q", code, d)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
