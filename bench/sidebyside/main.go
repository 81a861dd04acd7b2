// Command sidebyside is the harness of `make bench`: it runs the reference
// Python amphora agent (Octavia's amphora-agent) and ours side by side on
// one machine, with the same configuration and certificates, each in its
// own sandbox, and writes a table of memory, start-up, API latency and
// heartbeat cost with the ratio ours/reference (bench/results.md).
//
//	sidebyside -agent bin/amphora-agent [-out bench/results.md] [-quick]
//
// It needs root (mount and network namespaces), haproxy, iproute2,
// util-linux (nsenter) and Debian's octavia-agent + python3-octavia. Every
// process it starts is stopped by pid; the sandboxes' holders also kill
// whatever is left in their namespaces if the harness dies.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// options of one run.
type options struct {
	ours, reference string
	out, goBench    string
	workParent      string
	keep, quick     bool
	startups        int
	requests        int
	beats, windows  int
	rounds          int
	sizes           []int
	members         int
	apiListeners    int
	apiMembers      int
	hbListeners     int
	promScrapes     int
	settle          time.Duration
}

var t0 = time.Now()

// progress logs a line to stderr with the time since the start.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "holder" {
		if err := runHolder(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "holder:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sidebyside:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("sidebyside", flag.ContinueOnError)
	fs.StringVar(&o.ours, "agent", "", "our amphora-agent binary (required)")
	fs.StringVar(&o.reference, "reference", "/usr/bin/amphora-agent", "the reference agent (Debian octavia-agent)")
	fs.StringVar(&o.out, "out", "bench/results.md", "where to write the results table (\"\" for nowhere)")
	fs.StringVar(&o.goBench, "gobench", "", "file with `go test -bench` output to append to the results")
	fs.StringVar(&o.workParent, "workdir", os.TempDir(), "parent directory of the run's scratch directory")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory (logs, configurations)")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: few repetitions (numbers are not meaningful)")
	fs.IntVar(&o.startups, "startups", 10, "timed start-ups per agent (median reported)")
	fs.IntVar(&o.requests, "requests", 200, "requests per API endpoint")
	fs.IntVar(&o.beats, "heartbeats", 30, "heartbeats per CPU window")
	fs.IntVar(&o.windows, "windows", 3, "heartbeat CPU windows per agent (median reported)")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds of the in-process heartbeat build timing (median reported)")
	sizes := fs.String("scale", "1,10,50,200", "listener counts of the scale curve")
	fs.IntVar(&o.members, "members", 40, "members per listener (heartbeat and scale curve)")
	fs.IntVar(&o.hbListeners, "hb-listeners", 50, "listeners of the heartbeat CPU load balancer")
	fs.IntVar(&o.apiListeners, "api-listeners", 200, "listeners of the uploaded haproxy configuration")
	fs.IntVar(&o.apiMembers, "api-members", 4, "members per listener of the uploaded configuration")
	fs.IntVar(&o.promScrapes, "prom-scrapes", 30, "scrapes of each Prometheus proxy (0 skips the phase)")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "quiet time before a memory sample")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.ours == "" {
		return nil, errors.New("-agent is required")
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-scale: bad size %q", f)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.quick {
		o.startups, o.requests, o.beats, o.windows, o.rounds, o.promScrapes = 2, 20, 5, 1, 2, 5
		o.sizes = []int{1, 10}
		o.settle = time.Second
	}
	return o, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomUUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-8" + h[17:20] + "-" + h[20:32]
}

func run(ctx context.Context, args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: the agents run in private mount and network namespaces")
	}
	ours, err := filepath.Abs(o.ours)
	if err != nil {
		return err
	}
	for _, p := range []string{ours, o.reference, "/usr/sbin/haproxy", "/usr/bin/python3"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("missing %s (scripts/deps.sh bench installs the packages): %w", p, err)
		}
	}
	repo, err := testutil.ModuleRoot()
	if err != nil {
		return err
	}
	facts := gatherFacts(ctx, ours)
	progress("machine: %s", facts.oneLine())

	work, err := os.MkdirTemp(o.workParent, "abench-")
	if err != nil {
		return err
	}
	if o.keep {
		progress("scratch directory (kept): %s", work)
	} else {
		defer os.RemoveAll(work)
	}

	amphoraID, lbID, hbKey := randomUUID(), uuidN(kindLB, 1), randomHex(16)
	pki, err := testutil.NewPKI(filepath.Join(work, "pki"), amphoraID)
	if err != nil {
		return err
	}
	certPEM, err := lbCertificate()
	if err != nil {
		return err
	}

	// Configurations from Octavia's own templater.
	progress("rendering haproxy configurations with Octavia's templater")
	specs := map[string]testutil.RenderSpec{
		"api": lbSpec(amphoraID, lbID, baseDir, "198.51.100.10", o.apiListeners, o.apiMembers),
		"hb":  lbSpec(amphoraID, lbID, baseDir, "127.0.0.1", o.hbListeners, o.members),
	}
	if o.promScrapes > 0 {
		// the heartbeat's load balancer plus a PROMETHEUS listener
		spec := lbSpec(amphoraID, lbID, filepath.Join(work, "prom"), "127.0.0.1", o.hbListeners, o.members)
		spec.Listeners = append(spec.Listeners, testutil.RenderListener{
			ID: uuidN(kindListener, 999), Protocol: "PROMETHEUS", Port: 9100, ConnectionLimit: 20})
		specs["prom"] = spec
	}
	for _, n := range o.sizes {
		specs["scale"+strconv.Itoa(n)] = lbSpec(amphoraID, lbID, filepath.Join(work, "scale", strconv.Itoa(n)), "127.0.0.1", n, o.members)
	}
	cfgs, err := renderAll(ctx, specs)
	if err != nil {
		return err
	}
	scaleCfgs := map[int][]byte{}
	for _, n := range o.sizes {
		scaleCfgs[n] = cfgs["scale"+strconv.Itoa(n)]
	}
	progress("uploaded configuration: %d listeners x %d members, %d bytes", o.apiListeners, o.apiMembers, len(cfgs["api"]))

	// Sandboxes, sinks, agents.
	var sandboxes []*Sandbox
	defer func() {
		for _, sb := range sandboxes {
			sb.Close()
		}
	}()
	newSB := func(name string) (*Sandbox, error) {
		sb, err := NewSandbox(ctx, work, name)
		if err == nil {
			sandboxes = append(sandboxes, sb)
		}
		return sb, err
	}
	var agents []*Agent
	sinks := map[string]*Sink{}
	defer func() {
		for _, a := range agents {
			a.Stop()
		}
		for _, s := range sinks {
			s.Close()
		}
	}()
	for _, label := range []string{"reference", "ours"} {
		sb, err := newSB(label)
		if err != nil {
			return err
		}
		sink, err := newSink(hbKey)
		if err != nil {
			return err
		}
		sinks[label] = sink
		cmd := []string{o.reference}
		if label == "ours" {
			cmd = []string{ours}
		}
		a, err := setupAgent(label, cmd, sb, pki, amphoraID, hbKey, sink.Port())
		if err != nil {
			return err
		}
		agents = append(agents, a)
	}
	scaleSB, err := newSB("scale")
	if err != nil {
		return err
	}

	res := map[string]*side{"reference": {}, "ours": {}}

	progress("phase 1/5: start-up (%d timed runs each, after one warm-up run)", o.startups)
	if err := startupPhase(ctx, agents, res, 1, o.startups); err != nil {
		return err
	}

	progress("phase 2/5: memory and API latency (%d requests per endpoint, one keep-alive session)", o.requests)
	eps := []endpoint{
		{"GET /1.0/info", "GET", "/1.0/info", nil},
		{"GET /1.0/details", "GET", "/1.0/details", nil},
		{fmt.Sprintf("PUT haproxy config (%d listeners)", o.apiListeners), "PUT",
			"/1.0/loadbalancer/" + amphoraID + "/" + lbID + "/haproxy", cfgs["api"]},
		{"PUT LB certificate", "PUT", "/1.0/loadbalancer/" + lbID + "/certificates/" + uuidN(kindListener, 0) + ".pem", certPEM},
		{"GET /1.0/listeners", "GET", "/1.0/listeners", nil},
	}
	for _, a := range agents {
		if err := resetBase(a.SB); err != nil {
			return err
		}
		if err := apiPhase(ctx, a, res[a.Label], eps, o.requests, o.settle); err != nil {
			return err
		}
	}

	progress("phase 3/5: heartbeat CPU (%d x %d heartbeats at 1 s, %d listeners x %d members)", o.windows, o.beats, o.hbListeners, o.members)
	peer := haproxy.PeerName(amphoraID)
	for _, a := range agents {
		if err := heartbeatPhase(ctx, a, sinks[a.Label], res[a.Label], cfgs["hb"], lbID, peer, o.hbListeners, o.beats, o.windows); err != nil {
			return err
		}
	}

	progress("phase 4/5: heartbeat build scale curve (in-process, %d rounds of >= 1 s)", o.rounds)
	scale, err := scalePhase(ctx, scaleSB, work, repo, scaleCfgs, o.sizes, o.members, amphoraID, lbID, hbKey, o.rounds)
	if err != nil {
		return err
	}

	if o.promScrapes > 0 {
		progress("phase 5/5: Prometheus proxy scrapes (%d each, %d listeners x %d members + a PROMETHEUS listener)", o.promScrapes, o.hbListeners, o.members)
		if err := promPhase(ctx, scaleSB, work, repo, ours, cfgs["prom"], lbID, peer, o.promScrapes, res); err != nil {
			return err
		}
	}

	facts.finish()
	var goBench string
	if o.goBench != "" {
		data, err := os.ReadFile(o.goBench)
		if err != nil {
			return err
		}
		goBench = string(data)
	}
	rep := report{o: o, facts: facts, ref: res["reference"], ours: res["ours"], scale: scale, eps: eps,
		goBench: goBench, elapsed: time.Since(t0), uploadBytes: len(cfgs["api"]), certBytes: len(certPEM)}
	text := rep.markdown()
	fmt.Printf("%s\n\n%s", rep.headline(), rep.table())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			return err
		}
		progress("wrote %s", o.out)
	}
	return nil
}
