package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// startStatsHAProxy runs a real haproxy whose only purpose is its stats
// socket (dir/h.sock); it is killed when the test ends.
func startStatsHAProxy(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "h.sock")
	cfg := filepath.Join(dir, "h.cfg")
	text := "global\n    stats socket " + sock + " mode 0600 level user\n" +
		"defaults\n    mode tcp\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n" +
		"frontend fe\n    bind unix@" + filepath.Join(dir, "fe.sock") + "\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.StartHAProxy(t, cfg, func(ctx context.Context) error {
		_, err := haproxy.NewStatsClient(sock).ShowInfo(ctx)
		return err
	})
	return sock
}

// staleSocket leaves a socket file nobody listens on (a dead haproxy's).
func staleSocket(t *testing.T, path string) string {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	return path
}

// hungSocket accepts connections and never answers (a stopped haproxy).
func hungSocket(t *testing.T, path string) string {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return path
}

func TestVRRPCheck(t *testing.T) {
	dir := testutil.ShortDir(t, "kvc")
	up := startStatsHAProxy(t, dir)
	d2 := filepath.Join(dir, "2")
	if err := os.Mkdir(d2, 0o755); err != nil {
		t.Fatal(err)
	}
	up2 := startStatsHAProxy(t, d2)
	down := staleSocket(t, filepath.Join(dir, "down.sock"))
	hung := hungSocket(t, filepath.Join(dir, "hung.sock"))
	missing := filepath.Join(dir, "missing.sock")

	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string // in stderr
	}{
		{"one up", []string{up}, 0, ""},
		{"all up", []string{"--", up, up2}, 0, ""},
		{"no load balancer", nil, 1, "no haproxy stats socket to check"},
		{"no load balancer after --", []string{"--"}, 1, "no haproxy stats socket to check"},
		{"refused", []string{up, down}, 1, "connection refused"},
		{"missing", []string{missing, up}, 1, "no such file or directory"},
		{"hung", []string{"--timeout", "300ms", up, hung}, 1, "deadline exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			start := time.Now()
			code := run(ctx, append([]string{"vrrp-check"}, tc.args...), &stdout, &stderr)
			took := time.Since(start)
			if code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d with %q", code, stderr.String(), tc.code, tc.msg)
			}
			if tc.code == 0 && stderr.Len() > 0 {
				t.Errorf("healthy check wrote %q", stderr.String())
			}
			if took > 5*time.Second {
				t.Errorf("the check took %v", took)
			}
		})
	}
}
