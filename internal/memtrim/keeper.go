package memtrim

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Keeper gives back the program pages start-up or a burst of work mapped
// (ReleaseProgramPages). It checks every Interval one cheap figure (the
// file-backed resident pages of /proc/self/statm) and releases when it
// grew by Threshold above the working set: the smallest count of pages
// mapped again one Interval after a release, when steady work (a
// heartbeat every second) has faulted back the code it runs. That code
// then stays mapped and steady work costs nothing beyond the check
// (releasing at every check made every heartbeat fault its code back
// in). A release during a burst of requests sees the burst's pages come
// back and releases again after it. So that a working set that really
// grew is not released forever, the working set is taken afresh every
// 8 releases.
//
// The heap is left to the Go runtime, which returns free heap memory to
// the system by itself: forcing it (debug.FreeOSMemory) under a large
// load balancer's heartbeat would give back memory the next heartbeat
// takes again, a garbage collection and page faults every time for
// nothing.
type Keeper struct {
	Interval  time.Duration // between checks
	Threshold int64         // bytes of growth that trigger a release
	Log       *slog.Logger
}

// Run releases once after the first Interval (start-up is over), then
// checks until ctx is done.
func (k *Keeper) Run(ctx context.Context) {
	tick := time.NewTicker(k.Interval)
	defer tick.Stop()
	const refresh = 8
	var working int64 = -1 // program pages in use after a release (see Keeper)
	settling := false      // a release happened at the last check
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
		if settling {
			settling = false
			if working < 0 || file < working || releases >= refresh {
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
		settling = true
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
