package memtrim

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
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
// garbage collection). Steady work triggers no release, so a large load
// balancer's heartbeat never pays for a collection it would undo at once.
type Keeper struct {
	Interval  time.Duration // between checks
	Threshold int64         // bytes of growth that trigger a release
	Settle    int           // checks after a release before the working set is read
	Log       *slog.Logger
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
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		file, err := fileResident()
		if err != nil {
			k.Log.Debug("memory check failed", "err", err)
			return
		}
		if settling > 0 {
			if settling--; settling == 0 && (working < 0 || file < working || releases >= refresh) {
				working, releases = file, 0
			}
			continue
		}
		if working >= 0 && file-working < k.Threshold {
			continue
		}
		released, err := ReleaseProgramPages()
		if err != nil {
			k.Log.Warn("program pages not released", "err", err)
			return
		}
		debug.FreeOSMemory()
		settling = max(k.Settle, 1)
		releases++
		k.Log.Debug("program pages released", "kib", released)
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
