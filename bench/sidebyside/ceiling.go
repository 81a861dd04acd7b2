package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/agent/heartbeat"
)

// ceilingPool is the pool size of the member ceiling: one listener per
// pool of 40 members, all UP (health-monitored members in production).
const ceilingPool = 40

// ceilingResult is the member ceiling of both agents.
type ceilingResult struct {
	RefPools, RefBytes int // the reference's largest full heartbeat
	OursFull           int // pools in our largest full heartbeat
	OursFullBytes      int
	OursStatus         int              // pools whose every listener and pool status still fits
	Above              heartbeat.Detail // what ours sends at twice its full ceiling
	AboveBytes         int
}

// ceilingPhase finds, in-process, the largest number of members a
// heartbeat carries in full in one datagram, ours and the reference's,
// on the same messages: pools of 40 members with random UUIDs, taken
// k at a time from one list; and for ours how far every listener's and
// pool's status still fits once member detail is given up. The reference
// sends nothing above its ceiling (its sendto fails).
func ceilingPhase(ctx context.Context, repo, key string) (*ceilingResult, error) {
	const maxPools = 2048
	type entry struct {
		id  string
		val any
	}
	id := randomUUID()
	var listeners, pools []entry
	for range maxPools {
		lid := randomUUID()
		listeners = append(listeners, entry{lid, map[string]any{"status": "OPEN",
			"stats": map[string]int{"tx": 0, "rx": 0, "conns": 0, "totconns": 0, "ereq": 0}}})
		members := map[string]string{}
		for range ceilingPool {
			members[randomUUID()] = "UP"
		}
		pools = append(pools, entry{randomUUID() + ":" + lid, map[string]any{"status": "UP", "members": members}})
	}
	message := func(k int) *heartbeat.Message {
		m := &heartbeat.Message{ID: id, Listeners: map[string]heartbeat.Listener{}, Pools: map[string]heartbeat.Pool{}}
		for _, l := range listeners[:k] {
			m.Listeners[l.id] = heartbeat.Listener{Status: "OPEN"}
		}
		for _, p := range pools[:k] {
			m.Pools[p.id] = heartbeat.Pool{Status: "UP", Members: p.val.(map[string]any)["members"].(map[string]string)}
		}
		return m
	}
	encode := func(k int) (int, heartbeat.Detail, bool) {
		pkt, d, fits, err := heartbeat.Encode(message(k), key)
		if err != nil {
			panic(err)
		}
		return len(pkt), d, fits
	}
	bisect := func(ok func(k int) bool) int {
		lo, hi := 0, maxPools
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if ok(mid) {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		return lo
	}
	r := &ceilingResult{}
	r.OursFull = bisect(func(k int) bool { _, d, fits := encode(k); return fits && d <= heartbeat.DetailFullBest })
	r.OursFullBytes, _, _ = encode(r.OursFull)
	r.OursStatus = bisect(func(k int) bool { _, d, fits := encode(k); return fits && d <= heartbeat.DetailPoolStatus })
	r.AboveBytes, r.Above, _ = encode(2 * r.OursFull)

	// The reference, on the same lists.
	pairs := func(es []entry) [][2]any {
		out := make([][2]any, len(es))
		for i, e := range es {
			out[i] = [2]any{e.id, e.val}
		}
		return out
	}
	in, err := json.Marshal(map[string]any{"id": id, "key": key, "listeners": pairs(listeners), "pools": pairs(pools)})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "/usr/bin/python3", filepath.Join(repo, "bench", "ref_ceiling.py"))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Stdin = strings.NewReader(string(in))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ref_ceiling.py: %w: %s", err, tail(stderr.String(), 1500))
	}
	var ref struct {
		Pools int `json:"pools"`
		Bytes int `json:"datagram_bytes"`
	}
	if err := json.Unmarshal(out, &ref); err != nil {
		return nil, fmt.Errorf("ref_ceiling.py output %q: %w", out, err)
	}
	r.RefPools, r.RefBytes = ref.Pools, ref.Bytes
	progress("member ceiling of a full heartbeat: reference %d members (%d bytes), ours %d (%d bytes); ours keeps every listener and pool status up to %d listeners (%d members); at %d members it sends %q (%d bytes)",
		r.RefPools*ceilingPool, r.RefBytes, r.OursFull*ceilingPool, r.OursFullBytes, r.OursStatus, r.OursStatus*ceilingPool,
		2*r.OursFull*ceilingPool, r.Above, r.AboveBytes)
	return r, nil
}
