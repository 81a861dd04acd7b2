package heartbeat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/haproxy"
)

const pythonBin = "/usr/bin/python3" // Debian's, the one with python3-octavia

// ---- Octavia's decoder ----------------------------------------------------

// pyUnwrap runs Octavia's own status_message.unwrap_envelope in one
// long-lived /usr/bin/python3 process: one request line "<key hex>
// <datagram hex>", one answer line "OK <json.dumps of the object>" or
// "ERR <exception class>".
type pyUnwrap struct {
	mu  sync.Mutex // guards the following
	in  io.WriteCloser
	out *bufio.Scanner
}

const pyUnwrapScript = `
import binascii, json, sys
from octavia.amphorae.backends.health_daemon import status_message
for line in sys.stdin:
    k, p = line.split()
    try:
        obj = status_message.unwrap_envelope(binascii.unhexlify(p), binascii.unhexlify(k).decode())
        print("OK " + json.dumps(obj), flush=True)
    except Exception as e:
        print("ERR " + type(e).__name__, flush=True)
`

func newPyUnwrap(t testing.TB) *pyUnwrap {
	t.Helper()
	if _, err := os.Stat(pythonBin); err != nil {
		t.Skipf("%s not installed: %v", pythonBin, err)
	}
	if out, err := exec.Command(pythonBin, "-c", "import octavia.amphorae.backends.health_daemon.status_message").CombinedOutput(); err != nil {
		t.Skipf("python3-octavia not installed (apt-get install python3-octavia): %v: %s", err, out)
	}
	cmd := exec.Command(pythonBin, "-c", pyUnwrapScript)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard // oslo logs the HMAC mismatches of the wrong-key checks
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	return &pyUnwrap{in: in, out: sc}
}

// unwrap returns the JSON text Octavia re-serialises from the datagram
// (json.dumps keeps the key order it decoded), or the exception name.
func (p *pyUnwrap) unwrap(t testing.TB, pkt []byte, key string) (string, error) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintf(p.in, "%s %s\n", hex.EncodeToString([]byte(key)), hex.EncodeToString(pkt)); err != nil {
		t.Fatal(err)
	}
	if !p.out.Scan() {
		t.Fatalf("python decoder died: %v", p.out.Err())
	}
	line := p.out.Text()
	if rest, ok := strings.CutPrefix(line, "OK "); ok {
		return rest, nil
	}
	return "", errors.New(line)
}

// decoded is the message as the controller reads it.
type decoded struct {
	ID        *string `json:"id"`
	Seq       uint64  `json:"seq"`
	Ver       int     `json:"ver"`
	Listeners map[string]struct {
		Status string `json:"status"`
		Stats  struct {
			TX       int64 `json:"tx"`
			RX       int64 `json:"rx"`
			Conns    int64 `json:"conns"`
			TotConns int64 `json:"totconns"`
			Ereq     int64 `json:"ereq"`
		} `json:"stats"`
	} `json:"listeners"`
	Pools map[string]struct {
		Status  string            `json:"status"`
		Members map[string]string `json:"members"`
	} `json:"pools"`
}

// decodeWithOctavia unwraps pkt with Octavia's code and checks that the
// object it decoded re-serialises to exactly the JSON we compressed.
func decodeWithOctavia(t testing.TB, py *pyUnwrap, pkt []byte, key string) *decoded {
	t.Helper()
	text, err := py.unwrap(t, pkt, key)
	if err != nil {
		t.Fatalf("octavia unwrap_envelope refused our datagram: %v", err)
	}
	if ours := inflate(t, pkt); ours != text {
		t.Errorf("octavia re-serialised the message differently:\nours   %s\npython %s", ours, text)
	}
	var d decoded
	if err := json.Unmarshal([]byte(text), &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// ---- UDP receivers -----------------------------------------------------------

type receiver struct {
	conn *net.UDPConn
	ch   chan []byte
}

// newReceiver listens on a loopback address ("127.0.0.1:0", "[::1]:0").
func newReceiver(t testing.TB, addr string) *receiver {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{conn: conn, ch: make(chan []byte, 256)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.ch <- bytes.Clone(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
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

// Object ids of the load balancer fixture.
const (
	lbID = "3c3c3c3c-0000-4000-8000-000000000001"
	l1   = "8a1b2c3d-0000-4000-8000-000000000001" // HTTP listener, one member of each status
	l2   = "8a1b2c3d-0000-4000-8000-000000000002" // TCP listener, exact byte counts
	p1   = "9a1b2c3d-0000-4000-8000-0000000000aa:" + l1
	p2   = "9a1b2c3d-0000-4000-8000-0000000000bb:" + l2
	mUp  = "aaaaaaaa-0000-4000-8000-000000000001"
	mDn  = "aaaaaaaa-0000-4000-8000-000000000002"
	mNo  = "aaaaaaaa-0000-4000-8000-000000000003"
	mMnt = "aaaaaaaa-0000-4000-8000-000000000004"
	mDrn = "aaaaaaaa-0000-4000-8000-000000000005"
	mTCP = "bbbbbbbb-0000-4000-8000-000000000001"
)

const lbConfig = `global
    stats socket {{sock}} mode 0600 level user
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # checks every 100 ms must not time out on a loaded test machine
    # (the check timeout defaults to the interval)
    timeout check 2s
    retries 3
    option redispatch
frontend ` + l1 + `
    bind 127.0.0.1:{{fe1}}
    default_backend ` + p1 + `
backend ` + p1 + `
    server ` + mUp + ` {{member}} check inter 100ms fall 1 rise 1
    server ` + mDn + ` 127.0.0.1:{{closed}} check inter 100ms fall 1 rise 1
    server ` + mNo + ` {{member}}
    server ` + mMnt + ` {{member}} check disabled
    server ` + mDrn + ` {{member}} check inter 100ms fall 1 rise 1 weight 0
frontend ` + l2 + `
    mode tcp
    bind 127.0.0.1:{{fe2}}
    default_backend ` + p2 + `
backend ` + p2 + `
    mode tcp
    server ` + mTCP + ` {{member}}
frontend prometheus-exporter-internal-endpoint
    bind 127.0.0.1:{{prom}}
    http-request use-service prometheus-exporter if { path /metrics }
`

var wantPools = map[string]map[string]string{
	p1: {mUp: "UP", mDn: "DOWN", mNo: "no check", mMnt: "MAINT", mDrn: "DRAIN"},
	p2: {mTCP: "no check"},
}

type lbFixture struct {
	sock     string
	fe1, fe2 string // listener addresses
	cfgPath  string
	t        testing.TB
	stop     func()
}

func needHAProxy(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skipf("haproxy binary not installed (%v); apt-get install haproxy", err)
	}
	return p
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// shortDir keeps unix socket paths short whatever the test name.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "hb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startLB runs a real haproxy for the fixture load balancer and waits
// until its health checks settled.
func startLB(t testing.TB) *lbFixture {
	t.Helper()
	needHAProxy(t)
	member := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello from the member")
	}))
	t.Cleanup(member.Close)
	dir := shortDir(t)
	f := &lbFixture{t: t, sock: filepath.Join(dir, "lb.sock"), cfgPath: filepath.Join(dir, "haproxy.cfg")}
	fe1, fe2 := freePort(t), freePort(t)
	f.fe1, f.fe2 = fmt.Sprintf("127.0.0.1:%d", fe1), fmt.Sprintf("127.0.0.1:%d", fe2)
	cfg := strings.NewReplacer(
		"{{sock}}", f.sock, "{{fe1}}", fmt.Sprint(fe1), "{{fe2}}", fmt.Sprint(fe2),
		"{{prom}}", fmt.Sprint(freePort(t)), "{{closed}}", fmt.Sprint(freePort(t)),
		"{{member}}", member.Listener.Addr().String(),
	).Replace(lbConfig)
	if err := os.WriteFile(f.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	f.start()
	t.Cleanup(func() { f.stop() })
	waitFor(t, 10*time.Second, func() (bool, string) {
		r, err := haproxy.NewStatsClient(f.sock).Report(context.Background())
		if err != nil {
			return false, err.Error()
		}
		for id, want := range wantPools {
			got := r.Pools[id].Members
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return false, fmt.Sprintf("pool %s members %v", id, got)
			}
		}
		return true, ""
	})
	return f
}

// start runs haproxy in the foreground; stop kills that process by pid.
func (f *lbFixture) start() {
	t := f.t
	t.Helper()
	logPath := f.cfgPath + ".log"
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(needHAProxy(t), "-f", f.cfgPath, "-db")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	f.stop = func() {
		_ = cmd.Process.Kill()
		<-exited
		f.stop = func() {}
	}
	c := haproxy.NewStatsClient(f.sock)
	waitFor(t, 10*time.Second, func() (bool, string) {
		select {
		case <-exited:
			t.Fatalf("haproxy exited: %s", readFile(logPath))
		default:
		}
		_, err := c.ShowInfo(context.Background())
		return err == nil, fmt.Sprintf("%v; haproxy output: %s", err, readFile(logPath))
	})
}

// restart replaces the haproxy process: its counters start from zero.
func (f *lbFixture) restart() {
	f.stop()
	f.start()
}

// traffic sends n raw HTTP requests through addr, one connection each, and
// returns the bytes sent and received.
func traffic(t testing.TB, addr string, n int) (sent, received int64) {
	t.Helper()
	const req = "GET /traffic HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
	for range n {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		resp, err := io.ReadAll(conn)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
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
	waitFor(t, 5*time.Second, func() (bool, string) {
		r, err := haproxy.NewStatsClient(f.sock).Report(context.Background())
		if err != nil {
			return false, err.Error()
		}
		l = r.Listeners[listener]
		return l.Stot == want && l.Scur == 0, fmt.Sprintf("%s: %+v", listener, l)
	})
	return l
}

func waitFor(t testing.TB, limit time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %s", limit, why)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ---- agent side ----------------------------------------------------------------

// testSource is the agent's side of the seam: which load balancers run and
// whether keepalived gates heartbeats. The data behind it (haproxy) is real.
type testSource struct {
	mu       sync.Mutex // guards the following
	lbs      []LB
	lbErr    error
	skip     bool
	reason   string
	extra    *haproxy.StatsReport
	extraErr error
}

func (s *testSource) RunningLoadBalancers(context.Context) ([]LB, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]LB(nil), s.lbs...), s.lbErr
}

func (s *testSource) KeepalivedGate(context.Context) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skip, s.reason
}

func (s *testSource) set(f func(s *testSource)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// extraSource adds the LVS hook to testSource.
type extraSource struct{ *testSource }

func (s extraSource) ExtraStats(context.Context) (*haproxy.StatsReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.extra, s.extraErr
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

func newSender(t testing.TB, cfg *config.Config, src Source) (*Sender, *config.Store, *logBuf) {
	t.Helper()
	store := config.NewStore(cfg)
	logs := newLogBuf()
	s := New(store, src, logs.log)
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
