package keyedlock

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestSameKeyWaitsOtherKeyDoesNot(t *testing.T) {
	var k Map
	unlock := k.Lock("a")
	got := make(chan struct{})
	go func() {
		u := k.Lock("a")
		close(got)
		u()
	}()
	// Another key is free while "a" is held.
	k.Lock("b")()
	select {
	case <-got:
		t.Fatal("second holder of the same key got the lock")
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the released lock")
	}
}

func TestLockContextGivesUp(t *testing.T) {
	var k Map
	unlock := k.Lock("a")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := k.LockContext(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	unlock()
	u, err := k.LockContext(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	u()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m) != 0 {
		t.Fatalf("locks left behind: %v", k.m)
	}
}
