package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// testLogger logs into the test output until the test has finished.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop) // registered first, runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// writeHAProxyCfg writes a tiny haproxy config answering body on
// 127.0.0.1:port.
func writeHAProxyCfg(t *testing.T, path string, port int, body string) {
	t.Helper()
	cfg := fmt.Sprintf(`global
    maxconn 256
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    option idle-close-on-response
frontend fe
    bind 127.0.0.1:%d
    http-request return status 200 content-type text/plain string "%s"
`, port, body)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeBrokenHAProxyCfg(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("global\n    no-such-keyword 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

var httpClient = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func httpGet(port int) (string, error) {
	resp, err := httpClient.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func waitServes(t *testing.T, port int, body string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		got, err := httpGet(port)
		if err != nil {
			return false, err.Error()
		}
		return got == body, "got " + strconv.Quote(got)
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// killIfMatches kills pid (SIGKILL) when its command line still belongs to
// argv: test clean-up by our own pid, never by name.
func killIfMatches(pid int, argv []string) {
	cl, err := procfs.Cmdline(pid)
	if err == nil && cmdlineMatches(cl, argv) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// mastersOf counts live processes that run argv and whose parent does not
// (haproxy masters; workers are children of their master).
func mastersOf(t *testing.T, argv []string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := procfs.Cmdline(pid)
		if err != nil || !cmdlineMatches(cl, argv) {
			continue
		}
		pcl, _ := procfs.Cmdline(ppidOf(pid))
		if pcl != nil && cmdlineMatches(pcl, argv) {
			continue
		}
		out = append(out, pid)
	}
	return out
}

func ppidOf(pid int) int {
	st, _ := procfs.ReadStat(pid)
	return st.PPID
}

func mustOpErr(t *testing.T, err error) *OpError {
	t.Helper()
	var oe *OpError
	if !errors.As(err, &oe) {
		t.Fatalf("want *OpError, got %T: %v", err, err)
	}
	return oe
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func specFile(dir, name string) string { return filepath.Join(dir, name+".json") }
