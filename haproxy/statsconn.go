package haproxy

// The stats socket's connection, read at a pace.
//
// haproxy writes a large "show stat" answer in chunks of its buffer size
// (some 12–16 kB) as fast as it produces them, several milliseconds in
// all. Read through the runtime's network poller, every chunk costs the
// agent a readiness wake-up, a failed read, a park and a scheduler round
// (some 270 system calls per heartbeat of a 2,000-server load balancer,
// measured with strace); a blocking read with a low-water mark still
// wakes in the kernel for every chunk and keeps the runtime's monitor
// polling at its fastest rate while the thread is blocked (perf: 9 % of
// the agent's CPU). So the socket is read without blocking, and when
// nothing is there the reader sleeps: a quarter of a millisecond at
// first, doubling up to pace, while the chunks gather in the socket
// buffer. A heartbeat then takes a handful of wake-ups, and the answer
// arrives at most one pace later than haproxy finished it.
//
// The deadline and a cancellation of the context are noticed within one
// sleep: the context shuts the socket down when it is done, and every
// sleep is cut at the deadline.

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Pace of the reads: the first sleep when nothing is there, and the
// longest.
const (
	statsFirstWait = 250 * time.Microsecond
	statsPace      = 2 * time.Millisecond
)

// statsConn is one non-blocking unix stream connection to a stats
// socket, read at a pace.
type statsConn struct {
	mu       sync.Mutex // guards fd against a shutdown after Close
	fd       int
	closed   bool
	ended    atomic.Bool // the context ended: a short answer is not an answer
	stop     func() bool
	deadline time.Time
	wait     time.Duration // the next sleep when nothing is there
}

// dialStats connects to the stats socket at path within ctx, which must
// have a deadline.
func dialStats(ctx context.Context, path string) (*statsConn, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		return nil, errors.New("stats connection without a deadline")
	}
	if time.Until(dl) <= 0 || ctx.Err() != nil {
		return nil, errors.Join(context.Cause(ctx), os.ErrDeadlineExceeded)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	c := &statsConn{fd: fd, deadline: dl, wait: statsFirstWait}
	c.stop = context.AfterFunc(ctx, func() {
		c.ended.Store(true)
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.closed {
			_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
		}
	})
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err == unix.EAGAIN { // the listen backlog is full: haproxy is busy
			if err = c.sleep(); err == nil {
				continue
			}
		}
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		c.Close()
		return nil, &os.PathError{Op: "dial", Path: path, Err: err}
	}
	return c, nil
}

// sleep waits for the next attempt: the current wait, doubled for the
// next time up to statsPace, never past the deadline. It fails once the
// deadline passed or the context ended.
func (c *statsConn) sleep() error {
	if c.ended.Load() {
		return os.ErrDeadlineExceeded // ioError names the context's cause
	}
	left := time.Until(c.deadline)
	if left <= 0 {
		return os.ErrDeadlineExceeded
	}
	time.Sleep(min(c.wait, left))
	c.wait = min(2*c.wait, statsPace)
	return nil
}

// Read returns what haproxy sent so far, waiting at the pace while there
// is nothing. io.EOF when haproxy closed the connection; an error, never
// io.EOF, when the context ended it.
func (c *statsConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := unix.Read(c.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if err := c.sleep(); err != nil {
				return 0, err
			}
			continue
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0 && c.ended.Load():
			return 0, os.ErrDeadlineExceeded // shut down by the context
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of p.
func (c *statsConn) Write(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(c.fd, p[done:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if err := c.sleep(); err != nil {
				return done, err
			}
			continue
		case err != nil:
			return done, os.NewSyscallError("write", err)
		}
		done += n
	}
	return done, nil
}

// Close releases the connection; the context no longer reaches it.
func (c *statsConn) Close() error {
	c.stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return unix.Close(c.fd)
}
