package keepalived

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/service"
)

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
		testutil.AssertLockWaitEnds(t, "Upload", func(ctx context.Context) error {
			_, err := m.Upload(ctx, strings.NewReader("global_defs {\n}\n"))
			return err
		})
		for _, action := range []string{"start", "stop", "reload"} {
			testutil.AssertLockWaitEnds(t, "Action "+action, func(ctx context.Context) error {
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
		testutil.AssertLockWaitEnds(t, "Upload", func(ctx context.Context) error {
			_, err := m.Upload(ctx, amp, id, strings.NewReader("net_namespace amphora-haproxy\n"))
			return err
		})
		for _, action := range []string{"start", "stop", "reload"} {
			testutil.AssertLockWaitEnds(t, "Action "+action, func(ctx context.Context) error {
				_, err := m.Action(ctx, id, action)
				return err
			})
		}
		testutil.AssertLockWaitEnds(t, "Delete", func(ctx context.Context) error { return m.Delete(ctx, id) })
	})
}
