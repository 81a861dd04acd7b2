package heartbeat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// ---- Octavia's decoder ----------------------------------------------------

// decodeWithOctavia unwraps pkt with Octavia's code and checks that the
// object it decoded re-serialises to exactly the JSON we compressed.
func decodeWithOctavia(t testing.TB, py *testutil.OctaviaDecoder, pkt []byte, key string) *decoded {
	t.Helper()
	text, _, err := py.Unwrap(t, pkt, key)
	if err != nil {
		t.Fatalf("octavia unwrap_envelope refused our datagram: %v", err)
	}
	if ours := inflate(t, pkt); ours != string(text) {
		t.Errorf("octavia re-serialised the message differently:\nours   %s\npython %s", ours, text)
	}
	var d decoded
	if err := json.Unmarshal(text, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// ---- UDP receivers -----------------------------------------------------------

type receiver struct {
	conn net.PacketConn
	ch   chan []byte
}

// newReceiver listens on a loopback address ("127.0.0.1:0", "[::1]:0").
func newReceiver(t testing.TB, addr string) *receiver {
	t.Helper()
	r := &receiver{ch: make(chan []byte, 256)}
	r.conn = testutil.ListenUDP(t, "udp", addr, func(pkt []byte) { r.ch <- pkt })
	return r
}

func (r *receiver) port() int { return r.conn.LocalAddr().(*net.UDPAddr).Port }

// next waits for the next datagram.
func (r *receiver) next(t testing.TB) []byte {
	t.Helper()
	select {
	case b := <-r.ch:
		return b
	case <-time.After(10 * time.Second):
		t.Fatalf("no heartbeat on %s", r.conn.LocalAddr())
		return nil
	}
}

// pending returns the datagrams already received.
func (r *receiver) pending() [][]byte {
	var out [][]byte
	for {
		select {
		case b := <-r.ch:
			out = append(out, b)
		default:
			return out
		}
	}
}

// ---- haproxy fixture ---------------------------------------------------------

// Object ids of the load balancer fixture (testutil's statistics fixture).
const (
	lbID = "3c3c3c3c-0000-4000-8000-000000000001"
	l1   = testutil.FixtureL1 // HTTP listener, one member of each status
	l2   = testutil.FixtureL2 // TCP listener, exact byte counts
)

// lbFixture is a real haproxy serving the statistics fixture.
type lbFixture struct {
	*testutil.StatsFixture
	sock     string // its stats socket (user level, as Octavia renders it)
	fe1, fe2 string // listener addresses
}

// startLB runs a real haproxy for the fixture load balancer and waits
// until its health checks settled.
func startLB(t testing.TB) *lbFixture {
	t.Helper()
	f := testutil.StartStatsFixture(t, func(ctx context.Context, sock string) (map[string]map[string]string, error) {
		r, err := haproxy.NewStatsClient(sock).Report(ctx)
		if err != nil {
			return nil, err
		}
		return fromHAProxy(r).members(), nil
	})
	return &lbFixture{StatsFixture: f, sock: f.UserSock, fe1: f.FE1, fe2: f.FE2}
}

// members are the member statuses of a report, by pool.
func (r *Report) members() map[string]map[string]string {
	out := map[string]map[string]string{}
	for id, p := range r.Pools {
		out[id] = p.Members
	}
	return out
}

// restart replaces the haproxy process: its counters start from zero.
func (f *lbFixture) restart() {
	f.HAProxy.Stop()
	f.HAProxy.Start()
}

// traffic sends n raw HTTP requests through addr, one connection each, and
// returns the bytes sent and received.
func traffic(t testing.TB, addr string, n int) (sent, received int64) {
	t.Helper()
	const req = "GET /traffic HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
	for range n {
		resp := testutil.RawHTTP(t, addr, req)
		if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200 ")) {
			t.Fatalf("request through %s: %q", addr, resp)
		}
		sent += int64(len(req))
		received += int64(len(resp))
	}
	return sent, received
}

// waitStot waits until haproxy accounted for the sessions of traffic():
// its counters are updated when a session ends, just after the client saw
// the end of the answer.
func (f *lbFixture) waitStot(t testing.TB, listener string, want int64) haproxy.ListenerStats {
	t.Helper()
	var l haproxy.ListenerStats
	testutil.WaitFor(t, 5*time.Second, func() (bool, string) {
		r, err := haproxy.NewStatsClient(f.sock).Report(context.Background())
		if err != nil {
			return false, err.Error()
		}
		l = r.Listeners[listener]
		return l.Stot == want && l.Scur == 0, fmt.Sprintf("%s: %+v", listener, l)
	})
	return l
}

// ---- agent side ----------------------------------------------------------------

// testLB is a load balancer the test source reports running.
type testLB struct{ ID, StatsSocket string }

// testSource is the agent's side of the seam: which load balancers run,
// what the LVS listeners report and whether keepalived gates heartbeats.
// The data behind the load balancers (haproxy) is real.
type testSource struct {
	mu       sync.Mutex // guards the following
	lbs      []testLB
	skip     bool
	reason   string
	lvs      bool // report LVS listeners (extra, extraErr)
	extra    *keepalived.LVSReport
	extraErr error
}

func (s *testSource) RunningLoadBalancers(context.Context) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, lb := range s.lbs {
		out = append(out, lb.ID)
	}
	return out
}

func (s *testSource) SocketPath(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lb := range s.lbs {
		if lb.ID == id {
			return lb.StatsSocket
		}
	}
	return ""
}

func (s *testSource) Status() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skip, s.reason
}

func (s *testSource) Stats(context.Context) (*keepalived.LVSReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.extra, s.extraErr
}

func (s *testSource) set(f func(s *testSource)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// sources is what the sender is given.
func (s *testSource) sources() Sources {
	src := Sources{LoadBalancers: s, VRRP: s}
	if s.lvs {
		src.LVS = s
	}
	return src
}

// logBuf collects the sender's log lines.
type logBuf struct {
	mu  sync.Mutex // guards b
	b   bytes.Buffer
	log *slog.Logger
}

func newLogBuf() *logBuf {
	l := &logBuf{}
	l.log = slog.New(slog.NewTextHandler(lockedWriter{l}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return l
}

type lockedWriter struct{ l *logBuf }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return w.l.b.Write(p)
}

func (l *logBuf) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), substr)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const amphoraID = "6e9fd1a2-1234-4cde-8f00-aabbccddeeff"

// newConfig returns a configuration for a test: base path dir, the key,
// the controller entries.
func newConfig(dir, key string, dests ...string) *config.Config {
	c := config.Defaults()
	c.BasePath = dir
	c.AmphoraID = amphoraID
	c.HeartbeatKey, c.HeartbeatKeySet = key, key != ""
	c.ControllerIPPortList = dests
	c.HeartbeatInterval = time.Hour // tests drive ticks themselves unless they run Run
	return c
}

// noDNS resolves from /etc/hosts only: a name that is not there fails
// without any packet leaving the machine.
var noDNS = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("test resolver: DNS disabled")
}}

func newSender(t testing.TB, cfg *config.Config, src *testSource) (*Sender, *config.Store, *logBuf) {
	t.Helper()
	store := config.NewStore(cfg)
	logs := newLogBuf()
	s := New(store, src.sources(), logs.log)
	s.Resolver = noDNS
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sender log:\n%s", logs.String())
		}
	})
	return s, store, logs
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// decoded is the message as the controller reads it.
type decoded = testutil.Heartbeat
