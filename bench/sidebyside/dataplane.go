package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// dpResult is the data-plane share: requests per second through haproxy
// per variant ("ours", "reference", "none"), one per run.
type dpResult struct {
	Runs     map[string][]float64
	Beats    map[string][]int // heartbeats received during each run
	Duration time.Duration
	Conns    int
}

var dpVariants = []string{"ours", "reference", "none"}

// dataPlanePhase measures what an agent heartbeating the 50×40 load
// balancer every second takes from haproxy: haproxy (the load balancer,
// and the member server it proxies to: one small HTTP answer) and the
// agent share CPU 0, as on a 1-vCPU amphora; wrk runs on CPU 1. Each run
// is o.dpDuration of load with our agent, the reference, or no agent at
// all, the variants alternating (their order rotating) for o.dpRuns
// rounds; the figure is the median of each variant's requests per
// second. All traffic stays on the loopback of the sandbox's namespace.
func dataPlanePhase(ctx context.Context, sb *Sandbox, base []*Agent, sinks map[string]*Sink, pki *testutil.PKI,
	amphoraID, hbKey string, cfg []byte, lbID, peer string, o *options) (*dpResult, error) {
	if runtime.NumCPU() < 2 {
		return nil, fmt.Errorf("data-plane share needs 2 CPUs (haproxy and the agent on one, the load on the other)")
	}
	for _, bin := range []string{"wrk", "taskset"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("data-plane share: %s is missing (scripts/deps.sh bench installs it)", bin)
		}
	}
	const loadCPU, lbCPU = "1", "0"
	pin := func(cpu string) []string { return []string{"taskset", "-c", cpu} }

	// The member: a second haproxy answering every request itself.
	member := filepath.Join(sb.Root, "state", "member.cfg")
	memberSock := filepath.Join(sb.Root, "state", "member.sock")
	memberCfg := fmt.Sprintf(`global
    maxconn 4000
    stats socket %s mode 600 level user
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend member
    bind %s
    http-request return status 200 content-type text/plain string "ok"
`, memberSock, dpMemberAddr)
	if err := os.WriteFile(member, []byte(memberCfg), 0o644); err != nil {
		return nil, err
	}
	mh, err := startHAProxy(ctx, sb, member, filepath.Join(sb.Root, "state", "member.pid"), memberSock, "member", pin(lbCPU)...)
	if err != nil {
		return nil, fmt.Errorf("member server: %w", err)
	}
	defer mh.Stop()

	dir := baseDir + "/" + lbID
	if err := os.MkdirAll(sb.Host(dir), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(sb.Host(dir+"/haproxy.cfg"), cfg, 0o600); err != nil {
		return nil, err
	}
	hp, err := startHAProxy(ctx, sb, dir+"/haproxy.cfg", dir+"/"+lbID+".pid", sb.Host(baseDir+"/"+lbID+".sock"), peer, pin(lbCPU)...)
	if err != nil {
		return nil, fmt.Errorf("load balancer: %w", err)
	}
	defer hp.Stop()

	// Both agents in this sandbox, each with its own configuration file,
	// run one at a time on the load balancer's CPU.
	agents := map[string]*Agent{}
	for _, a := range base {
		da, err := setupAgent(a.Label, a.Cmd, sb, pki, amphoraID, hbKey, sinks[a.Label].Port(), confDir+"/"+a.Label+".conf")
		if err != nil {
			return nil, err
		}
		da.Prefix = pin(lbCPU)
		agents[a.Label] = da
	}

	url := "http://127.0.0.1:10001/"
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: nsDialer(fmt.Sprintf("/proc/%d/root/run/netns/%s", sb.holder.Process.Pid, nsName)), DisableKeepAlives: true}}
	if resp, err := client.Get(url); err != nil {
		return nil, fmt.Errorf("request through the load balancer: %w", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("request through the load balancer: %s", resp.Status)
		}
	}

	r := &dpResult{Runs: map[string][]float64{}, Beats: map[string][]int{}, Duration: o.dpDuration, Conns: 32}
	for round := range o.dpRuns {
		for i := range dpVariants {
			v := dpVariants[(i+round)%len(dpVariants)]
			rps, beats, err := dpRun(ctx, sb, agents[v], sinks[v], url, r, o, pin(loadCPU))
			if err != nil {
				return nil, fmt.Errorf("data-plane run %d, %s: %w", round+1, v, err)
			}
			r.Runs[v] = append(r.Runs[v], rps)
			r.Beats[v] = append(r.Beats[v], beats)
			progress("data plane, round %d/%d, %s: %.0f requests/s (%d heartbeats during the run)", round+1, o.dpRuns, v, rps, beats)
		}
	}
	return r, nil
}

var wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// dpRun is one load run with agent a running (nil: no agent).
func dpRun(ctx context.Context, sb *Sandbox, a *Agent, sink *Sink, url string, r *dpResult, o *options, pin []string) (float64, int, error) {
	if a != nil {
		if err := a.Start(); err != nil {
			return 0, 0, err
		}
		defer a.Stop()
		if _, err := a.WaitReady(ctx, 90*time.Second); err != nil {
			return 0, 0, err
		}
		// Heartbeating: two complete heartbeats before the load.
		sink.Drain()
		for complete := 0; complete < 2; {
			b, err := sink.Next(ctx, 15*time.Second)
			if err != nil {
				return 0, 0, fmt.Errorf("heartbeat: %w", err)
			}
			if b.Listeners == o.hbListeners {
				complete++
			}
		}
		sink.Drain()
	}
	secs := strconv.Itoa(int(r.Duration.Seconds()))
	argv := append(pin, "wrk", "-t1", "-c"+strconv.Itoa(r.Conns), "-d"+secs+"s", "--timeout", "5s", url)
	cmd := sb.Command(true, argv...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return 0, 0, ctx.Err()
	case <-time.After(r.Duration + time.Minute):
		_ = cmd.Process.Kill()
		<-done
		return 0, 0, fmt.Errorf("wrk still running after %v", r.Duration+time.Minute)
	}
	out := buf.Bytes()
	if err != nil {
		return 0, 0, fmt.Errorf("wrk: %w: %s", err, tail(string(out), 800))
	}
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("wrk output without a rate: %s", tail(string(out), 800))
	}
	if strings.Contains(string(out), "Non-2xx") {
		return 0, 0, fmt.Errorf("wrk saw errors: %s", tail(string(out), 800))
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	beats := 0
	if a != nil {
		for {
			select {
			case <-sink.C:
				beats++
				continue
			default:
			}
			break
		}
	}
	return rps, beats, nil
}
