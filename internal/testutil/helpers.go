package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// ShortDir returns a fresh directory with a short path (prefix plus a
// few random characters under the system temporary directory), removed
// when the test ends: unix socket paths below it stay far under the
// 108-byte limit whatever the test's name, unlike t.TempDir's.
func ShortDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// RequireBinary skips the test when the program name (a command looked
// up in PATH, or an absolute path) is not installed, and returns its
// path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (make deps installs it): %v", name, err)
	}
	return p
}

// NewUUID returns a random (version 4) UUID, the form of every id the
// controller sends.
func NewUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// NeutronMAC returns a random MAC address with Neutron's fa:16:3e prefix.
func NeutronMAC() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}

// ListenUDP receives datagrams on addr (a loopback address or one in a
// namespace the test created) and hands a copy of each to handle, from
// one goroutine, until the test ends or the returned socket is closed.
func ListenUDP(t testing.TB, network, addr string, handle func(pkt []byte)) net.PacketConn {
	t.Helper()
	conn, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatalf("UDP receiver on %s: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			handle(bytes.Clone(buf[:n]))
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return conn
}

// UDPPorts returns a member for UDP checks: open is a port on 127.0.0.1
// a socket reads until the test ends (it never answers), closed a port on
// ::1 nobody listens on any more (the kernel answers ICMP port
// unreachable).
func UDPPorts(t testing.TB) (open, closed netip.AddrPort) {
	t.Helper()
	o, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	closed = c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return o.LocalAddr().(*net.UDPAddr).AddrPort(), closed
}

// WaitFor is the tests' one "eventually": it polls cond every 25 ms
// until it holds and returns how long that took, or fails the test with
// cond's last explanation once limit has passed.
func WaitFor(t testing.TB, limit time.Duration, cond func() (ok bool, why string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(limit)
	for {
		ok, why := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %s", limit, why)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ReadFile returns the content of a file (a log, typically) for a test
// message, or the error reading it.
func ReadFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Holds adapts a condition without an explanation for WaitFor: what
// says what is awaited.
func Holds(what string, cond func() bool) func() (bool, string) {
	return func() (bool, string) { return cond(), what }
}

// Succeeds adapts an attempt for WaitFor: it holds once f returns nil;
// what and f's last error explain a failure.
func Succeeds(what string, f func() error) func() (bool, string) {
	return func() (bool, string) {
		err := f()
		return err == nil, fmt.Sprintf("%s: %v", what, err)
	}
}

// SyncBuffer is a bytes.Buffer a process (or another goroutine) writes
// while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// AssertLockWaitEnds runs op while its lock is held elsewhere and checks
// that it gives up with the context's error once the context ends,
// instead of waiting for the lock (issue 13, defect 9).
func AssertLockWaitEnds(t testing.TB, name string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v, want the context's deadline error", name, err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s still waits for the lock 5 s after its context ended", name)
	}
}
