package promproxy

// Tests against the real things: haproxy's exporter (haproxy 2.x running
// a configuration rendered by Octavia's templater), the reference's
// prometheus_proxy.py (python3-octavia) fed the same bytes, and promtool.
// Everything listens on 127.0.0.1 ports chosen at run time (the rendered
// 9101/9102 are replaced): the data-plane namespace version runs in
// cmd/amphora-agent.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// TestTableMatchesReference: the metric table is the reference's
// METRIC_MAP, entry for entry and in the same order.
func TestTableMatchesReference(t *testing.T) {
	testutil.RequireReferencePromProxy(t)
	out, err := exec.Command("/usr/bin/python3", "-c", `
import json
from octavia.cmd import prometheus_proxy as pp
print(json.dumps([[k, v[0], v[1], list((v[2] or {}).items())] for k, v in pp.METRIC_MAP.items()]))
`).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ref [][]any
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatal(err)
	}
	table, _ := tables()
	var got [][]any
	for _, e := range table {
		var help any
		if e.help != nil {
			help = string(e.help)
		}
		subs := []any{}
		for i := 0; i < len(e.labels); i += 2 {
			subs = append(subs, []any{string(e.labels[i]), string(e.labels[i+1])})
		}
		got = append(got, []any{string(e.key), string(e.repl), help, subs})
	}
	if diff := cmp.Diff(ref, got); diff != "" {
		t.Errorf("table differs from the reference's METRIC_MAP (-reference +ours):\n%s", diff)
	}
	for _, e := range table {
		if !bytes.HasPrefix(e.key, keyPrefix) {
			t.Errorf("key %q does not start with %q (match() relies on it)", e.key, keyPrefix)
		}
	}
}

func TestTranslateLines(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"help replaced", "# HELP haproxy_frontend_status Current status of the service.\n",
			"# HELP octavia_listener_status Current status of the listener. 0=OFFLINE, 1=ONLINE, 2=DEGRADED.\n"},
		{"help renamed", "# HELP haproxy_process_max_connections Hard limit\n", "# HELP octavia_loadbalancer_max_connections Hard limit\n"},
		{"type", "# TYPE haproxy_server_weight gauge\n", "# TYPE octavia_member_weight gauge\n"},
		{"labels", `haproxy_server_status{proxy="p:l",server="m",state="UP"} 1` + "\n",
			`octavia_member_status{pool="p:l",member="m",state="UP"} 1` + "\n"},
		{"unlabelled sample", "haproxy_process_listeners 3\n", "octavia_loadbalancer_listeners 3\n"},
		{"internal frontend", `haproxy_frontend_status{proxy="prometheus-exporter-internal-endpoint",state="UP"} 1` + "\n", ""},
		{"unknown metric", "haproxy_process_nbthread 2\n", ""},
		{"no newline", "haproxy_process_listeners 3", "octavia_loadbalancer_listeners 3"},
		// the entry listed first wins, wherever it is in the line
		{"first entry wins", "# HELP haproxy_server_weight see haproxy_process_listeners \n",
			"# HELP haproxy_server_weight see octavia_loadbalancer_listeners \n"},
		{"HELP in a sample line", "haproxy_process_pool_used_bytes 5 HELP\n",
			"# HELP octavia_memory_pool_used_bytes Total amount of memory used in the memory pools (in bytes).\n"},
		{"no help for the labelled key", `haproxy_frontend_status{proxy="HELP"} 1` + "\n",
			`octavia_listener_status{listener="HELP"} 1` + "\n"},
		{"empty", "\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Translate(&out, strings.NewReader(c.in)); err != nil {
				t.Fatal(err)
			}
			if out.String() != c.want {
				t.Errorf("got  %q\nwant %q", out.String(), c.want)
			}
		})
	}
	t.Run("line too long", func(t *testing.T) {
		long := "haproxy_process_listeners " + strings.Repeat("9", maxLine+10) + "\n"
		if err := Translate(io.Discard, strings.NewReader(long)); err == nil {
			t.Error("no error for an over-long line")
		}
	})
	t.Run("long line below the bound", func(t *testing.T) {
		long := `haproxy_server_weight{proxy="` + strings.Repeat("p", 100<<10) + `"} 1` + "\n"
		var out bytes.Buffer
		if err := Translate(&out, strings.NewReader(long)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out.String(), `octavia_member_weight{pool="ppp`) || !strings.HasSuffix(out.String(), "\"} 1\n") {
			t.Errorf("long line translated wrong: %.60q...", out.String())
		}
	})
}

// lbFixture is one load balancer rendered by Octavia's templater and run
// by a real haproxy on test ports.
type lbFixture struct {
	id, config string
	listeners  []string // HTTP/TCP listener ids
	prom       string   // the PROMETHEUS listener id
	members    []string
	vip        string
	promPort   int
	hap        *testutil.HAProxy
}

// startLB renders a load balancer with two HTTP listeners (three members
// each, one of them down, one disabled), a TCP listener and a PROMETHEUS
// listener, with the exporter on exporterPort and the proxy backend on
// proxyPort, and runs it.
func startLB(t *testing.T, dir, vip string, exporterPort, proxyPort int) *lbFixture {
	t.Helper()
	memberPort := startMember(t)
	f := &lbFixture{id: testutil.NewUUID(), vip: vip, prom: testutil.NewUUID(), promPort: testutil.FreePort(t)}
	spec := testutil.RenderSpec{AmphoraID: testutil.DefaultAmphoraID, LBID: f.id, BasePath: dir,
		CertDir: filepath.Join(dir, "certs"), VIP: vip}
	disabled := false
	for i, proto := range []string{"HTTP", "HTTP", "TCP"} {
		l := testutil.RenderListener{ID: testutil.NewUUID(), Protocol: proto, Port: testutil.FreePort(t), PoolID: testutil.NewUUID(),
			ConnectionLimit: 200} // haproxy's fd needs stay under the test's limit
		up, down, off := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
		l.Members = []testutil.RenderMember{
			{ID: up, Address: "127.0.0.1", Port: memberPort},
			{ID: down, Address: "127.0.0.1", Port: testutil.FreePort(t)},
			{ID: off, Address: "127.0.0.1", Port: memberPort, Enabled: &disabled},
		}
		if i == 2 {
			no := false
			l.Monitor = &no
		}
		f.listeners = append(f.listeners, l.ID)
		f.members = append(f.members, up, down, off)
		spec.Listeners = append(spec.Listeners, l)
	}
	spec.Listeners = append(spec.Listeners, testutil.RenderListener{ID: f.prom, Protocol: "PROMETHEUS", Port: f.promPort, ConnectionLimit: 200})
	cfg := testutil.Render(t, spec)[0]
	cfg = strings.ReplaceAll(cfg, "127.0.0.1:9101", "127.0.0.1:"+strconv.Itoa(exporterPort))
	cfg = strings.ReplaceAll(cfg, "127.0.0.1:9102", "127.0.0.1:"+strconv.Itoa(proxyPort))
	// no syslog daemon here: haproxy's logs go nowhere
	cfg = strings.ReplaceAll(cfg, "log /run/rsyslog/octavia/log", "log stderr")
	f.config = filepath.Join(dir, f.id, "haproxy.cfg")
	if err := os.MkdirAll(filepath.Dir(f.config), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	exporter := "127.0.0.1:" + strconv.Itoa(exporterPort)
	f.hap = testutil.StartHAProxy(t, f.config, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", exporter)
		if err == nil {
			c.Close()
		}
		return err
	})
	return f
}

// startMember runs a pool member on 127.0.0.1 answering Octavia's
// sample health check (418 on /index.html) and returns its port.
func startMember(t *testing.T) int {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == testutil.MemberHealthPath {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		_, _ = io.WriteString(w, "member")
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

// get fetches url and returns status, headers and body.
func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	code, hdr, body, err := tryGet(url)
	if err != nil {
		t.Fatal(err)
	}
	return code, hdr, body
}

// tryGet is get for polling: a refused connection (haproxy not bound
// yet) is an answer to wait past, not a failure.
func tryGet(url string) (int, http.Header, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, nil, "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, "", fmt.Errorf("GET %s: body: %w", url, err)
	}
	return resp.StatusCode, resp.Header, string(body), nil
}

// rawGet sends GET /metrics over a fresh connection and returns the
// response head (status line and headers) and the body, as sent.
func rawGet(t *testing.T, addr string) (head, body string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(c) // the proxy closes the connection
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ = strings.Cut(string(all), "\r\n\r\n")
	return head + "\r\n", body
}

// startProxy serves p on a free 127.0.0.1 port until the test ends.
func startProxy(t *testing.T, p *Proxy, port int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

var gaugeValue = regexp.MustCompile(`(?m)^(octavia_loadbalancer_(?:cpu|memory)) [0-9.]+$`)

// TestSameOutputAsReference: the reference proxy and ours, reading the
// same exporter bytes (captured from a real haproxy, plus lines made to
// hit the reference's corner cases), answer the same bytes, the two
// computed gauge values aside; the headers match too; both pass promtool.
func TestSameOutputAsReference(t *testing.T) {
	testutil.RequireBinary(t, "haproxy")
	testutil.RequireRenderer(t)
	testutil.RequireReferencePromProxy(t)
	dir := testutil.ShortDir(t, "pxref")
	exporterPort, proxyPort := testutil.FreePort(t), testutil.FreePort(t)
	lb := startLB(t, dir, "127.0.0.21", exporterPort, proxyPort)
	// some traffic so counters and HTTP code families are not all zero
	for _, port := range []int{lb.promPort} {
		get(t, fmt.Sprintf("http://%s:%d/metrics", lb.vip, port))
	}
	_, _, raw := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", exporterPort))
	if !strings.Contains(raw, "haproxy_server_status{") {
		t.Fatalf("exporter output without server metrics:\n%s", raw)
	}
	input := raw + strings.Join([]string{
		`# HELP haproxy_server_weight see haproxy_process_listeners and haproxy_frontend_status{`,
		`haproxy_backend_status{proxy="HELP me",state="UP"} 1`,
		`haproxy_server_check_status{proxy="a",server="b"} 1`,
		`haproxy_frontend_bytes_in_total{proxy="proxy=proxy="} 7`,
		`haproxy_process_listeners 4`,
	}, "\n") // last line without a newline
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, input)
	}))
	defer upstream.Close()

	refPort := testutil.FreePort(t)
	ref, err := testutil.StartReferencePromProxy(upstream.URL+"/metrics", "127.0.0.1", refPort)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Stop()
	ours := startProxy(t, New(Options{Exporter: strings.TrimPrefix(upstream.URL, "http://")}), 0)

	refCode, refHdr, refBody := get(t, "http://"+ref.Addr+"/metrics")
	code, hdr, body := get(t, "http://"+ours+"/metrics")
	if refCode != 200 || code != 200 {
		t.Fatalf("status: reference %d, ours %d", refCode, code)
	}
	for _, h := range []string{"Content-Type", "Cache-Control"} {
		if refHdr.Get(h) != hdr.Get(h) {
			t.Errorf("header %s: reference %q, ours %q", h, refHdr.Get(h), hdr.Get(h))
		}
	}
	for _, addr := range []string{ref.Addr, ours} {
		if head, _ := rawGet(t, addr); !strings.Contains(strings.ToLower(head), "\r\nconnection: close\r\n") {
			t.Errorf("%s: no Connection: close in %q", addr, head)
		}
	}
	norm := func(s string) string { return gaugeValue.ReplaceAllString(s, "$1 V") }
	if diff := cmp.Diff(strings.Split(norm(refBody), "\n"), strings.Split(norm(body), "\n")); diff != "" {
		t.Errorf("output differs from the reference's (-reference +ours):\n%s", diff)
	}
	if n := len(gaugeValue.FindAllString(body, -1)); n != 2 {
		t.Errorf("%d gauge lines, want octavia_loadbalancer_cpu and _memory", n)
	}

	// promtool: the output of the real exporter (without the corner-case
	// lines, which the reference turns into invalid text too)
	upstreamReal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, raw)
	}))
	defer upstreamReal.Close()
	real := startProxy(t, New(Options{Exporter: strings.TrimPrefix(upstreamReal.URL, "http://")}), 0)
	_, _, realBody := get(t, "http://"+real+"/metrics")
	promtool(t, realBody)
}

func promtool(t *testing.T, text string) {
	t.Helper()
	bin := testutil.RequireBinary(t, "promtool")
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestScrapeThroughListener: a real haproxy, its PROMETHEUS listener,
// our proxy behind it: the tenant sees the Octavia series of its
// listeners and members, never the internal exporter, and a 502 once
// haproxy is gone.
func TestScrapeThroughListener(t *testing.T) {
	testutil.RequireBinary(t, "haproxy")
	testutil.RequireRenderer(t)
	dir := testutil.ShortDir(t, "pxlst")
	exporterPort, proxyPort := testutil.FreePort(t), testutil.FreePort(t)
	lb := startLB(t, dir, "127.0.0.22", exporterPort, proxyPort)
	p := New(Options{Exporter: "127.0.0.1:" + strconv.Itoa(exporterPort)})
	startProxy(t, p, proxyPort)
	url := fmt.Sprintf("http://%s:%d/metrics", lb.vip, lb.promPort)

	var body string
	testutil.WaitFor(t, 15*time.Second, func() (bool, string) {
		code, _, b, err := tryGet(url)
		body = b
		return err == nil && code == 200 && strings.Contains(body, `state="DOWN"`) && strings.Contains(body, "octavia_member_status{"),
			fmt.Sprintf("status %d (%v), body:\n%.300s", code, err, body)
	})
	samples := testutil.ParseExposition(body)
	listeners := testutil.LabelValues(samples, "octavia_listener_", "listener")
	members := testutil.LabelValues(samples, "octavia_member_", "member")
	names := map[string]bool{}
	for _, s := range samples {
		names[s.Name] = true
	}
	for _, l := range append([]string{lb.prom}, lb.listeners...) {
		if !listeners[l] {
			t.Errorf("no octavia_listener_* series for listener %s", l)
		}
	}
	for _, m := range lb.members {
		if !members[m] {
			t.Errorf("no octavia_member_* series for member %s", m)
		}
	}
	for _, want := range []string{"octavia_loadbalancer_cpu", "octavia_loadbalancer_memory", "octavia_loadbalancer_current_connections",
		"octavia_listener_bytes_in_total", "octavia_pool_active_members", "octavia_member_status"} {
		if !names[want] {
			t.Errorf("series %s missing", want)
		}
	}
	for name := range names {
		if !strings.HasPrefix(name, "octavia_") {
			t.Errorf("series %s is not an Octavia one", name)
		}
	}
	if strings.Contains(body, "prometheus-exporter") || strings.Contains(body, "prometheus-internal") {
		t.Error("the internal exporter frontend or backend is visible")
	}
	promtool(t, body)

	lb.hap.Stop()
	head, errBody := rawGet(t, "127.0.0.1:"+strconv.Itoa(proxyPort))
	if !strings.HasPrefix(head, "HTTP/1.1 502 ") || errBody != "" || !strings.Contains(strings.ToLower(head), "\r\nconnection: close\r\n") {
		t.Errorf("exporter down: %q %q, want 502, Connection: close, empty body", head, errBody)
	}
	if st := p.Stats(); st.Failures != 1 || st.Scrapes == 0 || st.LastErr == "" {
		t.Errorf("stats %+v", st)
	}
	lb.hap.Start()
	// haproxy binds its exporter some time after it was started: until
	// then the proxy rightly answers 502.
	testutil.WaitFor(t, 15*time.Second, func() (bool, string) {
		code, _, _, err := tryGet("http://127.0.0.1:" + strconv.Itoa(proxyPort) + "/metrics")
		return code == 200, fmt.Sprintf("after haproxy restart: %d (%v)", code, err)
	})
}

// TestStreams: the proxy forwards what it has translated while the
// exporter is still sending (it holds one line and one write buffer, not
// the body).
func TestStreams(t *testing.T) {
	const lines = 20000 // ~1 MB of exporter output before the pause
	release := make(chan struct{})
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < lines; i++ {
			fmt.Fprintf(w, "haproxy_server_weight{proxy=\"p\",server=\"m%d\"} 1\n", i)
		}
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "haproxy_process_dropped_logs_total 0\n")
	}))
	defer upstream.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	addr := startProxy(t, New(Options{Exporter: strings.TrimPrefix(upstream.URL, "http://")}), 0)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// While the exporter is paused, most of what it sent reaches us.
	early := make([]byte, 512<<10)
	if _, err := io.ReadFull(resp.Body, early); err != nil {
		t.Fatalf("reading while the exporter pauses: %v", err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	all := string(early) + string(rest)
	if n := strings.Count(all, "octavia_member_weight{pool=\"p\",member="); n != lines || !strings.HasSuffix(all, "octavia_loadbalancer_dropped_logs_total 0\n") {
		t.Errorf("%d member lines (want %d), end %q", n, lines, all[len(all)-60:])
	}
}

// TestCutShort: an exporter that dies half-way makes the scrape fail
// rather than look complete.
func TestCutShort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			_, _ = c.Read(buf)
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nhaproxy_process_listeners 1\n")
			c.Close()
		}
	}()
	addr := startProxy(t, New(Options{Exporter: ln.Addr().String()}), 0)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return // refused outright: fine
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("a truncated exporter answer gave a complete scrape")
	}
}

// TestGauges: the formulas on known kernel figures, and sane values from
// this machine's.
func TestGauges(t *testing.T) {
	root := t.TempDir()
	write := func(p, s string) {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/loadavg", "0.50 0.40 0.30 1/123 4567\n")
	write("sys/devices/system/cpu/online", "0-2,5\n")
	write("proc/meminfo", "MemTotal:        2000000 kB\nMemFree:          100000 kB\nMemAvailable:    1500000 kB\n")
	out, err := sysStat{root: root}.appendGauges(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "# HELP octavia_loadbalancer_cpu Load balancer CPU utilization (percentage).\n" +
		"# TYPE octavia_loadbalancer_cpu gauge\noctavia_loadbalancer_cpu 12.5\n" +
		"# HELP octavia_loadbalancer_memory Load balancer memory utilization (percentage).\n" +
		"# TYPE octavia_loadbalancer_memory gauge\noctavia_loadbalancer_memory 25.0\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	write("proc/meminfo", "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 150 kB\n")
	if mem, err := (sysStat{root: root}).memPercent(); err != nil || mem != 70 {
		t.Errorf("without MemAvailable: %v %v, want 70", mem, err)
	}

	s := sysStat{root: "/"}
	cpu, err1 := s.cpuPercent()
	mem, err2 := s.memPercent()
	if err1 != nil || err2 != nil || cpu < 0 || mem <= 0 || mem >= 100 {
		t.Errorf("this machine: cpu %v (%v), memory %v (%v)", cpu, err1, mem, err2)
	}
}

// TestSeveralLoadBalancers: two load balancers each with a PROMETHEUS
// listener, so two haproxy exporters on one port: every scrape through a
// listener of one load balancer gets that load balancer's series only;
// a local client still gets an answer.
func TestSeveralLoadBalancers(t *testing.T) {
	testutil.RequireBinary(t, "haproxy")
	testutil.RequireRenderer(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root: reading the sockets of haproxy processes in /proc")
	}
	dir := testutil.ShortDir(t, "pxmul")
	exporterPort, proxyPort := testutil.FreePort(t), testutil.FreePort(t)
	lb1 := startLB(t, dir, "127.0.0.23", exporterPort, proxyPort)
	lb2 := startLB(t, dir, "127.0.0.24", exporterPort, proxyPort)
	p := New(Options{
		Exporter: "127.0.0.1:" + strconv.Itoa(exporterPort),
		Configs:  func() []string { return []string{lb1.config, lb2.config, filepath.Join(dir, "gone", "haproxy.cfg")} },
	})
	startProxy(t, p, proxyPort)
	if got := p.exporterConfigs(); len(got) != 2 {
		t.Fatalf("exporter configurations %v, want both", got)
	}
	const rounds = 12
	for _, c := range []struct{ mine, other *lbFixture }{{lb1, lb2}, {lb2, lb1}} {
		for i := 0; i < rounds; i++ {
			code, _, body := get(t, fmt.Sprintf("http://%s:%d/metrics", c.mine.vip, c.mine.promPort))
			if code != 200 {
				t.Fatalf("scrape %d of %s: %d", i, c.mine.id, code)
			}
			listeners := testutil.LabelValues(testutil.ParseExposition(body), "octavia_listener_", "listener")
			if !listeners[c.mine.listeners[0]] {
				t.Fatalf("scrape %d through %s lacks its listener %s", i, c.mine.id, c.mine.listeners[0])
			}
			for _, l := range append([]string{c.other.prom}, c.other.listeners...) {
				if listeners[l] {
					t.Fatalf("scrape %d through %s shows listener %s of the other load balancer", i, c.mine.id, l)
				}
			}
		}
	}
	if code, _, _ := get(t, "http://127.0.0.1:"+strconv.Itoa(proxyPort)+"/metrics"); code != 200 {
		t.Errorf("local client: %d", code)
	}
}

func TestMethods(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "haproxy_process_listeners 1\n")
	}))
	defer upstream.Close()
	addr := startProxy(t, New(Options{Exporter: strings.TrimPrefix(upstream.URL, "http://")}), 0)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/metrics", strings.NewReader("x"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp, err = http.Head("http://" + addr + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; version=0.0.4" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
