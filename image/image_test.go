package image

// TestAmphoraImage is the end-to-end test of the amphora image
// diskimage-builder built ("make image"): its root file system booted
// with systemd-nspawn (systemd as PID 1, a real system manager and
// system bus, the agent installed by its Debian package), driven over
// mTLS by the Octavia controller's own REST client, then powered off and
// booted again. The VM test (test/vm) boots the same image in QEMU with
// its own kernel and a config drive.
//
// Topology (every address lives in a namespace the test creates, except
// the host end of the management veth the test creates):
//
//	root ns      iam<rand>  198.18.0.(4k+1)/30 (the "controller": REST client, heartbeat receiver)
//	               | veth
//	iat-amp-*    eth0 198.18.0.(4k+2)/30: the amphora's management NIC; this namespace is the
//	             container's own (--network-namespace-path). Hot-plugged while it runs:
//	             eth1 (VIP port)    <--veth-->  vip0 in iat-vip-*: client 198.51.100.10/24
//	             eth2 (member port) <--veth-->  mem0 in iat-mem-*: members 198.18.2.21, .22 :8081
//	             Inside the container the agent moves eth1 and eth2 into its own
//	             amphora-haproxy namespace: VIP 198.51.100.100, vrrp_ip .4, member port 198.18.2.11.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	agentnetns "github.com/octavia-go/amphora-agent/netns"
	"github.com/octavia-go/amphora-agent/service"
)

const (
	agentPort   = 9443
	vip         = "198.51.100.100"
	vrrpIP      = "198.51.100.4"
	vipGateway  = "198.51.100.1"
	clientIP    = "198.51.100.10"
	ampMemberIP = "198.18.2.11"
	member1IP   = "198.18.2.21"
	member2IP   = "198.18.2.22"
	memberPort  = 8081
	lbPort      = 80
	dataPlaneNS = "amphora-haproxy" // the agent's default network_namespace
)

// mgmtLink is the management network between the test (the controller)
// and the amphora.
type mgmtLink struct {
	HostIf        string
	HostIP, AmpIP string
}

// freeMgmtPrefix picks a /30 in 198.18.0.64-255 that nothing in the root
// namespace uses: no address in it, no route at least as specific, and
// any broader route covering it only on a veth (another test's).
func freeMgmtPrefix(t *testing.T) netip.Prefix {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for range 64 {
		var b [1]byte
		if _, err := rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, 0, 64 + b[0]%48*4}), 30)
		ok := true
		for _, r := range routes {
			if r.Dst == nil {
				continue // the default route
			}
			ones, _ := r.Dst.Mask.Size()
			if ones == 0 {
				continue // the default route
			}
			a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
			p := netip.PrefixFrom(a, ones).Masked()
			if !p.Overlaps(cand) {
				continue
			}
			if ones >= cand.Bits() {
				ok = false
				break
			}
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil || l.Type() != "veth" {
				ok = false // the machine's own network: never shadow it
				break
			}
		}
		for _, a := range addrs {
			if ip, _ := netip.AddrFromSlice(a.IP.To4()); cand.Contains(ip) {
				ok = false
			}
		}
		if ok {
			return cand
		}
	}
	t.Fatal("no free /30 for the management network in 198.18.0.64/26..198.18.0.255")
	return netip.Prefix{}
}

// newMgmtLink connects the root namespace with the amphora's namespace
// (its eth0, with a Neutron MAC).
func newMgmtLink(t *testing.T, amp *testutil.NetNS) *mgmtLink {
	t.Helper()
	p := freeMgmtPrefix(t)
	host, ampIP := p.Addr().Next(), p.Addr().Next().Next()
	m := &mgmtLink{HostIf: "iam" + testutil.RandomSuffix(4), HostIP: host.String(), AmpIP: ampIP.String()}
	if out, err := exec.Command("ip", "link", "add", m.HostIf, "type", "veth", "peer", "name", "eth0", "netns", amp.Name).CombinedOutput(); err != nil {
		t.Fatalf("management veth: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", m.HostIf).Run() })
	for _, argv := range [][]string{
		{"ip", "-n", amp.Name, "link", "set", "eth0", "address", testutil.NeutronMAC()},
		{"ip", "-n", amp.Name, "addr", "add", m.AmpIP + "/30", "dev", "eth0"},
		{"ip", "-n", amp.Name, "link", "set", "eth0", "up"},
		{"ip", "addr", "add", m.HostIP + "/30", "dev", m.HostIf},
		{"ip", "link", "set", m.HostIf, "up"},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	return m
}

// hotplug attaches a port the way Nova does, seen from inside the
// amphora: a new NIC ifname (down, with the port's MAC) appears in the
// amphora's namespace; its peer is up in the network's namespace.
func hotplug(t *testing.T, amp *testutil.NetNS, ifname, mac string, net *testutil.NetNS, peerIf string) {
	t.Helper()
	if out, err := exec.Command("ip", "-n", amp.Name, "link", "add", ifname, "address", mac, "type", "veth",
		"peer", "name", peerIf, "netns", net.Name).CombinedOutput(); err != nil {
		t.Fatalf("hot-plug %s (%s): %v: %s", ifname, mac, err, out)
	}
	if out, err := exec.Command("ip", "-n", net.Name, "link", "set", peerIf, "up").CombinedOutput(); err != nil {
		t.Fatalf("%s up: %v: %s", peerIf, err, out)
	}
}

// octaviaOK runs calls through the controller's client and fails the
// test unless each succeeded (with want status, when the result is a
// response).
func octaviaOK(t *testing.T, a *testutil.Agent, wantStatus int, calls ...testutil.OctaviaCall) []json.RawMessage {
	t.Helper()
	res := a.Octavia(calls...)
	out := make([]json.RawMessage, len(res))
	for i, r := range res {
		if !r.OK {
			t.Fatalf("%s: %s: %s", calls[i].Call, r.Error, r.Message)
		}
		if wantStatus != 0 {
			var resp struct {
				StatusCode int `json:"status_code"`
			}
			if err := json.Unmarshal(r.Result, &resp); err != nil || resp.StatusCode != wantStatus {
				t.Fatalf("%s: %s, want status %d", calls[i].Call, r.Result, wantStatus)
			}
		}
		out[i] = r.Result
	}
	return out
}

// reachBothMembers sends requests from the client's namespace to the
// VIP until both members have answered (bounded in count and time).
func reachBothMembers(t *testing.T, client *testutil.NetNS, what string) {
	t.Helper()
	c := client.HTTPClient(nil, 2*time.Second)
	url := "http://" + net.JoinHostPort(vip, strconv.Itoa(lbPort)) + "/"
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	seen := map[string]int{}
	var lastErr error
	for i := 0; i < 400 && ctx.Err() == nil; i++ {
		code, body, err := testutil.Get(ctx, c, url)
		switch {
		case err != nil:
			lastErr = err
		case code != http.StatusOK:
			lastErr = fmt.Errorf("status %d: %q", code, body)
		default:
			seen[body]++
		}
		if seen["member1"] > 0 && seen["member2"] > 0 {
			t.Logf("%s: client -> %s reached both members after %d requests", what, url, i+1)
			return
		}
		if err != nil || code != http.StatusOK {
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Fatalf("%s: client -> %s: members seen %v, last error %v", what, url, seen, lastErr)
}

// expectProps fails the test when a unit property differs.
func expectProps(t *testing.T, c *container, unit string, want map[string]string) map[string]string {
	t.Helper()
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	got := c.show(unit, append(names, "MainPID", "NRestarts", "ActiveState", "SubState", "Result")...)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s=%q, want %q (all: %v)", unit, k, got[k], v, got)
		}
	}
	return got
}

// moveBack is what a reboot does to the hot-plugged NICs: after the
// guest is gone they show up again in the amphora's root namespace,
// down, without addresses, at the default MTU, under kernel names that
// need not be the ones they had (here swapped: the agent must find them
// by MAC). held is the data-plane namespace of the powered-off guest.
func moveBack(t *testing.T, held netns.NsHandle, amp *testutil.NetNS, names map[string]string) {
	t.Helper()
	h, err := netlink.NewHandleAt(held)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	ampFd, err := netns.GetFromName(amp.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer ampFd.Close()
	moved := 0
	for _, l := range links {
		name, ok := names[l.Attrs().HardwareAddr.String()]
		if !ok {
			continue
		}
		tmp := "iatr" + testutil.RandomSuffix(4)
		for _, step := range []func() error{
			func() error { return h.LinkSetDown(l) },
			func() error { return h.LinkSetName(l, tmp) },
			func() error { return h.LinkSetMTU(l, 1500) },
			func() error { return h.LinkSetNsFd(l, int(ampFd)) },
		} {
			if err := step(); err != nil {
				t.Fatalf("move %s back: %v", l.Attrs().HardwareAddr, err)
			}
		}
		nl, err := amp.Netlink().LinkByName(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if err := amp.Netlink().LinkSetName(nl, name); err != nil {
			t.Fatalf("rename %s to %s: %v", tmp, name, err)
		}
		moved++
	}
	if moved != len(names) {
		t.Fatalf("found %d of the %d plugged NICs in the powered-off amphora's %s", moved, len(names), dataPlaneNS)
	}
}

// powerCycle powers the amphora off, brings its hot-plugged NICs back
// into its root namespace as a reboot does (names: MAC -> kernel name),
// runs offline (if any) on the powered-off image and boots it again. It
// returns the new boot and when it started.
func powerCycle(t *testing.T, c *container, root *amphoraRoot, amp *testutil.NetNS, consoleLog string, names map[string]string, offline func()) (*container, time.Time) {
	t.Helper()
	// Hold the guest's data-plane namespace, so the NICs inside survive
	// its power-off and can come back like a VM's NICs.
	held, err := netns.GetFromPath(filepath.Join("/proc", strconv.Itoa(c.leader), "root", "run", "netns", dataPlaneNS))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	tOff := time.Now()
	c.stop()
	moveBack(t, held, amp, names)
	held.Close()
	if offline != nil {
		offline()
	}
	tOn := time.Now()
	c = boot(t, root, c.name, amp.Path(), consoleLog)
	t.Logf("timing: power-off %v, boot %v", tOn.Sub(tOff).Round(100*time.Millisecond), time.Since(tOn).Round(100*time.Millisecond))
	for _, u := range []string{"amphora-agent", agentnetns.UnitName} {
		if out, err := c.exec(20*time.Second, "journalctl", "-b", "-o", "cat", "--no-pager", "-u", u, "--grep", "NIC restored"); err == nil {
			t.Logf("boot-time restore by %s:\n%s", u, strings.TrimSpace(out))
		}
	}
	return c, tOn
}

func TestAmphoraImage(t *testing.T) {
	requireImageTools(t)
	testStart := time.Now()
	dir, err := os.MkdirTemp(cacheRoot(), "amphora-image-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, dir) })

	amphoraID, lbID, listenerID, poolID, m1ID, m2ID := testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID(), testutil.NewUUID()
	vipMAC, memMAC := testutil.NeutronMAC(), testutil.NeutronMAC()
	hbKey := "insecure-" + testutil.RandomSuffix(4)

	// Octavia's templater takes seconds to start: render meanwhile.
	spec := testutil.RenderSpec{
		AmphoraID: amphoraID, LBID: lbID, BasePath: "/var/lib/octavia", CertDir: "/var/lib/octavia/certs", VIP: vip,
		Listeners: []testutil.RenderListener{{
			ID: listenerID, Protocol: "HTTP", Port: lbPort, PoolID: poolID, // HTTP monitor: GET /index.html, expect 418
			Members: []testutil.RenderMember{
				{ID: m1ID, Address: member1IP, Port: memberPort},
				{ID: m2ID, Address: member2IP, Port: memberPort},
			},
		}},
	}
	var lbConfig string
	var renderErr error
	renderDone := make(chan struct{})
	go func() {
		defer close(renderDone)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		lbConfig, renderErr = testutil.RenderHAProxy(ctx, spec)
	}()
	t.Cleanup(func() { <-renderDone })

	root := newAmphoraRoot(t, dir)
	tRootfs := time.Now()

	// The network: the amphora's namespace (the container's), its
	// management link, the VIP and member networks.
	amp := testutil.NewNetNS(t, "iat-amp")
	vipNet := testutil.NewNetNS(t, "iat-vip")
	memNet := testutil.NewNetNS(t, "iat-mem")
	mgmt := newMgmtLink(t, amp)
	hb := listenHeartbeats(t, net.JoinHostPort(mgmt.HostIP, "0"), hbKey)
	// The log offloading targets of the controller's rsyslog config.
	tenantLogs, adminLogs := listenSyslog(t, mgmt.HostIP), listenSyslog(t, mgmt.HostIP)
	rsyslogPath := filepath.Join(dir, "10-rsyslog.conf")
	if err := os.WriteFile(rsyslogPath, []byte(renderRsyslog(t, tenantLogs.Addr(), adminLogs.Addr())), 0o644); err != nil {
		t.Fatal(err)
	}

	// What the controller puts on a new amphora (configuration and
	// certificates, through the config drive), written into this test's
	// copy of the image as cloud-init would at first boot.
	pki, err := testutil.NewPKI(filepath.Join(dir, "pki"), amphoraID)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "amphora-agent.conf")
	if err := testutil.WriteConfig(confPath, map[string]map[string]string{
		"DEFAULT": {"debug": "True", "use_syslog": "True", "syslog_log_facility": "LOG_LOCAL1"},
		"haproxy_amphora": {
			"base_cert_dir": "/var/lib/octavia/certs", "base_path": "/var/lib/octavia",
			"bind_host": mgmt.AmpIP, "bind_port": strconv.Itoa(agentPort), "haproxy_cmd": "/usr/sbin/haproxy",
			"respawn_count": "2", "respawn_interval": "2", "use_upstart": "True",
			"user_log_facility": "0", "administrative_log_facility": "1",
		},
		"health_manager": {"controller_ip_port_list": hb.Addr(), "heartbeat_interval": "1", "heartbeat_key": hbKey},
		"amphora_agent": {
			"agent_server_ca": "/etc/octavia/certs/client_ca.pem", "agent_server_cert": "/etc/octavia/certs/server.pem",
			"agent_server_network_dir": "/etc/octavia/interfaces", "agent_request_read_timeout": "180",
			"amphora_id": amphoraID, "amphora_udp_driver": "keepalived_lvs", "agent_tls_protocol": "TLSv1.2",
		},
		"controller_worker": {"loadbalancer_topology": "SINGLE"},
	}); err != nil {
		t.Fatal(err)
	}
	// The hostname cloud-init sets from the Nova instance name.
	name := "amphora-" + amphoraID
	hostnamePath := filepath.Join(dir, "hostname")
	if err := os.WriteFile(hostnamePath, []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A container has no config drive: cloud-init stays off (the VM test
	// runs it), the files above stand for what it would write.
	disabled := filepath.Join(dir, "cloud-init.disabled")
	if err := os.WriteFile(disabled, []byte("nspawn test: files staged directly\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A container's root is not remounted from the image's fstab.
	if err := os.MkdirAll(filepath.Join(root.Upper, "etc/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/null", filepath.Join(root.Upper, "etc/systemd/system/systemd-remount-fs.service")); err != nil {
		t.Fatal(err)
	}
	root.stage(t, []stagedFile{
		{hostnamePath, "/etc/hostname", 0o644},
		{confPath, "/etc/octavia/amphora-agent.conf", 0o600},
		{pki.ServerPEM, "/etc/octavia/certs/server.pem", 0o600},
		{pki.ClientCA, "/etc/octavia/certs/client_ca.pem", 0o600},
		{disabled, "/etc/cloud/cloud-init.disabled", 0o644},
		{rsyslogPath, "/etc/rsyslog.d/10-rsyslog.conf", 0o644},
		{debFile(t), "/var/tmp/debs/amphora-agent.deb", 0o644}, // for the upgrade
	})
	tElement := time.Now()

	consoleLog := filepath.Join(dir, "console.log")
	c := boot(t, root, name, amp.Path(), consoleLog)
	tBoot := time.Now()
	t.Logf("timing: image %v, staging %v, boot %v",
		tRootfs.Sub(testStart).Round(100*time.Millisecond), tElement.Sub(tRootfs).Round(100*time.Millisecond), tBoot.Sub(tElement).Round(100*time.Millisecond))

	a := testutil.Remote(t, testutil.RemoteOptions{Host: mgmt.AmpIP, Port: agentPort, AmphoraID: amphoraID, PKI: pki, Dir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = a.AwaitAnswer(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("image", func(t *testing.T) {
		// Type=notify: the unit is active only once the agent sent READY
		// (a notify service that never does stays "activating").
		expectProps(t, c, "amphora-agent.service", map[string]string{
			"Type": "notify", "ActiveState": "active", "SubState": "running", "NRestarts": "0",
			"UnitFileState": "enabled",
		})
		// the package's unit, from /usr/lib/systemd/system (/lib on a
		// merged-/usr Debian, where systemd reports that path)
		path, text := c.unitFile("amphora-agent.service")
		want, err := os.ReadFile(filepath.Join("..", "packaging", "systemd", "amphora-agent.service"))
		if err != nil {
			t.Fatal(err)
		}
		if (path != "/usr/lib/systemd/system/amphora-agent.service" && path != "/lib/systemd/system/amphora-agent.service") || text != string(want) {
			t.Errorf("amphora-agent.service loaded from %s:\n%s", path, text)
		}
		for _, u := range []string{"haproxy.service", "keepalived.service"} {
			expectProps(t, c, u, map[string]string{"UnitFileState": "disabled", "ActiveState": "inactive"})
		}
		if out := c.mustExec("stat", "-c", "%a %U", "/usr/bin/amphora-agent", "/etc/octavia/certs",
			"/etc/octavia/interfaces", "/var/lib/octavia", "/var/lib/octavia/haproxy-default-user-group.conf"); out != "755 root\n700 root\n755 root\n755 root\n644 root\n" {
			t.Errorf("installed files (mode owner):\n%s", out)
		}
		if out := c.mustExec("cat", "/var/lib/octavia/haproxy-default-user-group.conf"); out != "global\n    group nogroup\n" {
			t.Errorf("haproxy-default-user-group.conf: %q", out)
		}
	})

	netInfo := map[string]any{
		"subnet_cidr": "198.51.100.0/24", "gateway": vipGateway, "mac_address": vipMAC, "vrrp_ip": vrrpIP,
		"mtu": 1500, "host_routes": []any{}, "additional_vips": []any{},
	}
	portInfo := map[string]any{
		"mac_address": memMAC, "mtu": 1500,
		"fixed_ips": []any{map[string]any{"ip_address": ampMemberIP, "subnet_cidr": "198.18.2.0/24", "gateway": nil, "host_routes": []any{}}},
	}
	// Nova hot-plugs the VIP and member ports into the running amphora;
	// the members serve for the whole test, across the reboot.
	hotplug(t, amp, "eth1", vipMAC, vipNet, "vip0")
	hotplug(t, amp, "eth2", memMAC, memNet, "mem0")
	for _, x := range []struct {
		ns        *testutil.NetNS
		ifc, cidr string
	}{{vipNet, "vip0", clientIP + "/24"}, {memNet, "mem0", member1IP + "/24"}, {memNet, "mem0", member2IP + "/24"}} {
		if err := x.ns.AddAddr(x.ifc, x.cidr); err != nil {
			t.Fatal(err)
		}
	}
	testutil.StartMember(t, memNet, net.JoinHostPort(member1IP, strconv.Itoa(memberPort)), "member1")
	testutil.StartMember(t, memNet, net.JoinHostPort(member2IP, strconv.Itoa(memberPort)), "member2")

	t.Run("controller", func(t *testing.T) {
		<-renderDone
		if renderErr != nil {
			t.Fatal(renderErr)
		}
		res := octaviaOK(t, a, 0,
			testutil.OctaviaCall{Call: "get_info"},
			testutil.OctaviaCall{Call: "plug_vip", Args: []any{vip, netInfo}},
			testutil.OctaviaCall{Call: "plug_network", Args: []any{portInfo}},
			testutil.OctaviaCall{Call: "upload_config", Args: []any{lbID, lbConfig}},
			testutil.OctaviaCall{Call: "start_listener", Args: []any{lbID}},
		)
		var info struct {
			Hostname       string `json:"hostname"`
			HAProxyVersion string `json:"haproxy_version"`
			APIVersion     string `json:"api_version"`
		}
		if err := json.Unmarshal(res[0], &info); err != nil {
			t.Fatal(err)
		}
		if info.Hostname != name || info.APIVersion != "1.0" || !strings.HasPrefix(info.HAProxyVersion, "2.") {
			t.Errorf("get_info: %s (want hostname %s)", res[0], name)
		}
		for i, r := range res[1:] {
			var resp struct {
				StatusCode int `json:"status_code"`
			}
			if err := json.Unmarshal(r, &resp); err != nil || resp.StatusCode != http.StatusAccepted {
				t.Fatalf("call %d: %s, want status 202", i+1, r)
			}
		}

		unit := haproxy.UnitName(lbID) + ".service"
		expectProps(t, c, unit, map[string]string{"ActiveState": "active", "UnitFileState": "enabled", "Type": "notify"})
		netnsUnit := agentnetns.UnitName + ".service"
		expectProps(t, c, netnsUnit, map[string]string{"ActiveState": "active"})
		if path, text := c.unitFile(netnsUnit); !strings.HasPrefix(text, service.GeneratedMarker) {
			t.Errorf("%s is not the agent's rendering:\n%s", path, text)
		}
		if path, text := c.unitFile(unit); !strings.HasPrefix(text, service.GeneratedMarker) {
			t.Errorf("%s is not the agent's rendering:\n%s", path, text)
		}
		reachBothMembers(t, vipNet, "after start_listener")

		before := c.show(unit, "MainPID", "NRestarts")
		workers := c.mustExec("pgrep", "-P", before["MainPID"])
		octaviaOK(t, a, http.StatusAccepted, testutil.OctaviaCall{Call: "reload_listener", Args: []any{lbID}})
		after := expectProps(t, c, unit, map[string]string{"ActiveState": "active", "MainPID": before["MainPID"], "NRestarts": before["NRestarts"], "ReloadResult": "success"})
		// the master re-executes and starts new workers
		deadline := time.Now().Add(15 * time.Second)
		for {
			now, _ := c.exec(10*time.Second, "pgrep", "-P", after["MainPID"])
			if now != "" && now != workers {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy workers after reload_listener: %q, before %q", now, workers)
			}
			time.Sleep(100 * time.Millisecond)
		}
		reachBothMembers(t, vipNet, "after reload_listener")

		hb.await(t, tBoot, 30*time.Second, "listener OPEN, both members UP", func(m *heartbeat) bool {
			p := m.Pools[poolID+":"+listenerID]
			return m.AmphoraID() == amphoraID && m.Ver == 3 && m.Listeners[listenerID].Status == "OPEN" &&
				p.Status == "UP" && p.Members[m1ID] == "UP" && p.Members[m2ID] == "UP"
		})

		// haproxy's flow logs go through the image's rsyslog socket
		// (the controller's config logs to /run/rsyslog/octavia/log) and
		// land in a file: nothing logs into a socket nobody reads.
		c.mustExec("test", "-S", "/run/rsyslog/octavia/log")
		deadline = time.Now().Add(20 * time.Second)
		for {
			out, _ := c.exec(10*time.Second, "grep", "-c", listenerID, "/var/log/haproxy.log")
			if n, _ := strconv.Atoi(strings.TrimSpace(out)); n > 0 {
				t.Logf("haproxy.log: %d flow log lines of the listener", n)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no flow log of listener %s in /var/log/haproxy.log", listenerID)
			}
			time.Sleep(250 * time.Millisecond)
		}
		// ... and to the log offloading targets: the flow logs (user
		// facility local0) to the tenant's, haproxy's notices (local1,
		// administrative) to the operator's.
		m := tenantLogs.await(t, 20*time.Second, 16, listenerID)
		t.Logf("tenant log target: %q", m)
		m = adminLogs.await(t, 20*time.Second, 17, "")
		t.Logf("administrative log target: %q", m)
	})
	if t.Failed() {
		t.FailNow()
	}

	// An upgrade of the agent package on the running amphora (the same
	// package again: dpkg runs the upgrade path of the maintainer
	// scripts): the agent restarts with the new program, the load
	// balancer's haproxy keeps its process and keeps serving.
	t.Run("package upgrade", func(t *testing.T) {
		unit := haproxy.UnitName(lbID) + ".service"
		before := c.show(unit, "MainPID")
		agentBefore := c.show("amphora-agent.service", "MainPID")
		out, err := c.exec(2*time.Minute, "dpkg", "-i", "/var/tmp/debs/amphora-agent.deb")
		if err != nil {
			t.Fatalf("dpkg -i: %v\n%s", err, out)
		}
		agentAfter := expectProps(t, c, "amphora-agent.service", map[string]string{"ActiveState": "active", "SubState": "running"})
		if agentAfter["MainPID"] == agentBefore["MainPID"] {
			t.Errorf("the upgrade did not restart the agent (MainPID %s)", agentBefore["MainPID"])
		}
		expectProps(t, c, unit, map[string]string{"ActiveState": "active", "MainPID": before["MainPID"]})
		reachBothMembers(t, vipNet, "after the package upgrade")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.AwaitAnswer(ctx); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// Reboot: no API call afterwards, the image restores the data plane
	// by itself (the agent at start and amphora-netns.service, before
	// haproxy). The NICs come back under swapped kernel names.
	unit := haproxy.UnitName(lbID) + ".service"
	c, tOn := powerCycle(t, c, root, amp, consoleLog, map[string]string{vipMAC: "eth2", memMAC: "eth1"}, nil)
	t.Run("reboot", func(t *testing.T) {
		expectProps(t, c, unit, map[string]string{"ActiveState": "active", "NRestarts": "0"})
		expectProps(t, c, agentnetns.UnitName+".service", map[string]string{"ActiveState": "active"})
		reachBothMembers(t, vipNet, "after reboot")
		expectProps(t, c, "amphora-agent.service", map[string]string{"ActiveState": "active", "NRestarts": "0"})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := a.AwaitAnswer(ctx); err != nil {
			t.Fatal(err)
		}
		hb.await(t, tOn, 30*time.Second, "after reboot: listener OPEN, both members UP", func(m *heartbeat) bool {
			p := m.Pools[poolID+":"+listenerID]
			return m.Listeners[listenerID].Status == "OPEN" && p.Members[m1ID] == "UP" && p.Members[m2ID] == "UP"
		})
	})
	if t.Failed() {
		t.FailNow()
	}

	// Reboot with the agent masked (say it cannot start): the data plane
	// must not depend on it, amphora-netns.service alone restores the NICs.
	c, _ = powerCycle(t, c, root, amp, consoleLog, map[string]string{vipMAC: "eth1", memMAC: "eth2"}, func() {
		mask := filepath.Join(root.Upper, "etc/systemd/system/amphora-agent.service")
		if err := os.Symlink("/dev/null", mask); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reboot without the agent", func(t *testing.T) {
		expectProps(t, c, "amphora-agent.service", map[string]string{"ActiveState": "inactive", "UnitFileState": "masked"})
		expectProps(t, c, agentnetns.UnitName+".service", map[string]string{"ActiveState": "active"})
		expectProps(t, c, unit, map[string]string{"ActiveState": "active", "NRestarts": "0"})
		reachBothMembers(t, vipNet, "after reboot without the agent")
	})
	t.Logf("timing: total %v", time.Since(testStart).Round(100*time.Millisecond))
}
