package heartbeat

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// uuidGen makes random-looking UUIDs from a fixed seed: production ids
// are random, which is what makes heartbeats large (they do not
// compress), and a seed keeps the tests repeatable.
type uuidGen struct {
	r *rand.Rand // nil: sequential ids, counting from n
	n int
}

func newUUIDGen(seed uint64) *uuidGen {
	return &uuidGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *uuidGen) next() string {
	if g.r == nil {
		g.n++
		return fmt.Sprintf("8a1b2c3d-0000-4000-8000-%012d", g.n)
	}
	a, b := g.r.Uint64(), g.r.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", a>>32, a>>16&0xffff, a&0xfff, b>>48&0xfff, b&0xffffffffffff)
}

// bigMessage is a message of listeners listeners, each with a pool of
// members members: the first pool's members all UP, the others a mix of
// UP, "no check", MAINT, DRAIN and DOWN.
func bigMessage(g *uuidGen, listeners, members int) *Message {
	m := &Message{ID: g.next(), Seq: 3, Listeners: map[string]Listener{}, Pools: map[string]Pool{}}
	statuses := []string{"UP", "no check", "MAINT", "DRAIN", "UP", "DOWN", "UP 1/3"}
	for l := range listeners {
		lid := g.next()
		m.Listeners[lid] = Listener{Status: "OPEN", Stats: ListenerStats{TX: 1000, RX: 20, Conns: 1, TotConns: 3}}
		p := Pool{Status: "UP", Members: map[string]string{}}
		for i := range members {
			st := "UP"
			if l > 0 {
				st = statuses[i%len(statuses)]
			}
			p.Members[g.next()] = st
		}
		m.Pools[g.next()+":"+lid] = p
	}
	return m
}

// TestReduce pins what each Detail keeps.
func TestReduce(t *testing.T) {
	m := &Message{ID: "a", Listeners: map[string]Listener{"l1": {Status: "OPEN"}, "l2": {Status: "FULL"}}, Pools: map[string]Pool{
		"up:l1":    {Status: "UP", Members: map[string]string{"u1": "UP", "u2": "UP 2/3", "n": "no check", "x": "MAINT"}},
		"mixed:l2": {Status: "UP", Members: map[string]string{"u": "UP", "d": "DOWN", "r": "DRAIN", "n": "no check", "x": "MAINT"}},
	}}
	members := func(d Detail) map[string][]string {
		r := reduce(m, d)
		if d < DetailListeners && len(r.Pools) != 2 || !maps.EqualFunc(r.Listeners, m.Listeners, func(a, b Listener) bool { return a == b }) {
			t.Fatalf("%v: listeners or pools lost: %+v", d, r)
		}
		out := map[string][]string{}
		for id, p := range r.Pools {
			if p.Status != "UP" || p.Members == nil {
				t.Fatalf("%v: pool %s is %+v", d, id, p)
			}
			out[id] = append([]string{}, slices.Sorted(maps.Keys(p.Members))...)
		}
		return out
	}
	for _, tc := range []struct {
		d    Detail
		want map[string][]string
	}{
		{DetailFull, map[string][]string{"up:l1": {"n", "u1", "u2", "x"}, "mixed:l2": {"d", "n", "r", "u", "x"}}},
		{DetailFullBest, map[string][]string{"up:l1": {"n", "u1", "u2", "x"}, "mixed:l2": {"d", "n", "r", "u", "x"}}},
		{DetailImplied, map[string][]string{"up:l1": {"u1", "u2"}, "mixed:l2": {"d", "r", "u"}}},
		// "up:l1" has a MAINT and a "no check" member: not all UP.
		{DetailMixedPools, map[string][]string{"up:l1": {"u1", "u2"}, "mixed:l2": {"d", "r", "u"}}},
		{DetailNotUp, map[string][]string{"up:l1": {}, "mixed:l2": {"d", "r"}}},
		{DetailPoolStatus, map[string][]string{"up:l1": {}, "mixed:l2": {}}},
		{DetailListeners, map[string][]string{}},
	} {
		if d := cmp.Diff(tc.want, members(tc.d)); d != "" {
			t.Errorf("%v (-want +got):\n%s", tc.d, d)
		}
	}
	allUp := &Message{Listeners: m.Listeners, Pools: map[string]Pool{"p": {Status: "UP", Members: map[string]string{"a": "UP", "b": "UP 1/2"}}}}
	if got := reduce(allUp, DetailMixedPools).Pools["p"].Members; len(got) != 0 {
		t.Errorf("all-UP pool keeps %v at %v", got, DetailMixedPools)
	}
	if len(m.Pools["up:l1"].Members) != 4 {
		t.Error("reduce changed its input")
	}
}

// TestFitWalksTheOrder: for a limit equal to the datagram of each
// Detail, fit returns the first Detail whose datagram fits, and that
// datagram carries exactly the reduced message.
func TestFitWalksTheOrder(t *testing.T) {
	m := bigMessage(newUUIDGen(1), 20, 50)
	var e encoder
	size := map[Detail]int{}
	for d := DetailFull; d <= DetailListeners; d++ {
		pkt, err := e.seal(reduce(m, d).AppendJSON(nil), "k", d > DetailFull)
		if err != nil {
			t.Fatal(err)
		}
		size[d] = len(pkt)
	}
	t.Logf("datagram bytes per detail: %v", size)
	for d := DetailFull + 1; d <= DetailListeners; d++ {
		if size[d] >= size[d-1] {
			t.Fatalf("%v (%d bytes) is not smaller than %v (%d)", d, size[d], d-1, size[d-1])
		}
	}
	for d := DetailFull; d <= DetailListeners; d++ {
		f, err := e.fit(m, "k", size[d])
		if err != nil {
			t.Fatal(err)
		}
		if f.detail != d || !f.fits || len(f.pkt) > size[d] || f.fullJSON != len(m.AppendJSON(nil)) {
			t.Errorf("limit %d: detail %v (fits %v, %d bytes), want %v", size[d], f.detail, f.fits, len(f.pkt), d)
		}
		if got, want := inflate(t, f.pkt), string(reduce(m, d).AppendJSON(nil)); got != want {
			t.Errorf("%v: the datagram does not carry the reduced message", d)
		}
	}
	if f, _ := e.fit(m, "k", size[DetailListeners]-1); f.fits || f.detail != DetailListeners {
		t.Errorf("below the smallest: fits %v at %v", f.fits, f.detail)
	}
}

// TestBestGainBound checks the bound fit relies on to skip level 9: on
// heartbeats with random UUIDs and with sequential ones (the most
// compressible ids), level 9 never saves more than 1-1/bestGain of the
// fastest level's datagram. The ratios are printed.
func TestBestGainBound(t *testing.T) {
	var e encoder
	for _, c := range []struct {
		name string
		m    *Message
	}{
		{"random 50x40", bigMessage(newUUIDGen(5), 50, 40)},
		{"random 20x200", bigMessage(newUUIDGen(6), 20, 200)},
		{"sequential 50x40", bigMessage(&uuidGen{}, 50, 40)},
		{"sequential 200x40", bigMessage(&uuidGen{}, 200, 40)},
	} {
		js := c.m.AppendJSON(nil)
		fast, err := e.seal(js, "k", false)
		if err != nil {
			t.Fatal(err)
		}
		nFast := len(fast)
		best, err := e.seal(js, "k", true)
		if err != nil {
			t.Fatal(err)
		}
		ratio := float64(len(best)) / float64(nFast)
		t.Logf("%s: %d bytes of JSON, fastest %d, level 9 %d bytes (%.3f)", c.name, len(js), nFast, len(best), ratio)
		if ratio*bestGain < 1 {
			t.Errorf("%s: level 9 is %.3f of the fastest level, below 1/bestGain", c.name, ratio)
		}
	}
}

// TestControllerReadsReducedHeartbeats runs Octavia's own health driver
// (heartbeat_udp.UpdateHealthDb._process_pool_status, with its database
// writes captured) on each reduced message, against a database in the
// steady state the full heartbeats left: leaving out the implied members
// changes nothing the controller records; each later step changes only
// what its documentation says.
func TestControllerReadsReducedHeartbeats(t *testing.T) {
	testutil.RequireOctavia(t)
	m := &Message{Listeners: map[string]Listener{"l1": {Status: "OPEN"}, "l2": {Status: "OPEN"}}, Pools: map[string]Pool{
		"allup:l1": {Status: "UP", Members: map[string]string{"u1": "UP", "u2": "UP"}},
		"mixed:l2": {Status: "UP", Members: map[string]string{"u": "UP", "d": "DOWN", "r": "DRAIN", "n": "no check", "x": "MAINT"}},
	}}
	// The operating statuses full heartbeats leave in the database.
	db := map[string]map[string]string{
		"allup": {"u1": "ONLINE", "u2": "ONLINE"},
		"mixed": {"u": "ONLINE", "d": "ERROR", "r": "DRAINING", "n": "NO_MONITOR", "x": "OFFLINE"},
	}
	pools := map[string]string{"allup": "ONLINE", "mixed": "DEGRADED"}
	type verdict struct {
		Updates []string `json:"updates"` // "member <id> <new>" / "pool <id> <new>"
		LB      string   `json:"lb"`
	}
	const script = `
import json, sys, warnings
warnings.filterwarnings('ignore')
from octavia.amphorae.drivers.health import heartbeat_udp
req = json.load(sys.stdin)
u = heartbeat_udp.UpdateHealthDb()
out = []
for msg in req['messages']:
    updates = []
    u._update_status = lambda session, repo, etype, eid, new, old: updates.append('%s %s %s' % (etype, eid, new))
    pools = {k[:k.rfind(':')]: v for k, v in msg['pools'].items()}
    lb, processed, offline = 'ONLINE', [], {}
    for pid, members in sorted(req['db'].items()):
        db_pool = {'operating_status': req['pools'][pid],
                   'members': {m: {'operating_status': s} for m, s in members.items()}}
        lb = u._process_pool_status(None, pid, db_pool, pools, lb, processed, offline)
    for pid, st in sorted(offline.items()):
        if pid not in processed and st != 'OFFLINE':
            updates.append('pool %s OFFLINE' % pid)
    out.append({'updates': sorted(updates), 'lb': lb})
json.dump(out, sys.stdout)
`
	var msgs []json.RawMessage
	for d := DetailFull; d <= DetailListeners; d++ {
		msgs = append(msgs, reduce(m, d).AppendJSON(nil))
	}
	in, _ := json.Marshal(map[string]any{"messages": msgs, "db": db, "pools": pools})
	cmd := exec.Command(pythonBin, "-c", script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("octavia: %v: %s", err, out)
	}
	var got []verdict
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := []verdict{
		DetailFull:       {Updates: []string{}, LB: "DEGRADED"},
		DetailFullBest:   {Updates: []string{}, LB: "DEGRADED"},
		DetailImplied:    {Updates: []string{}, LB: "DEGRADED"},
		DetailMixedPools: {Updates: []string{"member u1 OFFLINE", "member u2 OFFLINE"}, LB: "DEGRADED"},
		DetailNotUp:      {Updates: []string{"member u OFFLINE", "member u1 OFFLINE", "member u2 OFFLINE"}, LB: "DEGRADED"},
		// Without the DOWN member the pool reads ONLINE.
		DetailPoolStatus: {Updates: []string{"member d OFFLINE", "member r OFFLINE", "member u OFFLINE", "member u1 OFFLINE", "member u2 OFFLINE", "pool mixed ONLINE"}, LB: "ONLINE"},
		DetailListeners:  {Updates: []string{"pool allup OFFLINE", "pool mixed OFFLINE"}, LB: "ONLINE"},
	}
	for i := range want {
		slices.Sort(want[i].Updates)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("what the controller records per Detail (-want +got):\n%s", d)
	}
}

// TestOversizeHeartbeatIsReduced: a heartbeat far above the datagram limit
// (20,000 members in one all-UP pool) is sent with that pool's members
// left out, every listener and pool kept, decoded by Octavia's own code;
// it is logged once and counted, and its counters recorded. One that
// cannot fit even with listeners only (4,000 listeners) is logged and not
// recorded.
func TestOversizeHeartbeatIsReduced(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	base := testutil.ShortDir(t, "hb")
	const udpListener, udpPool = "5a5a5a5a-0000-4000-8000-000000000001", "6b6b6b6b-0000-4000-8000-000000000001"
	g := newUUIDGen(2)
	big := map[string]string{}
	for range 20000 {
		big[g.next()] = "UP"
	}
	src := lbSource(f)
	src.lvs = true
	src.extra = &keepalived.LVSReport{
		Listeners: map[string]keepalived.LVSListenerStats{udpListener: {Status: "OPEN", Conns: 10}},
		Pools:     map[string]keepalived.LVSPool{udpPool: {Status: "UP", Members: big}},
	}
	s, _, logs := newSender(t, newConfig(base, "k", fmt.Sprintf("127.0.0.1:%d", rcv.port())), src)
	ctx := context.Background()
	s.tick(ctx)
	s.tick(ctx)
	for range 2 {
		pkt := rcv.next(t)
		if len(pkt) > MaxDatagram {
			t.Fatalf("datagram of %d bytes", len(pkt))
		}
		d := decodeWithOctavia(t, py, pkt, "k")
		if len(d.Listeners) != 3 || len(d.Pools) != 3 || d.Pools[udpPool].Status != "UP" || len(d.Pools[udpPool].Members) != 0 {
			t.Fatalf("reduced heartbeat: %d listeners, pools %v", len(d.Listeners), len(d.Pools))
		}
		// The fixture's pool with members down keeps them, "no check" and MAINT left out.
		if p := d.Pools[testutil.FixtureP1]; len(p.Members) != 3 {
			t.Errorf("pool %s: %+v, want its UP, DOWN and DRAIN members", testutil.FixtureP1, p)
		}
	}
	if n := logs.count("heartbeat too large for one datagram: sent with less detail"); n != 1 {
		t.Errorf("reduction logged %d times:\n%s", n, logs)
	}
	if st := s.Stats(); st.Degraded != 2 || st.Sent != 2 || st.LastDetail != DetailMixedPools {
		t.Errorf("stats %+v", st)
	}
	c, _ := loadCounters(filepath.Join(base, CountersFile))
	if c[udpListener].Stot != 10 {
		t.Errorf("counters of the reduced heartbeat not recorded: %+v", c[udpListener])
	}
	p, err := s.Preview(ctx)
	if err != nil || p.Detail != DetailMixedPools || !p.Fits || p.Datagram > MaxDatagram || p.FullJSON < 20000*40 {
		t.Errorf("preview: %+v, %v", p, err)
	}

	// 4,000 listeners: too large even alone.
	src.set(func(s *testSource) {
		for range 4000 {
			s.extra.Listeners[g.next()] = keepalived.LVSListenerStats{Status: "OPEN", Conns: 1}
		}
	})
	s.tick(ctx)
	s.tick(ctx)
	if n := logs.count("exceeds the UDP datagram limit even with listeners only"); n != 1 {
		t.Errorf("unsendable logged %d times:\n%s", n, logs)
	}
	if n := logs.count(`"heartbeat not sent"`); n != 1 || !strings.Contains(logs.String(), "message too long") {
		t.Errorf("send error logged %d times:\n%s", n, logs)
	}
	if st := s.Stats(); st.Unsendable != 2 || st.Sent != 2 {
		t.Errorf("stats %+v", st)
	}
	if c, _ := loadCounters(filepath.Join(base, CountersFile)); len(c) != 3 {
		t.Errorf("counters recorded for an unsent heartbeat: %d listeners", len(c))
	}
}

// TestMemberCeiling measures how many members (pools of 40, random
// UUIDs, all UP, one listener per pool) a heartbeat carries: in full, at
// the fastest and at the best compression, and with every listener's and
// pool's status. The figures are printed (README, reliability section);
// only their order is checked.
func TestMemberCeiling(t *testing.T) {
	const perPool = 40
	var e encoder
	fitsAt := func(m *Message, d Detail) bool {
		pkt, err := e.seal(reduce(m, d).AppendJSON(nil), "k", d > DetailFull)
		if err != nil {
			t.Fatal(err)
		}
		return len(pkt) <= MaxDatagram
	}
	ceiling := func(d Detail) int {
		lo, hi := 0, 4096 // pools
		for lo < hi {
			mid := (lo + hi + 1) / 2
			m := allUpMessage(newUUIDGen(3), mid, perPool)
			if fitsAt(m, d) {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		return lo
	}
	full, best, status := ceiling(DetailFull), ceiling(DetailFullBest), ceiling(DetailPoolStatus)
	t.Logf("FIGURE member ceiling (pools of %d, random UUIDs): %d members in full at the fastest compression, %d at level 9; "+
		"beyond that every listener and pool status still fits up to %d listeners", perPool, full*perPool, best*perPool, status)
	if !(full <= best && best*perPool < status*perPool*10) || full*perPool < 1000 {
		t.Errorf("ceilings out of order: full %d, best %d, status %d pools", full, best, status)
	}
}

// allUpMessage has pools listeners, each with one pool of members UP
// members.
func allUpMessage(g *uuidGen, pools, members int) *Message {
	m := &Message{ID: g.next(), Listeners: map[string]Listener{}, Pools: map[string]Pool{}}
	for range pools {
		lid := g.next()
		m.Listeners[lid] = Listener{Status: "OPEN"}
		p := Pool{Status: "UP", Members: map[string]string{}}
		for range members {
			p.Members[g.next()] = "UP"
		}
		m.Pools[g.next()+":"+lid] = p
	}
	return m
}
