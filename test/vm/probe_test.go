package vm

import (
	"testing"
	"time"
)

// TestProbeOutage: the outage is the longest stretch without an answer,
// a lone slow answer before it does not stretch it, and an outage that
// has not ended is reported as such.
func TestProbeOutage(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	p := &probe{}
	add := func(ms int, ok bool) { p.samples = append(p.samples, sample{at: at(ms), ok: ok}) }
	for ms := 0; ms < 1000; ms += 100 {
		add(ms, true)
	}
	add(1000, false) // a lone timeout
	add(2000, true)
	for ms := 2100; ms < 5000; ms += 100 {
		add(ms, true)
	}
	if d, n, _ := p.outage(at(500)); d != 1100*time.Millisecond || n != 1 {
		t.Errorf("lone failure: %v, %d", d, n)
	}
	for ms := 5000; ms < 9000; ms += 500 {
		add(ms, false)
	}
	if d, n, _ := p.outage(at(500)); d != -1 || n != 8 {
		t.Errorf("ongoing outage: %v, %d", d, n)
	}
	add(9000, true)
	d, n, end := p.outage(at(500))
	if d != 4100*time.Millisecond || n != 8 || !end.Equal(at(9000)) {
		t.Errorf("outage %v, %d failed, ended %v; want 4.1s, 8, +9s", d, n, end.Sub(base))
	}
	// Failures before t0 do not count.
	if d, n, _ := p.outage(at(9500)); d != 0 || n != 0 {
		t.Errorf("from after the outage: %v, %d; want 0, 0", d, n)
	}
}
