package main

// Tests of the UDP/SCTP listeners (keepalived LVS) through the agent
// binary, of their heartbeat data, and of the member check helpers.
//
// This kernel has neither IPVS (CONFIG_IP_VS is not set) nor an SCTP
// stack (/proc/net/protocols has no SCTP, SCTP sockets fail with
// EPROTONOSUPPORT). So:
//   - keepalived really runs a listener without virtual server (it has
//     nothing to program); a listener with virtual servers fails to start
//     (its checker cannot initialise IPVS) and the test checks the
//     failure report;
//   - the heartbeat statistics test uses a stand-in keepalived process and
//     synthetic `ipvsadm` output and /proc/net/ip_vs text (formats of
//     ipvsadm 1.31 and the kernel's ip_vs_ctl.c), injected into the LVS
//     manager;
//   - the SCTP checker is tested against a responder written here on a raw
//     SCTP socket (there is no kernel SCTP listener to talk to), on
//     loopback.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/agent/config"
	"github.com/octavia-go/amphora-agent/agent/heartbeat"
	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/keepalived"
)

// lvsListenerSpec is a UDP listener on 198.51.100.10:53 with a
// UDP-CONNECT monitor and two members (the second one disabled), or
// without pool when pool is "".
func lvsListenerSpec(base, lb, listener, pool string, members ...string) map[string]any {
	l := map[string]any{"id": listener, "protocol": "UDP", "port": 53, "pool": nil}
	if pool != "" {
		var ms []map[string]any
		for i, m := range members {
			ms = append(ms, map[string]any{"id": m, "address": fmt.Sprintf("10.0.0.%d", 5+i), "port": 5353, "enabled": i == 0})
		}
		l["pool"] = map[string]any{"id": pool, "members": ms,
			"monitor": map[string]any{"id": testutil.NewUUID(), "type": "UDP-CONNECT", "delay": 5, "timeout": 3, "fall": 3}}
	}
	return map[string]any{"lb_id": lb, "base_path": base, "vips": []string{"198.51.100.10"}, "listener": l}
}

func TestLVSThroughAgentBuiltin(t *testing.T) { testLVSThroughAgent(t, "builtin") }
func TestLVSThroughAgentSystemd(t *testing.T) {
	testutil.RequireSystemd(t)
	testLVSThroughAgent(t, "systemd")
}

// The UDP listener API of the agent binary with the real keepalived,
// driven by the controller's own client and templater, in
// ACTIVE_STANDBY: upload, reload, listing, details, the VRRP check,
// heartbeat --print, the "haproxy configuration wins" dispatch, delete.
func testLVSThroughAgent(t *testing.T, manager string) {
	testutil.RequireNetAdmin(t)
	testutil.RequireBinary(t, keepalived.DefaultCmd)
	testutil.RequireLVSRenderer(t)
	dir := testutil.ShortDir(t, "la")
	dp := testutil.NewNetNS(t, "la-dp")
	opts := testutil.Options{Dir: dir, Options: map[string]string{
		"amphora_agent/network_namespace":         dp.Name,
		"amphora_agent/service_manager":           manager,
		"amphora_agent/haproxy_user_group_config": filepath.Join(dir, "ug.conf"),
		"controller_worker/loadbalancer_topology": "ACTIVE_STANDBY",
	}}
	var unitDir string
	if manager == "systemd" {
		sd := testutil.StartSystemdManager(t)
		unitDir = sd.UnitDir
		// the image's amphora-netns.service, as a harmless stand-in (the
		// agent keeps an operator-provided one)
		unit := "[Unit]\nDescription=test stand-in for the amphora namespace unit\nStopWhenUnneeded=true\n\n" +
			"[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
		if err := os.WriteFile(filepath.Join(unitDir, "amphora-netns.service"), []byte(unit), 0o644); err != nil {
			t.Fatal(err)
		}
		opts.Options["amphora_agent/systemd_unit_dir"] = unitDir
		opts.Prefix = sd.Prefix()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("systemd manager log:\n%s", sd.Log())
			}
		})
	}
	a := testutil.StartAgent(t, opts)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log())
		}
	})
	lvsDir := filepath.Join(a.BasePath, "lvs")
	lb, bare, full, pool, m1, m2 := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	confs := testutil.RenderLVS(t, lvsListenerSpec(a.BasePath, lb, bare, ""), lvsListenerSpec(a.BasePath, lb, full, pool, m1, m2))
	bareConf, fullConf := confs[0], confs[1]

	res := a.Octavia(
		testutil.OctaviaCall{Call: "upload_udp_config", Args: []any{bare, string(bareConf)}},
		testutil.OctaviaCall{Call: "reload_listener", Args: []any{bare}},
		testutil.OctaviaCall{Call: "get_all_listeners"},
		testutil.OctaviaCall{Call: "get_details"},
	)
	for i, r := range res {
		if !r.OK {
			t.Fatalf("octavia call %d: %s: %s", i, r.Error, r.Message)
		}
	}
	var listeners []map[string]string
	if err := json.Unmarshal(res[2].Result, &listeners); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"status": "OFFLINE", "uuid": bare, "type": "UDP"}
	if !slices.ContainsFunc(listeners, func(l map[string]string) bool { return fmt.Sprint(l) == fmt.Sprint(want) }) {
		t.Errorf("listeners %v lack %v (keepalived runs, no virtual server)", listeners, want)
	}
	var details struct {
		Count     int      `json:"lvs_listener_process_count"`
		Listeners []string `json:"listeners"`
	}
	if err := json.Unmarshal(res[3].Result, &details); err != nil {
		t.Fatal(err)
	}
	if details.Count != 1 || !slices.Equal(details.Listeners, []string{bare}) {
		t.Errorf("details: %+v", details)
	}
	pid := lvsPID(filepath.Join(lvsDir, "octavia-keepalivedlvs-"+bare+".pid"))
	if pid == 0 {
		t.Fatal("keepalived not running")
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "keepalived" {
		t.Errorf("pid file names %q", comm)
	}
	if manager == "systemd" {
		unit, err := os.ReadFile(filepath.Join(unitDir, "octavia-keepalivedlvs-"+bare+".service"))
		if err != nil || !bytes.Contains(unit, []byte("--namespace="+dp.Name+" --check -f "+filepath.Join(lvsDir, "octavia-keepalivedlvs-"+bare+".conf"))) {
			t.Errorf("unit (%v):\n%s", err, unit)
		}
	}

	// keepalived outlives an agent restart and is found again
	a.Restart()
	if lvsPID(filepath.Join(lvsDir, "octavia-keepalivedlvs-"+bare+".pid")) != pid {
		t.Error("keepalived replaced by an agent restart")
	}
	_, _, body := a.Do(http.MethodGet, "/1.0/details", nil)
	if err := json.Unmarshal(body, &details); err != nil || details.Count != 1 {
		t.Errorf("details after an agent restart: %s", body)
	}

	// the raw API
	code, hdr, body := a.Do(http.MethodPut, "/1.0/listeners/"+a.AmphoraID+"/"+bare+"/udp_listener", bareConf)
	if code != http.StatusOK || string(body) != `{"message":"OK"}` || hdr.Get("ETag") != fsutil.MD5Hex(bareConf) {
		t.Errorf("upload: %d %s ETag %q", code, body, hdr.Get("ETag"))
	}
	code, hdr, body = a.Do(http.MethodGet, "/1.0/listeners/"+bare+"/udp_listener", nil)
	if code != http.StatusOK || !bytes.Equal(body, bareConf) || hdr.Get("Content-Type") != "text/plain; charset=UTF-8" || hdr.Get("ETag") != "" {
		t.Errorf("get config: %d %v %q", code, hdr, body)
	}
	unknown := testutil.NewUUID()
	for _, c := range []struct {
		method, path string
		body         []byte
		code         int
		want         string
	}{
		{"GET", "/1.0/listeners/" + unknown + "/udp_listener", nil, 404,
			`{"message":"UDP Listener Not Found","details":"No UDP listener with UUID: ` + unknown + `"}`},
		{"GET", "/1.0/listeners/not-a-uuid/udp_listener", nil, 400, `{"message":"Invalid request","details":"ids must be UUIDs"}`},
		{"PUT", "/1.0/listeners/not-a-uuid/" + bare + "/udp_listener", bareConf, 400, `{"message":"Invalid request","details":"ids must be UUIDs"}`},
		{"PUT", "/1.0/loadbalancer/" + bare + "/Restart", nil, 400, `{"message":"Invalid Request","details":"Unknown action: restart"}`},
		{"PUT", "/1.0/listeners/" + a.AmphoraID + "/" + bare + "/udp_listener", []byte("net_namespace x\nbogus_keyword 1\n"), 400, ""},
	} {
		code, _, body := a.Do(c.method, c.path, c.body)
		if code != c.code || c.want != "" && string(body) != c.want {
			t.Errorf("%s %s: %d %s", c.method, c.path, code, body)
		}
	}

	// ACTIVE_STANDBY: the LVS check decides (no load balancer)
	checks := filepath.Join(a.BasePath, "vrrp", "check_scripts")
	if fi, err := os.Stat(filepath.Join(checks, "lvs_udp_check.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("lvs_udp_check.sh: %v", err)
	}
	if _, err := os.Stat(filepath.Join(checks, "haproxy_check_script.sh")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("haproxy check kept with only an LVS listener running: %v", err)
	}
	if out, err := exec.Command("bash", filepath.Join(checks, "lvs_udp_check.sh")).CombinedOutput(); err != nil {
		t.Errorf("LVS check with keepalived running: %v: %s", err, out)
	}

	// heartbeat --print: the running listener is reported
	hb, err := exec.Command(a.Bin, "--config-file", a.ConfigFile, "heartbeat", "--print").Output()
	if err != nil {
		t.Fatalf("heartbeat --print: %v", err)
	}
	var msg struct {
		Listeners map[string]struct {
			Status string         `json:"status"`
			Stats  map[string]int `json:"stats"`
		} `json:"listeners"`
	}
	if err := json.Unmarshal(hb, &msg); err != nil {
		t.Fatal(err)
	}
	if l, ok := msg.Listeners[bare]; !ok || l.Status != "OPEN" || l.Stats["totconns"] != 0 {
		t.Errorf("heartbeat: %s", hb)
	}

	// a listener with virtual servers cannot run without IPVS: the
	// service manager's report (builtin), or keepalived's exit after a
	// start systemd counted done, shows as ERROR
	res = a.Octavia(testutil.OctaviaCall{Call: "upload_udp_config", Args: []any{full, string(fullConf)}})
	if !res[0].OK {
		t.Fatalf("upload: %s", res[0].Message)
	}
	code, _, body = a.Do(http.MethodPut, "/1.0/loadbalancer/"+full+"/reload", nil)
	t.Logf("reload of a listener with virtual servers without IPVS: %d %s", code, body)
	var failure struct{ Message, Details string }
	_ = json.Unmarshal(body, &failure)
	switch {
	case code == http.StatusInternalServerError &&
		failure.Message == "Failed to restart keepalivedlvs listener "+full && strings.Contains(strings.ToLower(failure.Details), "ipvs"):
	case manager == "systemd" && code == http.StatusAccepted: // Type=forking: the start job is done before keepalived gives up
	default:
		t.Errorf("reload without IPVS: %d %s", code, body)
	}
	testutil.WaitFor(t, 30*time.Second, testutil.Holds("listener "+full+" in ERROR", func() bool {
		_, _, body := a.Do(http.MethodGet, "/1.0/listeners", nil)
		return bytes.Contains(body, []byte(`{"status":"ERROR","uuid":"`+full+`","type":"UDP"}`))
	}))
	// it belongs to the VRRP check, which now fails
	if err := exec.Command("bash", filepath.Join(checks, "lvs_udp_check.sh")).Run(); err == nil {
		t.Error("LVS check passes with a failed listener")
	}

	// "haproxy configuration wins": a load balancer with the same id
	spec := a.RenderSpec(bare, "198.51.100.10", testutil.RenderListener{ID: testutil.NewUUID(), Protocol: "TCP", Port: 8080, PoolID: testutil.NewUUID(),
		Members: []testutil.RenderMember{{ID: testutil.NewUUID(), Address: "10.0.0.5", Port: 8080}}})
	cfg := testutil.Render(t, spec)[0]
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+bare+"/haproxy", []byte(cfg)); code != http.StatusAccepted {
		t.Fatalf("haproxy upload: %d %s", code, body)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+bare+"/stop", nil); code != http.StatusAccepted ||
		string(body) != `{"message":"OK","details":"Listener `+bare+` stoped"}` {
		t.Errorf("stop with both configurations: %d %s", code, body)
	}
	if code, _, _ := a.Do(http.MethodDelete, "/1.0/listeners/"+bare, nil); code != http.StatusOK {
		t.Errorf("delete load balancer: %d", code)
	}
	if code, _, _ := a.Do(http.MethodGet, "/1.0/listeners/"+bare+"/udp_listener", nil); code != http.StatusOK {
		t.Errorf("the LVS listener went with the load balancer: %d", code)
	}
	if lvsPID(filepath.Join(lvsDir, "octavia-keepalivedlvs-"+bare+".pid")) == 0 {
		t.Error("the LVS keepalived stopped with the load balancer")
	}

	// delete the LVS listeners (controller's client: 404 tolerated)
	res = a.Octavia(
		testutil.OctaviaCall{Call: "delete_listener", Args: []any{bare}},
		testutil.OctaviaCall{Call: "delete_listener", Args: []any{full}},
		testutil.OctaviaCall{Call: "delete_listener", Args: []any{full}},
		testutil.OctaviaCall{Call: "get_all_listeners"},
	)
	for i, r := range res {
		if !r.OK {
			t.Fatalf("octavia call %d: %s: %s", i, r.Error, r.Message)
		}
	}
	if string(res[3].Result) != "[]" {
		t.Errorf("listeners after delete: %s", res[3].Result)
	}
	testutil.WaitFor(t, 10*time.Second, testutil.Holds("keepalived gone", func() bool { return unix.Kill(pid, 0) != nil }))
	left, _ := filepath.Glob(filepath.Join(lvsDir, "octavia-keepalivedlvs-*"))
	if len(left) != 0 {
		t.Errorf("files left: %v", left)
	}
	if manager == "systemd" {
		units, _ := filepath.Glob(filepath.Join(unitDir, "octavia-keepalivedlvs-*"))
		if len(units) != 0 {
			t.Errorf("units left: %v", units)
		}
	}
	if _, err := os.Stat(filepath.Join(checks, "lvs_udp_check.sh")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lvs_udp_check.sh left: %v", err)
	}
}

// lvsPID returns the pid of a pid file whose process is alive, else 0.
func lvsPID(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
	if err != nil || pid <= 0 || unix.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// standInKeepalived is a process named keepalived that writes its pid
// files like keepalived in LVS mode: the kernel lacks IPVS, so the real
// one cannot run a listener with virtual servers here (file comment).
const standInKeepalived = `#!/bin/bash
pidf=$1 chkf=$2
sleep 100000 &
checker=$!
echo "$checker" > "$chkf"
echo "$BASHPID" > "$pidf"
trap 'kill "$checker"; rm -f "$pidf" "$chkf"; exit 0' TERM INT
wait "$checker"
`

// The LVS part of real heartbeats: counters from (synthetic) ipvsadm
// output mapped onto the haproxy names, turned into deltas by the sender
// across heartbeats, pools keyed by bare pool id with the member rules,
// all decoded by the controller's own code.
func TestHeartbeatLVSStats(t *testing.T) {
	testutil.RequireOctavia(t)
	testutil.RequireLVSRenderer(t)
	dir := t.TempDir()
	cfg := config.Defaults()
	cfg.BasePath = filepath.Join(dir, "lib")
	cfg.Namespace = "la-absent-" + testutil.RandomSuffix(3)
	cfg.HeartbeatKey, cfg.HeartbeatKeySet = "lvs-key", true
	cfg.HeartbeatInterval = 300 * time.Millisecond
	c := &hbCollector{dec: testutil.NewOctaviaDecoder(t), keys: []string{"lvs-key"}}
	cfg.ControllerIPPortList = []string{hbListen(t, c, "udp4", "127.0.0.1:0", "v4")}
	store := config.NewStore(cfg)
	lvsDir := filepath.Join(cfg.BasePath, "lvs")
	if err := os.MkdirAll(lvsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lb, listener, pool, m1, m2 := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	conf := testutil.RenderLVS(t, lvsListenerSpec(cfg.BasePath, lb, listener, pool, m1, m2))[0]
	base := filepath.Join(lvsDir, "octavia-keepalivedlvs-"+listener)
	if err := os.WriteFile(base+".conf", conf, 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "keepalived")
	if err := os.WriteFile(script, []byte(standInKeepalived), 0o755); err != nil {
		t.Fatal(err)
	}
	ka := exec.Command(script, base+".pid", base+".check.pid")
	if err := ka.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ka.Process.Kill(); _ = ka.Wait() })
	testutil.WaitFor(t, 10*time.Second, testutil.Holds("stand-in keepalived", func() bool { return lvsPID(base+".pid") != 0 }))

	var mu sync.Mutex
	conns, inBytes, runs := 10, 1000, 0
	kernel := "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\nUDP  C633640A:0035 wrr\n" +
		"  -> 0A000005:14E9      Masq    1      4          0\n"
	lvs := keepalived.NewLVSManager(keepalived.LVSOptions{
		Common: keepalived.Common{BasePath: cfg.BasePath, Namespace: cfg.Namespace},
		Run: func(_ context.Context, argv ...string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			runs++
			if slices.Contains(argv, "--stats") {
				return fmt.Appendf(nil, "IP Virtual Server version 1.2.1 (size=4096)\n"+
					"Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"+
					"UDP  198.51.100.10:53 %9d %8d %8d %8d %8d\n  -> 10.0.0.5:5353 %9d %8d %8d %8d %8d\n",
					conns, conns, conns, inBytes, 2*inBytes, conns, conns, conns, inBytes, 2*inBytes), nil
			}
			return []byte("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n" +
				"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\nUDP  198.51.100.10:53 wrr\n" +
				"  -> 10.0.0.5:5353                Masq    1      4          0\n"), nil
		},
		KernelTable: func(int) ([]byte, error) { return []byte(kernel), nil },
	})
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	lbs := haproxy.NewInventory(cfg.BasePath, nil, log)
	sender := heartbeat.New(store, heartbeat.Sources{LoadBalancers: lbs, LVS: lvs, VRRP: keepalived.VRRPPaths(cfg.BasePath)}, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sender.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	p, i := c.await(t, 10*time.Second, "LVS listener", 0, func(p *hbPacket) bool { _, ok := p.msg.Listeners[listener]; return ok })
	l := p.msg.Listeners[listener]
	if l.Status != "OPEN" || l.Stats.TotConns != 10 || l.Stats.RX != 1000 || l.Stats.TX != 2000 || l.Stats.Conns != 4 || l.Stats.Ereq != 0 {
		t.Errorf("first heartbeat (deltas = absolutes): %+v", l)
	}
	pl, ok := p.msg.Pools[pool]
	if !ok || pl.Status != "UP" || pl.Members[m1] != "UP" || pl.Members[m2] != "MAINT" || len(pl.Members) != 2 {
		t.Errorf("pool keyed by bare pool id: %+v (all pools %v)", pl, p.msg.Pools)
	}
	mu.Lock()
	conns, inBytes = 13, 1500
	mu.Unlock()
	p, _ = c.await(t, 10*time.Second, "new traffic", i+1, func(p *hbPacket) bool {
		return p.msg.Listeners[listener].Stats.TotConns != 0
	})
	if l := p.msg.Listeners[listener]; l.Stats.TotConns != 3 || l.Stats.RX != 500 || l.Stats.TX != 1000 || l.Stats.Conns != 4 {
		t.Errorf("deltas after new traffic: %+v", l)
	}
	mu.Lock()
	if runs%2 != 0 {
		t.Errorf("ipvsadm runs %d: not one of each per heartbeat", runs)
	}
	mu.Unlock()
	// the counters are recorded once the heartbeat is sent
	testutil.WaitFor(t, 5*time.Second, testutil.Holds("counters file", func() bool {
		counters, _ := os.ReadFile(filepath.Join(cfg.BasePath, heartbeat.CountersFile))
		return bytes.Contains(counters, []byte(`"`+listener+`": {"bin": 1500, "bout": 3000, "ereq": 0, "stot": 13}`))
	}))
}

// checker runs the binary as amphora-health-checker (through a link, as
// keepalived's MISC_CHECK does) and returns its exit status and output.
func checker(t *testing.T, args ...string) (int, string) {
	t.Helper()
	link := filepath.Join(t.TempDir(), "amphora-health-checker")
	if err := os.Symlink(testutil.Binary(t), link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, link, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatal(err)
	return -1, ""
}

// The checker's command line (as keepalived's MISC_CHECK runs it, through
// a link named amphora-health-checker); the checks themselves are tested
// in keepalived/healthcheck.
func TestHealthCheckArguments(t *testing.T) {
	if code, out := checker(t, "tcp", "127.0.0.1", "80"); code != 1 || !strings.Contains(out, "Unsupported protocol 'tcp'") {
		t.Errorf("unsupported protocol: %d %s", code, out)
	}
	if code, _ := checker(t, "sctp", "127.0.0.1"); code != 1 {
		t.Errorf("missing port: exit %d", code)
	}
	if code, out := checker(t, "udp", "-t", "x", "127.0.0.1", "53"); code != 1 || !strings.Contains(out, "usage") {
		t.Errorf("bad timeout: %d %s", code, out)
	}
}

func TestHealthCheckUDP(t *testing.T) {
	open, closed := testutil.UDPPorts(t)
	openPort, closedPort := strconv.Itoa(int(open.Port())), int(closed.Port())
	if code, out := checker(t, "udp", "127.0.0.1", openPort); code != 0 {
		t.Errorf("open port: exit %d %s", code, out)
	}
	if code, out := checker(t, "udp", "-t", "2", "::1", strconv.Itoa(closedPort)); code != 1 {
		t.Errorf("closed port: exit %d %s", code, out)
	}
	// the script the controller's UDP-CONNECT MISC_CHECK runs
	dir := t.TempDir()
	lvs := keepalived.NewLVSManager(keepalived.LVSOptions{Common: keepalived.Common{BasePath: dir, Agent: testutil.Binary(t)}})
	lvs.Reconcile(context.Background()) // nothing configured: nothing written
	if _, err := os.Stat(lvs.Paths().UDPCheckScript()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("udp_check.sh written without listeners: %v", err)
	}
	if err := os.MkdirAll(lvs.Paths().Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lvs.Paths().Dir, "octavia-keepalivedlvs-"+testutil.NewUUID()+".conf"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lvs.Reconcile(context.Background())
	script := lvs.Paths().UDPCheckScript()
	if err := exec.Command(script, "127.0.0.1", openPort).Run(); err != nil {
		t.Errorf("udp_check.sh, open port: %v", err)
	}
	var ee *exec.ExitError
	if err := exec.Command(script, "::1", strconv.Itoa(closedPort)).Run(); !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("udp_check.sh, closed port: %v", err)
	}
}

// The reference's helper names, through links to the binary.
func TestHelperAliases(t *testing.T) {
	if got := aliasArgs("/usr/local/bin/amphora-health-checker", []string{"sctp", "-t", "3", "10.0.0.5", "80"}); !slices.Equal(got,
		[]string{"health-check", "sctp", "-t", "3", "10.0.0.5", "80"}) {
		t.Errorf("amphora-health-checker: %v", got)
	}
	if got := aliasArgs("/usr/local/bin/amphora-agent", []string{"version"}); !slices.Equal(got, []string{"version"}) {
		t.Errorf("amphora-agent: %v", got)
	}
	dir := t.TempDir()
	for name, want := range map[string]string{
		"haproxy-vrrp-check": "vrrp-check: ",
		"amphora-interface":  "interface up|down",
	} {
		link := filepath.Join(dir, name)
		if err := os.Symlink(testutil.Binary(t), link); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(link, filepath.Join(dir, "missing.sock")).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("%s: %v: %s", name, err, out)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"lvs-check", "--", filepath.Join(dir, "none.pid")}, &stdout, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "is not running") {
		t.Errorf("lvs-check of a missing pid file: %d %s", code, stderr.String())
	}
	if code := run(context.Background(), []string{"lvs-check"}, &stdout, &stderr); code != 0 {
		t.Errorf("lvs-check without pid files: %d", code)
	}
}

// keepalived runs the controller's "amphora-health-checker ..." by PATH
// search, but resolves the path with realpath() and executes it under the
// resolved name: through a symlink to the agent, the binary would start
// as amphora-agent and not know the command. A hard link keeps the name
// (that is what the image installs). Checked with a vrrp_script, which
// keepalived 2.2.7 resolves like a MISC_CHECK's misc_path (the checker
// itself cannot run here: no IPVS).
func TestHealthCheckerUnderKeepalived(t *testing.T) {
	testutil.RequireNetAdmin(t)
	testutil.RequireBinary(t, keepalived.DefaultCmd)
	dp := testutil.NewNetNS(t, "hk-dp")
	peer := testutil.NewNetNS(t, "hk-pr")
	testutil.Veth(t, dp, "va", peer, "vb")
	if err := dp.AddAddr("va", "203.0.113.1/24"); err != nil {
		t.Fatal(err)
	}
	// a member answering on UDP inside the namespace: the check succeeds
	var member net.PacketConn
	if err := dp.Do(func() error {
		var err error
		member, err = net.ListenPacket("udp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	port := member.LocalAddr().(*net.UDPAddr).Port

	run := func(link func(src, dst string) error) string {
		dir := t.TempDir()
		bin := filepath.Join(dir, "bin")
		if err := os.Mkdir(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		// a copy, so that the hard link stays on one file system
		agent := filepath.Join(dir, "amphora-agent")
		data, err := os.ReadFile(testutil.Binary(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(agent, data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := link(agent, filepath.Join(bin, "amphora-health-checker")); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(dir, "k.conf")
		text := fmt.Sprintf(`vrrp_script chk {
    script "amphora-health-checker udp -t 1 127.0.0.1 %d"
    interval 1
    timeout 3
}
vrrp_instance v {
    state BACKUP
    interface va
    virtual_router_id 51
    priority 100
    advert_int 1
    track_script {
        chk
    }
}
`, port)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		var out testutil.SyncBuffer
		cmd := exec.Command("ip", "netns", "exec", dp.Name, "env", "PATH="+bin+":/usr/sbin:/usr/bin:/sbin:/bin",
			keepalived.DefaultCmd, "-n", "-l", "-P", "-f", conf, "-p", filepath.Join(dir, "k.pid"),
			"-r", filepath.Join(dir, "k.vrrp.pid"), "-c", filepath.Join(dir, "k.check.pid"))
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = cmd.Process.Signal(unix.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			s := out.String()
			if strings.Contains(s, "VRRP_Script(chk) succeeded") {
				return "succeeded"
			}
			if strings.Contains(s, "VRRP_Script(chk) failed") {
				return "failed"
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no script verdict from keepalived within 15s:\n%s", out.String())
		return ""
	}
	if got := run(os.Link); got != "succeeded" {
		t.Errorf("hard link: the check %s", got)
	}
	t.Logf("through a symlink the check %s (keepalived runs it as amphora-agent)", run(os.Symlink))
}
