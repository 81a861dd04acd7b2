package heartbeat

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Size of the load balancer of BenchmarkBuild.
const (
	benchListeners = 50
	benchMembers   = 40
)

// BenchmarkBuild builds one complete heartbeat (stats socket query, CSV
// parse, derivation, deltas, JSON, zlib, HMAC: Sender.Preview) from a
// real haproxy serving 50 listeners of 40 members each. Sending is left
// out: it is one sendto.
func BenchmarkBuild(b *testing.B) { benchmarkBuild(b, benchListeners, benchMembers) }

// benchmarkBuild runs BenchmarkBuild's heartbeat against a real haproxy
// serving scaleLBConfig(listeners, members).
func benchmarkBuild(b *testing.B, listeners, members int) {
	testutil.RequireBinary(b, "haproxy")
	dir := testutil.ShortDir(b, "hb")
	sock, cfg := filepath.Join(dir, "lb.sock"), filepath.Join(dir, "haproxy.cfg")
	writeFile(b, cfg, scaleLBConfig(dir, listeners, members))
	testutil.StartHAProxy(b, cfg, func(ctx context.Context) error {
		_, err := haproxy.NewStatsClient(sock).ShowInfo(ctx)
		return err
	})

	src := &testSource{lbs: []testLB{{ID: lbID, StatsSocket: sock}}}
	s, _, _ := newSender(b, newConfig(testutil.ShortDir(b, "hb"), "bench-key", "127.0.0.1:9"), src)
	ctx := context.Background()
	p, err := s.Preview(ctx)
	if err != nil {
		b.Fatal(err)
	}
	// Above the member ceiling (200 x 40) the message is reduced, every
	// listener kept.
	if n := strings.Count(string(p.JSON), `"totconns"`); n != listeners || p.Detail != DetailFull && listeners*members <= 2000 {
		b.Fatalf("%d listeners in the heartbeat (want %d), detail %v", n, listeners, p.Detail)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if p, err = s.Preview(ctx); err != nil {
			b.Fatal(err)
		}
		if len(p.LeftOut) > 0 {
			b.Fatalf("left out: %v", p.LeftOut)
		}
	}
	// The process's CPU time (all threads: GC included, waiting for
	// haproxy excluded) per build: steadier than wall time on a busy
	// machine, and what the agent costs the amphora.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(len(p.JSON)), "json-bytes")
	b.ReportMetric(float64(p.Datagram), "datagram-bytes")
}

// scaleLBConfig renders a haproxy configuration with the given number of
// HTTP frontends (bound to unix sockets, so no ports are needed) each with
// a backend of members servers, one in four disabled and one in four with
// weight 0, no health checks. maxconn stays unset: the fd hard limit here
// is 20000.
func scaleLBConfig(dir string, listeners, members int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    stats socket %s/lb.sock mode 0600 level user\n", dir)
	b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n")
	// Random ids, as the controller's are (sequential ones compress five
	// times better and make the heartbeat look cheaper than it is); a
	// fixed seed keeps runs comparable.
	rnd := rand.New(rand.NewPCG(uint64(listeners), uint64(members)))
	uuid := func() string {
		return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", rnd.Uint32(), rnd.Uint32()&0xffff,
			rnd.Uint32()&0xfff, rnd.Uint32()&0xfff, rnd.Uint64()&0xffffffffffff)
	}
	for l := range listeners {
		listener := uuid()
		pool := uuid() + ":" + listener
		fmt.Fprintf(&b, "frontend %s\n    bind unix@%s/f%d.sock\n    default_backend %s\n", listener, dir, l, pool)
		fmt.Fprintf(&b, "backend %s\n", pool)
		for m := range members {
			opts := ""
			switch m % 4 {
			case 1:
				opts = " disabled"
			case 2:
				opts = " weight 0"
			}
			fmt.Fprintf(&b, "    server %s 127.0.0.1:%d%s\n", uuid(), 1+m, opts)
		}
	}
	return b.String()
}

// cpuTime is the user+system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
