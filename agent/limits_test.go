package agent_test

// In-process tests of the REST server's limits (issue 13): the server
// runs in the test with small limits, behind real mTLS, with the real
// load-balancer manager for the endpoints used (GET of a configuration,
// certificate uploads: neither needs haproxy or a service manager).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/agent"
	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/hostinfo"
	"github.com/octavia-go/amphora-agent/certs"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

type testServer struct {
	t    *testing.T
	addr string
	cfg  *config.Config
	tls  *tls.Config // the controller's side
	log  *testutil.SyncBuffer
}

func startServer(t *testing.T, lim agent.Limits) *testServer {
	t.Helper()
	dir := testutil.ShortDir(t, "relb-srv")
	pki, err := testutil.NewPKI(filepath.Join(dir, "pki"), testutil.DefaultAmphoraID)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.BasePath = filepath.Join(dir, "lib")
	cfg.BaseCertDir = filepath.Join(dir, "lib", "certs")
	cfg.AmphoraID = testutil.DefaultAmphoraID
	cfg.AgentServerCA = pki.ClientCA
	cfg.AgentServerCert = filepath.Join(dir, "server.pem")
	data, err := os.ReadFile(pki.ServerPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.AgentServerCert, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.BasePath, 0o755); err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, cfg: cfg, log: &testutil.SyncBuffer{}}
	log := slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := config.NewStore(cfg)
	cs, err := certs.Open(certs.Options{CertPath: cfg.AgentServerCert, CAPath: cfg.AgentServerCA, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := agent.New(agent.Deps{
		Config: store, Certs: cs, Log: log, Limits: lim, Host: hostinfo.New(cfg.HAProxyCmd),
		LBs: haproxy.NewManager(haproxy.Options{BasePath: cfg.BasePath, CertDir: cfg.BaseCertDir, Cmd: cfg.HAProxyCmd,
			UserGroupConfig: cfg.UserGroupConfig, Namespace: cfg.Namespace, Log: log}),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.log.String())
		}
	})

	ca, err := os.ReadFile(pki.ServerCA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client, err := os.ReadFile(pki.ClientPEM)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(client, client)
	if err != nil {
		t.Fatal(err)
	}
	ts.tls = &tls.Config{RootCAs: pool, ServerName: testutil.DefaultAmphoraID, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	return ts
}

func (ts *testServer) url(path string) string { return "https://" + ts.addr + path }

// client is the controller's HTTP client; keepAlive reuses connections.
func (ts *testServer) client(keepAlive bool) *http.Client {
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: ts.tls, DisableKeepAlives: !keepAlive}}
}

// dial opens a TCP connection from the given loopback source address.
func (ts *testServer) dial(src string) net.Conn {
	ts.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ts.addr)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { c.Close() })
	return c
}

// put sends a body (from r, of the given length) and returns status,
// headers and body.
func (ts *testServer) put(c *http.Client, path string, r io.Reader, n int64) (int, http.Header, string) {
	ts.t.Helper()
	req, err := http.NewRequest(http.MethodPut, ts.url(path), r)
	if err != nil {
		ts.t.Fatal(err)
	}
	req.ContentLength = n
	resp, err := c.Do(req)
	if err != nil {
		ts.t.Errorf("PUT %s: %v", path, err)
		return 0, nil, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// slowReader yields n bytes over about d.
type slowReader struct {
	n, off  int
	step    time.Duration
	sentAll atomic.Bool
}

func newSlowReader(n int, d time.Duration) *slowReader {
	return &slowReader{n: n, step: d / 20}
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.off >= s.n {
		return 0, io.EOF
	}
	time.Sleep(s.step)
	k := min(len(p), max(1, s.n/20), s.n-s.off)
	for i := range k {
		p[i] = 'a' + byte((s.off+i)%26)
	}
	s.off += k
	if s.off >= s.n {
		s.sentAll.Store(true) // the last byte is handed out now
	}
	return k, nil
}

// isClosed reports whether the peer closed c (within wait).
func isClosed(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return err != nil
}

// TestResponseWriteTimeout: a client that stops reading its answer has
// its connection cut once the response write deadline passes; uploads
// and kept-alive connections are not affected by the deadline.
// (No deadline at all before: the handler blocked for as long as the
// client wished, holding its goroutine, buffers and descriptor.)
func TestResponseWriteTimeout(t *testing.T) {
	ts := startServer(t, agent.Limits{ResponseWriteTimeout: 500 * time.Millisecond})
	const lb = "0c6e1d2a-5b7f-4c1e-9a4b-3f2e1d0c9b8a"
	const size = 32 << 20
	if err := os.MkdirAll(filepath.Join(ts.cfg.BasePath, lb), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts.cfg.BasePath, lb, "haproxy.cfg"), bytes.Repeat([]byte("# x\n"), size/4), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("a client that does not read is cut", func(t *testing.T) {
		conn, err := tls.Dial("tcp", ts.addr, ts.tls)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /1.0/loadbalancer/%s/haproxy HTTP/1.1\r\nHost: x\r\n\r\n", lb)
		time.Sleep(3 * time.Second) // six times the deadline, not reading
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, _ := io.Copy(io.Discard, conn)
		if n >= size {
			t.Errorf("read the whole %d-byte answer after stalling: the write never timed out", n)
		}
		t.Logf("%d of %d bytes arrived before the connection was cut", n, size)
	})
	t.Run("a slow upload longer than the deadline succeeds", func(t *testing.T) {
		code, _, body := ts.put(ts.client(false), "/1.0/loadbalancer/"+lb+"/certificates/slow.pem", newSlowReader(2000, 2*time.Second), 2000)
		if code != http.StatusOK {
			t.Errorf("slow upload: %d %s", code, body)
		}
	})
	t.Run("a kept-alive connection serves after the deadline", func(t *testing.T) {
		c := ts.client(true)
		var conns atomic.Int32
		c.Transport.(*http.Transport).DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conns.Add(1)
			d := tls.Dialer{Config: ts.tls}
			return d.DialContext(ctx, network, addr)
		}
		for i := range 2 {
			resp, err := c.Get(ts.url("/1.0/loadbalancer/" + lb + "/certificates/slow.pem"))
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request %d: %d", i, resp.StatusCode)
			}
			time.Sleep(time.Second)
		}
		if conns.Load() != 1 {
			t.Errorf("%d connections for two requests, want one kept alive", conns.Load())
		}
	})
}

// TestLargeUploadTurns: large uploads take turns; one that does not get
// a turn in time is answered 503 with a JSON body, a small upload never
// waits, and a queued upload completes once a turn is free.
func TestLargeUploadTurns(t *testing.T) {
	const lb = "0c6e1d2a-5b7f-4c1e-9a4b-3f2e1d0c9b8a"
	cert := func(name string) string { return "/1.0/loadbalancer/" + lb + "/certificates/" + name + ".pem" }

	t.Run("no turn in time: 503", func(t *testing.T) {
		ts := startServer(t, agent.Limits{LargeUpload: 1024, MaxLargeUploads: 1, UploadQueueWait: time.Second})
		first := make(chan int, 1)
		go func() {
			code, _, _ := ts.put(ts.client(false), cert("first"), newSlowReader(8192, 6*time.Second), 8192)
			first <- code
		}()
		time.Sleep(time.Second) // the first holds the only turn
		start := time.Now()
		code, hdr, body := ts.put(ts.client(false), cert("second"), strings.NewReader(strings.Repeat("x", 4096)), 4096)
		var msg struct{ Message, Details string }
		if code != http.StatusServiceUnavailable || hdr.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &msg) != nil || msg.Message == "" {
			t.Errorf("second large upload: %d %q %s, want 503 with a JSON body", code, hdr.Get("Content-Type"), body)
		}
		if hdr.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if waited := time.Since(start); waited < 900*time.Millisecond {
			t.Errorf("refused after %s, before the queue wait", waited)
		}
		if code, _, body := ts.put(ts.client(false), cert("small"), strings.NewReader("small\n"), 6); code != http.StatusOK {
			t.Errorf("small upload while a large one runs: %d %s", code, body)
		}
		if code := <-first; code != http.StatusOK {
			t.Errorf("first large upload: %d", code)
		}
	})
	t.Run("queued upload gets its turn", func(t *testing.T) {
		ts := startServer(t, agent.Limits{LargeUpload: 1024, MaxLargeUploads: 1, UploadQueueWait: time.Minute})
		slow := newSlowReader(8192, 3*time.Second)
		first := make(chan int, 1)
		go func() {
			code, _, _ := ts.put(ts.client(false), cert("first"), slow, 8192)
			first <- code
		}()
		time.Sleep(time.Second)
		code, _, body := ts.put(ts.client(false), cert("second"), strings.NewReader(strings.Repeat("x", 4096)), 4096)
		// The first upload's turn ends after its last byte was sent: the
		// second, answered before that, did not wait for it.
		waited := slow.sentAll.Load()
		if code != http.StatusOK {
			t.Errorf("queued upload: %d %s", code, body)
		}
		if <-first != http.StatusOK {
			t.Error("first upload failed")
		}
		if !waited {
			t.Error("the second large upload did not wait for the first")
		}
	})
	t.Run("too large", func(t *testing.T) {
		ts := startServer(t, agent.Limits{MaxDocument: 4096})
		// The agent configuration is capped at MaxDocument, read and
		// refused with 400, and the client sees the answer.
		code, _, body := ts.put(ts.client(false), "/1.0/config", strings.NewReader(strings.Repeat("# comment\n", 100000)), 1000000)
		if code != http.StatusBadRequest || !strings.Contains(body, "Request body too large") {
			t.Errorf("oversized agent configuration: %d %s", code, body)
		}
	})
}

// TestHandshakeLimits: at most MaxHandshakes connections wait for their
// handshake; a new one evicts the oldest of the address holding the most
// (so a flood from one address cannot keep another out), a stalled one
// is closed at HandshakeTimeout, and beyond MaxConns established
// connections the longest-idle one is closed.
func TestHandshakeLimits(t *testing.T) {
	ts := startServer(t, agent.Limits{MaxHandshakes: 8, HandshakeTimeout: 3 * time.Second, MaxConns: 3})

	var flood []net.Conn
	for range 8 {
		flood = append(flood, ts.dial("127.0.0.2"))
	}
	other := ts.dial("127.0.0.3")
	// The controller gets through while all handshake slots are taken.
	resp, err := ts.client(false).Get(ts.url("/"))
	if err != nil {
		t.Fatalf("controller during the flood: %v", err)
	}
	resp.Body.Close()
	for range 12 {
		flood = append(flood, ts.dial("127.0.0.2"))
	}
	time.Sleep(300 * time.Millisecond)
	closed := 0
	for _, c := range flood {
		if isClosed(c, 50*time.Millisecond) {
			closed++
		}
	}
	if closed < 12 {
		t.Errorf("%d of 20 flood connections closed, want at least 12 (8 handshake slots)", closed)
	}
	if isClosed(other, 50*time.Millisecond) {
		t.Error("the connection of another address was evicted by the flood")
	}
	start := time.Now()
	if !isClosed(other, 10*time.Second) {
		t.Fatal("an idle connection outlived the handshake timeout")
	}
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("idle connection closed after %s (handshake timeout 3 s)", took)
	}

	// Established connections: four kept-alive clients, limit three.
	var conns []*tls.Conn
	for i := range 4 {
		c, err := tls.Dial("tcp", ts.addr, ts.tls)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		resp.Body.Close()
		conns = append(conns, c)
		time.Sleep(100 * time.Millisecond)
	}
	if !isClosed(conns[0], 2*time.Second) {
		t.Error("four established connections with a limit of three: the longest-idle one is still open")
	}
	for i, c := range conns[1:] {
		if isClosed(c, 50*time.Millisecond) {
			t.Errorf("connection %d closed", i+1)
		}
	}
}
