package keepalived

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/service"
)

// octaviaConfig is what the controller's templater renders for a MASTER
// amphora (test/interop/render_keepalived.py output, base_path BASE).
const octaviaConfig = `vrrp_script check_script {
    script BASE/vrrp/check_script.sh
    interval 5
    fall 2
    rise 2
}

vrrp_instance 11111111222243338444555555555555 {
    state MASTER
    interface eth1
    virtual_router_id 1
    priority 100
    nopreempt
    accept
    garp_master_refresh 5
    garp_master_refresh_repeat 2
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass vrrppass
    }

    unicast_src_ip 198.51.100.11
    unicast_peer {
        198.51.100.12
    }

    virtual_ipaddress {
        198.51.100.100
    }

    virtual_ipaddress_excluded {
    }

    virtual_routes {
        198.51.100.0/24 dev eth1 src 198.51.100.100 scope link table 1
        default via 198.51.100.1 dev eth1 onlink table 1
    }

    virtual_rules {
        from 198.51.100.100/32 table 1 priority 100
    }

    track_script {
        check_script
    }
}
`

// Real `keepalived -t` output of keepalived 2.2.7 (stderr), captured on
// Debian 12.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name       string
		out        string
		fatal, tol []string
	}{{
		name: "octavia config, interface not plugged, long password",
		out: `(g02.conf: Line 10) WARNING - interface eth1 for vrrp_instance harness_vrrp_group doesn't exist
(g02.conf: Line 20) Truncating auth_pass to 8 characters
(g02.conf: Line 36) WARNING - interface eth1 for VROUTE nexthop doesn't exist
(g02.conf: Line 37) WARNING - interface eth1 for VROUTE nexthop doesn't exist
Non-existent interface specified in configuration
(g02.conf: Line 10) WARNING - interface eth1 for vrrp_instance harness_vrrp_group doesn't exist
`,
		tol: []string{
			"(g02.conf: Line 10) WARNING - interface eth1 for vrrp_instance harness_vrrp_group doesn't exist",
			"(g02.conf: Line 20) Truncating auth_pass to 8 characters",
			"(g02.conf: Line 36) WARNING - interface eth1 for VROUTE nexthop doesn't exist",
			"(g02.conf: Line 37) WARNING - interface eth1 for VROUTE nexthop doesn't exist",
			"Non-existent interface specified in configuration",
		},
	}, {
		name: "octavia config in the namespace",
		out: `SECURITY VIOLATION - scripts are being executed but script_security not enabled.
(harness_vrrp_group) Warning - nopreempt will not work with initial state MASTER - clearing
SECURITY VIOLATION - scripts are being executed but script_security not enabled.
`,
		tol: []string{
			"SECURITY VIOLATION - scripts are being executed but script_security not enabled.",
			"(harness_vrrp_group) Warning - nopreempt will not work with initial state MASTER - clearing",
		},
	}, {
		name: "broken",
		out: `(bad.conf: Line 2) Unknown keyword 'bogus_keyword'
(bad.conf: Line 3) (x) cannot use a loopback interface (lo) for vrrp - ignoring
(bad.conf: Line 4) number '300' outside range [1, 255]
(bad.conf: Line 4) (x): VRID '300' not valid - must be between 1 & 255
(x) the virtual router id must be set
(Line 1) Unexpected '{' - ignoring
There are 3 missing '}'s or extra '{'s
`,
		fatal: []string{
			"(bad.conf: Line 2) Unknown keyword 'bogus_keyword'",
			"(bad.conf: Line 3) (x) cannot use a loopback interface (lo) for vrrp - ignoring",
			"(bad.conf: Line 4) number '300' outside range [1, 255]",
			"(bad.conf: Line 4) (x): VRID '300' not valid - must be between 1 & 255",
			"(x) the virtual router id must be set",
			"(Line 1) Unexpected '{' - ignoring",
			"There are 3 missing '}'s or extra '{'s",
		},
	}, {
		name:  "missing file",
		out:   "Config files missing '/nonexistent'.\n",
		fatal: []string{"Config files missing '/nonexistent'."},
	}, {
		name: "clean",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			fatal, tol := Classify([]byte(tc.out))
			if diff := cmp.Diff(tc.fatal, fatal); diff != "" {
				t.Errorf("fatal (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.tol, tol); diff != "" {
				t.Errorf("tolerated (-want +got):\n%s", diff)
			}
		})
	}
}

// newTestManager returns a Manager on a temporary base path, with a
// service manager that is the real built-in supervisor (nothing is
// started by these tests) and a data-plane namespace that does not exist,
// so `keepalived -t` runs in the test's own namespace.
func newTestManager(t *testing.T, sockets ...string) (*Manager, *service.Supervisor) {
	t.Helper()
	dir := t.TempDir()
	sup, err := service.NewSupervisor(service.SupervisorOptions{StateDir: filepath.Join(dir, "sup")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close() })
	m := NewManager(Options{
		Common: Common{
			BasePath:    filepath.Join(dir, "lib"),
			Namespace:   "kv-absent-" + strings.ReplaceAll(filepath.Base(dir), "/", ""),
			LogFacility: 3,
			Units:       sup,
			Agent:       "/opt/amphora agent/amphora-agent",
		},
		LoadBalancers: (*fixedSockets)(&sockets),
	})
	return m, sup
}

// fixedSockets stands for the haproxy inventory: the sockets the check
// covers.
type fixedSockets []string

func (s *fixedSockets) CheckSockets(context.Context) []string {
	if s == nil {
		return nil
	}
	return *s
}

func withBase(m *Manager, text string) []byte {
	return []byte(strings.ReplaceAll(text, "BASE", m.opts.BasePath))
}

func TestUploadValidates(t *testing.T) {
	testutil.RequireBinary(t, DefaultCmd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, _ := newTestManager(t, "/b/lb1.sock", "/b/lb 2.sock")
	p := m.Paths()

	good := withBase(m, octaviaConfig)
	sum, err := m.Upload(ctx, bytes.NewReader(good))
	if err != nil {
		t.Fatalf("upload of the controller's configuration: %v", err)
	}
	if sum != fsutil.MD5Hex(good) {
		t.Errorf("md5 %s", sum)
	}
	for path, mode := range map[string]os.FileMode{
		p.Config(): 0o644, p.CheckScript(): 0o755, p.HAProxyCheckScript(): 0o644, p.CheckScriptsDir(): 0o755 | os.ModeDir,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: %v %v, want mode %v", path, fi.Mode(), err, mode)
		}
	}
	if got, _ := os.ReadFile(p.Config()); string(got) != string(good) {
		t.Errorf("installed configuration differs")
	}
	wantCheck := "# Generated by amphora-agent: every haproxy must answer on its stats socket.\n" +
		"'/opt/amphora agent/amphora-agent' vrrp-check -- /b/lb1.sock '/b/lb 2.sock'; exit $?\n"
	if got, _ := os.ReadFile(p.HAProxyCheckScript()); string(got) != wantCheck {
		t.Errorf("haproxy check:\n%s\nwant:\n%s", got, wantCheck)
	}
	if !m.Configured() {
		t.Error("Configured() false after upload")
	}

	// Refused configurations: 400 material, the installed one stays.
	for name, bad := range map[string]string{
		"unknown keyword": strings.Replace(octaviaConfig, "    nopreempt\n", "    nopreempt\n    preempt_bogus 3\n", 1),
		"missing brace":   strings.TrimSuffix(octaviaConfig, "}\n"),
		"bad router id":   strings.Replace(octaviaConfig, "virtual_router_id 1", "virtual_router_id 300", 1),
		"garbage":         "this is not { a keepalived configuration",
	} {
		_, err := m.Upload(ctx, bytes.NewReader(withBase(m, bad)))
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Output == "" {
			t.Errorf("%s: want a ValidationError, got %v", name, err)
			continue
		}
		t.Logf("%s refused: %s", name, strings.ReplaceAll(ve.Output, "\n", " | "))
		if got, _ := os.ReadFile(p.Config()); string(got) != string(good) {
			t.Errorf("%s: the installed configuration changed", name)
		}
		if got, _ := os.ReadFile(p.Config() + ".new-failed"); string(got) != string(withBase(m, bad)) {
			t.Errorf("%s: the refused configuration is not kept for inspection", name)
		}
	}
}

// C3: the check script comes back with the next upload (or agent start)
// even when the service definition already exists.
func TestCheckScriptRewritten(t *testing.T) {
	testutil.RequireBinary(t, DefaultCmd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, _ := newTestManager(t)
	p := m.Paths()
	if _, err := m.Upload(ctx, bytes.NewReader(withBase(m, octaviaConfig))); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.CheckScript(), p.HAProxyCheckScript()} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	m.Reconcile(ctx)
	for _, f := range []string{p.CheckScript(), p.HAProxyCheckScript()} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("not restored at start-up: %v", err)
		}
	}
	if err := os.Remove(p.CheckScript()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Upload(ctx, bytes.NewReader(withBase(m, octaviaConfig))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.CheckScript()); err != nil {
		t.Errorf("not restored by the upload: %v", err)
	}
}

// The check chain as keepalived runs it: check_script.sh with bash, every
// script of check_scripts must succeed, and the haproxy check without a
// socket fails (C4).
func TestCheckScriptChain(t *testing.T) {
	testutil.RequireBinary(t, "bash")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	// a stand-in for the agent's vrrp-check: records its arguments, fails
	// without sockets as the real one does
	agent := filepath.Join(dir, "agent")
	args := filepath.Join(dir, "args")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\necho \"$@\" > "+args+"\n[ $# -gt 2 ]\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sockets := &fixedSockets{}
	m := NewManager(Options{Common: Common{BasePath: filepath.Join(dir, "lib"), Agent: agent}, LoadBalancers: sockets})
	p := m.Paths()
	if err := os.MkdirAll(p.CheckScriptsDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fsutil.WriteFile(p.CheckScript(), checkScript(p.CheckScriptsDir()), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() int {
		t.Helper()
		err := exec.CommandContext(ctx, p.CheckScript()).Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.ExitCode()
		}
		t.Fatal(err)
		return -1
	}
	if got := run(); got != 0 {
		t.Errorf("empty check directory: exit %d", got)
	}
	if err := m.RefreshCheck(ctx); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != 1 {
		t.Errorf("no load balancer: exit %d, want 1", got)
	}
	if got, _ := os.ReadFile(args); string(got) != "vrrp-check --\n" {
		t.Errorf("vrrp-check arguments %q", got)
	}
	*sockets = fixedSockets{"/x/a.sock", "/x/b.sock"}
	if err := m.RefreshCheck(ctx); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != 0 {
		t.Errorf("sockets given: exit %d", got)
	}
	if got, _ := os.ReadFile(args); string(got) != "vrrp-check -- /x/a.sock /x/b.sock\n" {
		t.Errorf("vrrp-check arguments %q", got)
	}
	// Two failing checks whose statuses add up to 256 (the reference's
	// sum would wrap to 0, "healthy").
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(p.CheckScriptsDir(), n+".sh"), []byte("exit 128\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := run(); got != 1 {
		t.Errorf("failing checks: exit %d, want 1", got)
	}
}

func TestService(t *testing.T) {
	sup, err := service.NewSupervisor(service.SupervisorOptions{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close()
	m := NewManager(Options{Common: Common{BasePath: "/var/lib/octavia", Namespace: "amphora-haproxy", LogFacility: 2,
		Units: sup, NetnsUnit: "amphora-netns"}})
	svc, err := m.Service()
	if err != nil {
		t.Fatal(err)
	}
	want := `[Unit]
Description=Keepalive Daemon (LVS and VRRP)
After=network-online.target amphora-netns.service
Wants=network-online.target
Requires=amphora-netns.service

[Service]
# Force context as we start keepalived under "ip netns exec"
SELinuxContext=system_u:system_r:keepalived_t:s0
Type=forking
KillMode=process
# keepalived refuses to start while a pid file names a live process. The
# files outlive a crash or a hard reset in this directory, and a recycled
# pid can then block every start; when the unit starts, none of its
# processes runs, so what they name is not this keepalived.
ExecStartPre=-/bin/rm -f /var/lib/octavia/vrrp/octavia-keepalived.pid /var/lib/octavia/vrrp/octavia-keepalived.vrrp.pid /var/lib/octavia/vrrp/octavia-keepalived.check.pid
ExecStart=/sbin/ip netns exec amphora-haproxy /usr/sbin/keepalived --log-facility=2 -f /var/lib/octavia/vrrp/octavia-keepalived.conf -p /var/lib/octavia/vrrp/octavia-keepalived.pid -r /var/lib/octavia/vrrp/octavia-keepalived.vrrp.pid -c /var/lib/octavia/vrrp/octavia-keepalived.check.pid
ExecReload=/bin/kill -HUP $MAINPID
PIDFile=/var/lib/octavia/vrrp/octavia-keepalived.pid
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`
	if diff := cmp.Diff(want, string(svc.Unit)); diff != "" {
		t.Errorf("unit (-want +got):\n%s", diff)
	}
	wantArgv := []string{"/sbin/ip", "netns", "exec", "amphora-haproxy", "/usr/sbin/keepalived", "-n", "-l",
		"--log-facility=2", "-f", "/var/lib/octavia/vrrp/octavia-keepalived.conf",
		"-p", "/var/lib/octavia/vrrp/octavia-keepalived.pid",
		"-r", "/var/lib/octavia/vrrp/octavia-keepalived.vrrp.pid",
		"-c", "/var/lib/octavia/vrrp/octavia-keepalived.check.pid"}
	if diff := cmp.Diff(wantArgv, svc.Argv); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	if svc.PIDFile != "/var/lib/octavia/vrrp/octavia-keepalived.pid" || svc.ReloadSignal != 1 || svc.Name != "octavia-keepalived" {
		t.Errorf("service %+v", svc)
	}
	if diff := cmp.Diff([]string{"/var/lib/octavia/vrrp/octavia-keepalived.vrrp.pid", "/var/lib/octavia/vrrp/octavia-keepalived.check.pid"}, svc.ChildPIDFiles); diff != "" {
		t.Errorf("child pid files (-want +got):\n%s", diff)
	}

	// systemd's own check of the unit, when available.
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		return
	}
	for _, f := range []string{"/sbin/ip", DefaultCmd} {
		if _, err := os.Stat(f); err != nil {
			return // verify checks that the programs exist
		}
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, "octavia-keepalived.service")
	// without the dependency, which is not installed here
	text := strings.NewReplacer("Requires=amphora-netns.service\n", "", " amphora-netns.service", "").Replace(string(svc.Unit))
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// Starting before any upload is refused with a message, stopping a
// keepalived that was never set up succeeds, unknown actions are
// reported.
func TestActionsWithoutConfiguration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, _ := newTestManager(t)
	for _, a := range []string{"start", "Reload"} {
		_, err := m.Action(ctx, a)
		var ae *service.ActionError
		if !errors.As(err, &ae) || !errors.Is(err, ErrNotConfigured) ||
			ae.Message != "Failed to "+strings.ToLower(a)+" octavia-keepalived service" {
			t.Errorf("%s: %v", a, err)
		}
	}
	if d, err := m.Action(ctx, "STOP"); err != nil || d != "keepalived stoped" {
		t.Errorf("stop: %q %v", d, err)
	}
	if _, err := m.Action(ctx, "restart"); !errors.Is(err, ErrUnknownAction) {
		t.Errorf("restart: %v", err)
	}
}

// A namespace name that ip cannot enter (a stale /run/netns entry) must
// not turn into a refused configuration.
func TestValidateStaleNamespace(t *testing.T) {
	testutil.RequireBinary(t, DefaultCmd)
	if os.Geteuid() != 0 {
		t.Skip("needs root to write /run/netns")
	}
	testutil.RequireBinary(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, _ := newTestManager(t)
	name := "kv-stale-" + filepath.Base(t.TempDir())
	stale := filepath.Join("/run/netns", name)
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(stale) })
	m.opts.Namespace = name
	if _, err := m.Upload(ctx, bytes.NewReader(withBase(m, octaviaConfig))); err != nil {
		t.Fatalf("upload with an unusable namespace: %v", err)
	}
	_, err := m.Upload(ctx, bytes.NewReader(withBase(m, "vrrp_instance x {\n    bogus 1\n}\n")))
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.Output, "Unknown keyword 'bogus'") {
		t.Errorf("bad configuration: %v", err)
	}
}
