package heartbeat

import (
	"fmt"
	"testing"
)

// scaleMembers is the pool size of every listener of BenchmarkBuildScale.
const scaleMembers = 40

// BenchmarkBuildScale is BenchmarkBuild's heartbeat (stats query, parse,
// deltas, JSON, zlib, HMAC) for 1, 10, 50 and 200 listeners of 40
// members each, from a real haproxy: how the cost grows with the work.
// `make bench` puts these next to the reference agent's figures.
func BenchmarkBuildScale(b *testing.B) {
	for _, listeners := range []int{1, 10, 50, 200} {
		b.Run(fmt.Sprintf("listeners=%d", listeners), func(b *testing.B) {
			benchmarkBuild(b, listeners, scaleMembers)
		})
	}
}
