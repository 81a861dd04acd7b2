package keepalived_test

// End-to-end VRRP test: two amphorae, each an agent binary in its own
// network namespace and private mount namespace (so both create the
// literal data-plane namespace "amphora-haproxy"), plugged into one VIP
// network through the agent's REST API, configured by the Octavia
// controller's own REST client and templaters (haproxy and keepalived),
// running real haproxy and real keepalived under the built-in supervisor.
//
//	kv-sw-<r>: bridge br0
//	  |-- kv-cl-<r>  eth0 198.51.100.10/24   client, bounded probe of http://VIP/
//	  |-- kv-mb-<r>  eth0 198.51.100.50/24   pool member :8080
//	  |-- kv-a1-<r>  (hot-plugged NIC) -> agent moves it into amphora-haproxy as eth1,
//	  |              VRRP address 198.51.100.11, MASTER (priority 100)
//	  `-- kv-a2-<r>  same, 198.51.100.12, BACKUP (priority 90)
//	VIP 198.51.100.100 (owned by keepalived)
//
// Every address lives in a namespace the test creates; the agents listen
// on 127.0.0.1 inside their amphora's namespace and are reached from
// there. Nothing is added to the root namespace.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/internal/testutil"
)

const (
	kvVIP       = "198.51.100.100"
	kvCIDR      = "198.51.100.0/24"
	kvGateway   = "198.51.100.1"
	kvClientIP  = "198.51.100.10"
	kvMemberIP  = "198.51.100.50"
	kvMember    = "member-kv"
	kvAgentPort = 9443
)

// kvRequire skips when a component of the test is really absent.
func kvRequire(t *testing.T) {
	t.Helper()
	testutil.RequireNetAdmin(t)
	for _, p := range []string{"keepalived", "haproxy", "nsenter", "unshare"} {
		testutil.RequireBinary(t, p)
	}
	testutil.RequireRenderer(t)
	if _, err := os.Stat("/usr/lib/python3/dist-packages/octavia/amphorae/drivers/keepalived/jinja/jinja_cfg.py"); err != nil {
		t.Skip("python3-octavia's keepalived templater is not installed")
	}
}

// attach connects ns to the switch bridge with a veth (ifname in ns,
// peer in the switch), optionally with a MAC on the ns side.
func attach(t *testing.T, sw *testutil.NetNS, ns *testutil.NetNS, ifname, peer, mac string) {
	t.Helper()
	testutil.Veth(t, ns, ifname, sw, peer)
	if mac != "" {
		l, err := ns.Netlink().LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		hw, _ := net.ParseMAC(mac)
		if err := ns.Netlink().LinkSetHardwareAddr(l, hw); err != nil {
			t.Fatal(err)
		}
	}
	br, err := sw.Netlink().LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	p, err := sw.Netlink().LinkByName(peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Netlink().LinkSetMaster(p, br); err != nil {
		t.Fatal(err)
	}
}

// kvAmphora is one amphora: an agent in its own network and mount
// namespaces.
type kvAmphora struct {
	t        *testing.T
	name     string
	id       string
	ns       *testutil.NetNS
	holder   int // pid of the process holding the private mount namespace
	dir      string
	base     string
	conf     string
	pki      *testutil.PKI
	mac      string
	vrrpIP   string
	downMark string // while it exists, haproxy cannot (re)start
	agent    *exec.Cmd
	exited   chan struct{}
}

// startAmphora creates the amphora's namespaces, hot-plugs its VIP NIC
// into the switch and starts its agent (built-in supervisor,
// ACTIVE_STANDBY).
func startAmphora(t *testing.T, name string, sw *testutil.NetNS, vrrpIP string) *kvAmphora {
	t.Helper()
	a := &kvAmphora{t: t, name: name, id: testutil.NewUUID(), mac: testutil.NeutronMAC(), vrrpIP: vrrpIP}
	a.ns = testutil.NewNetNS(t, "kv-"+name)
	dir := testutil.ShortDir(t, "kv"+name)
	a.dir, a.base, a.conf = dir, filepath.Join(dir, "lib"), filepath.Join(dir, "agent.conf")
	a.downMark = filepath.Join(dir, "haproxy-down")

	// The private mount namespace: a tmpfs over /run/netns, so this
	// amphora's "amphora-haproxy" is its own.
	holder := exec.Command("ip", "netns", "exec", a.ns.Name, "unshare", "-m", "--propagation", "private", "--",
		"sh", "-c", "mount -t tmpfs -o mode=755 tmpfs /run/netns && mount --make-shared /run/netns && exec sleep infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	a.holder = holder.Process.Pid
	go func() { _ = holder.Wait() }()
	t.Cleanup(a.destroy)
	testutil.WaitFor(t, 10*time.Second, testutil.Holds(name+" mount namespace holder", func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", a.holder))
		return strings.TrimSpace(string(comm)) == "sleep"
	}))

	// The VIP NIC, "hot-plugged" by MAC like Nova does.
	attach(t, sw, a.ns, "hp"+name, "p"+name, a.mac)

	// haproxy through a wrapper that refuses to start while downMark
	// exists: "haproxy crashed and cannot come back".
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nif [ -e " + a.downMark + " ]; then echo 'haproxy held down by the test' >&2; exit 1; fi\nexec /usr/sbin/haproxy \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "haproxy"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	a.pki, err = testutil.NewPKI(filepath.Join(dir, "pki"), a.id)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]map[string]string{
		"DEFAULT": {"debug": "True"},
		"haproxy_amphora": {
			"base_path": a.base, "base_cert_dir": filepath.Join(a.base, "certs"), "bind_host": "127.0.0.1",
			"bind_port": strconv.Itoa(kvAgentPort), "haproxy_cmd": filepath.Join(bin, "haproxy"),
		},
		"health_manager": {"controller_ip_port_list": "", "heartbeat_interval": "10", "heartbeat_key": "insecure"},
		"amphora_agent": {
			"agent_server_ca": a.pki.ClientCA, "agent_server_cert": a.pki.ServerPEM,
			"agent_server_network_dir": filepath.Join(dir, "interfaces"), "amphora_id": a.id,
			"service_manager": "builtin", "haproxy_user_group_config": filepath.Join(dir, "haproxy-default-user-group.conf"),
			"administrative_log_facility": "1",
		},
		"controller_worker": {"loadbalancer_topology": "ACTIVE_STANDBY"},
	}
	if err := testutil.WriteConfig(a.conf, sections); err != nil {
		t.Fatal(err)
	}
	// An agent built with -race reports data races in its log and goes on.
	t.Cleanup(func() {
		if log := a.log(); strings.Contains(log, "WARNING: DATA RACE") {
			t.Errorf("%s agent reported a data race:\n%s", a.name, log)
		}
	})
	a.startAgent()
	return a
}

func (a *kvAmphora) startAgent() {
	t := a.t
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(a.holder), "-m", "-n", "--wd="+a.dir, "--",
		testutil.Binary(t), "--config-file", a.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.agent, a.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(a.exited) }()
	client := a.client(5 * time.Second)
	testutil.WaitFor(t, 20*time.Second, testutil.Holds(a.name+" agent answering", func() bool {
		select {
		case <-a.exited:
			t.Fatalf("%s agent exited:\n%s", a.name, a.log())
		default:
		}
		resp, err := client.Get(a.url("/"))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}))
}

// restartAgent stops the agent (SIGTERM) and starts it again; the
// services it runs stay up.
func (a *kvAmphora) restartAgent() {
	a.t.Helper()
	_ = a.agent.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(20 * time.Second):
		a.t.Fatalf("%s agent did not stop", a.name)
	}
	a.startAgent()
}

func (a *kvAmphora) log() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	return string(b)
}

func (a *kvAmphora) url(path string) string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(kvAgentPort)) + path
}

// client is the controller's mTLS client, dialing inside the amphora's
// namespace.
func (a *kvAmphora) client(timeout time.Duration) *http.Client {
	a.t.Helper()
	return a.ns.HTTPClient(a.pki.ControllerTLS(a.t, a.id, a.pki.ClientPEM), timeout)
}

// do sends one request to the agent and returns status and body.
func (a *kvAmphora) do(method, path string, body []byte) (int, []byte) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.url(path), bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := a.client(60 * time.Second).Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp.StatusCode, data
}

// octavia runs calls through the Octavia controller's REST client
// (test/interop/octavia_client.py) inside the amphora's namespace and
// fails the test on any failed call.
func (a *kvAmphora) octavia(calls ...testutil.OctaviaCall) []testutil.OctaviaResult {
	t := a.t
	t.Helper()
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	req, err := json.Marshal(map[string]any{
		"host": "127.0.0.1", "port": kvAgentPort, "amphora_id": a.id,
		"client_cert": a.pki.ClientPEM, "server_ca": a.pki.ServerCA,
		"retries": 3, "retry_interval": 1, "calls": calls,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", a.ns.Name,
		"/usr/bin/python3", filepath.Join(root, "test/interop/octavia_client.py"))
	cmd.Stdin = bytes.NewReader(req)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + a.dir}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("octavia client: %v\n%s", err, stderr.String())
	}
	var res []testutil.OctaviaResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("octavia client output: %v\n%s", err, out)
	}
	for i, r := range res {
		if !r.OK {
			t.Fatalf("%s: %s failed: %s: %s\nagent log:\n%s", a.name, calls[i].Call, r.Error, r.Message, a.log())
		}
	}
	return res
}

// dataPlane opens a netlink handle in the amphora's own "amphora-haproxy".
func (a *kvAmphora) dataPlane() (*netlink.Handle, func(), error) {
	h, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/root/run/netns/amphora-haproxy", a.holder))
	if err != nil {
		return nil, nil, err
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return nl, func() { nl.Close(); h.Close() }, nil
}

// hasVIP reports whether keepalived configured the VIP on this amphora.
func (a *kvAmphora) hasVIP() bool {
	nl, done, err := a.dataPlane()
	if err != nil {
		return false
	}
	defer done()
	addrs, err := nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, ad := range addrs {
		if ad.IP.String() == kvVIP {
			return true
		}
	}
	return false
}

func (a *kvAmphora) keepalivedPID() int {
	return procfs.ReadPID(filepath.Join(a.base, "vrrp", "octavia-keepalived.pid"))
}

func (a *kvAmphora) haproxyPID(lbID string) int {
	return procfs.ReadPID(filepath.Join(a.base, lbID, lbID+".pid"))
}

// destroy stops the agent and kills, by PID, every process of this
// amphora: in its network namespace, in the namespaces it created inside
// its private mount namespace (haproxy, keepalived), or in that mount
// namespace.
func (a *kvAmphora) destroy() {
	if a.agent != nil && a.agent.Process != nil {
		_ = a.agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(10 * time.Second):
		}
	}
	inode := func(p string) uint64 {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil {
			return 0
		}
		return st.Ino
	}
	nets := map[uint64]bool{}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/root/run/netns", a.holder)); err == nil {
		for _, e := range ents {
			if ino := inode(fmt.Sprintf("/proc/%d/root/run/netns/%s", a.holder, e.Name())); ino != 0 {
				nets[ino] = true
			}
		}
	}
	nets[inode(a.ns.Path())] = true
	mnt := inode(fmt.Sprintf("/proc/%d/ns/mnt", a.holder))
	self := os.Getpid()
	for range 3 {
		ents, _ := os.ReadDir("/proc")
		var pids []int
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			n := inode(fmt.Sprintf("/proc/%d/ns/net", pid))
			m := inode(fmt.Sprintf("/proc/%d/ns/mnt", pid))
			if (n != 0 && nets[n]) || (mnt != 0 && m == mnt) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		deadline := time.Now().Add(5 * time.Second)
		for _, p := range pids {
			for procfs.Alive(p) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// renderKeepalived renders the pair's configurations with the
// controller's templater (test/interop/render_keepalived.py).
func renderKeepalived(t *testing.T, lbID string, amps ...*kvAmphora) map[string]string {
	t.Helper()
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	type ampSpec struct {
		ID       string `json:"id"`
		BasePath string `json:"base_path"`
		VRRPIP   string `json:"vrrp_ip"`
		Role     string `json:"role"`
		Priority int    `json:"priority"`
	}
	spec := map[string]any{"lb_id": lbID, "vip": kvVIP, "vip_cidr": kvCIDR, "gateway": kvGateway}
	var list []ampSpec
	for i, a := range amps {
		role, prio := "MASTER", 100
		if i > 0 {
			role, prio = "BACKUP", 90
		}
		list = append(list, ampSpec{ID: a.id, BasePath: a.base, VRRPIP: a.vrrpIP, Role: role, Priority: prio})
	}
	spec["amphorae"] = list
	in, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", filepath.Join(root, "test/interop/render_keepalived.py"))
	cmd.Stdin = bytes.NewReader(in)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + os.TempDir()}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render_keepalived.py: %v\n%s", err, stderr.String())
	}
	var res map[string]string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// probe sends one GET to the VIP every interval from the client
// namespace, each bounded by a short timeout, until stopped or until its
// count or time budget is spent.
type probe struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	at time.Time
	ok bool
}

func startProbe(client *testutil.NetNS, interval time.Duration, maxCount int, maxTime time.Duration) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	c := client.HTTPClient(nil, 300*time.Millisecond)
	go func() {
		defer close(p.done)
		end := time.Now().Add(maxTime)
		for i := 0; i < maxCount && time.Now().Before(end); i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			at := time.Now()
			code, body, err := testutil.Get(ctx, c, "http://"+kvVIP+"/")
			cancel()
			p.mu.Lock()
			p.samples = append(p.samples, sample{at: at, ok: err == nil && code == http.StatusOK && body == kvMember})
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-time.After(time.Until(at.Add(interval))):
			}
		}
	}()
	return p
}

func (p *probe) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// failures lists the unanswered requests sent after t, as offsets from t.
func (p *probe) failures(t time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range p.samples {
		if !s.ok && !s.at.Before(t) {
			out = append(out, s.at.Sub(t).Round(time.Millisecond).String())
		}
	}
	return out
}

// stable reports whether every request of the last d was answered (and
// there were some).
func (p *probe) stable(d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	from := time.Now().Add(-d)
	n := 0
	for _, s := range p.samples {
		if s.at.Before(from) {
			continue
		}
		if !s.ok {
			return false
		}
		n++
	}
	return n >= int(d/(100*time.Millisecond))
}

// okAfter reports whether a request sent after t succeeded.
func (p *probe) okAfter(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.samples {
		if s.ok && s.at.After(t) {
			return true
		}
	}
	return false
}

// outage returns, for the samples from t0 on, the time between the last
// answered request before the first unanswered one and the first answered
// request after the last unanswered one (0 when nothing failed), and the
// number of unanswered requests.
func (p *probe) outage(t0 time.Time) (time.Duration, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var lastOK, firstFail, lastFail time.Time
	failed := 0
	for _, s := range p.samples {
		if s.at.Before(t0) {
			if s.ok {
				lastOK = s.at
			}
			continue
		}
		if !s.ok {
			failed++
			if firstFail.IsZero() {
				firstFail = s.at
			}
			lastFail = s.at
		} else if firstFail.IsZero() {
			lastOK = s.at
		}
	}
	if failed == 0 {
		return 0, 0
	}
	for _, s := range p.samples {
		if s.ok && s.at.After(lastFail) {
			if lastOK.IsZero() {
				lastOK = t0
			}
			return s.at.Sub(lastOK), failed
		}
	}
	return -1, failed
}

// checkServed fails the test when the VIP went unanswered for more than
// a glitch since t; single lost requests (a loaded machine, 300 ms
// timeout) are only reported.
func checkServed(t *testing.T, pr *probe, since time.Time, what string) {
	t.Helper()
	gap, lost := pr.outage(since)
	switch {
	case lost == 0:
	case gap < 0 || gap > 2*time.Second:
		t.Errorf("VIP not served %s: %d requests lost (%v without answer) at %v", what, lost, gap, pr.failures(since))
	default:
		t.Logf("%s: %d requests lost (%v without answer) at %v", what, lost, gap, pr.failures(since))
	}
}

func TestVRRPFailover(t *testing.T) {
	kvRequire(t)
	sw := testutil.NewNetNS(t, "kv-sw")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := sw.Netlink().LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := sw.Netlink().LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	client := testutil.NewNetNS(t, "kv-cl")
	attach(t, sw, client, "eth0", "pcl", "")
	if err := client.AddAddr("eth0", kvClientIP+"/24"); err != nil {
		t.Fatal(err)
	}
	member := testutil.NewNetNS(t, "kv-mb")
	attach(t, sw, member, "eth0", "pmb", "")
	if err := member.AddAddr("eth0", kvMemberIP+"/24"); err != nil {
		t.Fatal(err)
	}
	testutil.StartMember(t, member, net.JoinHostPort(kvMemberIP, "8080"), kvMember)

	amp1 := startAmphora(t, "a1", sw, "198.51.100.11")
	amp2 := startAmphora(t, "a2", sw, "198.51.100.12")
	amps := []*kvAmphora{amp1, amp2}
	t.Cleanup(func() {
		if t.Failed() {
			for _, a := range amps {
				sup, _ := os.ReadFile(filepath.Join(a.base, "supervisor", "octavia-keepalived.log"))
				t.Logf("%s agent log:\n%s\n%s keepalived log:\n%s", a.name, a.log(), a.name, sup)
			}
		}
	})

	// The controller's flow: plug the VIP (the VRRP port), upload and
	// start the load balancer, then the VRRP configuration.
	lbID, listenerID, poolID, memberID := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	noMonitor := false
	var specs []testutil.RenderSpec
	for _, a := range amps {
		specs = append(specs, testutil.RenderSpec{
			AmphoraID: a.id, LBID: lbID, BasePath: a.base, CertDir: filepath.Join(a.base, "certs"),
			VIP: kvVIP, Topology: "ACTIVE_STANDBY",
			Listeners: []testutil.RenderListener{{ID: listenerID, Protocol: "HTTP", Port: 80, PoolID: poolID,
				Monitor: &noMonitor, Members: []testutil.RenderMember{{ID: memberID, Address: kvMemberIP, Port: 8080}}}},
		})
	}
	haproxyCfgs := testutil.Render(t, specs...)
	kaCfgs := renderKeepalived(t, lbID, amp1, amp2)
	t0 := time.Now()
	for i, a := range amps {
		netInfo := map[string]any{
			"subnet_cidr": kvCIDR, "gateway": kvGateway, "mac_address": a.mac, "vrrp_ip": a.vrrpIP,
			"mtu": 1500, "host_routes": []any{}, "additional_vips": []any{}, "is_sriov": false,
		}
		a.octavia(
			testutil.OctaviaCall{Call: "plug_vip", Args: []any{kvVIP, netInfo}},
			testutil.OctaviaCall{Call: "upload_config", Args: []any{lbID, haproxyCfgs[i]}},
			testutil.OctaviaCall{Call: "reload_listener", Args: []any{lbID}},
			testutil.OctaviaCall{Call: "upload_vrrp_config", Args: []any{kaCfgs[a.id]}},
			testutil.OctaviaCall{Call: "start_vrrp"},
		)
		check, err := os.ReadFile(filepath.Join(a.base, "vrrp", "check_scripts", "haproxy_check_script.sh"))
		if err != nil || !strings.Contains(string(check), " vrrp-check -- "+filepath.Join(a.base, lbID+".sock")+";") {
			t.Fatalf("%s haproxy check: %q %v", a.name, check, err)
		}
	}

	testutil.WaitFor(t, 60*time.Second, testutil.Holds("the VIP on amp1 (MASTER)", func() bool { return amp1.hasVIP() && !amp2.hasVIP() }))
	t.Logf("VRRP pair up: amp1 holds the VIP %v after the controller's first call", time.Since(t0).Round(10*time.Millisecond))

	// Bounded probe: one request every 25 ms, at most 12000 and 5 minutes.
	pr := startProbe(client, 25*time.Millisecond, 12000, 5*time.Minute)
	defer pr.Stop()
	now := time.Now()
	testutil.WaitFor(t, 30*time.Second, testutil.Holds("the VIP answering", func() bool { return pr.okAfter(now) }))

	// 1. haproxy of the MASTER dies and cannot restart: its check fails,
	// keepalived gives the VIP up, the BACKUP takes it.
	if err := os.WriteFile(amp1.downMark, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hpid := amp1.haproxyPID(lbID)
	if !procfs.Alive(hpid) {
		t.Fatalf("amp1 haproxy pid %d not running", hpid)
	}
	kill := time.Now()
	if err := syscall.Kill(hpid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	movedHAProxy := testutil.WaitFor(t, 30*time.Second, testutil.Holds("the VIP on amp2 after amp1's haproxy died", func() bool { return amp2.hasVIP() && !amp1.hasVIP() }))
	testutil.WaitFor(t, 30*time.Second, testutil.Holds("answers through amp2", func() bool { return pr.okAfter(kill.Add(movedHAProxy)) }))
	gapHAProxy, lostHAProxy := pr.outage(kill)
	t.Logf("haproxy killed on the MASTER: VIP moved after %v, client saw no answer for %v (%d requests lost)",
		movedHAProxy.Round(10*time.Millisecond), gapHAProxy.Round(10*time.Millisecond), lostHAProxy)

	// amp1 recovers (the controller restarts the listener); with the
	// higher priority and state MASTER it takes the VIP back.
	if err := os.Remove(amp1.downMark); err != nil {
		t.Fatal(err)
	}
	amp1.octavia(testutil.OctaviaCall{Call: "start_listener", Args: []any{lbID}})
	testutil.WaitFor(t, 60*time.Second, testutil.Holds("the VIP back on amp1", func() bool { return amp1.hasVIP() && !amp2.hasVIP() }))
	now = time.Now()
	testutil.WaitFor(t, 30*time.Second, testutil.Holds("answers through amp1", func() bool { return pr.okAfter(now) }))

	// 2. keepalived of the MASTER crashes (SIGKILL of its main process).
	kpid := amp1.keepalivedPID()
	if !procfs.Alive(kpid) {
		t.Fatalf("amp1 keepalived pid %d not running", kpid)
	}
	kill = time.Now()
	if err := syscall.Kill(kpid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	movedKeepalived := testutil.WaitFor(t, 30*time.Second, testutil.Holds("the VIP on amp2 after amp1's keepalived died", func() bool { return amp2.hasVIP() }))
	testutil.WaitFor(t, 30*time.Second, testutil.Holds("answers after keepalived died", func() bool { return pr.okAfter(kill.Add(movedKeepalived)) }))
	resumed := time.Now()
	gapKeepalived, lostKeepalived := pr.outage(kill)
	t.Logf("keepalived killed on the MASTER: VIP on amp2 after %v, client saw no answer for %v (%d requests lost)",
		movedKeepalived.Round(10*time.Millisecond), gapKeepalived.Round(10*time.Millisecond), lostKeepalived)
	// The supervisor restarts amp1's keepalived; with state MASTER and
	// the higher priority it takes the VIP back (preemption).
	back := testutil.WaitFor(t, 60*time.Second, testutil.Holds("amp1's keepalived restarted", func() bool {
		p := amp1.keepalivedPID()
		return p != kpid && procfs.Alive(p)
	}))
	back += testutil.WaitFor(t, 60*time.Second, testutil.Holds("the VIP back on amp1", func() bool { return amp1.hasVIP() && !amp2.hasVIP() }))
	now = time.Now()
	testutil.WaitFor(t, 30*time.Second, testutil.Holds("answers after the restart", func() bool { return pr.okAfter(now) }))
	gapBack, lostBack := pr.outage(resumed)
	t.Logf("amp1's keepalived restarted by the supervisor and took the VIP back %v after the kill; no answer for %v then (%d lost)",
		(movedKeepalived + back).Round(10*time.Millisecond), gapBack.Round(10*time.Millisecond), lostBack)

	// 3. An invalid configuration is refused; the running keepalived and
	// the VIP are untouched. (After the take-over, clients may need a
	// moment to learn the new MAC: start from a steady state.)
	testutil.WaitFor(t, 60*time.Second, testutil.Holds("3 s of steady answers", func() bool { return pr.stable(3 * time.Second) }))
	master := amp1
	conf := filepath.Join(master.base, "vrrp", "octavia-keepalived.conf")
	before, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	kpid = master.keepalivedPID()
	now = time.Now()
	bad := strings.Replace(kaCfgs[master.id], "    accept\n", "    accept\n    accept_everything_now yes\n", 1)
	code, body := master.do(http.MethodPut, "/1.0/vrrp/upload", []byte(bad))
	var resp struct{ Message, Details string }
	if err := json.Unmarshal(body, &resp); err != nil || code != http.StatusBadRequest ||
		resp.Message != "Invalid request" || !strings.Contains(resp.Details, "Unknown keyword 'accept_everything_now'") {
		t.Fatalf("invalid upload: %d %s", code, body)
	}
	if after, _ := os.ReadFile(conf); !bytes.Equal(after, before) {
		t.Error("the installed configuration changed")
	}
	code, body = master.do(http.MethodPut, "/1.0/vrrp/reload", nil)
	if code != http.StatusAccepted || !strings.Contains(string(body), `"keepalived reloaded"`) {
		t.Errorf("reload: %d %s", code, body)
	}
	time.Sleep(2 * time.Second) // observation window (nothing may happen), not a synchronisation
	if p := master.keepalivedPID(); p != kpid || !procfs.Alive(p) {
		t.Errorf("keepalived pid %d -> %d", kpid, p)
	}
	if !master.hasVIP() {
		t.Error("the MASTER lost the VIP")
	}
	after := time.Now()
	testutil.WaitFor(t, 10*time.Second, testutil.Holds("answers after the reload", func() bool { return pr.okAfter(after) }))
	checkServed(t, pr, now, "after the refused upload and a reload")

	// 4. The agent restarts (upgrade, crash): keepalived runs on, the
	// new agent finds it (start reloads it) and the VIP stays.
	now = time.Now()
	master.restartAgent()
	if p := master.keepalivedPID(); p != kpid || !procfs.Alive(p) {
		t.Errorf("keepalived pid %d -> %d across the agent restart", kpid, p)
	}
	code, body = master.do(http.MethodPut, "/1.0/vrrp/start", nil)
	if code != http.StatusAccepted || !strings.Contains(string(body), `"keepalived reloaded"`) {
		t.Errorf("start after the agent restart: %d %s", code, body)
	}
	if !master.hasVIP() {
		t.Error("the MASTER lost the VIP across the agent restart")
	}
	after = time.Now()
	testutil.WaitFor(t, 10*time.Second, testutil.Holds("answers after the agent restart", func() bool { return pr.okAfter(after) }))
	checkServed(t, pr, now, "across the agent restart")
	pr.Stop()

	// A line for the benchmark notes (Octavia's default timers).
	fmt.Printf("BENCH vrrp-failover haproxy-kill: vip-moved=%v no-answer=%v lost=%d; keepalived-kill: vip-moved=%v no-answer=%v lost=%d "+
		"(probe every 25ms, 300ms timeout; vrrp_check_interval=5 fall=2 rise=2 advert_int=1)\n",
		movedHAProxy.Round(10*time.Millisecond), gapHAProxy.Round(10*time.Millisecond), lostHAProxy,
		movedKeepalived.Round(10*time.Millisecond), gapKeepalived.Round(10*time.Millisecond), lostKeepalived)
}
