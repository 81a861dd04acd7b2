package haproxy

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	m := NewManager(Options{BasePath: filepath.Join(dir, "lib"), CertDir: filepath.Join(dir, "certs"), Log: slog.New(slog.DiscardHandler)})
	const amp, lb = "6e9fd1a2-1234-4cde-8f00-aabbccddeeff", "0c6e1d2a-5b7f-4c1e-9a4b-3f2e1d0c9b8a"
	unlock := m.locks.Lock(lb)
	defer unlock()
	assertLockWaitEnds(t, "Upload", func(ctx context.Context) error {
		_, err := m.Upload(ctx, amp, lb, strings.NewReader("global\n"))
		return err
	})
	for _, action := range []string{"start", "stop", "reload"} {
		assertLockWaitEnds(t, "Action "+action, func(ctx context.Context) error {
			_, err := m.Action(ctx, lb, action)
			return err
		})
	}
	assertLockWaitEnds(t, "Delete", func(ctx context.Context) error { return m.Delete(ctx, lb) })
	assertLockWaitEnds(t, "PutCertificate", func(ctx context.Context) error {
		_, err := m.PutCertificate(ctx, lb, "a.pem", strings.NewReader("pem\n"), 1<<20)
		return err
	})
	assertLockWaitEnds(t, "DeleteCertificate", func(ctx context.Context) error { return m.DeleteCertificate(ctx, lb, "a.pem") })
	// Another load balancer is not held up.
	if _, err := m.PutCertificate(context.Background(), "1d7f2e3b-6c8a-4d2f-8b5c-4a3f2e1d0c9b", "a.pem", strings.NewReader("pem\n"), 1<<20); err != nil {
		t.Errorf("PutCertificate of another load balancer: %v", err)
	}
}
