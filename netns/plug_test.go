package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// Addresses (all inside namespaces the tests create):
//   VIP network  198.51.100.0/24, 2001:db8:100::/64; gateway .1 / ::1 in the
//                peer namespace, which also holds the client addresses
//                198.18.99.10 and 2001:db8:99::10 (routed through the gateway)
//   member net   198.18.2.0/24, 2001:db8:200::/64; member .21 / ::21

const (
	vip4     = "198.51.100.100"
	vip6     = "2001:db8:100::100"
	vrrp4    = "198.51.100.4"
	client4  = "198.18.99.10"
	client6  = "2001:db8:99::10"
	member4  = "198.18.2.21"
	member6  = "2001:db8:200::21"
	amp4Mem  = "198.18.2.11"
	amp6Mem  = "2001:db8:200::11"
	httpPort = 8080
)

// vipNetwork builds the VIP network: a peer namespace with the gateway and
// client addresses, and a hot-plugged veth with mac in the root namespace.
func vipNetwork(t *testing.T, mac string) (peerNS string) {
	peer := testutil.NewNetNS(t, "tnN")
	testutil.Hotplug(t, "tnh", mac, peer, "vip0")
	peerNS = peer.Name
	run(t, "ip", "-n", peerNS, "addr", "add", "198.51.100.1/24", "dev", "vip0")
	run(t, "ip", "-n", peerNS, "addr", "add", "2001:db8:100::1/64", "dev", "vip0", "nodad")
	run(t, "ip", "-n", peerNS, "addr", "add", client4+"/32", "dev", "lo")
	run(t, "ip", "-n", peerNS, "addr", "add", client6+"/128", "dev", "lo", "nodad")
	return peerNS
}

func memberNetwork(t *testing.T, mac string) (memberNS string) {
	member := testutil.NewNetNS(t, "tnM")
	testutil.Hotplug(t, "tnh", mac, member, "mem0")
	memberNS = member.Name
	run(t, "ip", "-n", memberNS, "addr", "add", member4+"/24", "dev", "mem0")
	run(t, "ip", "-n", memberNS, "addr", "add", member6+"/64", "dev", "mem0", "nodad")
	return memberNS
}

func vipBody(mac string, mtu int) []byte {
	return []byte(fmt.Sprintf(`{"subnet_cidr": "198.51.100.0/24", "gateway": "198.51.100.1",
		"mac_address": %q, "mtu": %d, "vrrp_ip": %q,
		"host_routes": [{"destination": "198.18.50.0/24", "nexthop": "198.51.100.254"}],
		"additional_vips": [{"ip_address": %q, "subnet_cidr": "2001:db8:100::/64", "gateway": "2001:db8:100::1",
			"host_routes": [{"destination": "2001:db8:50::/64", "nexthop": "2001:db8:100::fe"}]}],
		"is_sriov": false}`, mac, mtu, vrrp4, vip6))
}

func memberBody(mac string, mtu int) []byte {
	return []byte(fmt.Sprintf(`{"mac_address": %q, "mtu": %d, "is_sriov": false, "fixed_ips": [
		{"ip_address": %q, "subnet_cidr": "198.18.2.0/24", "gateway": "198.18.2.1",
		 "host_routes": [{"destination": "198.18.60.0/24", "nexthop": "198.18.2.254"}]},
		{"ip_address": %q, "subnet_cidr": "2001:db8:200::/64", "gateway": null, "host_routes": []}]}`,
		mac, mtu, amp4Mem, amp6Mem))
}

// checkVIPPlumbing asserts the kernel state of a SINGLE-topology VIP plug.
func checkVIPPlumbing(t *testing.T, ns *Namespace, mac string) {
	t.Helper()
	l := linkIn(t, ns, "eth1")
	if got := l.Attrs().HardwareAddr.String(); got != strings.ToLower(mac) {
		t.Errorf("eth1 MAC %s, want %s", got, mac)
	}
	if l.Attrs().MTU != 1450 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth1 mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
	}
	wantAddrs := []string{"198.51.100.100/32", "198.51.100.4/24", "2001:db8:100::100/128"}
	if diff := cmp.Diff(wantAddrs, globalAddrs(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 addresses (-want +got):\n%s", diff)
	}
	wantRoutes := []string{
		"0.0.0.0/0 via 198.51.100.1 table 1",
		"0.0.0.0/0 via 198.51.100.1 table 254",
		"198.18.50.0/24 via 198.51.100.254 table 1",
		"198.18.50.0/24 via 198.51.100.254 table 254",
		"198.51.100.0/24 src 198.51.100.100 table 1",
		// "198.51.100.0/24 table 254" is the kernel's prefix route of
		// 198.51.100.4/24 (adding ours gives EEXIST, as in the reference)
		"2001:db8:100::/64 src 2001:db8:100::100 table 1",
		"2001:db8:100::/64 table 254",
		"2001:db8:50::/64 via 2001:db8:100::fe table 1",
		"2001:db8:50::/64 via 2001:db8:100::fe table 254",
		"::/0 via 2001:db8:100::1 table 1",
		"::/0 via 2001:db8:100::1 table 254",
	}
	if diff := cmp.Diff(wantRoutes, staticRoutes(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 routes (-want +got):\n%s", diff)
	}
	if !hasMainRoute(t, ns, "eth1", "198.51.100.0/24") {
		t.Errorf("no main-table route to 198.51.100.0/24 on eth1")
	}
	wantRules := []string{
		"from 198.51.100.100/32 lookup 1 prio 32000 proto 4",
		"from 2001:db8:100::100/128 lookup 1 prio 32000 proto 4",
	}
	if diff := cmp.Diff(wantRules, sourceRules(t, ns)); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
}

func checkMemberPlumbing(t *testing.T, ns *Namespace, mtu int) {
	t.Helper()
	l := linkIn(t, ns, "eth2")
	if l.Attrs().MTU != mtu {
		t.Errorf("eth2 mtu %d, want %d", l.Attrs().MTU, mtu)
	}
	if diff := cmp.Diff([]string{"198.18.2.11/24", "2001:db8:200::11/64"}, globalAddrs(t, ns, "eth2")); diff != "" {
		t.Errorf("eth2 addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"198.18.60.0/24 via 198.18.2.254 table 254"}, staticRoutes(t, ns, "eth2")); diff != "" {
		t.Errorf("eth2 routes (-want +got):\n%s", diff)
	}
}

// checkTraffic: a client in the VIP network reaches a server bound on the
// VIPs (replies come from the VIP, through table 1), and the amphora
// reaches a member through the member NIC.
func checkTraffic(t *testing.T, ns *Namespace, peerNS, memberNS *Namespace) {
	t.Helper()
	for _, c := range []struct{ src, vip string }{{client4, vip4}, {client6, vip6}} {
		url := "http://" + net.JoinHostPort(c.vip, fmt.Sprint(httpPort)) + testutil.MemberAddressesPath
		body, err := httpGet(peerNS, c.src, url, 5*time.Second)
		if err != nil {
			t.Errorf("client %s -> %s: %v", c.src, url, err)
			continue
		}
		if !strings.HasPrefix(body, "local="+net.JoinHostPort(c.vip, fmt.Sprint(httpPort))+" remote="+net.JoinHostPort(c.src, "")) {
			t.Errorf("client %s -> %s: server saw %q", c.src, c.vip, body)
		}
	}
	for _, c := range []struct{ member, amp string }{{member4, amp4Mem}, {member6, amp6Mem}} {
		url := "http://" + net.JoinHostPort(c.member, "8081") + testutil.MemberAddressesPath
		body, err := httpGet(ns, "", url, 5*time.Second)
		if err != nil {
			t.Errorf("amphora -> member %s: %v", url, err)
			continue
		}
		if !strings.Contains(body, " remote="+net.JoinHostPort(c.amp, "")) {
			t.Errorf("member %s saw %q, want the member-network address %s", c.member, body, c.amp)
		}
	}
}

func TestPlugVIPAndNetworkSingle(t *testing.T) {
	testutil.RequireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, nsName := newTestManager(t, TopologySingle)
	vipMAC, memMAC := testutil.NeutronMAC(), testutil.NeutronMAC()
	peer := openNS(t, vipNetwork(t, vipMAC))
	member := openNS(t, memberNetwork(t, memMAC))
	if err := m.WriteLoopbackFile(); err != nil {
		t.Fatal(err)
	}

	// Reads never create the namespace.
	if _, err := m.InterfaceForIP(ctx, vrrp4); !errors.Is(err, ErrAddressNotFound) || !errors.Is(err, ErrNamespaceAbsent) {
		t.Fatalf("InterfaceForIP before plug: %v", err)
	}
	if _, err := os.Stat("/run/netns/" + nsName); !os.IsNotExist(err) {
		t.Fatalf("a read created the namespace: %v", err)
	}

	// --- plug VIP (upper-case MAC: compared case-insensitively, D5)
	req, err := ParsePlugVIPRequest(vip4, vipBody(strings.ToUpper(vipMAC), 1450))
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.PlugVIP(ctx, req)
	if err != nil {
		t.Fatalf("PlugVIP: %v", err)
	}
	wantDetails := "VIPs plugged on interface eth1: 198.51.100.100, 2001:0db8:0100:0000:0000:0000:0000:0100"
	if res.Details != wantDetails || res.Interface != "eth1" || len(res.Warnings) != 0 {
		t.Errorf("PlugVIP result %+v", res)
	}
	ns := openNS(t, nsName)
	checkVIPPlumbing(t, ns, vipMAC)
	if l, _ := linkByMAC(mustRootHandle(t), vipMAC); l != nil {
		t.Errorf("NIC still in the root namespace as %s", l.Attrs().Name)
	}
	// namespace sysctls
	var fwd, nlb string
	if err := ns.Do(func() error {
		a, err1 := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		b, err2 := os.ReadFile("/proc/sys/net/ipv6/ip_nonlocal_bind")
		fwd, nlb = strings.TrimSpace(string(a)), strings.TrimSpace(string(b))
		return errors.Join(err1, err2)
	}); err != nil || fwd != "1" || nlb != "1" {
		t.Errorf("namespace sysctls ip_forward=%q ipv6 nonlocal_bind=%q err=%v", fwd, nlb, err)
	}
	// files
	plan, _ := req.plan()
	wantFile, _ := vipFile("eth1", 1450, plan, nil, TopologySingle, false).Marshal()
	gotFile, err := os.ReadFile(filepath.Join(m.cfg.NetworkDir, "eth1.json"))
	if err != nil || string(gotFile) != string(wantFile) {
		t.Errorf("eth1.json = %s (%v)\nwant %s", gotFile, err, wantFile)
	}
	// LVS masquerade/notrack, once per chain (D3)
	wantMasq4 := map[string]int{"ip-udp-masq": 1, "ip-sctp-masq": 1, "prerouting": 1, "output": 1}
	wantMasq6 := map[string]int{"ip6-udp-masq": 1, "ip6-sctp-masq": 1, "prerouting": 1, "output": 1}
	if diff := cmp.Diff(wantMasq4, masqRules(t, ns, false, "eth1")); diff != "" {
		t.Errorf("ipv4 masquerade rules (-want +got):\n%s", diff)
	}

	serveHTTP(t, ns, net.JoinHostPort(vip4, fmt.Sprint(httpPort)))
	serveHTTP(t, ns, net.JoinHostPort(vip6, fmt.Sprint(httpPort)))
	serveHTTP(t, member, net.JoinHostPort(member4, "8081"))
	serveHTTP(t, member, net.JoinHostPort(member6, "8081"))

	// --- plug the member network
	nreq, err := ParsePlugNetworkRequest(memberBody(memMAC, 1500))
	if err != nil {
		t.Fatal(err)
	}
	nres, err := m.PlugNetwork(ctx, nreq)
	if err != nil {
		t.Fatalf("PlugNetwork: %v", err)
	}
	if nres.Details != "Plugged on interface eth2" || len(nres.Warnings) != 0 {
		t.Errorf("PlugNetwork result %+v", nres)
	}
	checkMemberPlumbing(t, ns, 1500)
	checkTraffic(t, ns, peer, member)
	plugged, _ := os.ReadFile(m.cfg.PluggedInterfacesFile)
	if want := vipMAC + " eth1\n" + memMAC + " eth2\n"; string(plugged) != want {
		t.Errorf("plugged_interfaces:\n%s\nwant:\n%s", plugged, want)
	}

	t.Run("InterfaceForIP", func(t *testing.T) {
		for ip, want := range map[string]string{vrrp4: "eth1", "2001:0db8:0100:0::0100": "eth1", amp4Mem: "eth2", amp6Mem: "eth2", "127.0.0.1": "lo"} {
			if got, err := m.InterfaceForIP(ctx, ip); err != nil || got != want {
				t.Errorf("InterfaceForIP(%s) = %q, %v; want %s", ip, got, err, want)
			}
		}
		if _, err := m.InterfaceForIP(ctx, "203.0.113.77"); !errors.Is(err, ErrAddressNotFound) {
			t.Errorf("unknown address: %v", err)
		}
		_, err := m.InterfaceForIP(ctx, "bogus")
		checkBadRequest(t, err, MsgInvalidIP, false)
	})

	t.Run("replug", func(t *testing.T) {
		// same VIP port again: 409
		if _, err := m.PlugVIP(ctx, req); !errors.Is(err, ErrInterfaceExists) {
			t.Errorf("PlugVIP again: %v, want ErrInterfaceExists", err)
		}
		// same member port again with a new MTU: updated in place (D11)
		nreq2, _ := ParsePlugNetworkRequest(memberBody(memMAC, 1400))
		res, err := m.PlugNetwork(ctx, nreq2)
		if err != nil || res.Details != "Updated existing interface eth2" {
			t.Fatalf("PlugNetwork again: %+v %v", res, err)
		}
		checkMemberPlumbing(t, ns, 1400)
		// Up converges without duplicating anything
		for range 2 {
			if w, err := m.Up(ctx, "all"); err != nil || len(w) != 0 {
				t.Fatalf("Up(all): %v %v", w, err)
			}
		}
		checkVIPPlumbing(t, ns, vipMAC)
		checkMemberPlumbing(t, ns, 1400)
		if diff := cmp.Diff(wantMasq4, masqRules(t, ns, false, "eth1")); diff != "" {
			t.Errorf("ipv4 masquerade rules after re-up (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantMasq6, masqRules(t, ns, true, "eth2")); diff != "" {
			t.Errorf("ipv6 masquerade rules of eth2 (-want +got):\n%s", diff)
		}
		// an address added behind our back is removed, a lost one restored
		l := linkIn(t, ns, "eth2")
		extra, _ := netlink.ParseAddr("198.18.2.99/24")
		if err := ns.Handle().AddrAdd(l, extra); err != nil {
			t.Fatal(err)
		}
		lost, _ := netlink.ParseAddr(amp4Mem + "/24")
		if err := ns.Handle().AddrDel(l, lost); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Up(ctx, "eth2"); err != nil {
			t.Fatal(err)
		}
		checkMemberPlumbing(t, ns, 1400)
		if _, err := m.Up(ctx, "eth9"); err == nil || err.Error() != "Could not configure interface: Could not find interface 'eth9'." {
			t.Errorf("Up(eth9): %v", err)
		}
	})

	t.Run("unknown MAC", func(t *testing.T) {
		// a MAC that is neither in the namespace nor in the root namespace
		r, _ := ParsePlugVIPRequest(vip4, vipBody(testutil.NeutronMAC(), 1450))
		if _, err := m.PlugVIP(ctx, r); !errors.Is(err, ErrNoInterface) {
			t.Fatalf("PlugVIP unknown MAC: %v", err)
		}
		if b, _ := os.ReadFile(m.cfg.PCIRescanPath); string(b) != "1" {
			t.Errorf("PCI rescan file = %q, want 1", b)
		}
		if err := os.WriteFile(m.cfg.PCIRescanPath, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		nr, _ := ParsePlugNetworkRequest(memberBody(testutil.NeutronMAC(), 1500))
		if _, err := m.PlugNetwork(ctx, nr); !errors.Is(err, ErrNoInterface) {
			t.Fatalf("PlugNetwork unknown MAC: %v", err)
		}
		if b, _ := os.ReadFile(m.cfg.PCIRescanPath); len(b) != 0 {
			t.Errorf("PCI rescan not rate-limited: %q", b)
		}
	})

	t.Run("advertisements", func(t *testing.T) {
		checkAdvertisements(t, ctx, m, peer, "vip0", linkIn(t, ns, "eth1").Attrs().HardwareAddr)
	})

	t.Run("reboot", func(t *testing.T) {
		// At boot the NICs come back in the root namespace under kernel
		// names and the data-plane namespace is gone. (Deleting a
		// namespace destroys veths instead of returning them, so the move
		// back is done explicitly.)
		pid := fmt.Sprint(os.Getpid())
		for _, ifname := range []string{"eth1", "eth2"} {
			rootName := "tnr" + testutil.RandomSuffix(4)
			t.Cleanup(func() { tryRun("ip", "link", "del", rootName) })
			run(t, "ip", "-n", nsName, "link", "set", ifname, "name", rootName)
			run(t, "ip", "-n", nsName, "link", "set", rootName, "netns", pid)
		}
		ns.Close()
		if err := DeleteNamespace(nsName); err != nil {
			t.Fatal(err)
		}
		w, err := m.Up(ctx, "all")
		if err != nil || len(w) != 0 {
			t.Fatalf("Up(all) after reboot: %v %v", w, err)
		}
		ns2 := openNS(t, nsName)
		checkVIPPlumbing(t, ns2, vipMAC)
		checkMemberPlumbing(t, ns2, 1400)
		if got := globalAddrs(t, ns2, "lo"); !cmp.Equal(got, []string{"127.0.0.1/8", "::1/128"}) {
			t.Errorf("lo addresses %v", got)
		}
		serveHTTP(t, ns2, net.JoinHostPort(vip4, fmt.Sprint(httpPort)))
		serveHTTP(t, ns2, net.JoinHostPort(vip6, fmt.Sprint(httpPort)))
		checkTraffic(t, ns2, peer, member)
	})

	t.Run("down", func(t *testing.T) {
		if _, err := m.Down(ctx, "eth2"); err != nil {
			t.Fatal(err)
		}
		ns3 := openNS(t, nsName)
		l := linkIn(t, ns3, "eth2")
		if l.Attrs().Flags&net.FlagUp != 0 || len(globalAddrs(t, ns3, "eth2")) != 0 {
			t.Errorf("eth2 after down: flags %v addresses %v", l.Attrs().Flags, globalAddrs(t, ns3, "eth2"))
		}
		if got := masqRules(t, ns3, true, "eth2"); len(got) != 0 {
			t.Errorf("eth2 masquerade rules after down: %v", got)
		}
		if diff := cmp.Diff(wantMasq6, masqRules(t, ns3, true, "eth1")); diff != "" {
			t.Errorf("eth1 ipv6 masquerade rules after eth2 down (-want +got):\n%s", diff)
		}
		if _, err := m.Up(ctx, "eth2"); err != nil {
			t.Fatal(err)
		}
		checkMemberPlumbing(t, ns3, 1400)
	})
}

func hasMainRoute(t *testing.T, ns *Namespace, ifname, dst string) bool {
	t.Helper()
	l := linkIn(t, ns, ifname)
	routes, err := ns.Handle().RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst {
			return true
		}
	}
	return false
}

func mustRootHandle(t *testing.T) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// checkAdvertisements captures on the peer side of the VIP network while
// the agent advertises both VIPs.
func checkAdvertisements(t *testing.T, ctx context.Context, m *Manager, peer *Namespace, peerIf string, mac net.HardwareAddr) {
	t.Helper()
	l := linkIn(t, peer, peerIf)
	ifi := &net.Interface{Index: l.Attrs().Index, Name: peerIf, HardwareAddr: l.Attrs().HardwareAddr}
	var conn *packet.Conn
	if err := peer.Do(func() error {
		var err error
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type seen struct{ garp, na int }
	res := make(chan seen, 1)
	stop := make(chan struct{})
	go func() {
		var s seen
		buf := make([]byte, 2048)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && (s.garp < 3 || s.na < 3) {
			select {
			case <-stop:
				res <- s
				return
			default:
			}
			_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				continue
			}
			p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
			eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			if eth == nil || eth.SrcMAC.String() != mac.String() {
				continue
			}
			if arp, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
				if eth.DstMAC.String() == "ff:ff:ff:ff:ff:ff" && arp.Operation == layers.ARPRequest &&
					net.IP(arp.SourceProtAddress).String() == vip4 && net.IP(arp.DstProtAddress).String() == vip4 &&
					net.HardwareAddr(arp.SourceHwAddress).String() == mac.String() &&
					net.HardwareAddr(arp.DstHwAddress).String() == "ff:ff:ff:ff:ff:ff" {
					s.garp++
				}
				continue
			}
			na, ok := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
			ip6, _ := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			icmp, _ := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if !ok || ip6 == nil || icmp == nil || !na.TargetAddress.Equal(net.ParseIP(vip6)) {
				continue
			}
			good := eth.DstMAC.String() == "33:33:00:00:00:01" && ip6.DstIP.Equal(net.ParseIP("ff02::1")) &&
				ip6.SrcIP.Equal(net.ParseIP(vip6)) && ip6.HopLimit == 255 &&
				na.Override() && !na.Router() && !na.Solicited() &&
				len(na.Options) == 1 && na.Options[0].Type == layers.ICMPv6OptTargetAddress &&
				net.HardwareAddr(na.Options[0].Data).String() == mac.String()
			if good && icmpChecksumOK(ip6, icmp) {
				s.na++
			}
		}
		res <- s
	}()
	if err := m.Advertise(ctx, vip4); err != nil {
		t.Errorf("Advertise %s: %v", vip4, err)
	}
	if err := m.Advertise(ctx, vip6); err != nil {
		t.Errorf("Advertise %s: %v", vip6, err)
	}
	var s seen
	select {
	case s = <-res:
	case <-time.After(15 * time.Second):
		close(stop)
		s = <-res
	}
	if s.garp < 3 || s.na < 3 {
		t.Errorf("seen %d gratuitous ARPs and %d unsolicited NAs, want 3 each", s.garp, s.na)
	}
	if err := m.Advertise(ctx, "203.0.113.77"); !errors.Is(err, ErrAddressNotFound) {
		t.Errorf("Advertise of an address nobody holds: %v", err)
	}
}

// icmpChecksumOK recomputes the ICMPv6 checksum of a received packet.
func icmpChecksumOK(ip6 *layers.IPv6, icmp *layers.ICMPv6) bool {
	data := append(append([]byte{}, icmp.Contents...), icmp.Payload...)
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(ip6.SrcIP.To16())
	add(ip6.DstIP.To16())
	add([]byte{0, 0, byte(len(data) >> 8), byte(len(data)), 0, 0, 0, 58})
	add(data)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum) == 0xffff
}
