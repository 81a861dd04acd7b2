package memtrim

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Keeper gives back the program pages start-up or a burst of work mapped
// (ReleaseProgramPages). It checks every Interval one cheap figure (the
// file-backed resident pages of /proc/self/statm) and releases when it
// grew by Threshold above the working set: the pages mapped again
// Settle checks after a release, once steady work (a heartbeat every
// second, the runtime's timers and collections) has faulted back the
// code it runs; the smallest such count, taken afresh every 8 releases
// so that a working set that really grew is not released forever. The
// code of steady work then stays mapped and costs nothing beyond the
// check (released at every check, every heartbeat faulted its code back
// in); after a burst of requests the next check releases the burst's.
//
// The same growth is the sign of a burst of work (requests, uploads)
// that left free heap behind, which the Go runtime returns to the system
// only slowly: a release also returns it (debug.FreeOSMemory: one
// garbage collection, run before the program pages are dropped so that
// its own walk of the stacks does not map them again). Steady work
// triggers no release, so a large load balancer's heartbeat never pays
// for a collection it would undo at once.
//
// Work that comes in bursts (API requests) reports itself with Begin:
// once a burst is over — nothing in flight for a whole Interval — the
// next check releases at once, whatever the growth and even while an
// earlier release is settling, so what the burst left (its program
// pages, the garbage of its requests, free heap) is given back within
// two Intervals of its last request instead of waiting for the growth
// check to come round.
type Keeper struct {
	Interval  time.Duration // between checks
	Threshold int64         // bytes of growth that trigger a release
	Settle    int           // checks after a release before the working set is read
	Log       *slog.Logger

	inFlight atomic.Int64 // work begun and not ended
	worked   atomic.Bool  // work ran since the last release
	lastEnd  atomic.Int64 // when work last ended, unix nanoseconds
}

// Begin reports the start of one piece of bursty work (an API request);
// the function it returns reports its end. Safe for concurrent use.
func (k *Keeper) Begin() (end func()) {
	k.inFlight.Add(1)
	k.worked.Store(true)
	return func() {
		k.lastEnd.Store(time.Now().UnixNano())
		k.worked.Store(true) // also when a release came in between
		k.inFlight.Add(-1)
	}
}

// burstOver says a burst of work ran since the last release and ended
// at least one Interval ago.
func (k *Keeper) burstOver(now time.Time) bool {
	return k.worked.Load() && k.inFlight.Load() == 0 &&
		now.Sub(time.Unix(0, k.lastEnd.Load())) >= k.Interval
}

// Run releases once after the first Interval (start-up is over), then
// checks until ctx is done.
func (k *Keeper) Run(ctx context.Context) {
	tick := time.NewTicker(k.Interval)
	defer tick.Stop()
	const refresh = 8
	var working int64 = -1 // program pages in use after a release (see Keeper)
	settling := 0          // checks left before the working set is read
	releases := 0          // since the working set was last taken afresh
	var now time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now = <-tick.C:
		}
		file, err := fileResident()
		if err != nil {
			k.Log.Debug("memory check failed", "err", err)
			return
		}
		burst := k.burstOver(now)
		if settling > 0 && !burst {
			if settling--; settling == 0 && (working < 0 || file < working || releases >= refresh) {
				working, releases = file, 0
			}
			continue
		}
		if !burst && working >= 0 && file-working < k.Threshold {
			continue
		}
		k.worked.Store(false)
		debug.FreeOSMemory()
		released, err := ReleaseProgramPages()
		if err != nil {
			k.Log.Warn("program pages not released", "err", err)
			return
		}
		settling = max(k.Settle, 1)
		releases++
		k.Log.Debug("program pages released", "kib", released, "after_burst", burst)
	}
}

// fileResident is the process's resident file-backed memory in bytes
// (statm's third field: RssFile + RssShmem): for the agent, the pages of
// its own program.
func fileResident() (int64, error) {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return 0, os.ErrInvalid
	}
	pages, err := strconv.ParseInt(f[2], 10, 64)
	return pages * int64(os.Getpagesize()), err
}
