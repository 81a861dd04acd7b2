package heartbeat

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/keepalived"
)

func lbSource(f *lbFixture) *testSource {
	return &testSource{lbs: []testLB{{ID: lbID, StatsSocket: f.sock}}}
}

func pools(d *decoded) map[string]map[string]string {
	out := map[string]map[string]string{}
	for id, p := range d.Pools {
		out[id] = p.Members
	}
	return out
}

// TestHeartbeatsFromRealHAProxy: messages built from a real haproxy, sent
// over UDP to IPv4 and IPv6 receivers in turn, decoded by Octavia.
func TestHeartbeatsFromRealHAProxy(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	r4, r6 := newReceiver(t, "127.0.0.1:0"), newReceiver(t, "[::1]:0")
	cfg := newConfig(testutil.ShortDir(t, "hb"), "secret-1",
		fmt.Sprintf("127.0.0.1:%d", r4.port()), fmt.Sprintf("[::1]:%d", r6.port()))
	s, _, _ := newSender(t, cfg, lbSource(f))
	ctx := context.Background()

	var seqs []uint64
	for i := range 4 {
		s.tick(ctx)
		r := r4
		if i%2 == 1 {
			r = r6 // round robin
		}
		pkt := r.next(t)
		d := decodeWithOctavia(t, py, pkt, "secret-1")
		if d.Ver != 3 || d.ID == nil || *d.ID != amphoraID {
			t.Errorf("ver %d id %v", d.Ver, d.ID)
		}
		seqs = append(seqs, d.Seq)
		if d := cmp.Diff(testutil.FixtureMembers(), pools(d)); d != "" {
			t.Errorf("pools (-want +got):\n%s", d)
		}
		for id, p := range d.Pools {
			if p.Status != "UP" {
				t.Errorf("pool %s status %q", id, p.Status)
			}
		}
		if len(d.Listeners) != 2 || d.Listeners[l1].Status != "OPEN" || d.Listeners[l2].Status != "OPEN" {
			t.Errorf("listeners %+v (the prometheus frontend must not appear)", d.Listeners)
		}
		if _, _, err := py.Unwrap(t, pkt, "secret-2"); err == nil {
			t.Error("datagram accepted with a wrong key")
		}
	}
	if d := cmp.Diff([]uint64{0, 1, 2, 3}, seqs); d != "" {
		t.Errorf("seq (-want +got):\n%s", d)
	}
	if extra := append(r4.pending(), r6.pending()...); len(extra) != 0 {
		t.Errorf("%d unexpected datagrams", len(extra))
	}
}

// TestStatisticsDeltas: traffic through haproxy is reported once, as
// deltas, across heartbeats, a sender restart and a haproxy restart.
func TestStatisticsDeltas(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	base := testutil.ShortDir(t, "hb")
	cfg := newConfig(base, "k", fmt.Sprintf("127.0.0.1:%d", rcv.port()))
	src := lbSource(f)
	ctx := context.Background()
	beat := func(s *Sender) *decoded {
		t.Helper()
		s.tick(ctx)
		return decodeWithOctavia(t, py, rcv.next(t), "k")
	}
	type stats struct{ TX, RX, Conns, TotConns, Ereq int64 }
	statsOf := func(d *decoded, id string) stats {
		s := d.Listeners[id].Stats
		return stats{s.TX, s.RX, s.Conns, s.TotConns, s.Ereq}
	}
	readCounters := func() counterSet {
		t.Helper()
		c, err := loadCounters(filepath.Join(base, CountersFile))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	s1, _, _ := newSender(t, cfg, src)
	first := beat(s1) // no counters yet: deltas are the absolute values (health checks only)
	if got := statsOf(first, l2); got != (stats{}) {
		t.Errorf("first heartbeat, idle TCP listener: %+v", got)
	}

	// 1. N requests through the TCP listener: raw bytes, exact.
	const n = 12
	sent, recv := traffic(t, f.fe2, n)
	abs := f.waitStot(t, l2, n)
	if got, want := statsOf(beat(s1), l2), (stats{TX: recv, RX: sent, TotConns: n}); got != want {
		t.Errorf("after %d requests: %+v, want %+v", n, got, want)
	}
	if got := readCounters()[l2]; got != (counterValues{Bin: abs.Bin, Bout: abs.Bout, Ereq: abs.Ereq, Stot: abs.Stot}) {
		t.Errorf("counters file holds %+v, haproxy says %+v", got, abs)
	}
	// HTTP listener: haproxy counts HTTP bytes in its internal form, so the
	// deltas are checked against haproxy's own counters.
	before := f.waitStot(t, l1, readCounters()[l1].Stot)
	traffic(t, f.fe1, 5)
	after := f.waitStot(t, l1, before.Stot+5)
	if got, want := statsOf(beat(s1), l1), (stats{TX: after.Bout - before.Bout, RX: after.Bin - before.Bin, TotConns: 5}); got != want {
		t.Errorf("HTTP listener after 5 requests: %+v, want %+v", got, want)
	}
	if got := statsOf(beat(s1), l2); got != (stats{}) {
		t.Errorf("no traffic since the last heartbeat: %+v", got)
	}

	// 2. The agent restarts: a new sender on the same counters file.
	s2, _, _ := newSender(t, cfg, src)
	if got := statsOf(beat(s2), l2); got != (stats{}) {
		t.Errorf("after a sender restart, traffic counted again: %+v", got)
	}
	sent, recv = traffic(t, f.fe2, 3)
	f.waitStot(t, l2, n+3)
	if got, want := statsOf(beat(s2), l2), (stats{TX: recv, RX: sent, TotConns: 3}); got != want {
		t.Errorf("restarted sender, 3 requests: %+v, want %+v", got, want)
	}

	// 3. haproxy restarts: its counters start again below the recorded
	// values, and what it counted since is reported.
	f.restart()
	sent, recv = traffic(t, f.fe2, 2)
	f.waitStot(t, l2, 2)
	if got, want := statsOf(beat(s2), l2), (stats{TX: recv, RX: sent, TotConns: 2}); got != want {
		t.Errorf("after a haproxy restart: %+v, want %+v", got, want)
	}

	// 4. A held connection is an absolute value, not a delta.
	conn, err := net.Dial("tcp", f.fe2)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		r, err := haproxy.NewStatsClient(f.sock).Report(ctx)
		return err == nil && r.Listeners[l2].Scur == 1, fmt.Sprint(err)
	})
	for range 2 {
		if got := statsOf(beat(s2), l2); got.Conns != 1 {
			t.Errorf("conns = %d with one open connection", got.Conns)
		}
	}
}

// TestCountersPruning: listeners that disappear are forgotten, except when
// their load balancer's statistics could not be read.
func TestCountersPruning(t *testing.T) {
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	base := testutil.ShortDir(t, "hb")
	const gone = "8a1b2c3d-0000-4000-8000-0000000000ff"
	// The counters of a previous agent: one listener of another LB.
	if err := os.WriteFile(filepath.Join(base, CountersFile),
		[]byte(`{"`+gone+`": {"bin": 1, "bout": 2, "ereq": 3, "stot": 4}}`), 0o640); err != nil {
		t.Fatal(err)
	}
	src := lbSource(f)
	broken := testLB{ID: "3c3c3c3c-0000-4000-8000-000000000002", StatsSocket: filepath.Join(base, "none.sock")}
	src.lbs = append(src.lbs, broken)
	s, _, logs := newSender(t, newConfig(base, "k", fmt.Sprintf("127.0.0.1:%d", rcv.port())), src)
	ctx := context.Background()

	for range 3 {
		s.tick(ctx)
		js := inflate(t, rcv.next(t))
		if !strings.Contains(js, l1) || !strings.Contains(js, l2) {
			t.Fatalf("heartbeat without the working LB's listeners: %s", js)
		}
	}
	c, _ := loadCounters(filepath.Join(base, CountersFile))
	if _, ok := c[gone]; !ok || len(c) != 3 {
		t.Errorf("with an LB failing, its previous counters must be kept: %v", c)
	}
	if n := logs.count("haproxy statistics unavailable"); n != 1 {
		t.Errorf("failing LB logged %d times in 3 heartbeats, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "lb_id="+broken.ID) {
		t.Errorf("failing LB not logged as an error with its lb_id:\n%s", logs)
	}

	src.set(func(s *testSource) { s.lbs = s.lbs[:1] }) // the broken LB was deleted
	s.tick(ctx)
	rcv.next(t)
	c, _ = loadCounters(filepath.Join(base, CountersFile))
	if d := cmp.Diff([]string{l1, l2}, sortedKeys(c)); d != "" {
		t.Errorf("counters after pruning (-want +got):\n%s", d)
	}
	if fi, err := os.Stat(filepath.Join(base, CountersFile)); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("counters file mode: %v %v", fi.Mode(), err)
	}
}

func sortedKeys(c counterSet) []string { return slices.Sorted(maps.Keys(c)) }

// TestConfigChangeAppliesToNextHeartbeat: PUT /1.0/config swaps key,
// destinations and interval; the very next heartbeat uses them, without
// waiting for the old interval (B7).
func TestConfigChangeAppliesToNextHeartbeat(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	ra, rb := newReceiver(t, "127.0.0.1:0"), newReceiver(t, "[::1]:0")
	cfg := newConfig(testutil.ShortDir(t, "hb"), "old-key", fmt.Sprintf("127.0.0.1:%d", ra.port()))
	s, store, _ := newSender(t, cfg, lbSource(f))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	d := decodeWithOctavia(t, py, ra.next(t), "old-key") // sent at start
	if d.Seq != 0 {
		t.Errorf("first seq %d", d.Seq)
	}
	// The interval is an hour: only the config change can trigger the next.
	next := cfg.Clone()
	next.HeartbeatKey = "new-key"
	next.ControllerIPPortList = []string{fmt.Sprintf("::1:%d", rb.port())} // bare IPv6 form
	next.HeartbeatInterval = 200 * time.Millisecond
	t0 := time.Now()
	store.Update(next)
	pkt := rb.next(t)
	if time.Since(t0) > 5*time.Second {
		t.Errorf("next heartbeat took %v", time.Since(t0))
	}
	if _, _, err := py.Unwrap(t, pkt, "old-key"); err == nil {
		t.Error("heartbeat after the change still signed with the old key")
	}
	if d := decodeWithOctavia(t, py, pkt, "new-key"); d.Seq != 1 {
		t.Errorf("seq %d, want 1", d.Seq)
	}
	// And the new interval keeps them coming.
	for want := uint64(2); want < 4; want++ {
		if d := decodeWithOctavia(t, py, rb.next(t), "new-key"); d.Seq != want {
			t.Errorf("seq %d, want %d", d.Seq, want)
		}
	}
	if n := len(ra.pending()); n != 0 {
		t.Errorf("%d heartbeats still went to the old destination", n)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestBadControllerEntries: malformed, unresolvable and unreachable
// entries never stop heartbeats to the good ones (E3), and each problem is
// logged once, not every heartbeat.
func TestBadControllerEntries(t *testing.T) {
	f := startLB(t)
	r4, r6 := newReceiver(t, "127.0.0.1:0"), newReceiver(t, "[::1]:0")
	closed := newReceiver(t, "127.0.0.1:0") // listens, then closed: nobody receives
	closedPort := closed.port()
	closed.conn.Close()
	entries := []string{
		"no-colon",
		"nope.invalid:5555", // not in /etc/hosts; the test resolver has no DNS
		fmt.Sprintf("127.0.0.1:%d", closedPort),
		fmt.Sprintf("[::1]:%d", r6.port()),
		fmt.Sprintf("localhost:%d", r4.port()), // resolved from /etc/hosts
		"[::1]:notaport",
	}
	s, _, logs := newSender(t, newConfig(testutil.ShortDir(t, "hb"), "k", entries...), lbSource(f))
	ctx := context.Background()
	for range 9 { // 3 usable entries, 3 rounds
		s.tick(ctx)
	}
	if got := len(r6.pendingWait(t, 3)); got != 3 {
		t.Errorf("IPv6 controller got %d heartbeats, want 3", got)
	}
	if got := len(r4.pendingWait(t, 3)); got != 3 {
		t.Errorf("controller by host name got %d heartbeats, want 3", got)
	}
	for _, e := range []string{"no-colon", "nope.invalid:5555", "[::1]:notaport"} {
		if n := logs.count(`"controller address skipped" dest=` + e); n != 1 {
			t.Errorf("bad entry %s logged %d times, want 1:\n%s", e, n, logs)
		}
	}
	// All entries bad: nothing sent, logged once, the loop goes on.
	s2, _, logs2 := newSender(t, newConfig(testutil.ShortDir(t, "hb"), "k", "no-colon"), lbSource(f))
	for range 3 {
		s2.tick(ctx)
	}
	if n := logs2.count("no usable controller address"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, logs2)
	}
	s3, _, logs3 := newSender(t, newConfig(testutil.ShortDir(t, "hb"), "k"), lbSource(f))
	s3.tick(ctx)
	if n := logs3.count("controller_ip_port_list is empty"); n != 1 {
		t.Errorf("empty list logged %d times:\n%s", n, logs3)
	}
}

// pendingWait returns the datagrams received, waiting for up to want.
func (r *receiver) pendingWait(t testing.TB, want int) [][]byte {
	t.Helper()
	var got [][]byte
	deadline := time.After(5 * time.Second)
	for len(got) < want {
		select {
		case b := <-r.ch:
			got = append(got, b)
		case <-deadline:
			return got
		}
	}
	return append(got, r.pending()...)
}

// TestNoKeyNoHeartbeat: without heartbeat_key nothing is built or sent
// (the reference signs with "None"), logged once (E2).
func TestNoKeyNoHeartbeat(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	cfg := newConfig(testutil.ShortDir(t, "hb"), "", fmt.Sprintf("127.0.0.1:%d", rcv.port()))
	s, store, logs := newSender(t, cfg, lbSource(f))
	ctx := context.Background()
	for range 3 {
		s.tick(ctx)
	}
	if n := logs.count("heartbeat_key is not set"); n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs)
	}
	withKey := cfg.Clone()
	withKey.HeartbeatKey, withKey.HeartbeatKeySet = "k", true
	store.Update(withKey)
	s.tick(ctx)
	// The first datagram ever received is this one, and no seq was spent.
	if d := decodeWithOctavia(t, py, rcv.next(t), "k"); d.Seq != 0 {
		t.Errorf("seq %d, want 0", d.Seq)
	}
	if n := logs.count("heartbeat_key is set"); n != 1 {
		t.Errorf("recovery logged %d times:\n%s", n, logs)
	}
}

// TestKeepalivedGateSuppresses: a gated amphora sends nothing; the state
// is logged once per change, not every heartbeat.
func TestKeepalivedGateSuppresses(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	src := lbSource(f)
	src.skip, src.reason = true, "keepalived pid file /x is missing"
	s, _, logs := newSender(t, newConfig(testutil.ShortDir(t, "hb"), "k", fmt.Sprintf("127.0.0.1:%d", rcv.port())), src)
	ctx := context.Background()
	for range 3 {
		s.tick(ctx)
	}
	src.set(func(s *testSource) { s.reason = "keepalived (pid 7) is not running" })
	for range 3 {
		s.tick(ctx)
	}
	if n := logs.count("heartbeats suppressed"); n != 2 {
		t.Errorf("gate logged %d times for 2 states over 6 heartbeats:\n%s", n, logs)
	}
	src.set(func(s *testSource) { s.skip, s.reason = false, "" })
	s.tick(ctx)
	s.tick(ctx)
	if d := decodeWithOctavia(t, py, rcv.next(t), "k"); d.Seq != 0 {
		t.Errorf("first heartbeat after the gate: seq %d, want 0", d.Seq)
	}
	if n := logs.count("heartbeats resumed"); n != 1 {
		t.Errorf("resume logged %d times:\n%s", n, logs)
	}
}

// TestLVSSourceAndOversize: the LVS listeners add listeners (as deltas) and
// pools; a heartbeat too large for UDP is reported, and the send error too.
func TestLVSSourceAndOversize(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	base := testutil.ShortDir(t, "hb")
	const udpListener, udpPool = "5a5a5a5a-0000-4000-8000-000000000001", "6b6b6b6b-0000-4000-8000-000000000001"
	src := lbSource(f)
	src.lvs = true
	src.extra = &keepalived.LVSReport{
		Listeners: map[string]keepalived.LVSListenerStats{udpListener: {Status: "OPEN", InBytes: 100, OutBytes: 50, ActiveConns: 2, Conns: 10}},
		Pools:     map[string]keepalived.LVSPool{udpPool: {Status: "UP", Members: map[string]string{"m": "no check"}}},
	}
	s, _, logs := newSender(t, newConfig(base, "k", fmt.Sprintf("127.0.0.1:%d", rcv.port())), src)
	ctx := context.Background()

	s.tick(ctx)
	d := decodeWithOctavia(t, py, rcv.next(t), "k")
	if st := d.Listeners[udpListener].Stats; st.RX != 100 || st.TX != 50 || st.Conns != 2 || st.TotConns != 10 {
		t.Errorf("LVS listener: %+v", d.Listeners[udpListener])
	}
	if d.Pools[udpPool].Members["m"] != "no check" || len(d.Listeners) != 3 {
		t.Errorf("pools %+v listeners %d", d.Pools, len(d.Listeners))
	}
	src.set(func(s *testSource) {
		s.extra.Listeners[udpListener] = keepalived.LVSListenerStats{Status: "OPEN", InBytes: 130, OutBytes: 50, ActiveConns: 0, Conns: 11}
	})
	s.tick(ctx)
	d = decodeWithOctavia(t, py, rcv.next(t), "k")
	if st := d.Listeners[udpListener].Stats; st.RX != 30 || st.TX != 0 || st.TotConns != 1 {
		t.Errorf("LVS listener deltas: %+v", st)
	}

	// The LVS statistics fail: the haproxy part is still sent.
	src.set(func(s *testSource) { s.extraErr = fmt.Errorf("ipvsadm: exit status 2") })
	s.tick(ctx)
	d = decodeWithOctavia(t, py, rcv.next(t), "k")
	if _, ok := d.Listeners[udpListener]; ok || len(d.Listeners) != 2 {
		t.Errorf("listeners with a failing hook: %v", d.Listeners)
	}

	// 20000 members with incompressible ids: far above 64 KiB.
	big := map[string]string{}
	for i := range 20000 {
		big[fmt.Sprintf("%08x-%x", i*2654435761, i*40503)] = "UP"
	}
	src.set(func(s *testSource) {
		s.extraErr = nil
		s.extra.Pools[udpPool] = keepalived.LVSPool{Status: "UP", Members: big}
	})
	s.tick(ctx)
	s.tick(ctx)
	if n := logs.count("heartbeat exceeds the UDP datagram limit"); n != 1 {
		t.Errorf("size warning logged %d times:\n%s", n, logs)
	}
	if n := logs.count(`"heartbeat not sent"`); n != 1 || !strings.Contains(logs.String(), "message too long") {
		t.Errorf("send error logged %d times:\n%s", n, logs)
	}
	// Counters were not recorded for the unsent heartbeats.
	c, _ := loadCounters(filepath.Join(base, CountersFile))
	if c[udpListener].Stot != 11 {
		t.Errorf("counters after unsent heartbeats: %+v", c[udpListener])
	}
}

// TestBuild: the debug view neither spends a seq nor records counters.
func TestBuild(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	base := testutil.ShortDir(t, "hb")
	s, _, _ := newSender(t, newConfig(base, "k", fmt.Sprintf("127.0.0.1:%d", rcv.port())), lbSource(f))
	ctx := context.Background()
	traffic(t, f.fe2, 2)
	f.waitStot(t, l2, 2)
	js, err := s.Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var built decoded
	if err := json.Unmarshal(js, &built); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	if built.Seq != 0 || built.Listeners[l2].Stats.TotConns != 2 {
		t.Errorf("built %s", js)
	}
	if _, err := os.Stat(filepath.Join(base, CountersFile)); !os.IsNotExist(err) {
		t.Errorf("Build wrote the counters file: %v", err)
	}
	s.tick(ctx)
	sent := decodeWithOctavia(t, py, rcv.next(t), "k")
	if sent.Seq != 0 || sent.Listeners[l2].Stats.TotConns != 2 {
		t.Errorf("heartbeat after Build: %+v", sent)
	}
}
