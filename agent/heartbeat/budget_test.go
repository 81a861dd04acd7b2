package heartbeat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// smallLB runs a real haproxy with two listeners named <name>-l0/-l1 and
// returns its stats socket and pid.
func smallLB(t *testing.T, name string) (sock string, pid int) {
	t.Helper()
	dir := testutil.ShortDir(t, "hb")
	sock = filepath.Join(dir, "lb.sock")
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    stats socket %s mode 0600 level user\n", sock)
	b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n")
	for l := range 2 {
		fmt.Fprintf(&b, "frontend %s-l%d\n    bind unix@%s/f%d.sock\n    default_backend %s-p%d:%s-l%d\n", name, l, dir, l, name, l, name, l)
		fmt.Fprintf(&b, "backend %s-p%d:%s-l%d\n    server %s-m%d 127.0.0.1:9\n", name, l, name, l, name, l)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, cfg, b.String())
	h := testutil.StartHAProxy(t, cfg, func(ctx context.Context) error {
		_, err := haproxy.NewStatsClient(sock).ShowInfo(ctx)
		return err
	})
	return sock, h.PID()
}

// timedReceiver records when each heartbeat arrives.
type timedReceiver struct {
	conn net.PacketConn
	mu   sync.Mutex // guards the following
	at   []time.Time
	pkts [][]byte
}

func newTimedReceiver(t *testing.T) *timedReceiver {
	r := &timedReceiver{}
	r.conn = testutil.ListenUDP(t, "udp", "127.0.0.1:0", func(pkt []byte) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.at = append(r.at, time.Now())
		r.pkts = append(r.pkts, pkt)
	})
	return r
}

func (r *timedReceiver) take() ([]time.Time, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, pkts := r.at, r.pkts
	r.at, r.pkts = nil, nil
	return at, pkts
}

// TestHungHAProxyKeepsThePeriod (issue 13, defect 5): three load
// balancers, two of their haproxies hung (SIGSTOP). Before, the stats
// sockets were read one after the other with 5 s timeouts each, which
// stretched a 1 s period to 11 s. Now every heartbeat still leaves on
// time with the listeners of the load balancer that answers; each hung
// one is left out of each heartbeat, logged once and counted; once it
// resumes its listeners are back. The gaps are printed; the only bound
// checked is the one the defect broke: the socket timeout (set to a
// minute here, so a sender waiting for it could not pass on any
// machine) never shows in a gap.
func TestHungHAProxyKeepsThePeriod(t *testing.T) {
	py := testutil.NewOctaviaDecoder(t)
	src := &testSource{}
	pids := map[string]int{}
	for _, name := range []string{"a", "b", "c"} {
		sock, pid := smallLB(t, name)
		src.lbs = append(src.lbs, testLB{ID: "lb-" + name, StatsSocket: sock})
		pids[name] = pid
	}
	rcv := newTimedReceiver(t)
	const interval = time.Second
	cfg := newConfig(testutil.ShortDir(t, "hb"), "k", fmt.Sprintf("127.0.0.1:%d", rcv.conn.LocalAddr().(*net.UDPAddr).Port))
	cfg.HeartbeatInterval = interval
	s, _, logs := newSender(t, cfg, src)
	s.QueryTimeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	listeners := func(pkt []byte) []string {
		return slices.Sorted(func(yield func(string) bool) {
			for id := range decodeWithOctavia(t, py, pkt, "k").Listeners {
				if !yield(id) {
					return
				}
			}
		})
	}
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		_, pkts := rcv.take()
		return len(pkts) > 0 && len(listeners(pkts[len(pkts)-1])) == 6, "all six listeners reported"
	})

	for _, name := range []string{"b", "c"} {
		if err := syscall.Kill(pids[name], syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(pids[name], syscall.SIGCONT)
	}
	rcv.take()
	var at []time.Time
	var pkts [][]byte
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		a, p := rcv.take()
		at, pkts = append(at, a...), append(pkts, p...)
		return len(pkts) >= 6, fmt.Sprintf("6 heartbeats with two hung haproxies (%d so far)", len(pkts))
	})
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]).Round(time.Millisecond))
	}
	t.Logf("FIGURE heartbeat gaps with 2 of 3 haproxies hung (interval %v, budget %v, socket timeout %v): %v",
		interval, interval*3/4, s.QueryTimeout, gaps)
	if worst := slices.Max(gaps); worst >= s.QueryTimeout {
		t.Errorf("a gap of %v between heartbeats: the sender waited for a hung socket", worst)
	}
	for _, pkt := range pkts[1:] { // the first may have been built before the stop
		if got := listeners(pkt); !slices.Equal(got, []string{"a-l0", "a-l1"}) {
			t.Errorf("listeners with b and c hung: %v", got)
		}
	}
	for _, id := range []string{"lb-b", "lb-c"} {
		if n := logs.count(`haproxy statistics unavailable: load balancer left out of the heartbeat, the controller will count its listeners as missing" lb_id=` + id); n != 1 {
			t.Errorf("%s logged %d times:\n%s", id, n, logs)
		}
	}
	if st := s.Stats(); st.LBFailures < uint64(2*(len(pkts)-1)) {
		t.Errorf("stats %+v after %d heartbeats", st, len(pkts))
	}

	for _, name := range []string{"b", "c"} {
		syscall.Kill(pids[name], syscall.SIGCONT)
	}
	testutil.WaitFor(t, 10*time.Second, func() (bool, string) {
		_, pkts := rcv.take()
		return len(pkts) > 0 && len(listeners(pkts[len(pkts)-1])) == 6, "all six listeners back"
	})
	if n := logs.count("haproxy statistics available again"); n != 2 {
		t.Errorf("recovery logged %d times:\n%s", n, logs)
	}
}

// hangingSource is a load balancer source whose listing ignores its
// context and blocks until released: the worst a service manager call
// could do.
type hangingSource struct {
	*testSource
	release chan struct{}
	calls   chan struct{}
}

func (h *hangingSource) RunningLoadBalancers(ctx context.Context) []string {
	h.calls <- struct{}{}
	<-h.release
	return h.testSource.RunningLoadBalancers(ctx)
}

// TestHungSourceKeepsThePeriod: a source that ignores the deadline (a
// listing blocked in a call without one) does not hold the heartbeat: it
// leaves on time without that source's listeners, the source is not
// started again while it still runs, and its listeners return when it
// does.
func TestHungSourceKeepsThePeriod(t *testing.T) {
	f := startLB(t)
	rcv := newReceiver(t, "127.0.0.1:0")
	h := &hangingSource{testSource: lbSource(f), release: make(chan struct{}), calls: make(chan struct{}, 10)}
	cfg := newConfig(testutil.ShortDir(t, "hb"), "k", fmt.Sprintf("127.0.0.1:%d", rcv.port()))
	cfg.HeartbeatInterval = 400 * time.Millisecond
	s, _, logs := newSender(t, cfg, h.testSource)
	s.src.LoadBalancers = h
	ctx := context.Background()

	t0 := time.Now()
	s.tick(ctx) // the listing hangs: sent without its listeners
	took := time.Since(t0)
	if m := inflate(t, rcv.next(t)); !strings.Contains(m, `"listeners": {}`) {
		t.Errorf("heartbeat with a hung source: %s", m)
	}
	s.tick(ctx) // still hung: not called again
	rcv.next(t)
	if n := len(h.calls); n != 1 {
		t.Errorf("the hung source was called %d times", n)
	}
	// The source never returns by itself: a heartbeat that waited for it
	// would not return at all.
	t.Logf("heartbeat with a hung source took %v (interval %v)", took, cfg.HeartbeatInterval)
	if n := logs.count("did not answer within the heartbeat's budget"); n != 1 {
		t.Errorf("late source logged %d times:\n%s", n, logs)
	}
	if n := logs.count("still busy with an earlier heartbeat"); n != 1 {
		t.Errorf("busy source logged %d times:\n%s", n, logs)
	}
	close(h.release)
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		s.tick(ctx)
		m := inflate(t, rcv.next(t))
		return strings.Contains(m, l2), "listeners back: " + m
	})
}

// dnsServer answers A/AAAA queries for one name on a loopback UDP port:
// a real resolver (Go's, over the network) against a DNS server the test
// controls, since the machine's own DNS cannot be told to fail and
// recover.
type dnsServer struct {
	conn net.PacketConn
	mu   sync.Mutex // guards the following
	name string
	addr netip.Addr // invalid: SERVFAIL
	mute bool       // no answer at all
}

func startDNS(t *testing.T, name string) *dnsServer {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{name: name, conn: conn}
	done := make(chan struct{})
	go func() { defer close(done); d.serve() }()
	t.Cleanup(func() { conn.Close(); <-done })
	return d
}

func (d *dnsServer) set(f func(d *dnsServer)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

func (d *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		d.mu.Lock()
		addr, mute, name := d.addr, d.mute, d.name
		d.mu.Unlock()
		if mute {
			continue
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeSuccess}
		switch {
		case q.Name.String() != name:
			rh.RCode = dnsmessage.RCodeNameError
		case !addr.IsValid():
			rh.RCode = dnsmessage.RCodeServerFailure
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		if rh.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA && addr.Is4() {
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: addr.As4()})
		}
		out, err := b.Finish()
		if err == nil {
			_, _ = d.conn.WriteTo(out, from)
		}
	}
}

func (d *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.conn.LocalAddr().String())
	}}
}

// TestControllerNameResolvesLater (issue 13, defect 3): a controller
// given by a name that does not resolve yet is skipped (and logged once)
// while the other entries get heartbeats; once DNS answers, it gets its
// share at the next heartbeat; when DNS then stops answering, its last
// address keeps being used, and a silent DNS server never holds a
// heartbeat past its budget.
func TestControllerNameResolvesLater(t *testing.T) {
	f := startLB(t)
	byName, byIP := newReceiver(t, "127.0.0.1:0"), newReceiver(t, "127.0.0.1:0")
	dns := startDNS(t, "controller.amphora-test.")
	entries := []string{fmt.Sprintf("controller.amphora-test:%d", byName.port()), "bad entry", fmt.Sprintf("127.0.0.1:%d", byIP.port())}
	cfg := newConfig(testutil.ShortDir(t, "hb"), "k", entries...)
	cfg.HeartbeatInterval = 400 * time.Millisecond
	s, _, logs := newSender(t, cfg, lbSource(f))
	s.Resolver = dns.resolver()
	// A lookup the heartbeat waited for would show as a minute.
	s.ResolveTimeout = time.Minute
	ctx := context.Background()

	for range 3 {
		s.tick(ctx)
	}
	if n := len(byIP.pendingWait(t, 3)); n != 3 || len(byName.pending()) != 0 {
		t.Errorf("before DNS answers: %d heartbeats to the address, %d to the name; want 3 and 0", n, len(byName.pending()))
	}
	if n := logs.count(`"controller address skipped" dest=` + entries[0]); n != 1 {
		t.Errorf("unresolved name logged %d times:\n%s", n, logs)
	}
	if n := logs.count(`"controller address skipped" dest="bad entry"`); n != 1 {
		t.Errorf("malformed entry logged %d times:\n%s", n, logs)
	}

	dns.set(func(d *dnsServer) { d.addr = netip.MustParseAddr("127.0.0.1") })
	for range 4 {
		s.tick(ctx)
	}
	if a, b := len(byName.pendingWait(t, 2)), len(byIP.pendingWait(t, 2)); a != 2 || b != 2 {
		t.Errorf("after DNS answers: %d heartbeats to the name, %d to the address; want 2 and 2", a, b)
	}

	dns.set(func(d *dnsServer) { d.mute = true })
	var worst time.Duration
	for range 4 {
		t0 := time.Now()
		s.tick(ctx)
		worst = max(worst, time.Since(t0))
	}
	if a, b := len(byName.pendingWait(t, 2)), len(byIP.pendingWait(t, 2)); a != 2 || b != 2 {
		t.Errorf("DNS silent: %d heartbeats to the name (last address), %d to the address; want 2 and 2", a, b)
	}
	t.Logf("FIGURE longest heartbeat with a silent DNS server: %v (interval %v, lookup timeout %v)", worst, cfg.HeartbeatInterval, s.ResolveTimeout)
	if worst >= s.ResolveTimeout {
		t.Errorf("a heartbeat waited %v for a silent DNS server", worst)
	}
	if n := logs.count("controller name not resolved, using its last known address"); n != 1 {
		t.Errorf("fallback logged %d times:\n%s", n, logs)
	}
	if st := s.Stats(); st.SkippedDestinations == 0 {
		t.Errorf("stats %+v", st)
	}
}
