package heartbeat

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// The counts are written after the first heartbeat, then only when a
// problem count changed (at most once a minute), and at the stop.
func TestStatsWriterWritesOnChange(t *testing.T) {
	base := testutil.ShortDir(t, "hb")
	w := newStatsWriter(base)
	read := func() *StatsSnapshot {
		t.Helper()
		s, err := ReadStats(base)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := w.maybeWrite(Stats{Sent: 1}, false); err != nil {
		t.Fatal(err)
	}
	if s := read(); s.Sent != 1 || s.PID != os.Getpid() || s.LastDetailName != "full" {
		t.Fatalf("first write: %+v", s)
	}
	// Only Sent changed: nothing to write.
	if err := w.maybeWrite(Stats{Sent: 2}, false); err != nil {
		t.Fatal(err)
	}
	if s := read(); s.Sent != 1 {
		t.Errorf("written for a sent heartbeat alone: %+v", s)
	}
	// A problem, but the last write is recent: written at the next
	// chance after a minute, or at the stop.
	if err := w.maybeWrite(Stats{Sent: 3, Degraded: 1, LastDetail: DetailMixedPools}, false); err != nil {
		t.Fatal(err)
	}
	if s := read(); s.Degraded != 0 {
		t.Errorf("written within a minute of the last write: %+v", s)
	}
	w.written = w.written.Add(-statsEvery)
	if err := w.maybeWrite(Stats{Sent: 4, Degraded: 2, LastDetail: DetailMixedPools}, false); err != nil {
		t.Fatal(err)
	}
	if s := read(); s.Degraded != 2 || s.LastDetailName != DetailMixedPools.String() {
		t.Errorf("a changed problem count not written after a minute: %+v", s)
	}
	if err := w.maybeWrite(Stats{Sent: 5, Degraded: 2, LastDetail: DetailMixedPools}, true); err != nil {
		t.Fatal(err)
	}
	if s := read(); s.Sent != 5 {
		t.Errorf("not written at the stop: %+v", s)
	}
}

// Run leaves its counts for "amphora-agent status": a skipped controller
// entry shows.
func TestRunLeavesStatsForStatus(t *testing.T) {
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	base := testutil.ShortDir(t, "hb")
	cfg := newConfig(base, "k", "no-colon", fmt.Sprintf("127.0.0.1:%d", rcv.port()))
	cfg.HeartbeatInterval = 200 * time.Millisecond
	s, _, _ := newSender(t, cfg, lbSource(f))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	rcv.next(t)
	rcv.next(t)
	cancel()
	<-done
	st, err := ReadStats(base)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("counts left for status: %+v", st.Stats)
	if st.Sent < 2 || st.SkippedDestinations < 1 || st.PID != os.Getpid() || st.Updated.Before(st.Started) {
		t.Errorf("counts %+v", st)
	}
}
