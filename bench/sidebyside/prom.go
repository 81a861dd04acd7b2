package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// Ports of the two proxies in the sandbox's namespace: ours on the one
// the controller's configuration targets, the reference next to it.
const (
	promOursAddr = "127.0.0.1:9102"
	promRefAddr  = "127.0.0.1:9103"
)

// promPhase measures the Prometheus proxies: one real haproxy runs a
// load balancer of listeners × members plus a PROMETHEUS listener
// (rendered by Octavia's templater: the internal exporter on
// 127.0.0.1:9101) in the scale sandbox's namespace; the reference's
// prometheus_proxy.py (its request handler, test/interop/
// ref_prometheus_proxy.py) and ours read that exporter. Each is scraped n
// times from inside the namespace, alternately, one connection per
// scrape (both answer Connection: close), after 3 warm-up scrapes.
// Latency is request to last byte; CPU is the proxy process's over the
// n scrapes (haproxy's own work, the same for both, is not counted).
func promPhase(ctx context.Context, sb *Sandbox, work, repo, ours string, cfg []byte, lbID, peer string, n int, res map[string]*side) error {
	base := filepath.Join(work, "prom")
	dir := filepath.Join(base, lbID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return err
	}
	hp, err := startHAProxy(ctx, sb, cfgPath, filepath.Join(dir, lbID+".pid"), filepath.Join(base, lbID+".sock"), peer)
	if err != nil {
		return fmt.Errorf("prometheus phase: %w", err)
	}
	defer hp.Stop()

	conf := filepath.Join(base, "amphora-agent.conf")
	if err := os.WriteFile(conf, []byte("[haproxy_amphora]\nbase_path = "+base+"\n"), 0o644); err != nil {
		return err
	}
	procs := map[string]*promProc{
		"ours": {addr: promOursAddr, argv: []string{ours, "--config-file", conf, "prometheus-proxy", "--listen", promOursAddr}},
		"reference": {addr: promRefAddr, argv: []string{"/usr/bin/python3", filepath.Join(repo, "test", "interop", "ref_prometheus_proxy.py"),
			"http://127.0.0.1:9101/metrics", "127.0.0.1", "9103"}},
	}
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		DialContext:       nsDialer(fmt.Sprintf("/proc/%d/root/run/netns/%s", sb.holder.Process.Pid, nsName)),
		DisableKeepAlives: true,
	}}
	for _, label := range []string{"reference", "ours"} {
		p := procs[label]
		if err := p.start(ctx, sb, client, filepath.Join(base, label+".log")); err != nil {
			return fmt.Errorf("%s prometheus proxy: %w", label, err)
		}
		defer p.stop()
	}
	for range 3 {
		for _, label := range []string{"reference", "ours"} {
			if _, _, err := scrape(ctx, client, procs[label].addr); err != nil {
				return fmt.Errorf("%s prometheus proxy: warm-up scrape: %w", label, err)
			}
		}
	}
	cpu0 := map[string]uint64{}
	for label, p := range procs {
		cpu0[label] = cpuTicks(treeStats(p.pid()))
	}
	for i := range n {
		for _, label := range []string{"reference", "ours"} {
			d, body, err := scrape(ctx, client, procs[label].addr)
			if err != nil {
				return fmt.Errorf("%s prometheus proxy: scrape %d: %w", label, i, err)
			}
			r := res[label]
			r.PromLatency = append(r.PromLatency, d)
			r.PromBytes = len(body)
			r.PromSeries = bytes.Count(body, []byte("\n")) - bytes.Count(body, []byte("\n#"))
		}
	}
	for label, p := range procs {
		r := res[label]
		r.PromCPU = ticksToSeconds(cpuTicks(treeStats(p.pid())) - cpu0[label])
		r.PromScrapes = n
		r.PromPeakRSSKiB = kibField(fmt.Sprintf("/proc/%d/status", p.pid()), "VmHWM:")
		progress("%s prometheus proxy: %d scrapes, p50 %v, p99 %v, CPU %.2f s, peak RSS %.1f MiB, %d series, %d bytes",
			label, n, pct(r.PromLatency, 50).Round(time.Microsecond), pct(r.PromLatency, 99).Round(time.Microsecond),
			r.PromCPU, mib(r.PromPeakRSSKiB), r.PromSeries, r.PromBytes)
	}
	if a, b := res["reference"].PromSeries, res["ours"].PromSeries; a != b {
		return fmt.Errorf("prometheus proxies disagree: reference %d series, ours %d", a, b)
	}
	return nil
}

// promProc is one proxy process in the sandbox.
type promProc struct {
	addr   string
	argv   []string
	proc   *os.Process
	exited chan struct{}
}

func (p *promProc) pid() int { return p.proc.Pid }

func (p *promProc) start(ctx context.Context, sb *Sandbox, client *http.Client, logPath string) error {
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := sb.Command(true, p.argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	p.proc, p.exited = cmd.Process, make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, _, err := scrape(ctx, client, p.addr)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("exited: %s", tail(string(out), 1500))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("not answering after 60 s: %w", err)
		}
	}
}

func (p *promProc) stop() {
	if p.proc == nil {
		return
	}
	_ = p.proc.Signal(os.Interrupt)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.proc.Kill()
		<-p.exited
	}
	p.proc = nil
}

// scrape GETs /metrics and returns the time to the last byte.
func scrape(ctx context.Context, c *http.Client, addr string) (time.Duration, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, nil, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	d := time.Since(start)
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, nil, fmt.Errorf("status %s", resp.Status)
	}
	return d, body, nil
}

// nsDialer dials from inside the network namespace at nsPath: the socket
// is created on a locked OS thread switched into it (and back).
func nsDialer(nsPath string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			orig, err := netns.Get()
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
			defer orig.Close()
			target, err := netns.GetFromPath(nsPath)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
			defer target.Close()
			if err := netns.Set(target); err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if netns.Set(orig) != nil {
				ch <- result{c, err} // thread left locked: it dies with the goroutine
				return
			}
			runtime.UnlockOSThread()
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// promRows are the table rows of the prometheus phase.
func (rep *report) promRows() []row {
	ref, ours, o := rep.ref, rep.ours, rep.o
	if ours.PromScrapes == 0 {
		return nil
	}
	lb := fmt.Sprintf("%d×%d LB", o.hbListeners, o.members)
	return []row{
		{name: fmt.Sprintf("Prometheus proxy scrape, %s, p50 (ms, %d scrapes)", lb, ours.PromScrapes), ref: ms(pct(ref.PromLatency, 50)), ours: ms(pct(ours.PromLatency, 50)), unit: "ms"},
		{name: fmt.Sprintf("Prometheus proxy scrape, %s, p99 (ms)", lb), ref: ms(pct(ref.PromLatency, 99)), ours: ms(pct(ours.PromLatency, 99)), unit: "ms"},
		{name: "Prometheus proxy: CPU per scrape (ms)", ref: ref.PromCPU * 1000 / float64(ref.PromScrapes), ours: ours.PromCPU * 1000 / float64(ours.PromScrapes), unit: "ms"},
		{name: "Prometheus proxy: peak RSS (MiB)", ref: mib(ref.PromPeakRSSKiB), ours: mib(ours.PromPeakRSSKiB)},
	}
}
