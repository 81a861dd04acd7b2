package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// vmBudget bounds a whole VM test (boots included): TCG on 2 shared
// cores boots an amphora in 1.5-3 minutes.
const vmBudget = 25 * time.Minute

// imagePath is the amphora image the tests boot: $AMPHORA_IMAGE, or
// bin/amphora-x64-haproxy.qcow2 in the repository ("make image" builds
// it; "make test" and "make vm" build it first). Without it the tests
// skip, except in CI, where "make test" must have built it.
func imagePath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("AMPHORA_IMAGE")
	if p == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(root, "bin", "amphora-x64-haproxy.qcow2")
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no amphora image at %s in CI: make test builds it with make image", p)
		}
		t.Skipf("no amphora image at %s (make image builds it; AMPHORA_IMAGE names another)", p)
	}
	return p
}

// vmTest is one VM test: its lab, the amphorae booted in it, its
// figures, and what is shown when it fails.
type vmTest struct {
	t       *testing.T
	lab     *Lab
	dec     *testutil.OctaviaDecoder
	start   time.Time
	mu      sync.Mutex
	amps    []*Amphora
	figures []string
	hb      *heartbeats
}

// newVMTest builds a lab; at the end (also on failure) every guest, tap,
// bridge and namespace is removed by PID and name. On failure the tail
// of each guest's serial console and journal is logged and the whole
// console log is kept.
func newVMTest(t *testing.T) *vmTest {
	t.Helper()
	requireRoot(t)
	if err := RequireTools(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	image := imagePath(t)
	dir, err := os.MkdirTemp("", "avm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lab, err := NewLab(ctx, LabOptions{Dir: dir, Image: image})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
		for _, n := range []*Netns{lab.HV, lab.Client, lab.Members} {
			if n.Exists() {
				t.Errorf("namespace %s still exists", n.Name)
			}
		}
	})
	v := &vmTest{t: t, lab: lab, start: time.Now(), dec: testutil.NewOctaviaDecoder(t)}
	v.hb = &heartbeats{v: v}
	t.Cleanup(v.report)
	t.Logf("lab %s: image %s, accelerator %s", lab.ID, image, lab.Accel)
	return v
}

// ctx is bounded by what is left of the test's budget and by limit.
func (v *vmTest) ctx(limit time.Duration) (context.Context, context.CancelFunc) {
	left := time.Until(v.start.Add(vmBudget))
	if dl, ok := v.t.Deadline(); ok && time.Until(dl)-time.Minute < left {
		left = time.Until(dl) - time.Minute
	}
	if limit > left {
		limit = left
	}
	return context.WithTimeout(context.Background(), limit)
}

// figure records a measured value for the closing summary.
func (v *vmTest) figure(name string, value any) {
	v.t.Helper()
	if d, ok := value.(time.Duration); ok {
		value = d.Round(100 * time.Millisecond)
	}
	line := fmt.Sprintf("%-36s %v", name, value)
	v.mu.Lock()
	v.figures = append(v.figures, line)
	v.mu.Unlock()
	v.t.Logf("FIGURE %s", line)
}

func (v *vmTest) report() {
	t := v.t
	v.mu.Lock()
	figures := v.figures
	amps := v.amps
	v.mu.Unlock()
	t.Logf("VM figures (%s, %s, %v in all):\n  %s", v.lab.Accel.Accel, time.Now().UTC().Format(time.RFC3339),
		time.Since(v.start).Round(time.Second), strings.Join(figures, "\n  "))
	if !t.Failed() {
		return
	}
	for _, a := range amps {
		if a.Guest == nil {
			continue
		}
		if a.Guest.Running() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := a.SSH(ctx, "sudo journalctl -b --no-pager -o short-monotonic -n 120 -u amphora-agent -u amphora-netns "+
				"-u 'haproxy-*' -u 'octavia-*' -u cloud-init -u cloud-final; echo; sudo journalctl -b --no-pager -o short-monotonic -n 40 -p warning")
			cancel()
			t.Logf("amphora %d (%s) journal (%v):\n%s", a.Index, a.ID, err, out)
		}
		name := fmt.Sprintf("avm-%s-%s-amp%d-console.log", strings.ReplaceAll(t.Name(), "/", "_"), v.lab.ID, a.Index)
		kept := filepath.Join(os.TempDir(), name)
		if data, err := os.ReadFile(a.Guest.Console); err == nil {
			_ = os.WriteFile(kept, data, 0o644)
		}
		t.Logf("amphora %d (%s) serial console, last lines (whole log kept in %s):\n%s",
			a.Index, a.ID, kept, a.Guest.ConsoleTail(60))
	}
}

// boot creates and boots amphora i, and registers it for the failure
// report.
func (v *vmTest) boot(i int, topology string) *Amphora {
	v.t.Helper()
	ctx, cancel := v.ctx(3 * time.Minute)
	defer cancel()
	a, err := v.lab.CreateAmphora(ctx, AmphoraOptions{Index: i, Topology: topology})
	if err != nil {
		v.t.Fatal(err)
	}
	v.mu.Lock()
	v.amps = append(v.amps, a)
	v.mu.Unlock()
	return a
}

// must fails the test on err.
func (v *vmTest) must(err error) {
	v.t.Helper()
	if err != nil {
		v.t.Fatal(err)
	}
}

// octavia runs controller client calls with a bounded time and fails the
// test unless each succeeded with wantStatus (0: any result).
func (v *vmTest) octavia(a *Amphora, wantStatus int, calls ...testutil.OctaviaCall) []json.RawMessage {
	v.t.Helper()
	ctx, cancel := v.ctx(3 * time.Minute)
	defer cancel()
	out, err := a.OctaviaOK(ctx, wantStatus, calls...)
	if err != nil {
		v.t.Fatalf("amphora %d: %v", a.Index, err)
	}
	return out
}

// ssh runs a command on the amphora (bounded) and fails the test on
// error. A failure of ssh itself (exit status 255: under TCG on a loaded
// host sshd can miss the connection timeout) is retried twice, so the
// commands the tests send are idempotent.
func (v *vmTest) ssh(a *Amphora, command string) string {
	v.t.Helper()
	ctx, cancel := v.ctx(2 * time.Minute)
	defer cancel()
	var err error
	var out string
	for range 3 {
		out, err = a.SSH(ctx, command)
		var ee *exec.ExitError
		if err == nil || !errors.As(err, &ee) || ee.ExitCode() != 255 || ctx.Err() != nil {
			break
		}
		v.t.Logf("amphora %d: ssh failed, retrying: %v", a.Index, err)
	}
	if err != nil {
		v.t.Fatalf("amphora %d: %v\n%s", a.Index, err, out)
	}
	return out
}

// heartbeats decodes what the lab's controller receives with Octavia's
// own unwrap_envelope.
type heartbeats struct {
	v    *vmTest
	mu   sync.Mutex
	next int
	got  []heartbeat
}

type heartbeat struct {
	At time.Time
	testutil.Heartbeat
	Raw json.RawMessage
}

// sync decodes the datagrams received since the last call. A datagram
// the controller's code refuses fails the test.
func (h *heartbeats) sync() {
	h.v.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	dgs, next := h.v.lab.Heartbeats.Since(h.next)
	h.next = next
	for _, d := range dgs {
		raw, _, err := h.v.dec.Unwrap(h.v.t, d.Data, h.v.lab.HeartbeatKey())
		if err != nil {
			h.v.t.Fatalf("heartbeat from %v: %v", d.From, err)
		}
		var m testutil.Heartbeat
		if err := json.Unmarshal(raw, &m); err != nil {
			h.v.t.Fatalf("heartbeat %s: %v", raw, err)
		}
		h.got = append(h.got, heartbeat{At: d.At, Heartbeat: m, Raw: raw})
	}
}

// await waits (bounded) for a heartbeat of amphora id received at or
// after from that satisfies cond, and returns it.
func (h *heartbeats) await(id string, from time.Time, limit time.Duration, what string, cond func(*heartbeat) bool) heartbeat {
	h.v.t.Helper()
	ctx, cancel := h.v.ctx(limit)
	defer cancel()
	var last *heartbeat
	seen := 0
	for {
		h.sync()
		h.mu.Lock()
		for i := seen; i < len(h.got); i++ {
			m := &h.got[i]
			if m.AmphoraID() != id || m.At.Before(from) {
				continue
			}
			last = m
			if cond(m) {
				res := *m
				h.mu.Unlock()
				return res
			}
		}
		seen = len(h.got)
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			if last != nil {
				h.v.t.Fatalf("no heartbeat of %s with %s within %v; last: %s", id, what, limit, last.Raw)
			}
			h.v.t.Fatalf("no heartbeat of %s with %s within %v (none received from it)", id, what, limit)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// httpGet sends one request from the client namespace.
func httpGet(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(body), err
}

// httpGetAll is httpGet with the whole body (metrics pages are large).
func httpGetAll(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, string(body), err
}

// reachBoth sends requests to url from the client until both members
// answered (bounded in count and time) and returns the number sent.
func (v *vmTest) reachBoth(what, url string) int {
	v.t.Helper()
	c := v.lab.Client.HTTPClient(nil, 3*time.Second)
	ctx, cancel := v.ctx(90 * time.Second)
	defer cancel()
	seen := map[string]int{}
	var last error
	for i := 1; i <= 300 && ctx.Err() == nil; i++ {
		code, body, err := httpGet(c, url)
		switch {
		case err != nil:
			last = err
		case code != http.StatusOK:
			last = fmt.Errorf("status %d %q", code, body)
		default:
			seen[body]++
		}
		if seen["member1"] > 0 && seen["member2"] > 0 {
			return i
		}
		if err != nil || code != http.StatusOK {
			time.Sleep(250 * time.Millisecond)
		}
	}
	v.t.Fatalf("%s: %s: members seen %v, last error %v", what, url, seen, last)
	return 0
}

// udpAsk sends one datagram to the VIP from the client (a new socket:
// a new IPVS connection) and returns the member that answered.
func (v *vmTest) udpAsk(port int, timeout time.Duration) (string, error) {
	var answer string
	err := v.lab.Client.Do(func() error {
		c, err := net.Dial("udp4", net.JoinHostPort(VIP, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte("which member?")); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		answer = string(buf[:n])
		return nil
	})
	return answer, err
}

// udpReachBoth asks until both members answered (bounded).
func (v *vmTest) udpReachBoth(what string, port int) int {
	v.t.Helper()
	ctx, cancel := v.ctx(90 * time.Second)
	defer cancel()
	seen := map[string]int{}
	var last error
	for i := 1; i <= 200 && ctx.Err() == nil; i++ {
		m, err := v.udpAsk(port, time.Second)
		if err != nil {
			last = err
			time.Sleep(250 * time.Millisecond)
			continue
		}
		seen[m]++
		if seen["member1"] > 0 && seen["member2"] > 0 {
			return i
		}
	}
	v.t.Fatalf("%s: UDP %s:%d: members seen %v, last error %v", what, VIP, port, seen, last)
	return 0
}

// probe sends one GET to the VIP every interval from the client, each
// bounded by timeout, until stopped or its count or time budget is spent.
type probe struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	at   time.Time
	ok   bool
	body string
	err  error
}

func (v *vmTest) startProbe(url string, interval, timeout time.Duration, maxCount int, maxTime time.Duration) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	c := v.lab.Client.HTTPClient(nil, timeout)
	go func() {
		defer close(p.done)
		end := time.Now().Add(maxTime)
		for i := 0; i < maxCount && time.Now().Before(end); i++ {
			at := time.Now()
			code, body, err := httpGet(c, url)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("status %d", code)
			}
			p.mu.Lock()
			p.samples = append(p.samples, sample{at: at, ok: err == nil, body: body, err: err})
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(time.Until(at.Add(interval))):
			}
		}
	}()
	v.t.Cleanup(p.Stop)
	return p
}

func (p *probe) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// failed lists the failed requests sent in [from, to).
func (p *probe) failed(from, to time.Time) []sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []sample
	for _, s := range p.samples {
		if !s.ok && !s.at.Before(from) && s.at.Before(to) {
			out = append(out, s)
		}
	}
	return out
}

// describe lists the failed requests from t0 on as offsets from t0 with
// their errors (at most n), for the log.
func (p *probe) describe(t0 time.Time, n int) string {
	var out []string
	for i, s := range p.failed(t0, time.Now().Add(time.Hour)) {
		if i == n {
			out = append(out, "...")
			break
		}
		out = append(out, fmt.Sprintf("+%v %v", s.at.Sub(t0).Round(10*time.Millisecond), s.err))
	}
	return strings.Join(out, "; ")
}

// count is the number of requests sent in [from, to).
func (p *probe) count(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.samples {
		if !s.at.Before(from) && s.at.Before(to) {
			n++
		}
	}
	return n
}

// outage is the longest time the client went without an answer from t0
// on: between two answered requests with only failed ones in between
// (the answered one before t0 counts as a start), the number of failed
// requests in that stretch and when it ended. 0 when nothing failed; -1
// while the last stretch of failures has not ended. Single slow answers
// of a guest under load make short stretches of their own and do not
// hide the real outage.
func (p *probe) outage(t0 time.Time) (time.Duration, int, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lastOK, end time.Time
	var longest time.Duration
	longestFailed, failed := 0, 0
	for _, s := range p.samples {
		if s.ok {
			if failed > 0 && !lastOK.IsZero() {
				if d := s.at.Sub(lastOK); d > longest {
					longest, longestFailed, end = d, failed, s.at
				}
			}
			lastOK, failed = s.at, 0
			continue
		}
		if !s.at.Before(t0) {
			failed++
		}
	}
	if failed > 0 {
		return -1, failed, time.Time{}
	}
	return longest, longestFailed, end
}

// awaitRecovery waits (bounded) until the client, having gone without
// answers after t0 for a stretch that ended after the event (the failure
// the test caused is known to have happened by then), got answers
// steadily for d; it returns that longest stretch without answers.
func (v *vmTest) awaitRecovery(p *probe, t0, event time.Time, limit, d time.Duration, what string) time.Duration {
	v.t.Helper()
	ctx, cancel := v.ctx(limit)
	defer cancel()
	for {
		out, failed, end := p.outage(t0)
		if out > 0 && end.After(event) && p.stableFor(d) {
			return out
		}
		select {
		case <-ctx.Done():
			v.t.Fatalf("%s: traffic not restored within %v (outage %v, %d failed requests)", what, limit, out, failed)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stableFor reports whether every request of the last d was answered
// (and there were some).
func (p *probe) stableFor(d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	from := time.Now().Add(-d)
	n := 0
	for _, s := range p.samples {
		if s.at.Before(from) {
			continue
		}
		if !s.ok {
			return false
		}
		n++
	}
	return n >= 3
}

// run runs a subtest; the helpers of v report to it while it runs (the
// subtests run one after the other).
func (v *vmTest) run(name string, f func(t *testing.T)) bool {
	parent := v.t
	return parent.Run(name, func(t *testing.T) {
		v.t = t
		defer func() { v.t = parent }()
		f(t)
	})
}
