package service

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// userManager is a private, real systemd manager (testutil), reached over
// its private socket or its session bus.
type userManager struct {
	*testutil.SystemdManager
	env map[string]string
}

func startUserManager(t *testing.T) *userManager {
	t.Helper()
	m := testutil.StartSystemdManager(t)
	return &userManager{SystemdManager: m, env: map[string]string{
		"XDG_RUNTIME_DIR":          filepath.Join(m.Dir, "run"),
		"SYSTEMD_UNIT_DIR":         m.UnitDir,
		"DBUS_SESSION_BUS_ADDRESS": "unix:path=" + filepath.Join(m.Dir, "run", "bus"),
	}}
}

func (um *userManager) systemctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := um.Systemctl(args...)
	if err != nil {
		t.Fatalf("systemctl %v: %v: %s", args, err, out)
	}
	return out
}

func (um *userManager) connect(t *testing.T) *Systemd {
	t.Helper()
	m, err := NewSystemd(ctxT(t), SystemdOptions{
		UnitDir:       um.env["SYSTEMD_UNIT_DIR"],
		PrivateSocket: filepath.Join(um.env["XDG_RUNTIME_DIR"], "systemd", "private"),
		Logger:        testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// haproxyUnit renders a unit like Octavia's haproxy-<lb>.service (SERVICES.md
// §2.1) without the namespace and the amphora-netns dependency.
func haproxyUnit(bin, cfg, pidFile, desc string, unitExtra ...string) []byte {
	return []byte(`[Unit]
Description=` + desc + `
` + strings.Join(unitExtra, "\n") + `

[Service]
Environment="CONFIG=` + cfg + `" "PIDFILE=` + pidFile + `"
ExecStartPre=` + bin + ` -f $CONFIG -c -q
ExecReload=` + bin + ` -c -q -f $CONFIG
ExecReload=/bin/kill -USR2 $MAINPID
ExecStart=` + bin + ` -Ws -f $CONFIG -p $PIDFILE
KillMode=mixed
Restart=always
Type=notify

[Install]
WantedBy=default.target
`)
}

func TestSystemdHAProxyLifecycle(t *testing.T) {
	bin := testutil.RequireBinary(t, "haproxy")
	um := startUserManager(t)
	m := um.connect(t)
	ctx := ctxT(t)
	dir := testutil.ShortDir(t, "svt")
	cfg, pidFile, port := filepath.Join(dir, "h.cfg"), filepath.Join(dir, "h.pid"), testutil.FreePort(t)
	writeHAProxyCfg(t, cfg, port, "v1")
	name := "haproxy-lbt" + testutil.RandomSuffix(4)
	svc := Service{Name: name, Unit: haproxyUnit(bin, cfg, pidFile, "lbt haproxy")}
	unitPath := filepath.Join(um.env["SYSTEMD_UNIT_DIR"], name+".service")

	if _, err := m.State(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("State of unknown unit: want ErrNotFound, got %v", err)
	}
	if err := m.Start(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Start of unknown unit: want ErrNotFound, got %v", err)
	}

	// install: written (0644), daemon-reloaded, enabled
	reloads := m.reloads.Load()
	changed, err := m.Install(ctx, svc)
	if err != nil || !changed {
		t.Fatalf("Install: changed=%v err=%v", changed, err)
	}
	fi, err := os.Stat(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("unit file mode %v, want 0644", fi.Mode().Perm())
	}
	if got := m.reloads.Load() - reloads; got != 1 {
		t.Errorf("daemon-reloads during Install: %d, want 1", got)
	}
	if got := strings.TrimSpace(um.systemctl(t, "is-enabled", name+".service")); got != "enabled" {
		t.Errorf("is-enabled: %q", got)
	}
	// same content: no rewrite, no reload
	ino := fi.Sys().(*syscall.Stat_t).Ino
	reloads = m.reloads.Load()
	if changed, err := m.Install(ctx, svc); err != nil || changed {
		t.Fatalf("second Install: changed=%v err=%v", changed, err)
	}
	if fi2, _ := os.Stat(unitPath); fi2.Sys().(*syscall.Stat_t).Ino != ino || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Error("unchanged unit file was rewritten")
	}
	if m.reloads.Load() != reloads {
		t.Error("unchanged unit caused a daemon-reload")
	}

	if st := mustState(t, m, name); st.Active || st.ActiveState != "inactive" || st.MainPID != 0 {
		t.Fatalf("state before start: %v", st)
	}
	if err := m.Reload(ctx, name); !errors.Is(err, ErrNotActive) {
		t.Fatalf("Reload of inactive unit: want ErrNotActive, got %v", err)
	}

	// start: a Type=notify job completes after READY=1, so haproxy serves at once
	if err := m.Start(ctx, name); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st := mustState(t, m, name)
	pid, err := readPIDFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Active || st.ActiveState != "active" || st.SubState != "running" || st.MainPID != pid {
		t.Fatalf("after start: %v, pid file %d", st, pid)
	}
	if got, err := httpGet(port); err != nil || got != "v1" {
		t.Fatalf("right after Start: %q %v", got, err)
	}

	// reload keeps the master, new config served
	writeHAProxyCfg(t, cfg, port, "v2")
	if err := m.Reload(ctx, name); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	waitServes(t, port, "v2")
	if got := mustState(t, m, name); got.MainPID != pid || !got.Active {
		t.Fatalf("after reload: %v, want pid %d", got, pid)
	}

	// a reload whose check fails is an error; the service keeps running
	writeBrokenHAProxyCfg(t, cfg)
	err = m.Reload(ctx, name)
	if oe := mustOpErr(t, err); oe.Result != "failed" {
		t.Fatalf("Reload with broken config: %v", err)
	}
	if got := mustState(t, m, name); got.MainPID != pid || !got.Active {
		t.Fatalf("after failed reload: %v", got)
	}
	writeHAProxyCfg(t, cfg, port, "v2")

	// restart: new master
	if err := m.Restart(ctx, name); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	st = mustState(t, m, name)
	if !st.Active || st.MainPID == pid || st.MainPID == 0 {
		t.Fatalf("after restart: %v (old pid %d)", st, pid)
	}
	pid = st.MainPID
	waitServes(t, port, "v2")

	// the manager re-executes itself: the private connection drops, we reconnect
	dials := m.dials.Load()
	um.systemctl(t, "daemon-reexec")
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		st, err := m.State(ctx, name)
		if err != nil {
			return false, err.Error()
		}
		return st.Active && st.MainPID == pid, st.String()
	})
	writeHAProxyCfg(t, cfg, port, "v3")
	if err := m.Reload(ctx, name); err != nil {
		t.Fatalf("Reload after daemon-reexec: %v", err)
	}
	waitServes(t, port, "v3")
	if m.dials.Load() == dials {
		t.Error("no reconnection after daemon-reexec")
	}

	// a changed unit is rewritten and reloaded; the running service is not touched
	reloads = m.reloads.Load()
	svc.Unit = haproxyUnit(bin, cfg, pidFile, "lbt haproxy, changed")
	if changed, err := m.Install(ctx, svc); err != nil || !changed {
		t.Fatalf("Install of changed unit: changed=%v err=%v", changed, err)
	}
	if b, _ := os.ReadFile(unitPath); !bytes.Equal(b, append([]byte(GeneratedMarker), svc.Unit...)) {
		t.Fatal("unit file not updated")
	}
	if m.reloads.Load() != reloads+1 {
		t.Error("changed unit without daemon-reload")
	}
	if got := strings.TrimSpace(um.systemctl(t, "show", "-p", "Description", "--value", name+".service")); got != "lbt haproxy, changed" {
		t.Errorf("manager did not load the new unit: Description %q", got)
	}
	if got := mustState(t, m, name).MainPID; got != pid {
		t.Errorf("Install restarted the service: pid %d -> %d", pid, got)
	}

	// a unit file the agent did not write is never replaced
	foreign := []byte("# provided by the image\n" + string(svc.Unit))
	if err := os.WriteFile(unitPath, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	svc.Unit = haproxyUnit(bin, cfg, pidFile, "lbt haproxy, rendered again")
	if changed, err := m.Install(ctx, svc); err != nil || changed {
		t.Fatalf("Install over a foreign unit: changed=%v err=%v", changed, err)
	}
	if b, _ := os.ReadFile(unitPath); !bytes.Equal(b, foreign) {
		t.Fatal("foreign unit file overwritten")
	}
	// the agent's own unit again
	if err := os.Remove(unitPath); err != nil {
		t.Fatal(err)
	}
	if changed, err := m.Install(ctx, svc); err != nil || !changed {
		t.Fatalf("Install after the foreign unit went: changed=%v err=%v", changed, err)
	}

	// stop
	if err := m.Stop(ctx, name); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if st := mustState(t, m, name); st.Active || st.ActiveState != "inactive" || st.MainPID != 0 {
		t.Fatalf("after stop: %v", st)
	}
	if procfs.Alive(pid) {
		t.Fatal("haproxy alive after Stop")
	}

	// remove: unit gone, daemon reloaded (the manager forgot it)
	if err := m.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	pid = mustState(t, m, name).MainPID
	if err := m.Remove(ctx, name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if fileExists(unitPath) {
		t.Fatal("unit file left after Remove")
	}
	if wants := filepath.Join(um.env["SYSTEMD_UNIT_DIR"], "default.target.wants", name+".service"); fileExists(wants) {
		t.Fatal("enablement symlink left after Remove")
	}
	if procfs.Alive(pid) {
		t.Fatal("haproxy alive after Remove")
	}
	if _, err := m.State(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("State after Remove: want ErrNotFound, got %v", err)
	}
	if got := strings.TrimSpace(um.systemctl(t, "show", "-p", "LoadState", "--value", name+".service")); got != "not-found" {
		t.Errorf("LoadState after Remove: %q", got)
	}
	if err := m.Remove(ctx, name); err != nil {
		t.Fatalf("second Remove: %v", err)
	}

	// a unit file the agent did not write (the image's, an operator's,
	// a mask) is never deleted: DELETE only removes what the agent owns
	// (issue 13, defect 2; this part failed before: the file went)
	if err := os.WriteFile(unitPath, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	um.systemctl(t, "daemon-reload")
	if err := m.Remove(ctx, name); err != nil {
		t.Fatalf("Remove of a foreign unit: %v", err)
	}
	if b, _ := os.ReadFile(unitPath); !bytes.Equal(b, foreign) {
		t.Error("Remove deleted a unit file the agent did not write")
	}
	if err := os.Remove(unitPath); err != nil {
		t.Fatal(err)
	}
	masked := filepath.Join(filepath.Dir(unitPath), name+".service")
	if err := os.Symlink("/dev/null", masked); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, name); err != nil {
		t.Fatalf("Remove of a masked unit: %v", err)
	}
	if target, err := os.Readlink(masked); err != nil || target != "/dev/null" {
		t.Errorf("Remove unmasked the unit: %q %v", target, err)
	}
	_ = os.Remove(masked)
	um.systemctl(t, "daemon-reload")
}

// Jobs queued through two connections at once (the agent and, say, an
// admin's systemctl) replace or merge with each other; none may fail.
func TestSystemdConcurrentJobs(t *testing.T) {
	bin := testutil.RequireBinary(t, "haproxy")
	um := startUserManager(t)
	m1, m2 := um.connect(t), um.connect(t)
	ctx := ctxT(t)
	dir := testutil.ShortDir(t, "svt")
	cfg, pidFile, port := filepath.Join(dir, "h.cfg"), filepath.Join(dir, "h.pid"), testutil.FreePort(t)
	writeHAProxyCfg(t, cfg, port, "v1")
	name := "haproxy-lbtcc" + testutil.RandomSuffix(4)
	if _, err := m1.Install(ctx, Service{Name: name, Unit: haproxyUnit(bin, cfg, pidFile, "lbt concurrent",
		// a burst of restarts would otherwise hit the default start rate limit
		"StartLimitIntervalSec=0")}); err != nil {
		t.Fatal(err)
	}
	if err := m1.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		errs := make(chan error, 3)
		go func() { errs <- m1.Restart(ctx, name) }()
		go func() { errs <- m2.Reload(ctx, name) }()
		go func() { errs <- m2.Start(ctx, name) }()
		for range 3 {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
		if st := mustState(t, m1, name); !st.Active {
			t.Fatalf("round %d: %v", i, st)
		}
	}
	waitServes(t, port, "v1")
	if err := m2.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// A job still runs when the connection drops (daemon-reexec while a slow
// Type=notify start is pending): its result is followed on a new connection.
func TestSystemdJobAcrossReexec(t *testing.T) {
	bin := testutil.RequireBinary(t, "haproxy")
	um := startUserManager(t)
	m := um.connect(t)
	ctx := ctxT(t)
	dir := testutil.ShortDir(t, "svt")
	cfg, port := filepath.Join(dir, "h.cfg"), testutil.FreePort(t)
	writeHAProxyCfg(t, cfg, port, "slow")
	name := "lbt-slow" + testutil.RandomSuffix(4)
	unit := []byte(`[Service]
Type=notify
ExecStart=/bin/sh -c 'sleep 1.5; exec ` + bin + ` -Ws -f ` + cfg + `'
`)
	if _, err := m.Install(ctx, Service{Name: name, Unit: unit}); err != nil {
		t.Fatal(err)
	}
	dials := m.dials.Load()
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- m.Start(ctx, name) }()
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		st, err := m.State(ctx, name)
		return err == nil && st.ActiveState == "activating", st.String()
	})
	um.systemctl(t, "daemon-reexec")
	if err := <-done; err != nil {
		t.Fatalf("Start across daemon-reexec: %v", err)
	}
	if d := time.Since(t0); d < 1500*time.Millisecond {
		t.Fatalf("Start returned after %v, before READY", d)
	}
	if m.dials.Load() == dials {
		t.Fatal("connection was not re-established")
	}
	if got, err := httpGet(port); err != nil || got != "slow" {
		t.Fatalf("after Start: %q %v", got, err)
	}
	if err := m.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
}

func TestSystemdStartFailure(t *testing.T) {
	bin := testutil.RequireBinary(t, "haproxy")
	um := startUserManager(t)
	m := um.connect(t)
	ctx := ctxT(t)
	dir := testutil.ShortDir(t, "svt")
	cfg, pidFile := filepath.Join(dir, "bad.cfg"), filepath.Join(dir, "bad.pid")
	writeBrokenHAProxyCfg(t, cfg)
	name := "haproxy-lbtbad" + testutil.RandomSuffix(4)
	if _, err := m.Install(ctx, Service{Name: name, Unit: haproxyUnit(bin, cfg, pidFile, "lbt broken")}); err != nil {
		t.Fatal(err)
	}
	err := m.Start(ctx, name)
	oe := mustOpErr(t, err)
	if oe.Result != "failed" || !strings.Contains(err.Error(), "result=exit-code") || oe.Op != "start" {
		t.Fatalf("failed start: %v (%+v)", err, oe)
	}
	t.Logf("start error: %v", err)
	if st, _ := m.State(ctx, name); st.Active {
		t.Fatalf("failed unit reported active: %v", st)
	}
	if err := m.Remove(ctx, name); err != nil {
		t.Fatalf("Remove of failed unit: %v", err)
	}
	if _, err := m.State(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("State after Remove: %v", err)
	}
}

// The session-bus path (go-systemd's NewUserConnection flavour) reaches
// the same manager.
func TestSystemdUserBus(t *testing.T) {
	um := startUserManager(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", um.env["DBUS_SESSION_BUS_ADDRESS"])
	m, err := NewSystemd(ctxT(t), SystemdOptions{UnitDir: um.env["SYSTEMD_UNIT_DIR"], UserBus: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := ctxT(t)
	name := "lbt-sleep" + testutil.RandomSuffix(4)
	unit := []byte("[Unit]\nDescription=lbt sleep\n\n[Service]\nExecStart=/bin/sleep 63\n")
	if _, err := m.Install(ctx, Service{Name: name, Unit: unit}); err != nil { // no [Install]: static
		t.Fatal(err)
	}
	if err := m.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	st := mustState(t, m, name)
	if !st.Active || st.MainPID == 0 {
		t.Fatalf("state: %v", st)
	}
	// a unit without ExecReload cannot reload: an error, not a hang
	if err := m.Reload(ctx, name); err == nil {
		t.Fatal("Reload of a unit without ExecReload succeeded")
	}
	if err := m.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
	if procfs.Alive(st.MainPID) {
		t.Fatal("sleep alive after Remove")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.State(ctx, name); !errors.Is(err, ErrClosed) {
		t.Fatalf("State after Close: want ErrClosed, got %v", err)
	}
}

func TestSystemdNoManager(t *testing.T) {
	ctx := ctxT(t)
	_, err := NewSystemd(ctx, SystemdOptions{PrivateSocket: filepath.Join(testutil.ShortDir(t, "svt"), "none")})
	if err == nil || ctx.Err() != nil {
		t.Fatalf("NewSystemd without a manager: err=%v ctx=%v, want a prompt error", err, ctx.Err())
	}
}

func TestBooted(t *testing.T) {
	_, err := os.Lstat("/run/systemd/system")
	if got := Booted(); got != (err == nil) {
		t.Fatalf("Booted() = %v, /run/systemd/system: %v", got, err)
	}
}
