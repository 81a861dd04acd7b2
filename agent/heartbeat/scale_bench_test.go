package heartbeat

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// scaleMembers is the pool size of every listener of BenchmarkBuildScale.
const scaleMembers = 40

// scaleLBConfig renders a haproxy configuration with the given number of
// HTTP frontends (bound to unix sockets: no ports needed) each with a
// backend of members servers, one in four disabled and one in four with
// weight 0, no health checks.
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

// BenchmarkBuildScale is BenchmarkBuild's heartbeat (stats query, parse,
// deltas, JSON, zlib, HMAC) for 1, 10, 50 and 200 listeners of 40
// members each, from a real haproxy: how the cost grows with the work.
// `make bench` puts these next to the reference agent's figures.
func BenchmarkBuildScale(b *testing.B) {
	needHAProxy(b)
	for _, listeners := range []int{1, 10, 50, 200} {
		b.Run(fmt.Sprintf("listeners=%d", listeners), func(b *testing.B) {
			dir := shortDir(b)
			f := &lbFixture{t: b, sock: filepath.Join(dir, "lb.sock"), cfgPath: filepath.Join(dir, "haproxy.cfg")}
			writeFile(b, f.cfgPath, scaleLBConfig(dir, listeners, scaleMembers))
			f.start()
			b.Cleanup(func() { f.stop() })

			src := &testSource{lbs: []LB{{ID: lbID, StatsSocket: f.sock}}}
			s, _, _ := newSender(b, newConfig(shortDir(b), "bench-key", "127.0.0.1:9"), src)
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
		})
	}
}
