// Package keyedlock serializes operations per key (a load balancer, a
// listener, a service name) while different keys proceed in parallel.
// A key's lock exists only while someone holds or waits for it.
package keyedlock

import (
	"context"
	"sync"
)

// Map holds one lock per key. The zero value is ready to use; a Map must
// not be copied after first use.
type Map struct {
	mu sync.Mutex // guards m
	m  map[string]*lock
}

type lock struct {
	ch   chan struct{} // holds a token while the lock is taken
	refs int           // holders and waiters
}

// Lock takes key's lock, waiting as long as it takes, and returns the
// function that releases it.
func (k *Map) Lock(key string) (unlock func()) {
	unlock, _ = k.LockContext(context.Background(), key)
	return unlock
}

// LockContext takes key's lock unless ctx ends first (then it returns
// ctx.Err()), and returns the function that releases it.
func (k *Map) LockContext(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*lock)
	}
	l := k.m[key]
	if l == nil {
		l = &lock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
