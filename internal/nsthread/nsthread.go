// Package nsthread runs code on an OS thread switched into another
// network namespace: the one primitive every namespace switch of the
// agent (netns) and of its tests (testutil) goes through (STYLE P7).
//
// Namespaces belong to threads, and Go moves goroutines between threads,
// so the work runs on a fresh goroutine locked to its thread. The thread
// is switched back to its original namespace before it is unlocked; a
// thread that cannot be switched back is never unlocked, so the runtime
// ends it with its goroutine instead of reusing it in the wrong
// namespace.
package nsthread

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Run runs fn on a fresh goroutine locked to its OS thread and waits for
// it. fn may switch the thread's network namespace (setns, or create one
// with unshare); afterwards the thread returns to the namespace it
// started in.
func Run(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Keep the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Do runs fn on a thread switched into target: sockets fn creates belong
// to that namespace, programs it starts run there.
func Do(target netns.NsHandle, fn func() error) error {
	return Run(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return fn()
	})
}
