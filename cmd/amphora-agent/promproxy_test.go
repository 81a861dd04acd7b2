package main

// End to end: a load balancer with an HTTP and a PROMETHEUS listener,
// rendered by the Octavia controller's combined-listeners templater
// (enable_prometheus), uploaded and started through the agent's API
// (builtin supervisor), which runs the Prometheus proxy next to haproxy
// inside the data-plane namespace; a real Prometheus server in a client
// namespace scrapes it through the VIP every second.
//
//	px-cl-<rand>  client: 198.18.60.20/24, Prometheus server on 127.0.0.1
//	px-dp-<rand>  the agent's network_namespace: VIP 198.18.60.10/24 (on the
//	              veth the test creates: plugging is tested elsewhere),
//	              pool member on 127.0.0.1, haproxy, the proxy on 9102

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/octavia-go/amphora-agent/haproxy/promproxy"
	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

const (
	pxVIP       = "198.18.60.10"
	pxClient    = "198.18.60.20"
	pxHTTPPort  = 8080
	pxPromPort  = 9100
	pxRefPort   = 19102 // the reference proxy, next to ours in the namespace
	pxScrapeFor = 6 * time.Second
)

func TestPrometheusListener(t *testing.T) {
	t.Parallel()
	testutil.RequireNetAdmin(t)
	testutil.RequireBinary(t, "haproxy")
	prometheus := testutil.RequireBinary(t, "prometheus")
	testutil.RequireBinary(t, "promtool")
	testutil.RequireRenderer(t)
	testutil.RequireReferencePromProxy(t)
	dir := testutil.ShortDir(t, "px")

	dp := testutil.NewNetNS(t, "px-dp") // kills haproxy and the proxy (left running by the supervisor) at the end
	client := testutil.NewNetNS(t, "px-cl")
	testutil.Veth(t, dp, "pxv0", client, "pxc0")
	if err := dp.AddAddr("pxv0", pxVIP+"/24"); err != nil {
		t.Fatal(err)
	}
	if err := client.AddAddr("pxc0", pxClient+"/24"); err != nil {
		t.Fatal(err)
	}
	member := testutil.StartMember(t, dp, "127.0.0.1:0", "up")
	_, mp, _ := net.SplitHostPort(member.Addr)
	memberPort, _ := strconv.Atoi(mp)

	lbID, httpID, poolID, promID := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	mUp, mDown := testutil.NewUUID(), testutil.NewUUID()
	spec := testutil.RenderSpec{
		AmphoraID: testutil.DefaultAmphoraID, LBID: lbID,
		BasePath: filepath.Join(dir, "lib"), CertDir: filepath.Join(dir, "lib", "certs"), VIP: pxVIP,
		Listeners: []testutil.RenderListener{
			{ID: httpID, Protocol: "HTTP", Port: pxHTTPPort, PoolID: poolID, Members: []testutil.RenderMember{
				{ID: mUp, Address: "127.0.0.1", Port: memberPort},
				{ID: mDown, Address: "127.0.0.1", Port: testutil.FreePort(t)},
			}},
			{ID: promID, Protocol: "PROMETHEUS", Port: pxPromPort},
		},
	}
	cfgText := testutil.Render(t, spec)[0]
	if !strings.Contains(cfgText, "frontend "+promproxy.ExporterFrontend) {
		t.Fatalf("the templater did not enable the exporter:\n%s", cfgText)
	}
	a := testutil.StartAgent(t, testutil.Options{
		Dir: dir,
		Options: map[string]string{
			"amphora_agent/network_namespace":         dp.Name,
			"amphora_agent/service_manager":           "builtin",
			"amphora_agent/haproxy_user_group_config": filepath.Join(dir, "haproxy-default-user-group.conf"),
		},
	})
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbID+"/haproxy", []byte(cfgText)); code != http.StatusAccepted {
		t.Fatalf("upload: %d %s", code, body)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/start", nil); code != http.StatusAccepted {
		t.Fatalf("start: %d %s\n%s", code, body, a.Log())
	}

	promURL := fmt.Sprintf("http://%s/metrics", net.JoinHostPort(pxVIP, strconv.Itoa(pxPromPort)))
	viaVIP := client.HTTPClient(nil, 10*time.Second)
	var body string
	testutil.WaitFor(t, 30*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, b, err := testutil.Get(ctx, viaVIP, promURL)
		body = b
		return err == nil && code == 200 && strings.Contains(b, `member="`+mDown+`",state="DOWN"`),
			fmt.Sprintf("GET %s: %d %v %.200q", promURL, code, err, b)
	})

	t.Run("tenant scrape", func(t *testing.T) {
		samples := testutil.ParseExposition(body)
		if l := testutil.LabelValues(samples, "octavia_listener_", "listener"); !l[httpID] || !l[promID] || len(l) != 2 {
			t.Errorf("octavia_listener_* listeners %v, want the HTTP and the PROMETHEUS listener", l)
		}
		if m := testutil.LabelValues(samples, "octavia_member_", "member"); !m[mUp] || !m[mDown] || len(m) != 2 {
			t.Errorf("octavia_member_* members %v, want %s and %s", m, mUp, mDown)
		}
		if p := testutil.LabelValues(samples, "octavia_pool_", "pool"); !p[poolID+":"+httpID] || len(p) != 1 {
			t.Errorf("octavia_pool_* pools %v", p)
		}
		if strings.Contains(body, "prometheus-exporter") || strings.Contains(body, "prometheus-internal") {
			t.Error("the internal exporter frontend or backend is visible to the tenant")
		}
		cmd := exec.Command("promtool", "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})

	t.Run("Prometheus server scrapes every second", func(t *testing.T) {
		pxPrometheus(t, prometheus, client, dir, httpID, mUp, mDown)
	})

	t.Run("same names and labels as the reference proxy", func(t *testing.T) {
		ref, err := testutil.StartReferencePromProxy("http://"+promproxy.DefaultExporter+"/metrics", "127.0.0.1", pxRefPort, "ip", "netns", "exec", dp.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer ref.Stop()
		inDP := dp.HTTPClient(nil, 30*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, refBody, err1 := testutil.Get(ctx, inDP, "http://"+ref.Addr+"/metrics")
		_, ourBody, err2 := testutil.Get(ctx, inDP, "http://"+promproxy.DefaultListen+"/metrics")
		if err1 != nil || err2 != nil {
			t.Fatalf("scrapes: reference %v, ours %v", err1, err2)
		}
		if diff := cmp.Diff(testutil.MetricShape(refBody), testutil.MetricShape(ourBody)); diff != "" {
			t.Errorf("metric names and label keys differ (-reference +ours):\n%s", diff)
		}
		t.Logf("%d metric shapes, %d series, identical names and label keys", len(testutil.MetricShape(ourBody)), len(testutil.ParseExposition(ourBody)))
	})

	pidFile := filepath.Join(a.BasePath, promproxy.ServiceName+".pid")
	t.Run("status", func(t *testing.T) {
		out := pxStatus(t, a)
		if !strings.Contains(out, "needed by "+lbID) || !strings.Contains(out, "answering:") {
			t.Errorf("status:\n%s", out)
		}
	})

	t.Run("agent restart leaves the proxy running", func(t *testing.T) {
		before := procfs.ReadPID(pidFile)
		if !procfs.Alive(before) {
			t.Fatalf("proxy pid file %s: %d", pidFile, before)
		}
		a.Restart()
		if after := procfs.ReadPID(pidFile); after != before || !procfs.Alive(after) {
			t.Errorf("proxy pid %d before the agent restart, %d after", before, after)
		}
	})

	t.Run("502 without haproxy, stopped without PROMETHEUS listener", func(t *testing.T) {
		if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/stop", nil); code != http.StatusAccepted {
			t.Fatalf("stop: %d %s", code, body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, b, err := testutil.Get(ctx, dp.HTTPClient(nil, 10*time.Second), "http://"+promproxy.DefaultListen+"/metrics")
		if err != nil || code != http.StatusBadGateway || b != "" {
			t.Errorf("haproxy stopped: %d %q %v, want 502 and no body", code, b, err)
		}
		if out := pxStatus(t, a); !strings.Contains(out, "502") {
			t.Errorf("status does not report the 502:\n%s", out)
		}
		pid := procfs.ReadPID(pidFile)
		if code, _, body := a.Do(http.MethodDelete, "/1.0/listeners/"+lbID, nil); code != http.StatusOK {
			t.Fatalf("delete: %d %s", code, body)
		}
		testutil.WaitFor(t, 15*time.Second, func() (bool, string) {
			return !procfs.Alive(pid), fmt.Sprintf("proxy (pid %d) still running after the last PROMETHEUS listener went", pid)
		})
		if out := pxStatus(t, a); !strings.Contains(out, "not needed") {
			t.Errorf("status:\n%s", out)
		}
	})
}

func pxStatus(t *testing.T, a *testutil.Agent) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, a.Bin, "--config-file", a.ConfigFile, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return string(out)
}

// pxPrometheus runs Debian's Prometheus server in the client namespace,
// scraping the PROMETHEUS listener every second for a few seconds, and
// checks what it stored.
func pxPrometheus(t *testing.T, bin string, client *testutil.NetNS, dir, httpID string, members ...string) {
	t.Helper()
	pdir := filepath.Join(dir, "prometheus")
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: octavia
    metrics_path: /metrics
    static_configs:
      - targets: ['%s']
`, net.JoinHostPort(pxVIP, strconv.Itoa(pxPromPort)))
	if err := os.WriteFile(filepath.Join(pdir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	web := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	logf, err := os.Create(filepath.Join(pdir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", client.Name, bin,
		"--config.file="+filepath.Join(pdir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(pdir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	api := client.HTTPClient(nil, 10*time.Second)
	query := func(path string, params url.Values) (json.RawMessage, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, b, err := testutil.Get(ctx, api, "http://"+web+path+"?"+params.Encode())
		if err != nil {
			return nil, err
		}
		var r struct {
			Status string          `json:"status"`
			Data   json.RawMessage `json:"data"`
			Error  string          `json:"error"`
		}
		if err := json.Unmarshal([]byte(b), &r); err != nil || code != 200 || r.Status != "success" {
			return nil, fmt.Errorf("%s: %d %v %s", path, code, err, r.Error)
		}
		return r.Data, nil
	}
	// up for a while: at least pxScrapeFor of one-second scrapes
	var scrapes float64
	testutil.WaitFor(t, 60*time.Second, func() (bool, string) {
		select {
		case <-exited:
			data, _ := os.ReadFile(logf.Name())
			t.Fatalf("prometheus exited:\n%s", data)
		default:
		}
		data, err := query("/api/v1/query", url.Values{"query": {`sum_over_time(up{job="octavia"}[1m])`}})
		if err != nil {
			return false, err.Error()
		}
		var v struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		}
		if err := json.Unmarshal(data, &v); err != nil || len(v.Result) != 1 {
			return false, fmt.Sprintf("up: %s", data)
		}
		scrapes, _ = strconv.ParseFloat(fmt.Sprint(v.Result[0].Value[1]), 64)
		return scrapes >= pxScrapeFor.Seconds(), fmt.Sprintf("%v successful scrapes", scrapes)
	})
	data, err := query("/api/v1/series", url.Values{"match[]": {`{__name__=~"octavia_.+"}`}})
	if err != nil {
		t.Fatal(err)
	}
	var series []map[string]string
	if err := json.Unmarshal(data, &series); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	listeners := map[string]bool{}
	memberIDs := map[string]bool{}
	for _, s := range series {
		names[s["__name__"]] = true
		if strings.HasPrefix(s["__name__"], "octavia_listener_") {
			listeners[s["listener"]] = true
		}
		if strings.HasPrefix(s["__name__"], "octavia_member_") {
			memberIDs[s["member"]] = true
		}
	}
	for _, n := range []string{"octavia_loadbalancer_cpu", "octavia_loadbalancer_memory", "octavia_listener_http_requests_total",
		"octavia_pool_active_members", "octavia_member_status"} {
		if !names[n] {
			t.Errorf("Prometheus has no %s", n)
		}
	}
	if !listeners[httpID] {
		t.Errorf("Prometheus has no octavia_listener_* series of listener %s: %v", httpID, listeners)
	}
	for _, m := range members {
		if !memberIDs[m] {
			t.Errorf("Prometheus has no octavia_member_* series of member %s: %v", m, memberIDs)
		}
	}
	t.Logf("Prometheus: %v successful 1 s scrapes, %d octavia_* series", scrapes, len(series))
	if data, _ := os.ReadFile(logf.Name()); bytes.Contains(data, []byte("level=error")) {
		t.Logf("prometheus log:\n%s", data)
	}
}
