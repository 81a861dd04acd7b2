package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/heartbeat"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// side collects the figures of one agent.
type side struct {
	Startups []time.Duration

	Idle, After memSample
	Latency     map[string][]time.Duration
	Requests    int
	NewConns    int
	TLSVersion  uint16
	APICPU      float64 // seconds, whole tree incl. helper processes

	HBWindows   []float64       // CPU seconds of the tree per window
	HBHAProxy   []float64       // CPU seconds haproxy spent in the same windows
	HBExact     bool            // HBWindows and HBHAProxy come from cgroups (exact), not /proc ticks
	HBWall      []time.Duration // wall time per window
	HBListeners int
	HBMembers   int
	HBBytes     int
	WithLB      memSample // memory with the load balancer heartbeated

	PromLatency    []time.Duration // one per scrape
	PromCPU        float64         // seconds of the proxy over PromScrapes
	PromScrapes    int
	PromPeakRSSKiB int64
	PromSeries     int
	PromBytes      int
}

// endpoint is one API call of the latency phase.
type endpoint struct {
	Name   string
	Method string
	Path   string
	Body   []byte
}

// startupPhase starts and stops each agent warmup+n times, alternating, and
// records process start -> first GET / answered (the warm-up runs are
// dropped: they pay for the cold page cache).
func startupPhase(ctx context.Context, agents []*Agent, res map[string]*side, warmup, n int) error {
	for i := -warmup; i < n; i++ {
		for _, a := range agents {
			if err := a.Start(); err != nil {
				return err
			}
			d, err := a.WaitReady(ctx, 90*time.Second)
			stopped := time.Now()
			a.Stop()
			stopTook := time.Since(stopped)
			if err != nil {
				return err
			}
			tag := "warm-up"
			if i >= 0 {
				res[a.Label].Startups = append(res[a.Label].Startups, d)
				tag = fmt.Sprintf("%d/%d", i+1, n)
			}
			progress("%s: start-up %s: %v (stop took %v)", a.Label, tag, d.Round(100*time.Microsecond), stopTook.Round(time.Millisecond))
		}
	}
	return nil
}

// apiPhase starts the agent, samples its idle memory, sends count
// requests to each endpoint over one keep-alive session, and samples the
// memory again.
func apiPhase(ctx context.Context, a *Agent, r *side, eps []endpoint, count int, settle time.Duration) error {
	if err := a.Start(); err != nil {
		return err
	}
	defer a.Stop()
	if _, err := a.WaitReady(ctx, 90*time.Second); err != nil {
		return err
	}
	if err := sleepCtx(ctx, settle); err != nil {
		return err
	}
	r.Idle = memoryMedian(a.PID(), 5, 200*time.Millisecond)
	progress("%s: idle: %d processes %v, PSS %.1f MiB (%s), RSS %.1f MiB", a.Label, r.Idle.Procs, r.Idle.Comms, mib(r.Idle.PSSKiB), r.Idle.split(), mib(r.Idle.RSSKiB))

	s := a.Session()
	defer s.Close()
	r.Latency = map[string][]time.Duration{}
	cpu0 := cpuTicks(treeStats(a.PID()))
	for _, ep := range eps {
		for i := range count {
			st, body, el, err := s.Do(ctx, ep.Method, ep.Path, ep.Body)
			if err != nil {
				return fmt.Errorf("%s: %s #%d: %w", a.Label, ep.Name, i, err)
			}
			if st/100 != 2 {
				return fmt.Errorf("%s: %s #%d: status %d: %.500s", a.Label, ep.Name, i, st, body)
			}
			r.Latency[ep.Name] = append(r.Latency[ep.Name], el)
			r.Requests++
		}
		l := r.Latency[ep.Name]
		progress("%s: %s x%d: p50 %v p99 %v", a.Label, ep.Name, count, pct(l, 50).Round(10*time.Microsecond), pct(l, 99).Round(10*time.Microsecond))
	}
	r.APICPU = ticksToSeconds(cpuTicks(treeStats(a.PID())) - cpu0)
	r.NewConns, r.TLSVersion = s.NewConns, s.TLSVer
	if err := sleepCtx(ctx, settle); err != nil {
		return err
	}
	r.After = memoryMedian(a.PID(), 5, 200*time.Millisecond)
	progress("%s: after %d requests: %d processes, PSS %.1f MiB (%s), RSS %.1f MiB, %d connections, CPU %.2f s",
		a.Label, r.Requests, r.After.Procs, mib(r.After.PSSKiB), r.After.split(), mib(r.After.RSSKiB), r.NewConns, r.APICPU)
	return nil
}

// resetBase empties the agent's base path (load balancers, certificates,
// counters of earlier phases) but keeps the user/group snippet.
func resetBase(sb *Sandbox) error {
	dir := sb.Host(baseDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Name() == filepath.Base(ugFile) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return os.MkdirAll(filepath.Join(dir, "certs"), 0o755)
}

// heartbeatPhase runs a real haproxy for the load balancer (cfg rendered
// for base_path /var/lib/octavia) where the agent expects it, starts the
// agent, waits for heartbeats that report every listener, and measures
// the CPU of the agent's tree over `windows` windows of `beats`
// consecutive heartbeats (from the arrival of one heartbeat to the
// arrival of the beats-th next one), and haproxy's CPU over the same
// windows: what it costs haproxy to answer the agent's statistics
// queries (it has no other work: no traffic, no health checks), the
// floor of the agent's own cost. The agent's memory is sampled at the
// end, with the load balancer still heartbeated.
func heartbeatPhase(ctx context.Context, a *Agent, sink *Sink, r *side, cfg []byte, lbID, peer string, listeners, beats, windows int, settle time.Duration) error {
	if err := resetBase(a.SB); err != nil {
		return err
	}
	dir := baseDir + "/" + lbID
	if err := os.MkdirAll(a.SB.Host(dir), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(a.SB.Host(dir+"/haproxy.cfg"), cfg, 0o600); err != nil {
		return err
	}
	hp, err := startHAProxy(ctx, a.SB, dir+"/haproxy.cfg", dir+"/"+lbID+".pid", a.SB.Host(baseDir+"/"+lbID+".sock"), peer)
	if err != nil {
		return fmt.Errorf("%s: %w", a.Label, err)
	}
	defer hp.Stop()
	if err := a.Start(); err != nil {
		return err
	}
	defer a.Stop()
	if _, err := a.WaitReady(ctx, 90*time.Second); err != nil {
		return err
	}
	sink.Drain()
	limit := 15 * time.Second
	// Warm-up: five complete heartbeats (the first ones open files,
	// fill caches, start counters).
	for complete, seen := 0, 0; complete < 5; seen++ {
		b, err := sink.Next(ctx, limit)
		if err != nil {
			return fmt.Errorf("%s: heartbeat: %w", a.Label, err)
		}
		if b.Listeners == listeners {
			complete++
		} else if seen > 20 {
			return fmt.Errorf("%s: heartbeats report %d listeners, want %d", a.Label, b.Listeners, listeners)
		}
	}
	// Exact CPU times from a cgroup per tree where the host has cgroup v2
	// (cgroup.go); /proc ticks otherwise.
	cpuNow, exact, err := treeCPU(a.Label, a.PID(), hp.proc.Pid)
	if err != nil {
		return err
	}
	defer cpuNow(true)
	r.HBExact = exact
	start := time.Now()
	cpu0, hcpu0 := cpuNow(false)
	for w := range windows {
		var last beat
		for range beats {
			b, err := sink.Next(ctx, limit)
			if err != nil {
				return fmt.Errorf("%s: heartbeat: %w", a.Label, err)
			}
			if b.Listeners != listeners {
				return fmt.Errorf("%s: a heartbeat reported %d listeners, want %d", a.Label, b.Listeners, listeners)
			}
			last = b
		}
		cpu1, hcpu1 := cpuNow(false)
		r.HBWindows = append(r.HBWindows, (cpu1 - cpu0).Seconds())
		r.HBHAProxy = append(r.HBHAProxy, (hcpu1 - hcpu0).Seconds())
		r.HBWall = append(r.HBWall, last.At.Sub(start))
		r.HBListeners, r.HBMembers, r.HBBytes = last.Listeners, last.Members, last.Size
		progress("%s: heartbeat window %d/%d: %d beats in %v, CPU %.3f s, haproxy %.3f s (%d listeners, %d members, %d-byte datagrams)",
			a.Label, w+1, windows, beats, last.At.Sub(start).Round(time.Millisecond), (cpu1 - cpu0).Seconds(), (hcpu1 - hcpu0).Seconds(),
			last.Listeners, last.Members, last.Size)
		cpu0, hcpu0, start = cpu1, hcpu1, last.At
	}
	if err := sleepCtx(ctx, settle); err != nil {
		return err
	}
	r.WithLB = memoryMedian(a.PID(), 5, 200*time.Millisecond)
	progress("%s: with the %d-listener load balancer: PSS %.1f MiB (%s), RSS %.1f MiB", a.Label, listeners, mib(r.WithLB.PSSKiB), r.WithLB.split(), mib(r.WithLB.RSSKiB))
	return nil
}

// treeCPU returns a function giving the CPU time so far of the agent's
// tree and of haproxy's tree: exact, from a cgroup of each (cgroup.go),
// when the host has cgroup v2 (exact is then true); else /proc ticks.
// Called with done=true it removes the groups.
func treeCPU(label string, agentPID, haproxyPID int) (now func(done bool) (agent, haproxy time.Duration), exact bool, err error) {
	ticks := func(done bool) (time.Duration, time.Duration) {
		return secondsDur(ticksToSeconds(cpuTicks(treeStats(agentPID)))), secondsDur(ticksToSeconds(cpuTicks(treeStats(haproxyPID))))
	}
	ga, err := newCPUGroup(label)
	if err != nil {
		progress("%s: CPU from /proc ticks (no cgroup v2: %v)", label, err)
		return ticks, false, nil
	}
	gh, err := newCPUGroup(label + "-haproxy")
	if err != nil {
		ga.remove()
		progress("%s: CPU from /proc ticks (no cgroup v2: %v)", label, err)
		return ticks, false, nil
	}
	if err := errors.Join(ga.add(treePIDs(agentPID)...), gh.add(treePIDs(haproxyPID)...)); err != nil {
		ga.remove()
		gh.remove()
		return nil, false, err
	}
	return func(done bool) (time.Duration, time.Duration) {
		if done {
			ga.remove()
			gh.remove()
			return 0, 0
		}
		a, err1 := ga.usage()
		h, err2 := gh.usage()
		if err := errors.Join(err1, err2); err != nil {
			progress("%s: cgroup CPU: %v", label, err)
		}
		return a, h
	}, true, nil
}

func secondsDur(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// checkFloor times `haproxy -c` on the configuration the agent stored
// for the load balancer, as the agents run it (peer name, user/group
// file), n times in the sandbox: the floor of an upload's latency.
func checkFloor(ctx context.Context, sb *Sandbox, lbID, peer string, n int) (time.Duration, error) {
	cfg := baseDir + "/" + lbID + "/haproxy.cfg"
	var took []time.Duration
	for i := range n {
		cmd := sb.Command(false, "/usr/sbin/haproxy", "-c", "-L", peer, "-f", cfg, "-f", ugFile)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("haproxy -c run %d: %w: %s", i, err, tail(string(out), 500))
		}
		took = append(took, d)
	}
	return pct(took, 50), nil
}

// scalePoint is the in-process CPU time of one heartbeat build of both
// agents for one load balancer size.
type scalePoint struct {
	Size              lbSize
	RefNs, OursNs     float64 // CPU time per build: median over rounds
	RefErr            string
	RefBytes          int
	OursBytes         int
	OursAllocs        float64
	OursDetail        heartbeat.Detail // what ours sends: reduced above its member ceiling
	RefSeen, OursSeen [3]int           // listeners, pools, members reported
}

func (p scalePoint) members() int { return p.Size.Listeners * p.Size.Members }

// scalePhase times one heartbeat build (stats query, parse, message,
// zlib, HMAC) in-process for each size, both implementations against the
// same running haproxy: the reference through its own
// build_stats_message + wrap_envelope (bench/ref_heartbeat.py), ours
// through heartbeat.Sender.Preview with the agent's production source of
// running load balancers. The figure is the CPU time of the process
// (every thread: garbage collection included, waiting for haproxy
// excluded) per build.
func scalePhase(ctx context.Context, sb *Sandbox, work, repo string, cfgs map[lbSize][]byte, sizes []lbSize,
	amphoraID, lbID, key string, rounds int) ([]scalePoint, error) {
	var out []scalePoint
	peer := haproxy.PeerName(amphoraID)
	for _, sz := range sizes {
		base := filepath.Join(work, "scale", sz.String())
		dir := filepath.Join(base, lbID)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cfgPath := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(cfgPath, cfgs[sz], 0o600); err != nil {
			return nil, err
		}
		hp, err := startHAProxy(ctx, sb, cfgPath, filepath.Join(dir, lbID+".pid"), filepath.Join(base, lbID+".sock"), peer)
		if err != nil {
			return nil, fmt.Errorf("scale %v: %w", sz, err)
		}
		p := scalePoint{Size: sz}
		err = func() error {
			defer hp.Stop()
			if err := scaleReference(ctx, &p, repo, base, amphoraID, key, rounds); err != nil {
				p.RefErr = err.Error()
				progress("scale %v: reference failed: %v", sz, err)
			}
			return scaleOurs(ctx, &p, base, amphoraID, key, rounds)
		}()
		if err != nil {
			return nil, err
		}
		progress("scale %v: CPU per build: reference %.2f ms, ours %.3f ms (per member: %.1f µs, %.2f µs); datagrams %d / %d bytes, ours %s", sz,
			p.RefNs/1e6, p.OursNs/1e6, p.RefNs/1e3/float64(p.members()), p.OursNs/1e3/float64(p.members()), p.RefBytes, p.OursBytes, p.OursDetail)
		out = append(out, p)
	}
	return out, nil
}

func scaleReference(ctx context.Context, p *scalePoint, repo, base, amphoraID, key string, rounds int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", filepath.Join(repo, "bench", "ref_heartbeat.py"),
		base, amphoraID, key, strconv.Itoa(rounds), "1")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + base, "LANG=C.UTF-8"}
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%w: %s", err, tail(stderr.String(), 1500))
	}
	var r struct {
		Listeners, Pools, Members int
		DatagramBytes             int       `json:"datagram_bytes"`
		Rounds                    []float64 `json:"round_cpu_ns_per_op"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("ref_heartbeat.py output: %w: %s", err, out)
	}
	p.RefSeen = [3]int{r.Listeners, r.Pools, r.Members}
	p.RefBytes = r.DatagramBytes
	p.RefNs = median(r.Rounds)
	if r.Listeners != p.Size.Listeners || r.Members != p.members() {
		return fmt.Errorf("reference reported %d listeners / %d members, want %d / %d", r.Listeners, r.Members, p.Size.Listeners, p.members())
	}
	return nil
}

func scaleOurs(ctx context.Context, p *scalePoint, base, amphoraID, key string, rounds int) error {
	c := config.Defaults()
	c.BasePath = base
	c.AmphoraID = amphoraID
	c.HeartbeatKey, c.HeartbeatKeySet = key, true
	store := config.NewStore(c)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// the agent's production sources: haproxy.Inventory's view of
	// base_path (pid file naming a live haproxy started with the load
	// balancer's configuration) and the stats socket its configuration
	// declares
	src := heartbeat.Sources{LoadBalancers: haproxy.NewInventory(base, nil, log), VRRP: keepalived.VRRPPaths(base)}
	s := heartbeat.New(store, src, log)

	pv, err := s.Preview(ctx)
	if err != nil {
		return fmt.Errorf("ours: build: %w", err)
	}
	p.OursBytes = pv.Datagram
	var msg struct {
		Listeners map[string]json.RawMessage `json:"listeners"`
		Pools     map[string]struct {
			Members map[string]string `json:"members"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(pv.JSON, &msg); err != nil {
		return err
	}
	p.OursSeen[0], p.OursSeen[1] = len(msg.Listeners), len(msg.Pools)
	for _, pl := range msg.Pools {
		p.OursSeen[2] += len(pl.Members)
	}
	// Above the member ceiling ours reduces the message (every listener
	// kept); the build's work, what is timed, is the same.
	p.OursDetail = pv.Detail
	if p.OursSeen[0] != p.Size.Listeners || !pv.Fits || pv.Detail <= heartbeat.DetailFullBest && p.OursSeen[2] != p.members() {
		return fmt.Errorf("ours reported %d listeners / %d members (detail %v), want %d / %d",
			p.OursSeen[0], p.OursSeen[2], pv.Detail, p.Size.Listeners, p.members())
	}
	var perOp []float64
	for range rounds {
		runtime.GC()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		cpu0, t0, n := processCPU(), time.Now(), 0
		for n == 0 || time.Since(t0) < time.Second {
			if _, err := s.Preview(ctx); err != nil {
				return fmt.Errorf("ours: build: %w", err)
			}
			n++
		}
		cpu := processCPU() - cpu0
		runtime.ReadMemStats(&ms1)
		perOp = append(perOp, float64(cpu.Nanoseconds())/float64(n))
		p.OursAllocs = float64(ms1.Mallocs-ms0.Mallocs) / float64(n)
	}
	p.OursNs = median(perOp)
	return nil
}

// processCPU is the CPU time of this process so far (all threads).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(v []time.Duration) time.Duration {
	f := make([]float64, len(v))
	for i, d := range v {
		f[i] = float64(d)
	}
	return time.Duration(median(f))
}

// pct is the nearest-rank percentile.
func pct(v []time.Duration, p int) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
