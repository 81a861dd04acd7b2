package main

// End-to-end tests of the data-plane plumbing through the real agent
// binary, driven by the Octavia controller's own REST client
// (python3-octavia's AmphoraAPIClient1_0).
//
// Topology (addresses exist only inside namespaces the test creates; the
// root namespace only receives the hot-plugged veth ends, without any
// address, as Nova's hot-plug would):
//
//	root ns        nwv<rand> (fa:16:3e:..)  <--veth-->  vip0 in nw-vip-<rand>
//	               nwm<rand> (fa:16:3e:..)  <--veth-->  mem0 in nw-mem-<rand>
//	nw-vip-<rand>  the VIP network: gateway 198.51.100.1/24, 2001:db8:100::1/64;
//	               clients 198.18.99.10 and 2001:db8:99::10 on lo (behind the gateway)
//	nw-mem-<rand>  the member network: member 198.18.2.21/24, 2001:db8:200::21/64, HTTP :8081
//	nw-dp-<rand>   the agent's network_namespace (created by the agent):
//	               eth1 = VIP port: 198.51.100.4/24 (vrrp_ip), VIPs 198.51.100.100, 2001:db8:100::100
//	               eth2 = member port: 198.18.2.11/24, 2001:db8:200::11/64, with host
//	               routes to the clients' networks through the member network, so a
//	               reply from a VIP only finds its way back through table 1.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

const (
	nwVIP4       = "198.51.100.100"
	nwVIP6       = "2001:db8:100::100"
	nwVRRP4      = "198.51.100.4"
	nwGW4        = "198.51.100.1"
	nwGW6        = "2001:db8:100::1"
	nwClient4    = "198.18.99.10"
	nwClient6    = "2001:db8:99::10"
	nwMember4    = "198.18.2.21"
	nwMember6    = "2001:db8:200::21"
	nwAmpMem4    = "198.18.2.11"
	nwAmpMem6    = "2001:db8:200::11"
	nwMemberPort = 8081
	nwVIPPort    = 8080
	nwVIPMTU     = 1450
	nwMemMTU     = 1400
)

// nwEnv is one network test's world.
type nwEnv struct {
	dir            string
	dp             string // data-plane namespace name (the agent's network_namespace)
	vnet, mnet     *testutil.NetNS
	vipMAC, memMAC string
	a              *testutil.Agent
}

// nwDataPlaneCleanup removes the data-plane namespace at the end of the
// test, whichever incarnation exists then: processes inside (haproxy
// under the builtin supervisor) are killed by PID first.
func nwDataPlaneCleanup(t *testing.T, name string) {
	t.Cleanup(func() {
		if err := testutil.DeleteNetNS(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
}

// nwNSExists reports whether the named namespace exists.
func nwNSExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// nwHandle opens a netlink handle in the named namespace.
func nwHandle(t *testing.T, name string) *netlink.Handle {
	t.Helper()
	fd, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// nwServe serves a member on addr inside the named namespace until stop
// is called; its MemberAddressesPath answers the connection's addresses.
func nwServe(t *testing.T, ns, addr string) (stop func()) {
	t.Helper()
	var ln net.Listener
	if err := testutil.InNetNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	return testutil.ServeMember(t, ln, "member").Close
}

// nwGet fetches the addresses of the member at host:port over one
// connection dialled inside the named namespace from src ("" = the
// kernel's choice); it returns the body and the peer address the client
// saw.
func nwGet(ns, src, hostport string, timeout time.Duration) (body, peer string, err error) {
	in := func(f func() error) error { return testutil.InNetNS(ns, f) }
	return testutil.GetIn(in, src, "http://"+hostport+testutil.MemberAddressesPath, timeout)
}

// --- kernel state, read with netlink inside the data-plane namespace ---

// checkPlumbing asserts what the VIP and member plugs configured in the
// data-plane namespace.
func (e *nwEnv) checkPlumbing(t *testing.T) {
	t.Helper()
	h := nwHandle(t, e.dp)
	eth1, eth2 := testutil.LinkOf(t, h, "eth1"), testutil.LinkOf(t, h, "eth2")
	for _, c := range []struct {
		l   netlink.Link
		mac string
		mtu int
	}{{eth1, e.vipMAC, nwVIPMTU}, {eth2, e.memMAC, nwMemMTU}} {
		at := c.l.Attrs()
		if at.HardwareAddr.String() != c.mac || at.MTU != c.mtu || at.Flags&net.FlagUp == 0 {
			t.Errorf("%s: mac %s mtu %d flags %v, want %s, %d, up", at.Name, at.HardwareAddr, at.MTU, at.Flags, c.mac, c.mtu)
		}
	}
	if diff := cmp.Diff([]string{"198.51.100.100/32", "198.51.100.4/24", "2001:db8:100::100/128"}, testutil.LinkAddrs(t, h, "eth1")); diff != "" {
		t.Errorf("eth1 addresses (-want +got):\n%s", diff)
	}
	wantRoutes := []string{
		"0.0.0.0/0 via 198.51.100.1 table 1",
		"0.0.0.0/0 via 198.51.100.1 table 254",
		"198.18.50.0/24 via 198.51.100.254 table 1",
		"198.18.50.0/24 via 198.51.100.254 table 254",
		"198.51.100.0/24 src 198.51.100.100 table 1",
		// the main-table link route of 198.51.100.0/24 is the kernel's
		// prefix route of the vrrp address (checked below)
		"2001:db8:100::/64 src 2001:db8:100::100 table 1",
		"2001:db8:100::/64 table 254",
		"2001:db8:50::/64 via 2001:db8:100::fe table 1",
		"2001:db8:50::/64 via 2001:db8:100::fe table 254",
		"::/0 via 2001:db8:100::1 table 1",
		"::/0 via 2001:db8:100::1 table 254",
	}
	if diff := cmp.Diff(wantRoutes, testutil.StaticRoutes(t, h, "eth1")); diff != "" {
		t.Errorf("eth1 routes, main and table 1 (-want +got):\n%s", diff)
	}
	main4, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: eth1.Attrs().Index, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range main4 {
		found = found || r.Dst != nil && r.Dst.String() == "198.51.100.0/24"
	}
	if !found {
		t.Error("no main-table route to 198.51.100.0/24 on eth1")
	}
	if diff := cmp.Diff([]string{"from 198.51.100.100/32 lookup 1 prio 32000 proto 4", "from 2001:db8:100::100/128 lookup 1 prio 32000 proto 4"}, testutil.SourceRules(t, h)); diff != "" {
		t.Errorf("policy rules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"198.18.2.11/24", "2001:db8:200::11/64"}, testutil.LinkAddrs(t, h, "eth2")); diff != "" {
		t.Errorf("eth2 addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"198.18.99.0/24 via 198.18.2.254 table 254", "2001:db8:99::/64 via 2001:db8:200::fe table 254"}, testutil.StaticRoutes(t, h, "eth2")); diff != "" {
		t.Errorf("eth2 routes (-want +got):\n%s", diff)
	}
	// the root namespace no longer has the NICs
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if m := l.Attrs().HardwareAddr.String(); m == e.vipMAC || m == e.memMAC {
			t.Errorf("NIC %s (%s) is still in the root namespace", l.Attrs().Name, m)
		}
	}
}

// checkTraffic: clients of the VIP network reach a server bound inside
// the data-plane namespace through both VIPs, the server sees the
// client's address and the client sees the VIP as its peer (replies
// leave through table 1: the main table would send them to the member
// network); the amphora reaches the member through eth2 with its
// member-network address.
func (e *nwEnv) checkTraffic(t *testing.T) {
	t.Helper()
	for _, c := range []struct{ src, vip string }{{nwClient4, nwVIP4}, {nwClient6, nwVIP6}} {
		vipPort := net.JoinHostPort(c.vip, strconv.Itoa(nwVIPPort))
		stop := nwServe(t, e.dp, vipPort) // bound on the VIP itself
		defer stop()
		testutil.WaitFor(t, 10*time.Second, testutil.Succeeds("client "+c.src+" -> "+vipPort, func() error {
			body, peer, err := nwGet(e.vnet.Name, c.src, vipPort, 2*time.Second)
			if err != nil {
				return err
			}
			if peer != vipPort {
				return fmt.Errorf("client's peer is %s, want %s", peer, vipPort)
			}
			if !strings.HasPrefix(body, "local="+vipPort+" remote="+net.JoinHostPort(c.src, "")) {
				return fmt.Errorf("server saw %q", body)
			}
			return nil
		}))
	}
	for _, c := range []struct{ member, amp string }{{nwMember4, nwAmpMem4}, {nwMember6, nwAmpMem6}} {
		u := net.JoinHostPort(c.member, strconv.Itoa(nwMemberPort))
		testutil.WaitFor(t, 10*time.Second, testutil.Succeeds("amphora -> member "+u, func() error {
			body, _, err := nwGet(e.dp, "", u, 2*time.Second)
			if err != nil {
				return err
			}
			if !strings.Contains(body, " remote="+net.JoinHostPort(c.amp, "")) {
				return fmt.Errorf("member saw %q, want the amphora's member-network address %s", body, c.amp)
			}
			return nil
		}))
	}
}

// checkFiles: interface files and the plugged-interfaces list.
func (e *nwEnv) checkFiles(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.a.BasePath, "plugged_interfaces"))
	if err != nil {
		t.Fatal(err)
	}
	if want := e.vipMAC + " eth1\n" + e.memMAC + " eth2\n"; string(data) != want {
		t.Errorf("plugged_interfaces = %q, want %q", data, want)
	}
	for _, n := range []string{"eth1", "eth2", "lo"} {
		raw, err := os.ReadFile(filepath.Join(e.dir, "interfaces", n+".json"))
		if err != nil {
			t.Errorf("interface file %s: %v", n, err)
			continue
		}
		var f struct {
			Name   string `json:"name"`
			IfType string `json:"if_type"`
		}
		if err := json.Unmarshal(raw, &f); err != nil || f.Name != n {
			t.Errorf("interface file %s: %v %s", n, err, raw)
		}
	}
}

// --- address advertisements, captured in a peer namespace ---

// nwCapture counts gratuitous ARPs and unsolicited neighbour
// advertisements sent from one MAC, seen on a peer's interface.
type nwCapture struct {
	mu   sync.Mutex
	garp map[string]int
	na   map[string]int
	stop chan struct{}
	done chan struct{}
}

func nwStartCapture(t *testing.T, peer *testutil.NetNS, ifname, mac string) *nwCapture {
	t.Helper()
	l, err := peer.Netlink().LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	ifi := &net.Interface{Index: l.Attrs().Index, Name: ifname, HardwareAddr: l.Attrs().HardwareAddr}
	var conn *packet.Conn
	if err := peer.Do(func() error {
		var err error
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	}); err != nil {
		t.Fatalf("AF_PACKET socket on %s in %s: %v", ifname, peer.Name, err)
	}
	c := &nwCapture{garp: map[string]int{}, na: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer conn.Close()
		buf := make([]byte, 4096)
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
			select {
			case <-c.stop:
				return
			default:
			}
			_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				continue
			}
			c.record(buf[:n], mac)
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *nwCapture) record(frame []byte, mac string) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil || eth.SrcMAC.String() != mac {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
		if eth.DstMAC.String() == "ff:ff:ff:ff:ff:ff" && arp.Operation == layers.ARPRequest &&
			net.HardwareAddr(arp.SourceHwAddress).String() == mac &&
			net.IP(arp.SourceProtAddress).Equal(net.IP(arp.DstProtAddress)) {
			c.garp[net.IP(arp.SourceProtAddress).String()]++
		}
		return
	}
	ip6, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	na, ok := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if !ok || ip6 == nil {
		return
	}
	if ip6.DstIP.Equal(net.ParseIP("ff02::1")) && ip6.HopLimit == 255 && na.Override() && !na.Solicited() &&
		len(na.Options) == 1 && na.Options[0].Type == layers.ICMPv6OptTargetAddress &&
		net.HardwareAddr(na.Options[0].Data).String() == mac {
		c.na[na.TargetAddress.String()]++
	}
}

func (c *nwCapture) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

// wait returns once every address was advertised (GARP for IPv4, NA for
// IPv6) or the deadline passed, reporting what is missing.
func (c *nwCapture) wait(t *testing.T, d time.Duration, what string, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		var missing []string
		for _, a := range addrs {
			if strings.Contains(a, ":") && c.na[a] == 0 || !strings.Contains(a, ":") && c.garp[a] == 0 {
				missing = append(missing, a)
			}
		}
		seen := fmt.Sprintf("GARP %v, NA %v", c.garp, c.na)
		c.mu.Unlock()
		if len(missing) == 0 {
			t.Logf("%s: advertisements seen: %s", what, seen)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: no advertisement of %v seen within %v (seen: %s)", what, missing, d, seen)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- the controller's view ---

func nwNetInfo(mac string) map[string]any {
	// what rest_api_driver.post_vip_plug sends (_build_net_info plus the
	// additional VIP of a dual-stack load balancer)
	return map[string]any{
		"subnet_cidr": "198.51.100.0/24", "gateway": nwGW4, "mac_address": mac, "vrrp_ip": nwVRRP4, "mtu": nwVIPMTU,
		"host_routes": []any{map[string]any{"nexthop": "198.51.100.254", "destination": "198.18.50.0/24"}},
		"additional_vips": []any{map[string]any{
			"subnet_cidr": "2001:db8:100::/64", "ip_address": nwVIP6, "gateway": nwGW6,
			"host_routes": []any{map[string]any{"nexthop": "2001:db8:100::fe", "destination": "2001:db8:50::/64"}},
		}},
	}
}

func nwPortInfo(mac string) map[string]any {
	// what rest_api_driver.post_network_plug sends for a member port
	return map[string]any{
		"mac_address": mac, "mtu": nwMemMTU,
		"fixed_ips": []any{
			map[string]any{"ip_address": nwAmpMem4, "subnet_cidr": "198.18.2.0/24", "gateway": "198.18.2.1",
				"host_routes": []any{map[string]any{"nexthop": "198.18.2.254", "destination": "198.18.99.0/24"}}},
			map[string]any{"ip_address": nwAmpMem6, "subnet_cidr": "2001:db8:200::/64", "gateway": nil,
				"host_routes": []any{map[string]any{"nexthop": "2001:db8:200::fe", "destination": "2001:db8:99::/64"}}},
		},
	}
}

// nwResponse is the controller client's requests.Response, as the
// interop script reports it.
type nwResponse struct {
	StatusCode int               `json:"status_code"`
	Headers    map[string]string `json:"headers"`
	JSON       map[string]any    `json:"json"`
}

// nwSetup builds the VIP network (and, with members, the member network)
// and starts the agent.
func nwSetup(t *testing.T, members bool) *nwEnv {
	t.Helper()
	testutil.RequireNetAdmin(t)
	testutil.RequireOctavia(t)
	dir := testutil.ShortDir(t, "nw") // short: unix socket paths below it
	e := &nwEnv{dir: dir, dp: "nw-dp-" + testutil.RandomSuffix(4), vipMAC: testutil.NeutronMAC(), memMAC: testutil.NeutronMAC()}
	e.vnet = testutil.NewNetNS(t, "nw-vip")
	testutil.Hotplug(t, "nwh", e.vipMAC, e.vnet, "vip0")
	type addr struct {
		ns        *testutil.NetNS
		ifc, cidr string
	}
	addrs := []addr{
		{e.vnet, "vip0", nwGW4 + "/24"},
		{e.vnet, "vip0", nwGW6 + "/64"},
		{e.vnet, "lo", nwClient4 + "/32"},
		{e.vnet, "lo", nwClient6 + "/128"},
	}
	if members {
		e.mnet = testutil.NewNetNS(t, "nw-mem")
		testutil.Hotplug(t, "nwh", e.memMAC, e.mnet, "mem0")
		addrs = append(addrs, addr{e.mnet, "mem0", nwMember4 + "/24"}, addr{e.mnet, "mem0", nwMember6 + "/64"})
	}
	for _, x := range addrs {
		if err := x.ns.AddAddr(x.ifc, x.cidr); err != nil {
			t.Fatal(err)
		}
	}
	if members {
		nwServe(t, e.mnet.Name, ":"+strconv.Itoa(nwMemberPort))
	}
	nwDataPlaneCleanup(t, e.dp)
	e.a = testutil.StartAgent(t, testutil.Options{
		Dir: dir,
		Options: map[string]string{
			"amphora_agent/network_namespace":         e.dp,
			"amphora_agent/service_manager":           "builtin",
			"amphora_agent/haproxy_user_group_config": filepath.Join(dir, "haproxy-default-user-group.conf"),
		},
	})
	return e
}

// TestNetworkPlugThroughController plugs a dual-stack VIP port and a
// member port the way the controller does, checks the kernel state,
// traffic, advertisements, the error answers, two kinds of reboot, an
// haproxy load balancer on the plugged VIP, and the nftables allow-list.
func TestNetworkPlugThroughController(t *testing.T) {
	t.Parallel()
	testutil.RequireRenderer(t)
	e := nwSetup(t, true)
	a := e.a

	lbID := testutil.NewUUID()
	rendered := nwRender(a, lbID, nwVIP4, nwMember4)
	defer rendered()

	memCap := nwStartCapture(t, e.mnet, "mem0", e.memMAC)
	unknownMAC := testutil.NeutronMAC()
	badVIP := nwNetInfo(e.vipMAC)
	badVIP["subnet_cidr"] = "198.51.100.7/24" // host bits set
	res := a.Octavia(
		testutil.OctaviaCall{Call: "plug_vip", Args: []any{nwVIP4, nwNetInfo(e.vipMAC)}},
		testutil.OctaviaCall{Call: "plug_network", Args: []any{nwPortInfo(e.memMAC)}},
		testutil.OctaviaCall{Call: "get_interface", Args: []any{nwVRRP4}},
		testutil.OctaviaCall{Call: "get_interface", Args: []any{nwVIP6}},
		testutil.OctaviaCall{Call: "get_interface", Args: []any{nwAmpMem6}},
		testutil.OctaviaCall{Call: "get_interface", Args: []any{"198.51.100.77"}},
		testutil.OctaviaCall{Call: "plug_vip", Args: []any{nwVIP4, nwNetInfo(e.vipMAC)}},
		testutil.OctaviaCall{Call: "plug_network", Args: []any{nwPortInfo(e.memMAC)}},
		testutil.OctaviaCall{Call: "plug_network", Args: []any{nwPortInfo(unknownMAC)}},
		testutil.OctaviaCall{Call: "plug_vip", Args: []any{nwVIP4, badVIP}},
	)
	want := []struct {
		ok     bool
		status int
		json   map[string]any
		exc    string
	}{
		{ok: true, status: 202, json: map[string]any{"message": "OK", "details": "VIPs plugged on interface eth1: 198.51.100.100, 2001:0db8:0100:0000:0000:0000:0000:0100"}},
		{ok: true, status: 202, json: map[string]any{"message": "OK", "details": "Plugged on interface eth2"}},
		{ok: true, json: map[string]any{"message": "OK", "interface": "eth1"}},
		{ok: true, json: map[string]any{"message": "OK", "interface": "eth1"}},
		{ok: true, json: map[string]any{"message": "OK", "interface": "eth2"}},
		{exc: "NotFound"},
		{exc: "Conflict"},
		{ok: true, status: 202, json: map[string]any{"message": "OK", "details": "Updated existing interface eth2"}},
		{exc: "TimeOutException"}, // the retried "No suitable network interface found"
		{exc: "InvalidRequest"},
	}
	if len(res) != len(want) {
		t.Fatalf("octavia client: %d results for %d calls", len(res), len(want))
	}
	for i, w := range want {
		r := res[i]
		if r.OK != w.ok || !w.ok && r.Error != w.exc {
			t.Errorf("call %d: ok=%v %s %s, want ok=%v %s", i, r.OK, r.Error, r.Message, w.ok, w.exc)
			continue
		}
		if !w.ok {
			continue
		}
		var got map[string]any
		if w.status != 0 {
			var resp nwResponse
			if err := json.Unmarshal(r.Result, &resp); err != nil || resp.StatusCode != w.status {
				t.Errorf("call %d: %s, want status %d", i, r.Result, w.status)
				continue
			}
			got = resp.JSON
		} else if err := json.Unmarshal(r.Result, &got); err != nil {
			t.Errorf("call %d: %v", i, err)
			continue
		}
		if diff := cmp.Diff(w.json, got); diff != "" {
			t.Errorf("call %d answer (-want +got):\n%s", i, diff)
		}
	}
	if t.Failed() {
		t.Fatalf("agent log:\n%s", a.Log())
	}
	memCap.wait(t, 10*time.Second, "member network plug", nwAmpMem4, nwAmpMem6)
	memCap.close()

	t.Run("plumbing", func(t *testing.T) {
		e.checkPlumbing(t) // after the re-plugs too: nothing duplicated
		e.checkFiles(t)
		e.checkTraffic(t)
	})

	t.Run("error answers", func(t *testing.T) {
		nwErrorAnswers(t, e, unknownMAC)
	})

	// Reboot: the NICs come back in the root namespace under other names,
	// the data-plane namespace is gone.
	t.Run("reboot then interface up all", func(t *testing.T) {
		a.Stop()
		e.reboot(t)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, a.Bin, "--config-file", a.ConfigFile, "interface", "up", "all").CombinedOutput()
		if err != nil {
			t.Fatalf("amphora-agent interface up all: %v\n%s", err, out)
		}
		t.Logf("interface up all: %s", out)
		e.checkPlumbing(t)
		e.checkTraffic(t)
		// converges: a second run changes nothing
		if out, err := exec.CommandContext(ctx, a.Bin, "--config-file", a.ConfigFile, "interface", "up", "all").CombinedOutput(); err != nil {
			t.Fatalf("second interface up all: %v\n%s", err, out)
		}
		e.checkPlumbing(t)
		// an interface without a file: the reference's text and exit status
		cmd := exec.CommandContext(ctx, a.Bin, "--config-file", a.ConfigFile, "interface", "up", "eth9")
		out, err = cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "Error: Could not configure interface: Could not find interface 'eth9'.") {
			t.Errorf("interface up eth9: %v\n%s", err, out)
		}
	})
	t.Run("reboot then agent start restores by itself", func(t *testing.T) {
		e.reboot(t)
		a.Start()
		e.checkPlumbing(t)
		e.checkFiles(t)
		e.checkTraffic(t)
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("load balancer start advertises the VIP", func(t *testing.T) {
		lbConfig, err := rendered()
		if err != nil {
			t.Fatal(err)
		}
		if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbID+"/haproxy", []byte(lbConfig)); code != http.StatusAccepted {
			t.Fatalf("upload: %d %s", code, body)
		}
		vipCap := nwStartCapture(t, e.vnet, "vip0", e.vipMAC)
		if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/start", nil); code != http.StatusAccepted {
			t.Fatalf("start: %d %s\n%s", code, body, a.Log())
		}
		vipCap.wait(t, 10*time.Second, "load balancer start", nwVIP4)
		vipCap.close()
		testutil.WaitFor(t, 15*time.Second, testutil.Succeeds("client -> VIP:80 -> member", func() error {
			body, _, err := nwGet(e.vnet.Name, nwClient4, nwVIP4+":80", 2*time.Second)
			if err != nil {
				return err
			}
			if !strings.Contains(body, "remote="+nwAmpMem4+":") {
				return fmt.Errorf("member saw %q", body)
			}
			return nil
		}))
	})

	t.Run("nftables allow-list", func(t *testing.T) {
		nwFirewall(t, e)
	})
}

// reboot simulates an amphora reboot while the agent is stopped: the NICs
// reappear in the root namespace under kernel names (down, without
// addresses), the data-plane namespace no longer exists.
func (e *nwEnv) reboot(t *testing.T) {
	t.Helper()
	rootFd, err := netns.GetFromPath(fmt.Sprintf("/proc/%d/ns/net", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer rootFd.Close()
	h := nwHandle(t, e.dp)
	for _, name := range []string{"eth1", "eth2"} {
		l := testutil.LinkOf(t, h, name)
		newName := "nwr" + testutil.RandomSuffix(4)
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", newName).Run() })
		if err := h.LinkSetDown(l); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetName(l, newName); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetNsFd(l, int(rootFd)); err != nil {
			t.Fatalf("move %s to the root namespace: %v", name, err)
		}
	}
	if err := testutil.DeleteNetNS(e.dp); err != nil {
		t.Fatal(err)
	}
	if nwNSExists(e.dp) {
		t.Fatal("data-plane namespace still exists")
	}
	n := 0
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if m := l.Attrs().HardwareAddr.String(); m == e.vipMAC || m == e.memMAC {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d of the 2 NICs are back in the root namespace", n)
	}
}

// nwErrorAnswers checks the plug answers the controller's retry logic
// and error mapping depend on.
func nwErrorAnswers(t *testing.T, e *nwEnv, unknownMAC string) {
	a := e.a
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// unknown MAC: JSON 404 with the exact text the controller retries on
	for _, c := range []struct {
		path string
		body []byte
	}{
		{"/1.0/plug/vip/" + nwVIP4, mustJSON(nwNetInfo(unknownMAC))},
		{"/1.0/plug/network", mustJSON(nwPortInfo(unknownMAC))},
	} {
		code, hdr, body := a.Do(http.MethodPost, c.path, c.body)
		if code != http.StatusNotFound || hdr.Get("Content-Type") != "application/json" ||
			string(body) != `{"details":"No suitable network interface found"}` {
			t.Errorf("POST %s unknown MAC: %d %q %s", c.path, code, hdr.Get("Content-Type"), body)
		}
	}
	withVRRP := func(v string) []byte {
		ni := nwNetInfo(e.vipMAC)
		ni["vrrp_ip"] = v
		return mustJSON(ni)
	}
	noMAC := nwNetInfo(e.vipMAC)
	delete(noMAC, "mac_address")
	badFixed := nwPortInfo(e.memMAC)
	badFixed["fixed_ips"] = []any{map[string]any{"ip_address": "bogus", "subnet_cidr": "198.18.2.0/24"}}
	for _, c := range []struct {
		path    string
		body    []byte
		wantSub string
	}{
		{"/1.0/plug/vip/" + nwVIP4, []byte("not json"), `"error":"400 Bad Request: Invalid subnet information"`},
		{"/1.0/plug/vip/" + nwVIP4, []byte(`["a list"]`), "Invalid subnet information"},
		{"/1.0/plug/vip/" + nwVIP4, mustJSON(noMAC), "Invalid subnet information"},
		{"/1.0/plug/vip/bogus", mustJSON(nwNetInfo(e.vipMAC)), `{"message":"Invalid VIP: `},
		{"/1.0/plug/vip/" + nwVIP4, withVRRP("not-an-ip"), `{"message":"Invalid VRRP Address: `},
		{"/1.0/plug/network", []byte("{"), `"error":"400 Bad Request: Invalid port information"`},
		{"/1.0/plug/network", []byte(`{"fixed_ips": []}`), "Invalid port information"},
		{"/1.0/plug/network", mustJSON(badFixed), `{"message":"Invalid network port"}`},
	} {
		code, hdr, body := a.Do(http.MethodPost, c.path, c.body)
		if code != http.StatusBadRequest || hdr.Get("Content-Type") != "application/json" || !strings.Contains(string(body), c.wantSub) {
			t.Errorf("POST %s %.40q: %d %s, want 400 with %s", c.path, c.body, code, body, c.wantSub)
		}
	}
	for _, c := range []struct {
		ip   string
		code int
		body string
	}{
		{"not-an-ip", 400, `{"message":"Invalid IP address"}`},
		{"203.0.113.9", 404, `{"message":"Error interface not found for IP address"}`},
		{"2001:0db8:0100::0100", 200, `{"message":"OK","interface":"eth1"}`},
		{nwAmpMem4, 200, `{"message":"OK","interface":"eth2"}`},
	} {
		code, _, body := a.Do(http.MethodGet, "/1.0/interface/"+c.ip, nil)
		if code != c.code || string(body) != c.body {
			t.Errorf("GET /1.0/interface/%s: %d %s, want %d %s", c.ip, code, body, c.code, c.body)
		}
	}
	// the refused requests changed nothing
	e.checkPlumbing(t)
}

// nwNft lists the amphora table inside the data-plane namespace.
func nwNft(t *testing.T, ns string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset in %s: %v\n%s", ns, err, out)
	}
	return string(out)
}

// nwFirewall: PUT /1.0/interface/<vrrp ip>/rules (not a method of the
// 11.0.0 controller client, so sent raw) loads the allow-list inside the
// data-plane namespace, the next PUT replaces it, refused bodies keep it.
func nwFirewall(t *testing.T, e *nwEnv) {
	testutil.RequireBinary(t, "nft")
	a := e.a
	path := "/1.0/interface/" + nwVRRP4 + "/rules"
	rulesFile := filepath.Join(a.BasePath, "nftables-vip.rules")
	put := func(body string) (int, string) {
		code, _, resp := a.Do(http.MethodPut, path, []byte(body))
		return code, string(resp)
	}
	reach := func(port int) error {
		_, _, err := nwGet(e.vnet.Name, nwClient4, net.JoinHostPort(nwVIP4, strconv.Itoa(port)), 1500*time.Millisecond)
		return err
	}
	// haproxy serves :80 (through the member network), a plain server :8080
	stop := nwServe(t, e.dp, ":"+strconv.Itoa(nwVIPPort))
	defer stop()
	testutil.WaitFor(t, 10*time.Second, testutil.Succeeds("client -> VIP:8080 before any rules", func() error { return reach(nwVIPPort) }))

	if code, body := put(`[{"protocol":"TCP","cidr":"198.18.99.0/24","port":80},{"protocol":"vrrp","cidr":"198.51.100.5/32","port":112}]`); code != 200 || body != `{"message":"OK"}` {
		t.Fatalf("first rules: %d %s\n%s", code, body, a.Log())
	}
	first := nwNft(t, e.dp)
	for _, s := range []string{"table inet amphora_table", `iifname "eth1" goto amphora_vip_chain`, "ip saddr 198.18.99.0/24 tcp dport 80 accept", "ip saddr 198.51.100.5"} {
		if !strings.Contains(first, s) {
			t.Errorf("ruleset after the first PUT lacks %q:\n%s", s, first)
		}
	}
	if st, err := os.Stat(rulesFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("rules file %s: %v %v", rulesFile, st, err)
	}
	if hostRules, err := exec.Command("nft", "list", "tables").CombinedOutput(); err == nil && strings.Contains(string(hostRules), "amphora_table") {
		t.Errorf("amphora_table loaded in the root namespace:\n%s", hostRules)
	}
	// allowed: the load balancer, whose member replies come back on eth2
	testutil.WaitFor(t, 10*time.Second, testutil.Succeeds("allowed client -> VIP:80 -> member", func() error { return reach(80) }))
	if err := reach(nwVIPPort); err == nil {
		t.Errorf("client reached VIP:%d, which the allow-list does not have", nwVIPPort)
	}

	if code, body := put(`[{"protocol":"TCP","cidr":null,"port":8080}]`); code != 200 {
		t.Fatalf("second rules: %d %s", code, body)
	}
	second := nwNft(t, e.dp)
	if strings.Contains(second, "dport 80 ") || !strings.Contains(second, "tcp dport 8080 accept") ||
		strings.Count(second, "table inet amphora_table") != 1 || strings.Count(second, "chain amphora_vip_chain") != 1 {
		t.Errorf("ruleset after the second PUT is not the replacement:\n%s", second)
	}
	testutil.WaitFor(t, 10*time.Second, testutil.Succeeds("client -> VIP:8080 after the second rules", func() error { return reach(nwVIPPort) }))
	if err := reach(80); err == nil {
		t.Error("client reached VIP:80 although the allow-list no longer has it")
	}
	fileBefore, _ := os.ReadFile(rulesFile)

	for _, body := range []string{
		`[{"protocol":"ICMP","cidr":null,"port":1}]`,
		`[{"protocol":"TCP","cidr":null,"port":0}]`,
		`[{"protocol":"TCP","cidr":null,"port":80,"extra":1}]`,
		`[{"protocol":"TCP","port":80}]`,
		`{"protocol":"TCP","cidr":null,"port":80}`,
		`not json`,
	} {
		code, resp := put(body)
		if code != 400 || !strings.Contains(resp, "Invalid rules information") {
			t.Errorf("PUT rules %s: %d %s, want 400 Invalid rules information", body, code, resp)
		}
	}
	if code, _, resp := a.Do(http.MethodPut, "/1.0/interface/203.0.113.9/rules", []byte(`[]`)); code != 404 {
		t.Errorf("rules for an address nobody holds: %d %s", code, resp)
	}
	if after := nwNft(t, e.dp); after != second {
		t.Errorf("refused bodies changed the ruleset:\nbefore:\n%s\nafter:\n%s", second, after)
	}
	if fileAfter, _ := os.ReadFile(rulesFile); string(fileAfter) != string(fileBefore) {
		t.Errorf("refused bodies changed %s", rulesFile)
	}
}

// nwRender renders a one-listener HTTP load balancer on vip (port 80,
// no health monitor) with Octavia's templater, in the background: the
// templater takes seconds to start.
func nwRender(a *testutil.Agent, lbID, vip, memberAddr string) (wait func() (string, error)) {
	done := make(chan struct{})
	var cfg string
	var err error
	go func() {
		defer close(done)
		noMonitor := false
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cfg, err = testutil.RenderHAProxy(ctx, a.RenderSpec(lbID, vip, testutil.RenderListener{
			ID: testutil.NewUUID(), Protocol: "HTTP", Port: 80, PoolID: testutil.NewUUID(), Monitor: &noMonitor,
			Members: []testutil.RenderMember{{ID: testutil.NewUUID(), Address: memberAddr, Port: nwMemberPort}},
		}))
	}()
	return func() (string, error) {
		<-done
		return cfg, err
	}
}

// TestNetworkPlugIPv6VIP plugs an IPv6-only VIP port (IPv6 vrrp_ip, host
// route, MTU): expanded VIP in the answer, addresses, both tables, the
// source rule, traffic from a client through the VIP, and the unsolicited
// neighbour advertisement when a SINGLE-topology load balancer on that
// VIP starts.
func TestNetworkPlugIPv6VIP(t *testing.T) {
	t.Parallel()
	testutil.RequireRenderer(t)
	e := nwSetup(t, false)
	a := e.a
	lbID := testutil.NewUUID()
	rendered := nwRender(a, lbID, nwVIP6, nwGW6)
	defer rendered()

	const vrrp6 = "2001:db8:100::4"
	netInfo := map[string]any{
		"subnet_cidr": "2001:db8:100::/64", "gateway": nwGW6, "mac_address": e.vipMAC, "vrrp_ip": vrrp6, "mtu": nwVIPMTU,
		"host_routes":     []any{map[string]any{"nexthop": "2001:db8:100::fe", "destination": "2001:db8:50::/64"}},
		"additional_vips": []any{},
	}
	res := a.Octavia(
		testutil.OctaviaCall{Call: "plug_vip", Args: []any{nwVIP6, netInfo}},
		testutil.OctaviaCall{Call: "get_interface", Args: []any{vrrp6}},
	)
	var plugged nwResponse
	if !res[0].OK || json.Unmarshal(res[0].Result, &plugged) != nil || plugged.StatusCode != 202 ||
		plugged.JSON["details"] != "VIPs plugged on interface eth1: 2001:0db8:0100:0000:0000:0000:0000:0100" {
		t.Fatalf("plug_vip: %+v %s\n%s", res[0], res[0].Result, a.Log())
	}
	var iface map[string]any
	if !res[1].OK || json.Unmarshal(res[1].Result, &iface) != nil || iface["interface"] != "eth1" {
		t.Errorf("get_interface %s: %+v %s", vrrp6, res[1], res[1].Result)
	}

	h := nwHandle(t, e.dp)
	eth1 := testutil.LinkOf(t, h, "eth1")
	if at := eth1.Attrs(); at.HardwareAddr.String() != e.vipMAC || at.MTU != nwVIPMTU || at.Flags&net.FlagUp == 0 {
		t.Errorf("eth1: mac %s mtu %d flags %v", at.HardwareAddr, at.MTU, at.Flags)
	}
	if diff := cmp.Diff([]string{"2001:db8:100::100/128", "2001:db8:100::4/64"}, testutil.LinkAddrs(t, h, "eth1")); diff != "" {
		t.Errorf("eth1 addresses (-want +got):\n%s", diff)
	}
	wantRoutes := []string{
		"2001:db8:100::/64 src 2001:db8:100::100 table 1",
		"2001:db8:100::/64 table 254",
		"2001:db8:50::/64 via 2001:db8:100::fe table 1",
		"2001:db8:50::/64 via 2001:db8:100::fe table 254",
		"::/0 via 2001:db8:100::1 table 1",
		"::/0 via 2001:db8:100::1 table 254",
	}
	if diff := cmp.Diff(wantRoutes, testutil.StaticRoutes(t, h, "eth1")); diff != "" {
		t.Errorf("eth1 routes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"from 2001:db8:100::100/128 lookup 1 prio 32000 proto 4"}, testutil.SourceRules(t, h)); diff != "" {
		t.Errorf("policy rules (-want +got):\n%s", diff)
	}
	vipPort := net.JoinHostPort(nwVIP6, strconv.Itoa(nwVIPPort))
	stop := nwServe(t, e.dp, vipPort)
	testutil.WaitFor(t, 10*time.Second, testutil.Succeeds("client -> "+vipPort, func() error {
		body, peer, err := nwGet(e.vnet.Name, nwClient6, vipPort, 2*time.Second)
		if err != nil {
			return err
		}
		if peer != vipPort || !strings.HasPrefix(body, "local="+vipPort+" remote=["+nwClient6+"]:") {
			return fmt.Errorf("client's peer %s, server saw %q", peer, body)
		}
		return nil
	}))
	stop()

	cfg, err := rendered()
	if err != nil {
		t.Fatal(err)
	}
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+a.AmphoraID+"/"+lbID+"/haproxy", []byte(cfg)); code != http.StatusAccepted {
		t.Fatalf("upload: %d %s", code, body)
	}
	capture := nwStartCapture(t, e.vnet, "vip0", e.vipMAC)
	if code, _, body := a.Do(http.MethodPut, "/1.0/loadbalancer/"+lbID+"/start", nil); code != http.StatusAccepted {
		t.Fatalf("start: %d %s\n%s", code, body, a.Log())
	}
	capture.wait(t, 10*time.Second, "IPv6 load balancer start", nwVIP6)
}
