package keepalived

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/service"
)

// assertLockWaitEnds runs op while its lock is held elsewhere and checks
// that it gives up with the context's error once the context ends,
// instead of waiting for the lock (issue 13, defect 9).
func assertLockWaitEnds(t *testing.T, name string, op func(ctx context.Context) error) {
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

func TestLockWaitsHonourTheContext(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	sup, err := service.NewSupervisor(service.SupervisorOptions{StateDir: filepath.Join(dir, "sup"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close()

	t.Run("VRRP", func(t *testing.T) {
		m := NewManager(Options{Common: Common{BasePath: filepath.Join(dir, "lib"), Namespace: "amphora-haproxy", Units: sup, Log: log}})
		unlock := m.serial.Lock("")
		defer unlock()
		assertLockWaitEnds(t, "Upload", func(ctx context.Context) error {
			_, err := m.Upload(ctx, strings.NewReader("global_defs {\n}\n"))
			return err
		})
		for _, action := range []string{"start", "stop", "reload"} {
			assertLockWaitEnds(t, "Action "+action, func(ctx context.Context) error {
				_, err := m.Action(ctx, action)
				return err
			})
		}
	})
	t.Run("LVS", func(t *testing.T) {
		m := NewLVSManager(LVSOptions{Common: Common{BasePath: filepath.Join(dir, "lib"), Namespace: "amphora-haproxy", Units: sup, Log: log}})
		const amp, id = "6e9fd1a2-1234-4cde-8f00-aabbccddeeff", "0c6e1d2a-5b7f-4c1e-9a4b-3f2e1d0c9b8a"
		unlock := m.locks.Lock(id)
		defer unlock()
		assertLockWaitEnds(t, "Upload", func(ctx context.Context) error {
			_, err := m.Upload(ctx, amp, id, strings.NewReader("net_namespace amphora-haproxy\n"))
			return err
		})
		for _, action := range []string{"start", "stop", "reload"} {
			assertLockWaitEnds(t, "Action "+action, func(ctx context.Context) error {
				_, err := m.Action(ctx, id, action)
				return err
			})
		}
		assertLockWaitEnds(t, "Delete", func(ctx context.Context) error { return m.Delete(ctx, id) })
	})
}
