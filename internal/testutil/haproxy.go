package testutil

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// HAProxy is a haproxy a test runs itself, in the foreground (-db), on a
// configuration file.
type HAProxy struct {
	Cmd     string // the haproxy binary
	Config  string // the configuration file
	LogFile string // its output: Config + ".log"

	t      testing.TB
	ready  func(ctx context.Context) error
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartHAProxy runs haproxy on the configuration file cfg and returns
// once ready (typically a `show info` on the stats socket) succeeds,
// failing the test when haproxy exits first or is not ready within 10
// seconds. The process is killed, by its pid, when the test ends. It
// skips the test when haproxy is not installed.
func StartHAProxy(t testing.TB, cfg string, ready func(ctx context.Context) error) *HAProxy {
	t.Helper()
	h := &HAProxy{Cmd: RequireBinary(t, "haproxy"), Config: cfg, LogFile: cfg + ".log", t: t, ready: ready}
	h.Start()
	t.Cleanup(h.Stop)
	return h
}

// Start starts haproxy again after Stop.
func (h *HAProxy) Start() {
	t := h.t
	t.Helper()
	out, err := os.Create(h.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(h.Cmd, "-db", "-f", h.Config)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.cmd, h.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(h.exited)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := h.ready(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-h.exited:
			t.Fatalf("haproxy exited: %s", h.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy on %s not ready: %v\n%s", h.Config, err, h.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills haproxy and waits for it; a stopped haproxy stays stopped.
func (h *HAProxy) Stop() {
	if h.cmd == nil {
		return
	}
	_ = h.cmd.Process.Kill()
	<-h.exited
	h.cmd = nil
}

// Log is what haproxy printed since its last start.
func (h *HAProxy) Log() string {
	b, err := os.ReadFile(h.LogFile)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// PID is the process id of the running haproxy (0 when stopped).
func (h *HAProxy) PID() int {
	if h.cmd == nil || h.cmd.Process == nil {
		return 0
	}
	return h.cmd.Process.Pid
}
