package heartbeat

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// Each source's vocabulary maps onto the heartbeat's in one place.
func TestAdapters(t *testing.T) {
	members := map[string]string{"m": "UP"}
	got := fromHAProxy(&haproxy.StatsReport{
		Listeners: map[string]haproxy.ListenerStats{"l": {Status: "OPEN", Bin: 1, Bout: 2, Scur: 3, Stot: 4, Ereq: 5}},
		Pools:     map[string]haproxy.PoolStatus{"p:l": {Status: "UP", Members: members}},
	})
	want := &Report{
		Listeners: map[string]Counters{"l": {Status: "OPEN", BytesIn: 1, BytesOut: 2, Current: 3, Total: 4, RequestErrors: 5}},
		Pools:     map[string]Pool{"p:l": {Status: "UP", Members: members}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("haproxy (-want +got):\n%s", d)
	}
	got = fromLVS(&keepalived.LVSReport{
		Listeners: map[string]keepalived.LVSListenerStats{"u": {Status: "OPEN", InBytes: 1, OutBytes: 2, ActiveConns: 3, Conns: 4}},
		Pools:     map[string]keepalived.LVSPool{"p": {Status: "DOWN", Members: members}},
	})
	want = &Report{
		Listeners: map[string]Counters{"u": {Status: "OPEN", BytesIn: 1, BytesOut: 2, Current: 3, Total: 4}},
		Pools:     map[string]Pool{"p": {Status: "DOWN", Members: members}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("LVS (-want +got):\n%s", d)
	}
	// The message's deltas and the counters file come from the report.
	last := counterValues{Bin: 1, Bout: 1, Ereq: 1, Stot: 1}
	c := Counters{Status: "OPEN", BytesIn: 11, BytesOut: 21, Current: 3, Total: 41, RequestErrors: 51}
	if d := cmp.Diff(Listener{Status: "OPEN", Stats: ListenerStats{TX: 20, RX: 10, Conns: 3, TotConns: 40, Ereq: 50}}, listenerEntry(c, last)); d != "" {
		t.Errorf("entry (-want +got):\n%s", d)
	}
	if d := cmp.Diff(counterValues{Bin: 11, Bout: 21, Ereq: 51, Stot: 41}, absolute(c)); d != "" {
		t.Errorf("recorded (-want +got):\n%s", d)
	}
}
