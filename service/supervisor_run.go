package service

// The Supervisor's processes: start, watch, restart with back-off, stop.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/execx"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

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
	// Whatever the pid files name is not ours (not adopted): the fresh
	// instance writes its own, which is how readiness and re-adoption
	// find it.
	for _, f := range append([]string{spec.PIDFile}, spec.ChildPIDFiles...) {
		if f == "" {
			continue
		}
		if err := fsutil.Remove(f); err != nil {
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

func (s *Supervisor) setPhase(u *unit, ph phase) {
	u.mu.Lock()
	u.phase = ph
	u.mu.Unlock()
}
