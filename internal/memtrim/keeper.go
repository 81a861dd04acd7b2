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
// file-backed resident pages of /proc/self/statm) and acts only when it
// grew by Threshold above the working set: the pages mapped again one
// Interval after a release, when steady work (a heartbeat every second)
// has faulted back the code it runs. That code then stays mapped, and
// steady work costs nothing beyond the check: releasing it at every
// check would make every heartbeat fault its code back in.
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
	var working int64 = -1 // program pages in use one Interval after the last release
	settling := false      // a release happened at the last check
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
			working, settling = file, false
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
