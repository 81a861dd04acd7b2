package heartbeat

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Size of the load balancer of BenchmarkBuild.
const (
	benchListeners = 50
	benchMembers   = 40
)

// BenchmarkBuild builds one complete heartbeat (stats socket query, CSV
// parse, derivation, deltas, JSON, zlib, HMAC) from a real haproxy serving
// 50 listeners of 40 members each. Sending is left out: it is one sendto.
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
	js, err := s.Build(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if n := strings.Count(string(js), `"totconns"`); n != listeners {
		b.Fatalf("%d listeners in the heartbeat, want %d", n, listeners)
	}
	var pkt []byte
	b.ReportAllocs()
	for b.Loop() {
		js, err = s.Build(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if pkt, err = Wrap(js, "bench-key"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(js)), "json-bytes")
	b.ReportMetric(float64(len(pkt)), "datagram-bytes")
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
	for l := range listeners {
		listener := fmt.Sprintf("8a1b2c3d-0000-4000-8000-%012d", l)
		pool := fmt.Sprintf("9a1b2c3d-0000-4000-8000-%012d:%s", l, listener)
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
			fmt.Fprintf(&b, "    server aaaaaaaa-%04d-4000-8000-%012d 127.0.0.1:%d%s\n", l, m, 1+m, opts)
		}
	}
	return b.String()
}
