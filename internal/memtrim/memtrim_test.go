package memtrim

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// programResident sums the resident kilobytes of the test binary's
// read-only mappings, as ReleaseProgramPages sees them.
func programResident(t *testing.T) int64 {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := readSmaps("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var kb int64
	for _, m := range maps {
		if m.path == exe && m.anon == 0 && (m.perms == "r-xp" || m.perms == "r--p") {
			kb += m.rss
		}
	}
	return kb
}

// The pages are given back and the program keeps running: the code
// after the release (this test, the runtime, the testing package) maps
// its pages again from the page cache.
func TestReleaseProgramPages(t *testing.T) {
	before := programResident(t)
	released, err := ReleaseProgramPages()
	if err != nil {
		t.Fatal(err)
	}
	after := programResident(t)
	t.Logf("program pages resident: %d kB before, %d kB released, %d kB right after", before, released, after)
	if before == 0 || released == 0 {
		t.Fatalf("nothing resident or released (before %d kB, released %d kB): smaps not read", before, released)
	}
	if after >= before {
		t.Errorf("resident program pages did not fall: %d kB before, %d kB after", before, after)
	}
	// Work that touches code again still runs.
	if _, err := readSmaps("/proc/self/smaps"); err != nil {
		t.Fatal(err)
	}
}

func TestReadSmapsFields(t *testing.T) {
	maps, err := readSmaps("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var withPath, withRss int
	for _, m := range maps {
		if m.end <= m.start {
			t.Fatalf("mapping %x-%x: end not after start", m.start, m.end)
		}
		if m.path != "" {
			withPath++
		}
		if m.rss > 0 {
			withRss++
		}
	}
	if len(maps) == 0 || withPath == 0 || withRss == 0 {
		t.Fatalf("%d mappings, %d with a path, %d resident", len(maps), withPath, withRss)
	}
}

// Run releases after its first interval and stops with its context.
func TestKeeperRunStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	k := &Keeper{Interval: time.Millisecond, Threshold: 1 << 20, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	cancel()
	<-done
}

// releaseLog records the keeper's release log lines.
type releaseLog struct {
	mu     sync.Mutex
	bursts int // releases after a burst of work
	others int // releases on growth (the first one: start-up)
}

func (l *releaseLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *releaseLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *releaseLog) WithGroup(string) slog.Handler            { return l }
func (l *releaseLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "program pages released" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	burst := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "after_burst" {
			burst = a.Value.Bool()
		}
		return true
	})
	if burst {
		l.bursts++
	} else {
		l.others++
	}
	return nil
}

func (l *releaseLog) counts() (bursts, others int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bursts, l.others
}

// A burst of work is followed by a release once it is over, even while
// the previous release is still settling, and not while work is in
// flight.
func TestKeeperReleasesAfterBurst(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rl := &releaseLog{}
	// Settle long enough that no growth check runs during the test: only
	// the start-up release and burst releases happen.
	k := &Keeper{Interval: 20 * time.Millisecond, Threshold: 1 << 40, Settle: 1 << 20, Log: slog.New(rl)}
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s after 10 s", what)
			}
		}
	}
	waitFor("start-up release", func() bool { _, o := rl.counts(); return o == 1 })

	end := k.Begin()
	time.Sleep(10 * k.Interval)
	if b, _ := rl.counts(); b != 0 {
		t.Fatalf("%d releases while a request was in flight", b)
	}
	end()
	waitFor("release after the burst", func() bool { b, _ := rl.counts(); return b == 1 })
	time.Sleep(10 * k.Interval)
	if b, o := rl.counts(); b != 1 || o != 1 {
		t.Fatalf("releases: %d after bursts, %d others; want 1 and 1 (nothing new without work)", b, o)
	}
}
