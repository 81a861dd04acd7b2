package service

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

type haproxyFixture struct {
	dir, cfg, pidFile string
	port              int
	svc               Service
}

// newHAProxyFixture prepares a haproxy service in foreground master-worker
// mode (-W, or -Ws with notify) listening on a free loopback port.
func newHAProxyFixture(t *testing.T, notify bool) *haproxyFixture {
	bin := testutil.RequireBinary(t, "haproxy")
	dir := testutil.ShortDir(t, "svt")
	f := &haproxyFixture{dir: dir, cfg: filepath.Join(dir, "h.cfg"), pidFile: filepath.Join(dir, "h.pid"), port: testutil.FreePort(t)}
	writeHAProxyCfg(t, f.cfg, f.port, "v1")
	mode := "-W"
	if notify {
		mode = "-Ws"
	}
	f.svc = Service{
		Name:         "haproxy-lbt" + testutil.RandomSuffix(4),
		Argv:         []string{bin, mode, "-f", f.cfg, "-p", f.pidFile},
		Checks:       [][]string{{bin, "-c", "-f", f.cfg}},
		ReloadSignal: syscall.SIGUSR2,
		PIDFile:      f.pidFile,
		Notify:       notify,
	}
	// safety net: whatever is left running of this test's haproxy
	t.Cleanup(func() {
		for _, pid := range mastersOf(t, f.svc.Argv) {
			killIfMatches(pid, f.svc.Argv)
		}
	})
	return f
}

func newSupervisor(t *testing.T, dir string) *Supervisor {
	t.Helper()
	s, err := NewSupervisor(SupervisorOptions{
		StateDir:     dir,
		Logger:       testLogger(t),
		RestartMin:   200 * time.Millisecond,
		RestartMax:   2 * time.Second,
		StopTimeout:  5 * time.Second,
		StartTimeout: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustState(t *testing.T, m Manager, name string) State {
	t.Helper()
	st, err := m.State(t.Context(), name)
	if err != nil {
		t.Fatalf("State(%s): %v", name, err)
	}
	return st
}

func TestSupervisorHAProxyLifecycle(t *testing.T) {
	f := newHAProxyFixture(t, false)
	ctx := ctxT(t)
	stateDir := filepath.Join(f.dir, "sup")
	sup := newSupervisor(t, stateDir)
	name := f.svc.Name

	if _, err := sup.State(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("State of unknown service: want ErrNotFound, got %v", err)
	}
	changed, err := sup.Install(ctx, f.svc)
	if err != nil || !changed {
		t.Fatalf("Install: changed=%v err=%v", changed, err)
	}
	if changed, err := sup.Install(ctx, f.svc); err != nil || changed {
		t.Fatalf("second Install: changed=%v err=%v, want unchanged", changed, err)
	}
	if st := mustState(t, sup, name); st.Active || st.ActiveState != "inactive" {
		t.Fatalf("state after install: %v", st)
	}
	if err := sup.Reload(ctx, name); !errors.Is(err, ErrNotActive) {
		t.Fatalf("Reload of stopped service: want ErrNotActive, got %v", err)
	}

	// concurrent readers during the whole life cycle (race detector)
	stopReaders := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stopReaders:
					return
				case <-time.After(5 * time.Millisecond):
				}
				_, _ = sup.State(ctx, name)
			}
		})
	}
	defer func() { close(stopReaders); readers.Wait() }()

	// start
	if err := sup.Start(ctx, name); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st := mustState(t, sup, name)
	pid, err := readPIDFile(f.pidFile)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Active || st.MainPID != pid || st.ActiveState != "active" {
		t.Fatalf("state after start: %v, pid file %d", st, pid)
	}
	waitServes(t, f.port, "v1")
	if err := sup.Start(ctx, name); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	if got := mustState(t, sup, name).MainPID; got != pid {
		t.Fatalf("second Start changed the pid: %d -> %d", pid, got)
	}
	if pgid, _ := unix.Getpgid(pid); pgid != pid {
		t.Errorf("service is not in its own process group: pgid %d pid %d", pgid, pid)
	}
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("service is not in its own session: sid %d pid %d", sid, pid)
	}

	// reload keeps the master and serves the new config
	writeHAProxyCfg(t, f.cfg, f.port, "v2")
	if err := sup.Reload(ctx, name); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	waitServes(t, f.port, "v2")
	if got := mustState(t, sup, name); !got.Active || got.MainPID != pid {
		t.Fatalf("after reload: %v, want pid %d", got, pid)
	}

	// a reload with a broken config is refused by the check; haproxy keeps running
	writeBrokenHAProxyCfg(t, f.cfg)
	err = sup.Reload(ctx, name)
	oe := mustOpErr(t, err)
	if oe.Result != "check-failed" || !strings.Contains(oe.Output, "no-such-keyword") {
		t.Fatalf("Reload with broken config: %v (result %q output %q)", err, oe.Result, oe.Output)
	}
	writeHAProxyCfg(t, f.cfg, f.port, "v2")
	if got := mustState(t, sup, name); got.MainPID != pid {
		t.Fatalf("failed reload changed the service: %v", got)
	}
	waitServes(t, f.port, "v2")

	// kill -9 the master: restarted after the back-off, twice with a growing delay
	var delays []time.Duration
	for range 2 {
		old := mustState(t, sup, name).MainPID
		t0 := time.Now()
		if err := unix.Kill(old, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 15*time.Second, func() (bool, string) {
			st := mustState(t, sup, name)
			return st.Active && st.MainPID != old, st.String()
		})
		delays = append(delays, time.Since(t0))
		waitServes(t, f.port, "v2")
	}
	if delays[0] < 200*time.Millisecond || delays[1] < 400*time.Millisecond {
		t.Fatalf("restart delays %v: want >= 200ms then >= 400ms (back-off)", delays)
	}
	pid = mustState(t, sup, name).MainPID
	if p, _ := readPIDFile(f.pidFile); p != pid {
		t.Fatalf("pid file %d, state pid %d", p, pid)
	}

	// restart gives a new master
	if err := sup.Restart(ctx, name); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	st = mustState(t, sup, name)
	if !st.Active || st.MainPID == pid {
		t.Fatalf("after restart: %v (old pid %d)", st, pid)
	}
	if procfs.Alive(pid) {
		t.Fatalf("old master %d still alive after restart", pid)
	}
	pid = st.MainPID
	waitServes(t, f.port, "v2")

	// agent restart: a new supervisor on the same state dir re-adopts the master
	if err := sup.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sup.State(ctx, name); !errors.Is(err, ErrClosed) {
		t.Fatalf("State after Close: want ErrClosed, got %v", err)
	}
	if !procfs.Alive(pid) {
		t.Fatal("Close stopped the service")
	}
	sup2 := newSupervisor(t, stateDir)
	st = mustState(t, sup2, name)
	if !st.Active || st.MainPID != pid {
		t.Fatalf("not re-adopted: %v, want pid %d", st, pid)
	}
	if m := mastersOf(t, f.svc.Argv); len(m) != 1 || m[0] != pid {
		t.Fatalf("haproxy masters %v, want only %d", m, pid)
	}
	if changed, err := sup2.Install(ctx, f.svc); err != nil || changed {
		t.Fatalf("Install after re-adoption: changed=%v err=%v", changed, err)
	}
	writeHAProxyCfg(t, f.cfg, f.port, "v3")
	if err := sup2.Reload(ctx, name); err != nil {
		t.Fatalf("Reload of re-adopted service: %v", err)
	}
	waitServes(t, f.port, "v3")
	if got := mustState(t, sup2, name).MainPID; got != pid {
		t.Fatalf("reload of re-adopted service changed pid %d -> %d", pid, got)
	}
	// the re-adopted (not a child any more) master dies: restarted too
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, func() (bool, string) {
		st := mustState(t, sup2, name)
		return st.Active && st.MainPID != pid, st.String()
	})
	waitServes(t, f.port, "v3")
	pid = mustState(t, sup2, name).MainPID

	// stop
	if err := sup2.Stop(ctx, name); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st = mustState(t, sup2, name)
	if st.Active || st.ActiveState != "inactive" || st.MainPID != 0 {
		t.Fatalf("after stop: %v", st)
	}
	if procfs.Alive(pid) {
		t.Fatalf("master %d alive after Stop", pid)
	}
	if m := mastersOf(t, f.svc.Argv); len(m) != 0 {
		t.Fatalf("haproxy processes left after Stop: %v", m)
	}
	if _, err := httpGet(f.port); err == nil {
		t.Fatal("port still served after Stop")
	}
	if err := sup2.Reload(ctx, name); !errors.Is(err, ErrNotActive) {
		t.Fatalf("Reload after stop: want ErrNotActive, got %v", err)
	}
	// a stopped service stays stopped across an agent restart
	sup2.Close()
	sup3 := newSupervisor(t, stateDir)
	if st := mustState(t, sup3, name); st.Active {
		t.Fatalf("stopped service came back after agent restart: %v", st)
	}

	// remove
	if err := sup3.Remove(ctx, name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := sup3.State(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("State after Remove: want ErrNotFound, got %v", err)
	}
	if fileExists(specFile(stateDir, name)) {
		t.Fatal("persisted spec left after Remove")
	}
	if err := sup3.Remove(ctx, name); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if err := sup3.Start(ctx, name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Start after Remove: want ErrNotFound, got %v", err)
	}
}

// A pid file naming an unrelated live process (pid reuse) must not be
// adopted: the service is started anew and the other process left alone.
func TestSupervisorStalePIDFileNotAdopted(t *testing.T) {
	f := newHAProxyFixture(t, false)
	ctx := ctxT(t)
	stateDir := filepath.Join(f.dir, "sup")
	sup := newSupervisor(t, stateDir)
	name := f.svc.Name
	if _, err := sup.Install(ctx, f.svc); err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	pid := mustState(t, sup, name).MainPID
	sup.Close()
	// the agent is gone; its haproxy dies and its pid now belongs to someone else
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil { // our child: reap it
		t.Fatal(err)
	}
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	if err := os.WriteFile(f.pidFile, []byte(strconv.Itoa(sleep.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	sup2 := newSupervisor(t, stateDir)
	testutil.WaitFor(t, 15*time.Second, func() (bool, string) {
		st := mustState(t, sup2, name)
		return st.Active && st.MainPID != sleep.Process.Pid && st.MainPID != pid, st.String()
	})
	waitServes(t, f.port, "v1")
	if !procfs.Alive(sleep.Process.Pid) {
		t.Fatal("the unrelated process was killed")
	}
	if p, _ := readPIDFile(f.pidFile); p != mustState(t, sup2, name).MainPID {
		t.Fatalf("pid file %d does not name the new master", p)
	}
	if err := sup2.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
	if !procfs.Alive(sleep.Process.Pid) {
		t.Fatal("Remove killed the unrelated process")
	}
}

// With Notify (haproxy -Ws), Start and Reload return once haproxy said
// READY=1.
func TestSupervisorNotify(t *testing.T) {
	f := newHAProxyFixture(t, true)
	ctx := ctxT(t)
	sup := newSupervisor(t, filepath.Join(f.dir, "sup"))
	name := f.svc.Name
	if _, err := sup.Install(ctx, f.svc); err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	// ready means listening: no polling needed
	if got, err := httpGet(f.port); err != nil || got != "v1" {
		t.Fatalf("right after Start: %q, %v", got, err)
	}
	pid := mustState(t, sup, name).MainPID
	sup.mu.Lock()
	u := sup.units[name]
	sup.mu.Unlock()
	u.mu.Lock()
	gen := u.readyGen
	u.mu.Unlock()
	writeHAProxyCfg(t, f.cfg, f.port, "v2")
	if err := sup.Reload(ctx, name); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	gen2 := u.readyGen
	u.mu.Unlock()
	if gen2 <= gen {
		t.Fatalf("Reload returned before READY=1 (generation %d -> %d)", gen, gen2)
	}
	waitServes(t, f.port, "v2")
	if got := mustState(t, sup, name).MainPID; got != pid {
		t.Fatalf("reload changed pid %d -> %d", pid, got)
	}
	// re-adoption keeps the notify channel: reload still waits for READY
	sup.Close()
	sup2 := newSupervisor(t, filepath.Join(f.dir, "sup"))
	if st := mustState(t, sup2, name); st.MainPID != pid {
		t.Fatalf("not re-adopted: %v", st)
	}
	writeHAProxyCfg(t, f.cfg, f.port, "v3")
	if err := sup2.Reload(ctx, name); err != nil {
		t.Fatalf("reload after re-adoption: %v", err)
	}
	waitServes(t, f.port, "v3")
	if err := sup2.Remove(ctx, name); err != nil {
		t.Fatal(err)
	}
	if procfs.Alive(pid) {
		t.Fatal("haproxy alive after Remove")
	}
}

func TestSupervisorStartFailures(t *testing.T) {
	ctx := ctxT(t)
	dir := testutil.ShortDir(t, "svt")
	sup := newSupervisor(t, dir)

	// a check fails: nothing is started, the output is reported
	svc := Service{
		Name:   "lbt-check" + testutil.RandomSuffix(4),
		Argv:   []string{"sleep", "60"},
		Checks: [][]string{{"sh", "-c", "echo config is bad >&2; exit 2"}},
	}
	if _, err := sup.Install(ctx, svc); err != nil {
		t.Fatal(err)
	}
	err := sup.Start(ctx, svc.Name)
	oe := mustOpErr(t, err)
	if oe.Result != "check-failed" || oe.Output != "config is bad" || oe.Op != "start" {
		t.Fatalf("check failure: %+v", oe)
	}
	if st := mustState(t, sup, svc.Name); st.Active || st.ActiveState != "failed" {
		t.Fatalf("state after failed check: %v", st)
	}

	// the program exits at once: the error carries its output
	svc2 := Service{Name: "lbt-exit" + testutil.RandomSuffix(4), Argv: []string{"sh", "-c", "echo boom; exit 3"}}
	if _, err := sup.Install(ctx, svc2); err != nil {
		t.Fatal(err)
	}
	err = sup.Start(ctx, svc2.Name)
	oe = mustOpErr(t, err)
	if oe.Result != "exited" || !strings.Contains(oe.Error(), "exit status 3") || oe.Output != "boom" {
		t.Fatalf("exit failure: %v (%+v)", err, oe)
	}
	if st := mustState(t, sup, svc2.Name); st.ActiveState != "failed" {
		t.Fatalf("state after exit: %v", st)
	}

	// the pid file never appears: start times out and the process is killed
	sup2, err := NewSupervisor(SupervisorOptions{StateDir: filepath.Join(dir, "b"), StartTimeout: 500 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sup2.Close()
	svc3 := Service{Name: "lbt-nopid" + testutil.RandomSuffix(4), Argv: []string{"sleep", "61"}, PIDFile: filepath.Join(dir, "never.pid")}
	if _, err := sup2.Install(ctx, svc3); err != nil {
		t.Fatal(err)
	}
	err = sup2.Start(ctx, svc3.Name)
	if oe := mustOpErr(t, err); oe.Result != "timeout" {
		t.Fatalf("missing pid file: %v", err)
	}
	if m := mastersOf(t, svc3.Argv); len(m) != 0 {
		t.Fatalf("timed-out start left processes: %v", m)
	}
	// bad names and empty argv are refused
	for _, bad := range []Service{{Name: "../x", Argv: []string{"true"}}, {Name: "ok", Argv: nil}, {Name: "x.service", Argv: []string{"true"}}} {
		if _, err := sup.Install(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Install(%+v): want ErrInvalid, got %v", bad, err)
		}
	}
}

// A process ignoring SIGTERM is killed after StopTimeout, with its whole
// process group.
func TestSupervisorStopEscalates(t *testing.T) {
	ctx := ctxT(t)
	dir := testutil.ShortDir(t, "svt")
	sup, err := NewSupervisor(SupervisorOptions{StateDir: dir, StopTimeout: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close()
	marker := "lbt-stop-" + testutil.RandomSuffix(4)
	// parent and child both ignore TERM; the child must die with the group
	svc := Service{Name: marker, Argv: []string{"sh", "-c", `trap "" TERM; sleep 62 & echo child $!; wait`}}
	if _, err := sup.Install(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(ctx, svc.Name); err != nil {
		t.Fatal(err)
	}
	pid := mustState(t, sup, svc.Name).MainPID
	var child int
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		b, _ := os.ReadFile(filepath.Join(dir, svc.Name+".log"))
		if _, after, ok := strings.Cut(string(b), "child "); ok {
			child, _ = strconv.Atoi(strings.TrimSpace(after))
		}
		return child > 0, string(b)
	})
	t0 := time.Now()
	if err := sup.Stop(ctx, svc.Name); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 300*time.Millisecond {
		t.Fatalf("stopped after %v: SIGTERM should have been ignored", d)
	}
	if procfs.Alive(pid) || procfs.Alive(child) {
		t.Fatalf("left alive: main %v child %v", procfs.Alive(pid), procfs.Alive(child))
	}
}

func TestSupervisorPersistedSpec(t *testing.T) {
	ctx := ctxT(t)
	dir := testutil.ShortDir(t, "svt")
	sup := newSupervisor(t, dir)
	svc := Service{
		Name:          "lbt-spec",
		Unit:          []byte("[Service]\n"),
		Argv:          []string{"/usr/sbin/keepalived", "-n", "-f", "/x.conf"},
		Checks:        [][]string{{"/usr/sbin/keepalived", "-t", "-f", "/x.conf"}},
		ReloadSignal:  syscall.SIGHUP,
		PIDFile:       "/x.pid",
		ChildPIDFiles: []string{"/x.vrrp.pid", "/x.check.pid"},
	}
	if _, err := sup.Install(ctx, svc); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(specFile(dir, svc.Name))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("spec mode %v", fi.Mode().Perm())
	}
	got, desired, err := loadSpec(specFile(dir, svc.Name))
	if err != nil {
		t.Fatal(err)
	}
	want := svc
	want.Unit = nil
	if diff := cmp.Diff(want, got); diff != "" || desired {
		t.Fatalf("persisted spec (-want +got):\n%s desired=%v", diff, desired)
	}
	// only the supervisor's fields count as a change
	svc.Unit = []byte("other")
	if changed, _ := sup.Install(ctx, svc); changed {
		t.Error("a unit text change counted as a supervisor change")
	}
	svc.Argv = append(svc.Argv, "-D")
	if changed, _ := sup.Install(ctx, svc); !changed {
		t.Error("an argv change was not noticed")
	}
	svc.ChildPIDFiles = svc.ChildPIDFiles[:1]
	if changed, _ := sup.Install(ctx, svc); !changed {
		t.Error("a child pid file change was not noticed")
	}
	if err := sup.Remove(ctx, svc.Name); err != nil {
		t.Fatal(err)
	}
}

func TestCmdlineMatches(t *testing.T) {
	argv := []string{"/sbin/ip", "netns", "exec", "amphora-haproxy", "/usr/sbin/haproxy", "-W", "-f", "/a/haproxy.cfg", "-p", "/a/a.pid"}
	tests := []struct {
		cmdline []string
		want    bool
	}{
		{[]string{"/usr/sbin/haproxy", "-W", "-f", "/a/haproxy.cfg", "-p", "/a/a.pid"}, true},
		{[]string{"haproxy", "-W", "-f", "/a/haproxy.cfg", "-p", "/a/a.pid"}, true},
		{[]string{"/usr/sbin/haproxy", "-sf", "123", "-x", "sockpair@4", "-W", "-f", "/a/haproxy.cfg", "-p", "/a/a.pid"}, true},
		{[]string{"/sbin/ip", "netns", "exec", "amphora-haproxy", "/usr/sbin/haproxy", "-W", "-f", "/a/haproxy.cfg", "-p", "/a/a.pid"}, true},
		{[]string{"/usr/sbin/haproxy", "-W", "-f", "/b/haproxy.cfg", "-p", "/b/b.pid"}, false},
		{[]string{"sleep", "60"}, false},
		{nil, false},
	}
	for _, tc := range tests {
		if got := cmdlineMatches(tc.cmdline, argv); got != tc.want {
			t.Errorf("cmdlineMatches(%q) = %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"haproxy-6e9fd1a2-1234-4cde-8f00-aabbccddeeff": true,
		"octavia-keepalived":                           true,
		"":                                             false,
		"../etc":                                       false,
		"a/b":                                          false,
		"x.service":                                    false,
		"-x":                                           false,
		"a b":                                          false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v", name, got)
		}
	}
}
