package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
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

	// specs whose write a crash interrupted
	if removed, err := fsutil.RemoveTemps(dir, nil); len(removed) > 0 || err != nil {
		s.log.Info("temporary files of interrupted writes removed", "dir", dir, "files", fmt.Sprint(removed), "err", err)
	}
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

func (s *Supervisor) specPath(name string) string {
	return filepath.Join(s.opts.StateDir, name+".json")
}
func (s *Supervisor) logPath(name string) string {
	return filepath.Join(s.opts.StateDir, name+".log")
}
func (s *Supervisor) notifyPath(name string) string {
	return filepath.Join(s.opts.StateDir, name+".notify")
}
