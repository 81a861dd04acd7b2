package memtrim

import (
	"context"
	"io"
	"log/slog"
	"os"
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
