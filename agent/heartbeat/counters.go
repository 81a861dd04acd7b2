package heartbeat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// CountersFile is the name, under base_path, of the file holding the last
// absolute counter values reported per listener. Its format is the
// reference agent's: {"<listener id>": {"bin": N, "bout": N, "ereq": N, "stot": N}}.
const CountersFile = "stats_counters.json"

// counterValues are the last absolute values of the delta metrics of one
// listener, with the file's (haproxy CSV) names.
type counterValues struct {
	Bin  int64 `json:"bin"`
	Bout int64 `json:"bout"`
	Ereq int64 `json:"ereq"`
	Stot int64 `json:"stot"`
}

type counterSet map[string]counterValues

// loadCounters reads the counters file. A missing file is an empty set; an
// unreadable or invalid one is an empty set and an error to log.
func loadCounters(path string) (counterSet, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return counterSet{}, nil
	}
	if err != nil {
		return counterSet{}, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return counterSet{}, nil
	}
	var c counterSet
	if err := json.Unmarshal(data, &c); err != nil {
		return counterSet{}, fmt.Errorf("%s: %w", path, err)
	}
	if c == nil { // the file held "null"
		c = counterSet{}
	}
	return c, nil
}

// marshal renders the set like Python's json.dumps (the reference writes
// this file the same way), listener ids sorted.
func (c counterSet) marshal() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, id := range slices.Sorted(maps.Keys(c)) {
		v := c[id]
		if i > 0 {
			b.WriteString(", ")
		}
		pyString(&b, id)
		fmt.Fprintf(&b, `: {"bin": %d, "bout": %d, "ereq": %d, "stot": %d}`, v.Bin, v.Bout, v.Ereq, v.Stot)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// saveCounters replaces the file atomically (temp file, fsync, rename).
func saveCounters(path string, c counterSet) error {
	return fsutil.WriteFile(path, c.marshal(), 0o640)
}

// delta is current - last; a negative result means haproxy restarted or
// reloaded and its counters started again from zero, so everything it
// counted since is new (the reference's rule).
func delta(current, last int64) int64 {
	if d := current - last; d >= 0 {
		return d
	}
	return current
}

// listenerEntry turns the absolute values of one listener into its
// message entry, given the values last reported.
func listenerEntry(cur Counters, last counterValues) Listener {
	return Listener{
		Status: cur.Status,
		Stats: ListenerStats{
			TX:       delta(cur.BytesOut, last.Bout),
			RX:       delta(cur.BytesIn, last.Bin),
			Conns:    cur.Current,
			TotConns: delta(cur.Total, last.Stot),
			Ereq:     delta(cur.RequestErrors, last.Ereq),
		},
	}
}

// absolute is what is recorded of a listener's counters.
func absolute(cur Counters) counterValues {
	return counterValues{Bin: cur.BytesIn, Bout: cur.BytesOut, Ereq: cur.RequestErrors, Stot: cur.Total}
}
