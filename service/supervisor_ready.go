package service

// Readiness of a started or reloaded service (alive for StartGrace,
// READY=1 over sd_notify, pid file written) and the end of its log for
// error reports.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

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
