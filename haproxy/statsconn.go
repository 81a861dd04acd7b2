package haproxy

// The stats socket's connection, read with blocking system calls.
//
// haproxy writes a large "show stat" answer in chunks of its buffer
// size (some 12–16 kB) as fast as it produces them, several
// milliseconds in all. Read through the runtime's network poller, every
// chunk costs the agent a readiness wake-up, a failed read, a park and a
// scheduler round (some 270 system calls per heartbeat of a 2,000-server
// load balancer, measured with strace). A blocking socket with a receive
// low-water mark lets the kernel gather the chunks: each read returns
// when lowat bytes are there or haproxy closed the connection, a dozen
// reads for the same answer. The reading goroutine holds its thread
// meanwhile, which the heartbeat (one reader per load balancer) can
// afford.
//
// The deadline is enforced twice: SO_RCVTIMEO/SO_SNDTIMEO bound each
// call, and the context (whose deadline it is) shuts the socket down when
// it is done, which wakes a blocked read at once.

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

// statsConn is one blocking unix stream connection to a stats socket.
type statsConn struct {
	mu     sync.Mutex // guards fd against a shutdown after Close
	fd     int
	closed bool
	ended  atomic.Bool // the context ended: a short answer is not an answer
	stop   func() bool
}

// dialStats connects to the stats socket at path within ctx, which must
// have a deadline. lowat is the receive low-water mark (0: one byte).
func dialStats(ctx context.Context, path string, lowat int) (*statsConn, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		return nil, errors.New("stats connection without a deadline")
	}
	left := time.Until(dl)
	if left <= 0 || ctx.Err() != nil {
		return nil, errors.Join(context.Cause(ctx), os.ErrDeadlineExceeded)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	c := &statsConn{fd: fd}
	tv := unix.NsecToTimeval(left.Nanoseconds())
	for _, o := range []struct {
		name string
		opt  int
	}{{"SO_RCVTIMEO", unix.SO_RCVTIMEO}, {"SO_SNDTIMEO", unix.SO_SNDTIMEO}} {
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, o.opt, &tv); err != nil {
			unix.Close(fd)
			return nil, os.NewSyscallError("setsockopt "+o.name, err)
		}
	}
	if lowat > 1 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, lowat); err != nil {
			unix.Close(fd)
			return nil, os.NewSyscallError("setsockopt SO_RCVLOWAT", err)
		}
	}
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
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		c.Close()
		if err == unix.EAGAIN { // the listen backlog stayed full until SO_SNDTIMEO
			err = os.ErrDeadlineExceeded
		}
		return nil, &os.PathError{Op: "dial", Path: path, Err: err}
	}
	return c, nil
}

// Read reads what the kernel has gathered (at least lowat bytes unless
// the answer ended). io.EOF when haproxy closed the connection; an
// error, never io.EOF, when the context ended the connection.
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
			return 0, os.ErrDeadlineExceeded
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0 && c.ended.Load():
			return 0, os.ErrDeadlineExceeded // shut down by the context: ioError names its cause
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
			return done, os.ErrDeadlineExceeded
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
