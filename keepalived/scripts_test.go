package keepalived

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// racingSockets stands for the haproxy inventory in a race between two
// refreshes: the first caller reads the state of that moment and then
// stalls (as a slow service-manager query would) until released.
type racingSockets struct {
	mu      sync.Mutex
	calls   int
	state   []string
	firstIn chan struct{}
	release chan struct{}
}

func (r *racingSockets) set(s ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.state = s
}

func (r *racingSockets) CheckSockets(context.Context) []string {
	r.mu.Lock()
	r.calls++
	n := r.calls
	s := append([]string(nil), r.state...)
	r.mu.Unlock()
	if n == 1 {
		close(r.firstIn)
		select {
		case <-r.release:
		case <-time.After(10 * time.Second):
		}
	}
	return s
}

// TestRefreshCheckReadsUnderLock: of two refreshes, the one that reads
// the newer set of load balancers must write last. Reading the list
// before taking the lock (issue 13, defect 12) lets a stalled older
// refresh overwrite the newer check with a list that misses a load
// balancer. This test failed before the list was read under the lock.
func TestRefreshCheckReadsUnderLock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	lbs := &racingSockets{firstIn: make(chan struct{}), release: make(chan struct{})}
	lbs.set("/run/a.sock")
	m := NewManager(Options{Common: Common{BasePath: filepath.Join(dir, "lib"), Agent: "/usr/bin/amphora-agent"}, LoadBalancers: lbs})

	first := make(chan error, 1)
	go func() { first <- m.RefreshCheck(ctx) }()
	<-lbs.firstIn // the first refresh has read {a} and stalls
	lbs.set("/run/a.sock", "/run/b.sock")
	second := make(chan error, 1)
	go func() { second <- m.RefreshCheck(ctx) }()
	// Either the second refresh completes on its own (the defect: it did
	// not wait for the first) or it waits for the lock; give it a moment,
	// then let the first one go on.
	select {
	case err := <-second:
		second <- err
	case <-time.After(300 * time.Millisecond):
	}
	close(lbs.release)
	for _, c := range []chan error{first, second} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(m.Paths().HAProxyCheckScript())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "/run/b.sock") {
		t.Errorf("the check lost the newer load balancer: an older refresh wrote last:\n%s", data)
	}
}
