package haproxy

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

func TestLockWaitsHonourTheContext(t *testing.T) {
	dir := t.TempDir()
	m := NewManager(Options{BasePath: filepath.Join(dir, "lib"), CertDir: filepath.Join(dir, "certs"), Log: slog.New(slog.DiscardHandler)})
	const amp, lb = "6e9fd1a2-1234-4cde-8f00-aabbccddeeff", "0c6e1d2a-5b7f-4c1e-9a4b-3f2e1d0c9b8a"
	unlock := m.locks.Lock(lb)
	defer unlock()
	testutil.AssertLockWaitEnds(t, "Upload", func(ctx context.Context) error {
		_, err := m.Upload(ctx, amp, lb, strings.NewReader("global\n"))
		return err
	})
	for _, action := range []string{"start", "stop", "reload"} {
		testutil.AssertLockWaitEnds(t, "Action "+action, func(ctx context.Context) error {
			_, err := m.Action(ctx, lb, action)
			return err
		})
	}
	testutil.AssertLockWaitEnds(t, "Delete", func(ctx context.Context) error { return m.Delete(ctx, lb) })
	testutil.AssertLockWaitEnds(t, "PutCertificate", func(ctx context.Context) error {
		_, err := m.PutCertificate(ctx, lb, "a.pem", strings.NewReader("pem\n"), 1<<20)
		return err
	})
	testutil.AssertLockWaitEnds(t, "DeleteCertificate", func(ctx context.Context) error { return m.DeleteCertificate(ctx, lb, "a.pem") })
	// Another load balancer is not held up.
	if _, err := m.PutCertificate(context.Background(), "1d7f2e3b-6c8a-4d2f-8b5c-4a3f2e1d0c9b", "a.pem", strings.NewReader("pem\n"), 1<<20); err != nil {
		t.Errorf("PutCertificate of another load balancer: %v", err)
	}
}
