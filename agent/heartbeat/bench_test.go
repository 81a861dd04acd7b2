package heartbeat

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// Size of the load balancer of BenchmarkBuild.
const (
	benchListeners = 50
	benchMembers   = 40
)

// bigLBConfig renders a haproxy configuration with benchListeners HTTP
// frontends (on unix sockets, so no ports are needed) each with a backend
// of benchMembers servers in a mix of states. maxconn stays unset: the fd
// hard limit here is 20000.
func bigLBConfig(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    stats socket %s/lb.sock mode 0600 level user\n", dir)
	b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n")
	for l := range benchListeners {
		listener := fmt.Sprintf("8a1b2c3d-0000-4000-8000-%012d", l)
		pool := fmt.Sprintf("9a1b2c3d-0000-4000-8000-%012d:%s", l, listener)
		fmt.Fprintf(&b, "frontend %s\n    bind unix@%s/f%d.sock\n    default_backend %s\n", listener, dir, l, pool)
		fmt.Fprintf(&b, "backend %s\n", pool)
		for m := range benchMembers {
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

// BenchmarkBuild builds one complete heartbeat (stats socket query, CSV
// parse, derivation, deltas, JSON, zlib, HMAC) from a real haproxy serving
// 50 listeners of 40 members each. Sending is left out: it is one sendto.
func BenchmarkBuild(b *testing.B) {
	needHAProxy(b)
	dir := shortDir(b)
	f := &lbFixture{t: b, sock: filepath.Join(dir, "lb.sock"), cfgPath: filepath.Join(dir, "haproxy.cfg")}
	writeFile(b, f.cfgPath, bigLBConfig(dir))
	f.start()
	b.Cleanup(func() { f.stop() })

	src := &testSource{lbs: []LB{{ID: lbID, StatsSocket: f.sock}}}
	s, _, _ := newSender(b, newConfig(shortDir(b), "bench-key", "127.0.0.1:9"), src)
	ctx := context.Background()

	js, err := s.Build(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if n := strings.Count(string(js), `"totconns"`); n != benchListeners {
		b.Fatalf("%d listeners in the heartbeat, want %d", n, benchListeners)
	}
	var pkt []byte
	b.ReportAllocs()
	for b.Loop() {
		js, err := s.Build(ctx)
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
