package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/execx"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/procfs"
)

// SupervisorOptions configures NewSupervisor. Zero durations take the
// defaults noted.
type SupervisorOptions struct {
	// StateDir holds the persisted specs (<name>.json), the service logs
	// (<name>.log, stdout+stderr appended) and sd_notify sockets
	// (<name>.notify), e.g. <base_path>/supervisor. Required; created 0700.
	StateDir string
	Logger   *slog.Logger

	// StartTimeout bounds the readiness wait of a start or a notify reload
	// (default 60s); the process is killed when it is not ready in time.
	StartTimeout time.Duration
	// StartGrace is how long a process must stay alive after a start or a
	// signal reload to count as up (default 300ms).
	StartGrace time.Duration
	// StopTimeout is the wait between SIGTERM and SIGKILL (default 10s).
	StopTimeout time.Duration
	// RestartMin and RestartMax bound the back-off between restarts of a
	// service that died (defaults 1s, 30s; doubling).
	RestartMin, RestartMax time.Duration
	// RestartReset: a process that ran at least this long restarts after
	// RestartMin again (default 60s).
	RestartReset time.Duration
	// MaxLogSize: at start, a larger log is rotated to <name>.log.1
	// (default 8 MiB).
	MaxLogSize int64
}

// Supervisor is a Manager that runs the services as its own children (each
// in its own session) for hosts without systemd. The services survive the
// agent: the desired state is persisted, and a new Supervisor on the same
// StateDir re-adopts running instances (pid file + /proc/<pid>/cmdline
// check + pidfd) instead of starting them twice.
type Supervisor struct {
	opts SupervisorOptions
	log  *slog.Logger
	ctx  context.Context // cancelled by Close
	stop context.CancelFunc
	wg   sync.WaitGroup // goroutines: process watchers, restart loops, notify readers

	mu     sync.Mutex // guards the following
	units  map[string]*unit
	procs  map[*process]struct{} // processes with a watcher
	closed bool
}

var _ Manager = (*Supervisor)(nil)

type phase int

const (
	phaseStopped phase = iota
	phaseStarting
	phaseRunning
	phaseReloading
	phaseStopping
	phaseBackoff // died, restart pending
	phaseFailed
)

type unit struct {
	name string
	sem  chan struct{} // serializes operations

	mu            sync.Mutex // guards the following
	spec          Service
	desired       bool     // started
	proc          *process // the instance (possibly exited, during back-off)
	starting      *process // being started, not yet ready
	phase         phase
	removed       bool
	backoff       time.Duration
	cancelRestart context.CancelFunc
	notify        *net.UnixConn
	readyGen      uint64        // count of READY=1 received
	readyCh       chan struct{} // closed and replaced on every READY=1
}

// NewSupervisor loads the persisted services from opts.StateDir, re-adopts
// the running ones and starts (in the background, with back-off) those
// that should run but do not.
func NewSupervisor(opts SupervisorOptions) (*Supervisor, error) {
	if opts.StateDir == "" {
		return nil, fmt.Errorf("%w: supervisor state dir not set", ErrInvalid)
	}
	dir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	opts.StateDir = dir
	setDefault(&opts.StartTimeout, 60*time.Second)
	setDefault(&opts.StartGrace, 300*time.Millisecond)
	setDefault(&opts.StopTimeout, 10*time.Second)
	setDefault(&opts.RestartMin, time.Second)
	setDefault(&opts.RestartMax, 30*time.Second)
	setDefault(&opts.RestartReset, 60*time.Second)
	if opts.MaxLogSize <= 0 {
		opts.MaxLogSize = 8 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("supervisor state dir: %w", err)
	}
	s := &Supervisor{
		opts:  opts,
		log:   opts.Logger,
		units: make(map[string]*unit),
		procs: make(map[*process]struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.ctx, s.stop = context.WithCancel(context.Background())

	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		spec, desired, err := loadSpec(f)
		if err != nil {
			s.log.Error("ignoring unreadable service spec", "path", f, "err", err)
			continue
		}
		u := newUnit(spec.Name)
		u.spec, u.desired = spec, desired
		s.units[spec.Name] = u
		if err := s.ensureNotify(u); err != nil {
			s.log.Error("notify socket", "unit", u.name, "err", err)
		}
		adopted := s.adopt(u)
		switch {
		case adopted && !desired:
			// an interrupted Stop: finish it
			s.goOwned(func() { s.converge(u) })
		case !adopted && desired:
			s.log.Info("service not running, starting it", "unit", u.name)
			s.goOwned(func() { s.restartLoop(u, nil, 0) })
		}
	}
	return s, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

func newUnit(name string) *unit {
	return &unit{name: name, sem: make(chan struct{}, 1), readyCh: make(chan struct{})}
}

// goOwned runs f in a goroutine Close waits for; false when closed.
func (s *Supervisor) goOwned(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Go(f)
	return true
}

// Close stops watching: goroutines end, the services keep running (a new
// Supervisor on the same StateDir re-adopts them).
func (s *Supervisor) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	procs := make([]*process, 0, len(s.procs))
	for p := range s.procs {
		procs = append(procs, p)
	}
	units := make([]*unit, 0, len(s.units))
	for _, u := range s.units {
		units = append(units, u)
	}
	s.mu.Unlock()
	s.stop()
	for _, p := range procs {
		p.f.Close() // wakes its watcher
	}
	for _, u := range units {
		u.mu.Lock()
		if u.notify != nil {
			u.notify.Close()
		}
		u.mu.Unlock()
	}
	s.wg.Wait()
	return nil
}

// lock takes u's operation lock.
func (s *Supervisor) lock(ctx context.Context, u *unit) (func(), error) {
	select {
	case u.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, ErrClosed
	}
	u.mu.Lock()
	removed := u.removed
	u.mu.Unlock()
	if removed {
		<-u.sem
		return nil, ErrNotFound
	}
	return func() { <-u.sem }, nil
}

func (s *Supervisor) lookup(name string) (*unit, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	u := s.units[name]
	if u == nil {
		return nil, ErrNotFound
	}
	return u, nil
}

// op looks the unit up and runs f under its operation lock. Operations
// that decide the desired state (all but install and reload) first cancel
// a pending or running automatic restart, so they do not wait behind it.
func (s *Supervisor) op(ctx context.Context, name, op string, f func(u *unit) error) error {
	u, err := s.lookup(name)
	if err != nil {
		return &OpError{Name: name, Op: op, Err: err}
	}
	if op != "install" && op != "reload" {
		u.stopRestartLoop()
	}
	unlock, err := s.lock(ctx, u)
	if err != nil {
		return &OpError{Name: name, Op: op, Err: err}
	}
	defer unlock()
	if err := f(u); err != nil {
		var oe *OpError
		if errors.As(err, &oe) {
			return err
		}
		return &OpError{Name: name, Op: op, Err: err}
	}
	return nil
}

// Install remembers and persists svc. A service this Supervisor does not
// know yet whose pid file names a matching live process is re-adopted.
func (s *Supervisor) Install(ctx context.Context, svc Service) (bool, error) {
	if err := checkName(svc.Name); err != nil {
		return false, &OpError{Name: svc.Name, Op: "install", Err: err}
	}
	if len(svc.Argv) == 0 {
		return false, &OpError{Name: svc.Name, Op: "install", Err: fmt.Errorf("%w: empty argv", ErrInvalid)}
	}
	svc = cloneSpec(svc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, &OpError{Name: svc.Name, Op: "install", Err: ErrClosed}
	}
	u := s.units[svc.Name]
	fresh := u == nil
	if fresh {
		u = newUnit(svc.Name)
		u.spec = svc
		s.units[svc.Name] = u
	}
	s.mu.Unlock()

	var changed bool
	err := s.op(ctx, svc.Name, "install", func(u *unit) error {
		u.mu.Lock()
		changed = fresh || !sameSpec(u.spec, svc)
		u.spec = svc
		known := u.proc != nil || u.starting != nil
		u.mu.Unlock()
		if err := s.ensureNotify(u); err != nil {
			return err
		}
		if !known && s.adopt(u) {
			u.mu.Lock()
			u.desired = true
			u.mu.Unlock()
			changed = true
		}
		if changed {
			return s.persist(u)
		}
		return nil
	})
	if err != nil && fresh {
		s.mu.Lock()
		if s.units[svc.Name] == u {
			delete(s.units, svc.Name)
		}
		s.mu.Unlock()
	}
	return changed, err
}

// Start starts the service unless it runs, and waits until it is ready.
func (s *Supervisor) Start(ctx context.Context, name string) error {
	return s.op(ctx, name, "start", func(u *unit) error {
		u.mu.Lock()
		running := u.proc != nil && !u.proc.exited && u.proc.alive()
		wasDesired := u.desired
		u.desired = true
		u.mu.Unlock()
		if !wasDesired {
			if err := s.persist(u); err != nil {
				return err
			}
		}
		if running {
			return nil
		}
		return s.startLocked(ctx, u, false)
	})
}

// Stop stops the service: SIGTERM, SIGKILL to its whole process group
// after StopTimeout.
func (s *Supervisor) Stop(ctx context.Context, name string) error {
	return s.op(ctx, name, "stop", func(u *unit) error {
		u.mu.Lock()
		u.desired = false
		u.mu.Unlock()
		if err := s.persist(u); err != nil {
			return err
		}
		return s.stopLocked(ctx, u)
	})
}

// Restart stops the service if it runs and starts it again.
func (s *Supervisor) Restart(ctx context.Context, name string) error {
	return s.op(ctx, name, "restart", func(u *unit) error {
		u.mu.Lock()
		wasDesired := u.desired
		u.desired = true
		u.mu.Unlock()
		if !wasDesired {
			if err := s.persist(u); err != nil {
				return err
			}
		}
		// check first: a bad configuration must not take a running service down
		if err := s.runChecks(ctx, u, "restart"); err != nil {
			return err
		}
		if err := s.stopLocked(ctx, u); err != nil {
			return err
		}
		return s.startLocked(ctx, u, true)
	})
}

// Reload runs the checks and sends ReloadSignal to the main process; with
// Notify it waits for the program's READY=1, else for StartGrace.
func (s *Supervisor) Reload(ctx context.Context, name string) error {
	return s.op(ctx, name, "reload", func(u *unit) error {
		u.mu.Lock()
		p, spec := u.proc, u.spec
		running := p != nil && !p.exited && p.alive()
		u.mu.Unlock()
		if !running {
			return &OpError{Name: name, Op: "reload", Err: ErrNotActive}
		}
		if spec.ReloadSignal == 0 {
			return fmt.Errorf("%w: no reload signal", ErrInvalid)
		}
		if err := s.runChecks(ctx, u, "reload"); err != nil {
			return err
		}
		u.mu.Lock()
		gen := u.readyGen
		u.phase = phaseReloading
		u.mu.Unlock()
		defer func() {
			u.mu.Lock()
			if u.phase == phaseReloading {
				u.phase = phaseRunning
			}
			u.mu.Unlock()
		}()
		if err := p.signal(unix.Signal(spec.ReloadSignal)); err != nil {
			return &OpError{Name: name, Op: "reload", Result: "signal", Err: err}
		}
		if err := s.waitUp(ctx, u, p, spec, gen, false); err != nil {
			return &OpError{Name: name, Op: "reload", Result: resultOf(err), Err: err, Output: s.logTail(u.name, p.logOff)}
		}
		s.log.Info("service reloaded", "unit", name, "pid", p.pid)
		return nil
	})
}

// State reports whether the process really runs.
func (s *Supervisor) State(ctx context.Context, name string) (State, error) {
	u, err := s.lookup(name)
	if err != nil {
		return State{}, &OpError{Name: name, Op: "state", Err: err}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.removed {
		return State{}, &OpError{Name: name, Op: "state", Err: ErrNotFound}
	}
	p := u.proc
	alive := p != nil && !p.exited && p.alive()
	switch {
	case u.starting != nil:
		return State{MainPID: u.starting.pid, ActiveState: "activating", SubState: "start"}, nil
	case alive && u.phase == phaseReloading:
		return State{Active: true, MainPID: p.pid, ActiveState: "reloading", SubState: "reload"}, nil
	case alive && u.phase == phaseStopping:
		return State{MainPID: p.pid, ActiveState: "deactivating", SubState: "stop-sigterm"}, nil
	case alive:
		return State{Active: true, MainPID: p.pid, ActiveState: "active", SubState: "running"}, nil
	case u.phase == phaseBackoff || (p != nil && u.desired && u.phase == phaseRunning):
		return State{ActiveState: "activating", SubState: "auto-restart"}, nil
	case u.phase == phaseFailed:
		return State{ActiveState: "failed", SubState: "failed"}, nil
	}
	return State{ActiveState: "inactive", SubState: "dead"}, nil
}

// Remove stops the service if it runs and forgets it (spec, logs, notify
// socket). Unknown names succeed.
func (s *Supervisor) Remove(ctx context.Context, name string) error {
	u, err := s.lookup(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return &OpError{Name: name, Op: "remove", Err: err}
	}
	u.stopRestartLoop()
	unlock, err := s.lock(ctx, u)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return &OpError{Name: name, Op: "remove", Err: err}
	}
	defer unlock()
	u.mu.Lock()
	u.desired = false
	u.mu.Unlock()
	if err := s.stopLocked(ctx, u); err != nil {
		return &OpError{Name: name, Op: "remove", Err: err}
	}
	u.mu.Lock()
	u.removed = true
	if u.notify != nil {
		u.notify.Close()
		u.notify = nil
	}
	u.mu.Unlock()
	s.mu.Lock()
	if s.units[name] == u {
		delete(s.units, name)
	}
	s.mu.Unlock()
	var errs []error
	for _, p := range []string{s.specPath(name), s.notifyPath(name), s.logPath(name), s.logPath(name) + ".1"} {
		errs = append(errs, fsutil.Remove(p))
	}
	if err := errors.Join(errs...); err != nil {
		return &OpError{Name: name, Op: "remove", Err: err}
	}
	s.log.Info("service removed", "unit", name)
	return nil
}

func (u *unit) stopRestartLoop() {
	u.mu.Lock()
	if u.cancelRestart != nil {
		u.cancelRestart()
		u.cancelRestart = nil
	}
	u.mu.Unlock()
}

func (s *Supervisor) runChecks(ctx context.Context, u *unit, op string) error {
	u.mu.Lock()
	checks := u.spec.Checks
	u.mu.Unlock()
	for _, argv := range checks {
		if _, err := execx.Run(ctx, argv...); err != nil {
			oe := &OpError{Name: u.name, Op: op, Result: "check-failed", Err: err}
			var xe *execx.Error
			if errors.As(err, &xe) {
				oe.Output = xe.Output
			}
			return oe
		}
	}
	return nil
}

// startLocked runs the checks (unless checked), starts the process and waits until it is
// ready. On success u.proc is the new process.
func (s *Supervisor) startLocked(ctx context.Context, u *unit, checked bool) error {
	if !checked {
		if err := s.runChecks(ctx, u, "start"); err != nil {
			s.setPhase(u, phaseFailed)
			return err
		}
	}
	u.mu.Lock()
	spec := u.spec
	gen := u.readyGen
	u.mu.Unlock()
	if err := s.ensureNotify(u); err != nil {
		return err
	}
	if spec.PIDFile != "" {
		// whatever it names is not ours (not adopted): the fresh instance
		// writes its own, which is how readiness and re-adoption find it
		if err := fsutil.Remove(spec.PIDFile); err != nil {
			return err
		}
	}
	p, err := s.spawn(u, spec)
	if err != nil {
		s.setPhase(u, phaseFailed)
		return &OpError{Name: u.name, Op: "start", Result: "exec", Err: err}
	}
	u.mu.Lock()
	u.starting = p
	u.phase = phaseStarting
	u.mu.Unlock()
	s.log.Info("service started", "unit", u.name, "pid", p.pid)

	err = s.waitUp(ctx, u, p, spec, gen, true)
	u.mu.Lock()
	u.starting = nil
	if err == nil && p.exited {
		err = fmt.Errorf("%w: %s", errExited, p.exit)
	}
	switch {
	case err == nil, ctx.Err() != nil && !p.exited:
		// ready, or the caller gave up waiting: the process is ours to watch
		u.proc = p
		u.phase = phaseRunning
		u.mu.Unlock()
		if err != nil {
			return &OpError{Name: u.name, Op: "start", Err: err}
		}
		return nil
	}
	u.phase = phaseFailed
	u.mu.Unlock()
	if !p.exited {
		// not ready in time: do not leave a half-started instance behind
		u.mu.Lock()
		p.stopping = true
		u.mu.Unlock()
		_ = p.signal(unix.SIGKILL)
		p.killGroup()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	return &OpError{Name: u.name, Op: "start", Result: resultOf(err), Err: err, Output: s.logTail(u.name, p.logOff)}
}

var (
	errExited  = errors.New("process exited")
	errTimeout = errors.New("not ready in time")
)

func resultOf(err error) string {
	switch {
	case errors.Is(err, errExited):
		return "exited"
	case errors.Is(err, errTimeout):
		return "timeout"
	}
	return ""
}

// waitUp waits until p counts as up: alive for StartGrace, and when it
// speaks sd_notify a READY=1 newer than gen, and (at start) the pid file
// written.
func (s *Supervisor) waitUp(ctx context.Context, u *unit, p *process, spec Service, gen uint64, start bool) error {
	deadline := time.NewTimer(s.opts.StartTimeout)
	defer deadline.Stop()
	exited := func() error {
		u.mu.Lock()
		defer u.mu.Unlock()
		return fmt.Errorf("%w: %s", errExited, p.exit)
	}
	grace := time.NewTimer(s.opts.StartGrace)
	defer grace.Stop()
	select {
	case <-p.done:
		return exited()
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrClosed
	case <-grace.C:
	}
	if p.notify {
		for {
			u.mu.Lock()
			ready, ch := u.readyGen > gen, u.readyCh
			u.mu.Unlock()
			if ready {
				break
			}
			select {
			case <-ch:
			case <-p.done:
				return exited()
			case <-ctx.Done():
				return ctx.Err()
			case <-s.ctx.Done():
				return ErrClosed
			case <-deadline.C:
				return fmt.Errorf("%w: no READY=1 within %v", errTimeout, s.opts.StartTimeout)
			}
		}
	}
	if start && spec.PIDFile != "" {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			pid, err := readPIDFile(spec.PIDFile)
			if err == nil {
				if pid != p.pid {
					s.log.Warn("pid file names another process than the one started; re-adoption will not work",
						"unit", u.name, "pid", p.pid, "pid_file_pid", pid)
				}
				break
			}
			select {
			case <-tick.C:
			case <-p.done:
				return exited()
			case <-ctx.Done():
				return ctx.Err()
			case <-s.ctx.Done():
				return ErrClosed
			case <-deadline.C:
				return fmt.Errorf("%w: pid file %s not written within %v", errTimeout, spec.PIDFile, s.opts.StartTimeout)
			}
		}
	}
	select {
	case <-p.done:
		return exited()
	default:
	}
	return nil
}

// spawn starts the program in its own session, output appended to the
// service log, and registers its watcher.
func (s *Supervisor) spawn(u *unit, spec Service) (*process, error) {
	logPath := s.logPath(u.name)
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > s.opts.MaxLogSize {
		if err := fsutil.Rename(logPath, logPath+".1"); err != nil {
			return nil, fmt.Errorf("rotate log: %w", err)
		}
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	off, _ := logf.Seek(0, io.SeekEnd)

	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env = slices.Clone(execx.Env)
	if spec.Notify {
		cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+s.notifyPath(u.name))
	}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	pidfd := -1
	// own session: signals and terminal hang-ups aimed at the agent do not
	// reach the service, and its process group is ours to clean up
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, PidFD: &pidfd}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release() // our own pidfd watches it; nobody calls Wait
	if pidfd < 0 {
		// no pidfd from clone: open one (the child cannot be reaped yet, so
		// the pid is still the child's)
		p, err := openProcess(pid)
		if err != nil {
			_ = unix.Kill(pid, unix.SIGKILL)
			return nil, err
		}
		p.logOff, p.notify = off, spec.Notify
		return p, s.watchProcess(u, p)
	}
	p := newProcess(pid, pidfd)
	p.logOff, p.notify = off, spec.Notify
	if err := s.watchProcess(u, p); err != nil {
		return nil, err
	}
	return p, nil
}

// watchProcess registers p and starts its watcher.
func (s *Supervisor) watchProcess(u *unit, p *process) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		p.f.Close()
		return ErrClosed // the process keeps running, like every service at Close
	}
	s.procs[p] = struct{}{}
	s.wg.Go(func() { s.watch(u, p) })
	return nil
}

// watch waits for p to exit, records how, and restarts the service when
// the exit was not asked for.
func (s *Supervisor) watch(u *unit, p *process) {
	defer func() {
		s.mu.Lock()
		delete(s.procs, p)
		s.mu.Unlock()
		p.f.Close()
	}()
	if err := p.wait(); err != nil {
		return // Close: stop watching, the process runs on
	}
	status := p.reap()
	u.mu.Lock()
	p.exit, p.exited = status, true
	close(p.done)
	unexpected := u.proc == p && !p.stopping && u.desired && !u.removed
	if unexpected {
		u.phase = phaseBackoff
	}
	u.mu.Unlock()
	if !unexpected {
		return
	}
	// Leftovers (old haproxy workers, keepalived children) get a moment to
	// finish on their own first: keepalived's VRRP child reacts to its
	// parent's death by advertising priority 0 and removing the VIP, so
	// the peer takes over at once instead of after the dead-master timeout.
	if !p.waitGroupGone(2 * time.Second) {
		p.killGroup()
	}
	s.log.Warn("service died, restarting", "unit", u.name, "pid", p.pid, "exit", status,
		"uptime", time.Since(p.start).Round(time.Millisecond))
	s.restartLoop(u, p, -1)
}

// restartLoop (re)starts u while its instance is still dead, with
// exponential back-off. delay < 0 derives the first delay from dead's
// uptime. It ends on success, on any Start/Stop/Restart/Remove, or Close.
func (s *Supervisor) restartLoop(u *unit, dead *process, delay time.Duration) {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	u.mu.Lock()
	if u.proc != dead || !u.desired || u.removed {
		u.mu.Unlock()
		return
	}
	if u.cancelRestart != nil {
		u.cancelRestart()
	}
	u.cancelRestart = cancel
	if delay < 0 {
		if dead != nil && time.Since(dead.start) >= s.opts.RestartReset {
			u.backoff = 0
		}
		delay = s.nextBackoff(u)
	}
	u.phase = phaseBackoff
	u.mu.Unlock()
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		unlock, err := s.lock(ctx, u)
		if err != nil {
			return
		}
		u.mu.Lock()
		still := u.proc == dead && u.desired && !u.removed && ctx.Err() == nil
		u.mu.Unlock()
		if !still {
			unlock()
			return
		}
		err = s.startLocked(ctx, u, false)
		unlock()
		if err == nil || ctx.Err() != nil {
			return
		}
		u.mu.Lock()
		delay = s.nextBackoff(u)
		u.phase = phaseBackoff
		u.mu.Unlock()
		s.log.Warn("service restart failed", "unit", u.name, "retry_in", delay, "err", err)
	}
}

// nextBackoff doubles u.backoff within [RestartMin, RestartMax]; u.mu held.
func (s *Supervisor) nextBackoff(u *unit) time.Duration {
	if u.backoff == 0 {
		u.backoff = s.opts.RestartMin
	} else {
		u.backoff = min(2*u.backoff, s.opts.RestartMax)
	}
	return u.backoff
}

// converge finishes a Stop that an agent restart interrupted.
func (s *Supervisor) converge(u *unit) {
	unlock, err := s.lock(s.ctx, u)
	if err != nil {
		return
	}
	defer unlock()
	u.mu.Lock()
	desired := u.desired
	u.mu.Unlock()
	if !desired {
		if err := s.stopLocked(s.ctx, u); err != nil {
			s.log.Error("stopping service failed", "unit", u.name, "err", err)
		}
	}
}

// stopLocked ends u's process (if any): SIGTERM, then SIGKILL to the
// process group after StopTimeout; the rest of the group is killed once
// the main process is gone.
func (s *Supervisor) stopLocked(ctx context.Context, u *unit) error {
	u.mu.Lock()
	p, spec := u.proc, u.spec
	if p == nil || p.exited {
		u.proc = nil
		u.phase = phaseStopped
		u.mu.Unlock()
		return nil
	}
	p.stopping = true
	u.phase = phaseStopping
	u.mu.Unlock()

	err := s.terminate(ctx, u.name, p)
	u.mu.Lock()
	if err == nil {
		u.proc = nil
		u.phase = phaseStopped
	} else {
		u.phase = phaseFailed
	}
	u.mu.Unlock()
	if err != nil {
		return &OpError{Name: u.name, Op: "stop", Result: "timeout", Err: err}
	}
	if spec.PIDFile != "" {
		if pid, err := readPIDFile(spec.PIDFile); err == nil && pid == p.pid {
			_ = fsutil.Remove(spec.PIDFile)
		}
	}
	s.log.Info("service stopped", "unit", u.name, "pid", p.pid)
	return nil
}

func (s *Supervisor) terminate(ctx context.Context, name string, p *process) error {
	if err := p.signal(unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("SIGTERM %d: %w", p.pid, err)
	}
	t := time.NewTimer(s.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		s.killRest(name, p)
		return nil
	case <-s.ctx.Done():
		return ErrClosed
	case <-t.C:
	case <-ctx.Done(): // no time left: kill now
	}
	s.log.Warn("service did not stop in time, killing it", "unit", name, "pid", p.pid)
	_ = p.signal(unix.SIGKILL)
	p.killGroup()
	select {
	case <-p.done:
		s.killRest(name, p)
		return nil
	case <-s.ctx.Done():
		return ErrClosed
	case <-time.After(5 * time.Second):
		return fmt.Errorf("process %d survived SIGKILL", p.pid)
	}
}

// killRest kills what is left of the main process's group (like systemd's
// KillMode=mixed) and waits a little for it to be gone.
func (s *Supervisor) killRest(name string, p *process) {
	p.killGroup()
	if !p.waitGroupGone(2 * time.Second) {
		s.log.Warn("processes of the stopped service still present", "unit", name, "pgid", p.pgid)
	}
}

// adopt looks for a running instance of u through its pid file: the
// process must be alive and its command line must match u's argv (a
// recycled pid is not adopted). It then watches it like its own child.
func (s *Supervisor) adopt(u *unit) bool {
	u.mu.Lock()
	spec := u.spec
	u.mu.Unlock()
	if spec.PIDFile == "" {
		return false
	}
	pid, err := readPIDFile(spec.PIDFile)
	if err != nil {
		return false
	}
	// open first, then check: the pidfd pins the process the checks see
	p, err := openProcess(pid)
	if err != nil {
		return false
	}
	cmdline, err := procfs.Cmdline(pid)
	if err != nil || !cmdlineMatches(cmdline, spec.Argv) || !p.alive() {
		p.f.Close()
		if err == nil && len(cmdline) > 0 {
			s.log.Warn("pid file names an unrelated process, not adopting", "unit", u.name, "pid", pid,
				"cmdline", strings.Join(cmdline, " "))
		}
		return false
	}
	// it speaks sd_notify to us only if it was started with our socket
	p.notify = spec.Notify && hasEnv(pid, "NOTIFY_SOCKET="+s.notifyPath(u.name))
	if err := s.watchProcess(u, p); err != nil {
		return false
	}
	u.mu.Lock()
	u.proc = p
	u.phase = phaseRunning
	u.mu.Unlock()
	s.log.Info("re-adopted running service", "unit", u.name, "pid", pid)
	return true
}

func (s *Supervisor) setPhase(u *unit, ph phase) {
	u.mu.Lock()
	u.phase = ph
	u.mu.Unlock()
}

// ensureNotify binds u's sd_notify socket when the spec asks for it.
func (s *Supervisor) ensureNotify(u *unit) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.spec.Notify || u.notify != nil {
		return nil
	}
	path := s.notifyPath(u.name)
	if len(path) >= 108 {
		return fmt.Errorf("%w: notify socket path too long: %s", ErrInvalid, path)
	}
	if err := fsutil.Remove(path); err != nil {
		return err
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	if !s.goOwned(func() { s.readNotify(u, c) }) {
		c.Close()
		return ErrClosed
	}
	u.notify = c
	return nil
}

// readNotify handles sd_notify datagrams until c is closed.
func (s *Supervisor) readNotify(u *unit, c *net.UnixConn) {
	buf := make([]byte, 4096)
	for {
		n, _, err := c.ReadFromUnix(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("notify socket read", "unit", u.name, "err", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for line := range strings.SplitSeq(string(buf[:n]), "\n") {
			if line == "READY=1" {
				u.mu.Lock()
				u.readyGen++
				close(u.readyCh)
				u.readyCh = make(chan struct{})
				u.mu.Unlock()
			}
		}
	}
}

// logTail returns the end of what the service wrote since offset off.
func (s *Supervisor) logTail(name string, off int64) string {
	const tail = 2048
	f, err := os.Open(s.logPath(name))
	if err != nil {
		return ""
	}
	defer f.Close()
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return ""
	}
	start := min(max(off, end-tail, 0), end)
	b := make([]byte, end-start)
	n, _ := f.ReadAt(b, start)
	return strings.TrimSpace(string(b[:n]))
}

func (s *Supervisor) specPath(name string) string {
	return filepath.Join(s.opts.StateDir, name+".json")
}
func (s *Supervisor) logPath(name string) string {
	return filepath.Join(s.opts.StateDir, name+".log")
}
func (s *Supervisor) notifyPath(name string) string {
	return filepath.Join(s.opts.StateDir, name+".notify")
}

// persistedSpec is the on-disk form of a service (StateDir/<name>.json).
type persistedSpec struct {
	Version      int        `json:"version"`
	Name         string     `json:"name"`
	Argv         []string   `json:"argv"`
	Checks       [][]string `json:"checks,omitempty"`
	ReloadSignal int        `json:"reload_signal,omitempty"`
	PIDFile      string     `json:"pid_file,omitempty"`
	Notify       bool       `json:"notify,omitempty"`
	Desired      string     `json:"desired"` // started or stopped
}

func (s *Supervisor) persist(u *unit) error {
	u.mu.Lock()
	ps := persistedSpec{
		Version:      1,
		Name:         u.name,
		Argv:         u.spec.Argv,
		Checks:       u.spec.Checks,
		ReloadSignal: int(u.spec.ReloadSignal),
		PIDFile:      u.spec.PIDFile,
		Notify:       u.spec.Notify,
		Desired:      "stopped",
	}
	if u.desired {
		ps.Desired = "started"
	}
	u.mu.Unlock()
	b, err := json.MarshalIndent(ps, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(s.specPath(u.name), append(b, '\n'), 0o600)
}

func loadSpec(path string) (Service, bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Service{}, false, err
	}
	var ps persistedSpec
	if err := json.Unmarshal(b, &ps); err != nil {
		return Service{}, false, err
	}
	if ps.Version != 1 {
		return Service{}, false, fmt.Errorf("unknown version %d", ps.Version)
	}
	if !ValidName(ps.Name) || filepath.Base(path) != ps.Name+".json" || len(ps.Argv) == 0 {
		return Service{}, false, fmt.Errorf("%w: bad spec", fs.ErrInvalid)
	}
	svc := Service{
		Name:         ps.Name,
		Argv:         ps.Argv,
		Checks:       ps.Checks,
		ReloadSignal: syscall.Signal(ps.ReloadSignal),
		PIDFile:      ps.PIDFile,
		Notify:       ps.Notify,
	}
	return svc, ps.Desired == "started", nil
}

func cloneSpec(svc Service) Service {
	svc.Unit = nil // systemd's business
	svc.Argv = slices.Clone(svc.Argv)
	checks := make([][]string, len(svc.Checks))
	for i, c := range svc.Checks {
		checks[i] = slices.Clone(c)
	}
	svc.Checks = checks
	return svc
}

func sameSpec(a, b Service) bool {
	return slices.Equal(a.Argv, b.Argv) &&
		slices.EqualFunc(a.Checks, b.Checks, slices.Equal[[]string]) &&
		a.ReloadSignal == b.ReloadSignal && a.PIDFile == b.PIDFile && a.Notify == b.Notify
}
