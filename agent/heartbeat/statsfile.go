package heartbeat

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// StatsFile is the name, under base_path, of the file where the running
// sender leaves its counts for "amphora-agent status" (a separate
// process): heartbeats sent, reduced to fit a datagram, undeliverable,
// load balancers and sources left out, controller entries skipped.
const StatsFile = "heartbeat_stats.json"

// statsEvery is how often at most the counts are written, and only when
// one of the counts of a problem changed: a healthy amphora writes the
// file once, a degraded one once a minute.
const statsEvery = time.Minute

// StatsSnapshot is the content of StatsFile.
type StatsSnapshot struct {
	Stats
	LastDetailName string    `json:"last_detail"`
	Started        time.Time `json:"started"` // when the sender started
	Updated        time.Time `json:"updated"` // when the counts were taken
	PID            int       `json:"pid"`
}

// problems is the part of the counts whose change is worth a write.
func (st Stats) problems() [7]uint64 {
	return [7]uint64{st.SendFailed, st.Degraded, st.Unsendable, st.LBFailures, st.LateSources, st.SkippedDestinations, uint64(st.LastDetail)}
}

// statsWriter writes the sender's counts to StatsFile when a problem
// count changed, at most every statsEvery. Used by the Run goroutine.
type statsWriter struct {
	path    string
	started time.Time
	written time.Time
	last    [7]uint64
	first   bool
}

func newStatsWriter(basePath string) *statsWriter {
	return &statsWriter{path: filepath.Join(basePath, StatsFile), started: time.Now(), first: true}
}

// maybeWrite writes st after the first heartbeat, when a problem count
// changed and the last write is statsEvery old, and when forced (at the
// sender's stop).
func (w *statsWriter) maybeWrite(st Stats, force bool) error {
	now := time.Now()
	changed := st.problems() != w.last
	if !force && !w.first && !(changed && now.Sub(w.written) >= statsEvery) {
		return nil
	}
	snap := StatsSnapshot{Stats: st, LastDetailName: st.LastDetail.String(), Started: w.started, Updated: now, PID: os.Getpid()}
	data, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return err
	}
	w.first, w.written, w.last = false, now, st.problems()
	return fsutil.WriteFile(w.path, append(data, '\n'), 0o640)
}

// ReadStats reads the counts the running (or last) sender left under
// basePath.
func ReadStats(basePath string) (*StatsSnapshot, error) {
	data, err := os.ReadFile(filepath.Join(basePath, StatsFile))
	if err != nil {
		return nil, err
	}
	var s StatsSnapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", StatsFile, err)
	}
	return &s, nil
}
