package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/agent/heartbeat"
)

// facts describe the machine and the software of a run.
type facts struct {
	Date               time.Time
	CPUs               int
	CPUModel           string
	MemTotalKiB        int64
	Kernel             string
	HAProxy            string
	Go                 string
	Python             string
	Octavia            string
	Ours               string
	LoadStart, LoadEnd string
}

func gatherFacts(ctx context.Context, ours string) *facts {
	f := &facts{Date: time.Now().UTC(), CPUs: runtime.NumCPU(), Go: runtime.Version()}
	f.MemTotalKiB = kibField("/proc/meminfo", "MemTotal:")
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				f.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	first := func(s string) string { l, _, _ := strings.Cut(s, "\n"); return strings.TrimSpace(l) }
	if out, err := runCmd(ctx, "/usr/sbin/haproxy", "-v"); err == nil {
		f.HAProxy = strings.TrimPrefix(first(out), "HAProxy version ")
		f.HAProxy, _, _ = strings.Cut(f.HAProxy, " ")
	}
	if out, err := runCmd(ctx, "/usr/bin/python3", "--version"); err == nil {
		f.Python = strings.TrimPrefix(first(out), "Python ")
	}
	if out, err := runCmd(ctx, "dpkg-query", "-W", "-f=${Version}", "octavia-agent"); err == nil {
		f.Octavia = out
	}
	if out, err := runCmd(ctx, ours, "version"); err == nil {
		f.Ours = first(out)
	}
	f.LoadStart = loadavg()
	return f
}

func (f *facts) finish() { f.LoadEnd = loadavg() }

func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	fs := strings.Fields(string(data))
	if len(fs) < 3 {
		return "?"
	}
	return strings.Join(fs[:3], " ")
}

func (f *facts) oneLine() string {
	return fmt.Sprintf("%s, %d CPUs (%s), %.1f GiB RAM, Linux %s, haproxy %s, %s, Python %s, octavia-agent %s, ours %s, load %s",
		f.Date.Format("2006-01-02 15:04 MST"), f.CPUs, f.CPUModel, float64(f.MemTotalKiB)/(1<<20), f.Kernel,
		f.HAProxy, f.Go, f.Python, f.Octavia, f.Ours, f.LoadStart)
}

// report renders the results.
type report struct {
	o           *options
	facts       *facts
	ref, ours   *side
	scale       []scalePoint
	eps         []endpoint
	checkFloor  time.Duration // haproxy -c on the uploaded configuration, p50
	dp          *dpResult
	ceiling     *ceilingResult
	goBench     string
	elapsed     time.Duration
	uploadBytes int
	certBytes   int
}

type row struct {
	name      string
	ref, ours float64
	floor     float64 // what ours cannot go below (0: none)
	unit      string  // how to print: "MiB", "ms", "s", "n", "µs", "x" (a share)
	noRatio   bool
	refNA     bool // the reference could not be measured
}

func (r row) cell(v float64) string {
	switch r.unit {
	case "n":
		return fmt.Sprintf("%.0f", v)
	case "x":
		return fmt.Sprintf("%.3f", v)
	case "ms", "µs":
		switch {
		case v >= 100:
			return fmt.Sprintf("%.0f", v)
		case v >= 10:
			return fmt.Sprintf("%.1f", v)
		case v >= 1:
			return fmt.Sprintf("%.2f", v)
		default:
			return fmt.Sprintf("%.3f", v)
		}
	case "s":
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func (r row) ratio() string {
	if r.noRatio || r.ref == 0 {
		return "–"
	}
	return ratioText(r.ours / r.ref)
}

func ratioText(q float64) string {
	switch {
	case q == 0:
		return "0"
	case q < 0.01:
		return fmt.Sprintf("%.4f", q)
	case q < 1:
		return fmt.Sprintf("%.3f", q)
	default:
		return fmt.Sprintf("%.2f", q)
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func (rep *report) rows() []row {
	ref, ours, o := rep.ref, rep.ours, rep.o
	var rows []row
	lb := fmt.Sprintf("%d×%d LB", o.hbListeners, o.members)
	if o.phases["api"] {
		reqs := rep.requests()
		rows = append(rows,
			row{name: "Memory idle after start: PSS of the process tree (MiB)", ref: mib(ref.Idle.PSSKiB), ours: mib(ours.Idle.PSSKiB)},
			row{name: "Memory idle after start: RSS of the process tree (MiB)", ref: mib(ref.Idle.RSSKiB), ours: mib(ours.Idle.RSSKiB)},
			row{name: "Memory after " + reqs + " API requests: PSS (MiB)", ref: mib(ref.After.PSSKiB), ours: mib(ours.After.PSSKiB)},
			row{name: "Memory after " + reqs + " API requests: RSS (MiB)", ref: mib(ref.After.RSSKiB), ours: mib(ours.After.RSSKiB)},
		)
	}
	if o.phases["heartbeat"] {
		rows = append(rows,
			row{name: "Memory with the " + lb + " heartbeated every second: PSS (MiB)", ref: mib(ref.WithLB.PSSKiB), ours: mib(ours.WithLB.PSSKiB)},
			row{name: "Memory with the " + lb + " heartbeated every second: RSS (MiB)", ref: mib(ref.WithLB.RSSKiB), ours: mib(ours.WithLB.RSSKiB)},
		)
	}
	if o.phases["api"] {
		rows = append(rows, row{name: "Processes in the agent tree", ref: float64(ref.Idle.Procs), ours: float64(ours.Idle.Procs), unit: "n", noRatio: true})
	}
	if o.phases["startup"] {
		rows = append(rows, row{name: fmt.Sprintf("Start-up: process start → first `GET /` over mTLS (ms, median of %d)", len(ours.Startups)),
			ref: ms(medianDur(ref.Startups)), ours: ms(medianDur(ours.Startups)), unit: "ms"})
	}
	if o.phases["api"] {
		reqs := rep.requests()
		for i, ep := range rep.eps {
			for _, p := range []int{50, 99} {
				r := row{name: fmt.Sprintf("%s p%d (ms)", ep.Name, p), ref: ms(pct(ref.Latency[ep.Name], p)), ours: ms(pct(ours.Latency[ep.Name], p)), unit: "ms"}
				if i == 2 && p == 50 {
					r.name += "; floor: `haproxy -c` on the same configuration, p50"
					r.floor = ms(rep.checkFloor)
				}
				rows = append(rows, r)
			}
		}
		rows = append(rows,
			row{name: "TLS connections opened for the " + reqs + " requests (one keep-alive client)", ref: float64(ref.NewConns), ours: float64(ours.NewConns), unit: "n"},
			row{name: "CPU of the tree for the " + reqs + " requests, helpers included (s)", ref: ref.APICPU, ours: ours.APICPU, unit: "s"},
		)
	}
	if o.phases["heartbeat"] {
		perBeat := func(w []float64) float64 { return median(w) * 1000 / float64(o.beats) }
		rows = append(rows,
			row{name: fmt.Sprintf("Heartbeat: CPU of the tree over %d heartbeats at 1 s, %s (s, median of %d)", o.beats, lb, len(ours.HBWindows)),
				ref: median(ref.HBWindows), ours: median(ours.HBWindows), unit: "s"},
			row{name: "Heartbeat: CPU per heartbeat (ms); floor: haproxy's CPU answering our stats query", ref: perBeat(ref.HBWindows), ours: perBeat(ours.HBWindows),
				floor: perBeat(ours.HBHAProxy), unit: "ms"},
		)
	}
	for _, p := range rep.scale {
		r := row{name: fmt.Sprintf("Heartbeat build, in-process CPU, %v members (ms, median of %d)", p.Size, o.rounds),
			ref: p.RefNs / 1e6, ours: p.OursNs / 1e6, unit: "ms"}
		if p.OursDetail > heartbeat.DetailFullBest || p.RefBytes > heartbeat.MaxDatagram {
			r.name += fmt.Sprintf(" — above the ceiling: reference datagram %d bytes (not sendable), ours sent %q in %d bytes", p.RefBytes, p.OursDetail.String(), p.OursBytes)
		}
		pm := row{name: fmt.Sprintf("Heartbeat build, in-process CPU per member, %v (µs)", p.Size),
			ref: p.RefNs / 1e3 / float64(p.members()), ours: p.OursNs / 1e3 / float64(p.members()), unit: "µs"}
		if p.RefErr != "" {
			r.noRatio, r.refNA, pm.noRatio, pm.refNA = true, true, true, true
		}
		rows = append(rows, r, pm)
	}
	rows = append(rows, rep.promRows()...)
	if d := rep.dp; d != nil {
		none := median(d.Runs["none"])
		rows = append(rows,
			row{name: fmt.Sprintf("Data plane: requests/s through haproxy, %s heartbeated every second (median of %d × %v); floor column: no agent", lb, len(d.Runs["none"]), d.Duration),
				ref: median(d.Runs["reference"]), ours: median(d.Runs["ours"]), floor: none, unit: "n"},
			row{name: "Data plane: share of the no-agent throughput (target ≥ 0.99)", ref: median(d.Runs["reference"]) / none, ours: median(d.Runs["ours"]) / none, unit: "x", noRatio: true},
		)
	}
	if c := rep.ceiling; c != nil {
		rows = append(rows,
			row{name: fmt.Sprintf("Member ceiling: members in one full heartbeat (random UUIDs, pools of %d)", ceilingPool),
				ref: float64(c.RefPools * ceilingPool), ours: float64(c.OursFull * ceilingPool), unit: "n"},
			row{name: "Members a heartbeat still reports with every listener and pool status (above: reference silent)",
				ref: float64(c.RefPools * ceilingPool), ours: float64(c.OursStatus * ceilingPool), unit: "n"},
		)
	}
	return rows
}

// table is the markdown table alone.
func (rep *report) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| Measure | Reference (Python) | Ours (Go) | Floor | Ours / reference | Ours / floor |\n|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.rows() {
		refCell := r.cell(r.ref)
		if r.refNA {
			refCell = "n/a"
		}
		floor, overFloor := "–", "–"
		if r.floor > 0 {
			floor, overFloor = r.cell(r.floor), ratioText(r.ours/r.floor)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.name, refCell, r.cell(r.ours), floor, r.ratio(), overFloor)
	}
	return b.String()
}

// factor says how many times better ours is: "6.8× less" or, when ours
// is worse, "1.6× more".
func factor(ref, ours float64, better, worse string) string {
	switch {
	case ref <= 0 || ours <= 0:
		return "n/a"
	case ours <= ref:
		return fmt.Sprintf("%s× %s", roundFactor(ref/ours), better)
	default:
		return fmt.Sprintf("%s× %s", roundFactor(ours/ref), worse)
	}
}

func roundFactor(f float64) string {
	if f >= 10 {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.1f", f)
}

// requests is the number of API requests per agent, as text ("1,000").
func (rep *report) requests() string {
	n := rep.ours.Requests
	if n >= 1000 {
		return fmt.Sprintf("%d,%03d", n/1000, n%1000)
	}
	return fmt.Sprintf("%d", n)
}

// headline is the summary line for the README.
func (rep *report) headline() string {
	ref, ours, o := rep.ref, rep.ours, rep.o
	var parts []string
	if o.phases["api"] {
		parts = append(parts,
			factor(mib(ref.Idle.PSSKiB), mib(ours.Idle.PSSKiB), "less", "more")+" memory idle (PSS)",
			factor(mib(ref.After.PSSKiB), mib(ours.After.PSSKiB), "less", "more")+" after "+rep.requests()+" requests")
	}
	if o.phases["heartbeat"] {
		parts = append(parts, factor(mib(ref.WithLB.PSSKiB), mib(ours.WithLB.PSSKiB), "less", "more")+" with the large LB heartbeated")
	}
	if o.phases["startup"] {
		parts = append(parts, factor(ms(medianDur(ref.Startups)), ms(medianDur(ours.Startups)), "faster", "slower")+" start-up")
	}
	if o.phases["api"] {
		upload := rep.eps[2].Name
		parts = append(parts,
			factor(ms(pct(ref.Latency["GET /1.0/info"], 50)), ms(pct(ours.Latency["GET /1.0/info"], 50)), "faster", "slower")+" `GET /1.0/info` (p50)",
			fmt.Sprintf("haproxy upload p50 at %.2f× the `haproxy -c` floor (reference %.2f×)",
				ms(pct(ours.Latency[upload], 50))/ms(rep.checkFloor), ms(pct(ref.Latency[upload], 50))/ms(rep.checkFloor)),
			factor(ref.APICPU, ours.APICPU, "less", "more")+" CPU for those requests")
	}
	if o.phases["heartbeat"] {
		parts = append(parts, factor(median(ref.HBWindows), median(ours.HBWindows), "less", "more")+" CPU per heartbeat")
	}
	if ours.PromScrapes > 0 {
		parts = append(parts,
			factor(ms(pct(ref.PromLatency, 50)), ms(pct(ours.PromLatency, 50)), "faster", "slower")+" Prometheus scrape (p50)",
			factor(ref.PromCPU, ours.PromCPU, "less", "more")+" CPU per scrape")
	}
	if d := rep.dp; d != nil {
		none := median(d.Runs["none"])
		parts = append(parts, fmt.Sprintf("the data plane keeps %.1f%% of its no-agent throughput with ours, %.1f%% with the reference",
			100*median(d.Runs["ours"])/none, 100*median(d.Runs["reference"])/none))
	}
	if c := rep.ceiling; c != nil {
		parts = append(parts, fmt.Sprintf("member ceiling %d vs %d, and above it every listener's status instead of silence",
			c.OursFull*ceilingPool, c.RefPools*ceilingPool))
	}
	return "**Ours vs. the reference:** " + strings.Join(parts, ", ") + "."
}

func tlsName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	case 0:
		return "?"
	}
	return fmt.Sprintf("0x%04x", v)
}

// markdown is the whole results file.
func (rep *report) markdown() string {
	f, o := rep.facts, rep.o
	var b strings.Builder
	b.WriteString("<!-- Generated by `make bench` (bench/run.sh); do not edit by hand. -->\n")
	b.WriteString("# Side-by-side benchmark: reference Python amphora agent vs. ours\n\n")
	if o.quick {
		b.WriteString("**Smoke run (-quick): repetitions are too few for the numbers to mean anything.**\n\n")
	}
	fmt.Fprintf(&b, "Run %s on %d CPUs (%s), %.1f GiB RAM, Linux %s; haproxy %s, %s, Python %s, octavia-agent %s, ours %s. "+
		"Load average %s at the start, %s at the end; the run took %s.\n\n",
		f.Date.Format("2006-01-02 15:04 MST"), f.CPUs, f.CPUModel, float64(f.MemTotalKiB)/(1<<20), f.Kernel, f.HAProxy, f.Go,
		f.Python, f.Octavia, f.Ours, f.LoadStart, f.LoadEnd, rep.elapsed.Round(time.Second))
	b.WriteString(rep.headline() + "\n\n")
	b.WriteString(rep.table())
	b.WriteString("\n")
	if o.phases["api"] {
		fmt.Fprintf(&b, "- Process trees (idle): reference %s; ours %s.\n", strings.Join(rep.ref.Idle.Comms, ", "), strings.Join(rep.ours.Idle.Comms, ", "))
		fmt.Fprintf(&b, "- Negotiated TLS: reference %s, ours %s (`agent_tls_protocol = TLSv1.2` is the only version for the reference, the minimum for ours: GAPS F4). "+
			"The reference (gunicorn sync worker) closes the connection after every answer, so each of its requests pays a TLS handshake; ours keeps the session.\n",
			tlsName(rep.ref.TLSVersion), tlsName(rep.ours.TLSVersion))
		fmt.Fprintf(&b, "- Uploaded haproxy configuration: %d listeners × %d members, %d bytes, rendered by Octavia's templater; certificate upload: %d-byte PEM (RSA 2048 certificate + key). "+
			"Upload floor: `haproxy -c -L <peer> -f <stored config> -f <user-group file>` run %d times in our sandbox, p50 %v.\n",
			o.apiListeners, o.apiMembers, rep.uploadBytes, rep.certBytes, o.checkRuns, rep.checkFloor.Round(100*time.Microsecond))
	}
	if o.phases["heartbeat"] {
		perBeat := func(w []float64) float64 { return median(w) * 1000 / float64(o.beats) }
		fmt.Fprintf(&b, "- Heartbeats: both agents reported %d listeners and %d members per heartbeat (checked by the sink: HMAC, zlib, JSON); datagram %d bytes (reference) and %d bytes (ours). "+
			"Wall time of the windows: reference %v, ours %v. haproxy's CPU per heartbeat answering the reference's queries: %.2f ms (ours: %.2f ms).\n",
			rep.ours.HBListeners, rep.ours.HBMembers, rep.ref.HBBytes, rep.ours.HBBytes, durs(rep.ref.HBWall), durs(rep.ours.HBWall),
			perBeat(rep.ref.HBHAProxy), perBeat(rep.ours.HBHAProxy))
		if rep.ours.HBExact && rep.ref.HBExact {
			fmt.Fprintf(&b, "- Heartbeat CPU from each tree's cgroup (cpu.stat usage_usec, exact); per window: reference %v s, ours %v s, haproxy for ours %v s.\n",
				secs(rep.ref.HBWindows), secs(rep.ours.HBWindows), secs(rep.ours.HBHAProxy))
		} else {
			b.WriteString("- Heartbeat CPU from /proc ticks (10 ms, sampled): no cgroup v2 on this host.\n")
		}
	}
	for _, p := range rep.scale {
		if p.RefErr != "" {
			fmt.Fprintf(&b, "- Scale %v: the reference could not be measured: %s\n", p.Size, p.RefErr)
		}
	}
	if len(rep.scale) > 0 {
		b.WriteString("- Scale curve datagrams (reference / ours, bytes):")
		for i, p := range rep.scale {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s %v: %d / %d", sep, p.Size, p.RefBytes, p.OursBytes)
		}
		b.WriteString(" (65,507 is the UDP limit). Ours allocates")
		for i, p := range rep.scale {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(&b, "%s %.0f", sep, p.OursAllocs)
		}
		b.WriteString(" objects per build.\n")
	}
	if rep.ours.PromScrapes > 0 {
		fmt.Fprintf(&b, "- Prometheus proxies: both read the same haproxy exporter (%d×%d load balancer plus a PROMETHEUS listener, rendered by Octavia's templater) and answered %d series per scrape (%d bytes reference, %d bytes ours: the two gauges' values differ); "+
			"scraped alternately from inside the namespace, one connection per scrape; CPU is the proxy process's alone.\n",
			o.hbListeners, o.members, rep.ours.PromSeries, rep.ref.PromBytes, rep.ours.PromBytes)
	}
	if d := rep.dp; d != nil {
		fmt.Fprintf(&b, "- Data plane, requests/s per run (order rotating each round): ours %v, reference %v, no agent %v; heartbeats received during the runs: ours %v, reference %v.\n",
			rates(d.Runs["ours"]), rates(d.Runs["reference"]), rates(d.Runs["none"]), d.Beats["ours"], d.Beats["reference"])
	}
	if c := rep.ceiling; c != nil {
		fmt.Fprintf(&b, "- Member ceiling: the reference's largest full heartbeat is %d bytes (%d members); ours %d bytes (%d members, zlib level 9 when the fastest level does not fit). "+
			"Above it the reference's sendto fails and nothing is sent; ours gives up member detail in the documented order (at %d members it sends %q, %d bytes) and keeps every listener's and pool's status up to %d listeners of %d members.\n",
			c.RefBytes, c.RefPools*ceilingPool, c.OursFullBytes, c.OursFull*ceilingPool, 2*c.OursFull*ceilingPool, c.Above, c.AboveBytes, c.OursStatus, ceilingPool)
	}
	b.WriteString("\n")
	b.WriteString(methodology)
	if rep.goBench != "" {
		b.WriteString("\n## In-process Go benchmarks (`go test -bench Build ./agent/heartbeat/`)\n\n```\n")
		b.WriteString(strings.TrimRight(rep.goBench, "\n"))
		b.WriteString("\n```\n")
	}
	return b.String()
}

func rates(v []float64) string {
	s := make([]string, len(v))
	for i, r := range v {
		s[i] = fmt.Sprintf("%.0f", r)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func durs(v []time.Duration) string {
	s := make([]string, len(v))
	for i, d := range v {
		s[i] = d.Round(100 * time.Millisecond).String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

const methodology = `## Method

- **Same inputs.** One PKI (server certificate for the amphora id, client CA), one amphora id,
  one heartbeat key and one configuration file for both agents (only ` + "`bind_port`" + ` and the
  heartbeat destination port differ; our extra ` + "`[amphora_agent]`" + ` options are ignored by
  oslo.config). ` + "`debug = False`" + `, ` + "`heartbeat_interval = 1`" + `, TLS 1.2 configured.
- **Sandboxes.** Each agent runs in its own private mount namespace, held by a small holder
  process: a private ` + "`/run`" + ` (tmpfs) with its own ` + "`amphora-haproxy`" + ` network namespace,
  bind mounts of sandbox directories over ` + "`/etc/octavia`" + `, ` + "`/var/lib/octavia`" + `,
  ` + "`/usr/lib/systemd/system`" + ` and ` + "`/var/log`" + `, a datagram socket at
  ` + "`/run/rsyslog/octavia/log`" + ` (the amphora's rsyslog, read by the harness), ` + "`/proc/1/comm`" + `
  reading ` + "`systemd`" + ` (the reference picks its init system from it and refuses uploads
  otherwise) and a ` + "`systemctl`" + ` shim that exits 0 (the reference runs ` + "`systemctl enable`" + `
  on upload; no systemd is PID 1 here). Ours runs with ` + "`service_manager = builtin`" + `. Agents are
  started with ` + "`nsenter --mount`" + `, which execs them in place: the pid measured is the agent's.
- **Memory**: VmRSS (` + "`/proc/<pid>/status`" + `) and Pss (` + "`/proc/<pid>/smaps_rollup`" + `) summed
  over the agent's process tree (children found by walking ` + "`/proc/*/stat`" + ` parent links:
  for the reference the gunicorn arbiter, its worker and the health sender). RSS counts pages
  shared by forked processes once per process; PSS divides them, so PSS is the fair figure.
  Each value is the median of 5 samples 200 ms apart, taken after a quiet period (` + "`-settle`" + `)
  after start-up and after the last API request.
- **Start-up**: from ` + "`fork/exec`" + ` of the agent to the first ` + "`200`" + ` on ` + "`GET /`" + ` over mTLS, polled
  every 2 ms on new connections; agents alternate; one untimed warm-up start each.
- **API latency**: one HTTP/1.1 client with keep-alive (like the controller's session), requests
  sent one after the other, time from sending to the end of the body; p50/p99 are nearest-rank
  over all requests of an endpoint. The haproxy upload includes the agents' ` + "`haproxy -c`" + `
  validation; the same bytes are uploaded every time.
- **CPU**: utime+stime+cutime+cstime from ` + "`/proc/<pid>/stat`" + ` summed over the tree at the end of
  a window minus the same sum at its start. This is exact per process: live ones count their
  difference, new ones count whole, and helpers that exited and were reaped by a tree member
  (` + "`haproxy -c`" + `, ` + "`dpkg-query`" + `, the systemctl shim, pyroute2's netns helper) appear in
  their parent's cutime/cstime. Resolution 10 ms (USER_HZ).
- **Heartbeat CPU**: a real haproxy (master-worker, in the sandbox's ` + "`amphora-haproxy`" + `
  namespace) serves the load balancer with its pid file and stats socket where both agents look
  (` + "`/var/lib/octavia/<lb>/<lb>.pid`" + `, ` + "`/var/lib/octavia/<lb>.sock`" + `); health checks off,
  members a mix of "no check", MAINT and DRAIN. After five complete heartbeats, the tree's CPU is
  read when heartbeat k, k+N, k+2N... arrive at the UDP sink. The whole tree is counted: for the
  reference this includes the idle gunicorn processes, as on an amphora. Where the host has
  cgroup v2 (also mounted beside v1 at ` + "`/sys/fs/cgroup/unified`" + `), each agent's tree and its
  haproxy are moved into a cgroup of their own and their CPU is its ` + "`cpu.stat usage_usec`" + `:
  exact, where 10 ms ticks sampled over ~5 ms of work per heartbeat swing one window's
  figure by a quarter; otherwise /proc ticks as above (the notes below say which).
- **Scale curve**: in-process, both against the same running haproxy per size: the reference's
  ` + "`build_stats_message()`" + ` + ` + "`wrap_envelope()`" + ` (` + "`bench/ref_heartbeat.py`" + `, Debian's python3),
  ours ` + "`heartbeat.Sender.Build`" + ` + ` + "`heartbeat.Wrap`" + ` under ` + "`testing.Benchmark`" + ` with the agent's
  production source of running load balancers. Each figure is the median over rounds of the mean
  time per build, each round at least 1 s. The reference's build also rewrites its counters file;
  ours writes it only after a send (not part of Build).
- **Prometheus proxy**: one haproxy (same load balancer as the heartbeat phase plus a PROMETHEUS
  listener, so its internal exporter runs on ` + "`127.0.0.1:9101`" + `) in the scale sandbox's namespace;
  the reference's ` + "`prometheus_proxy.py`" + ` request handler (` + "`test/interop/ref_prometheus_proxy.py`" + `,
  Debian's python3 with psutil) and ` + "`amphora-agent prometheus-proxy`" + ` both read it. Three warm-up
  scrapes each, then N scrapes alternating between the two, each on a new connection (both answer
  ` + "`Connection: close`" + `), timed from the request to the last byte; CPU is the proxy process's
  ticks over the N scrapes divided by N (haproxy's exporter work, the same for both, not counted);
  peak RSS is VmHWM.
- Numbers from a busy machine are noisy; compare ratios from one run, not absolute values across runs.
`

// secs formats CPU seconds to the millisecond.
func secs(v []float64) string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return "[" + strings.Join(out, " ") + "]"
}
