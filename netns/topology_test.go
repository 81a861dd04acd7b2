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
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// ACTIVE_STANDBY: keepalived owns the VIPs, their table-1 routes and
// rules; the agent must neither add nor remove them.
func TestPlugVIPActiveStandby(t *testing.T) {
	testutil.RequireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, nsName := newTestManager(t, TopologyActiveStandby)
	vipMAC := testutil.NeutronMAC()
	vipNetwork(t, vipMAC)
	req, err := ParsePlugVIPRequest(vip4, vipBody(vipMAC, 1450))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.PlugVIP(ctx, req); err != nil {
		t.Fatalf("PlugVIP: %v", err)
	}
	ns := openNS(t, nsName)
	if diff := cmp.Diff([]string{"198.51.100.4/24"}, globalAddrs(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 addresses (-want +got):\n%s", diff)
	}
	wantRoutes := []string{
		"0.0.0.0/0 via 198.51.100.1 table 254",
		"198.18.50.0/24 via 198.51.100.254 table 1",
		"198.18.50.0/24 via 198.51.100.254 table 254",
		"2001:db8:100::/64 table 254",
		"2001:db8:50::/64 via 2001:db8:100::fe table 1",
		"2001:db8:50::/64 via 2001:db8:100::fe table 254",
		"::/0 via 2001:db8:100::1 table 254",
	}
	if diff := cmp.Diff(wantRoutes, staticRoutes(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 routes (-want +got):\n%s", diff)
	}
	if got := sourceRules(t, ns); len(got) != 0 {
		t.Errorf("rules in ACTIVE_STANDBY: %v", got)
	}

	// keepalived becomes MASTER: VIPs, a virtual_rule and a virtual_route
	l := linkIn(t, ns, "eth1")
	h := ns.Handle()
	for _, a := range []string{vip4 + "/32", vip6 + "/128"} {
		na, _ := netlink.ParseAddr(a)
		if strings.Contains(a, ":") {
			na.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, na); err != nil {
			t.Fatal(err)
		}
	}
	rule := netlink.NewRule()
	rule.Src = &net.IPNet{IP: net.ParseIP(vip4).To4(), Mask: net.CIDRMask(32, 32)}
	rule.Table, rule.Priority, rule.Protocol = 1, 100, rtprotKeepalived
	if err := h.RuleAdd(rule); err != nil {
		t.Fatal(err)
	}
	_, def, _ := net.ParseCIDR("0.0.0.0/0")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: def, Gw: net.ParseIP("198.51.100.1"), Table: 1, Protocol: rtprotKeepalived}); err != nil {
		t.Fatal(err)
	}
	if w, err := m.Up(ctx, "eth1"); err != nil || len(w) != 0 {
		t.Fatalf("Up(eth1): %v %v", w, err)
	}
	wantAddrs := []string{"198.51.100.100/32", "198.51.100.4/24", "2001:db8:100::100/128"}
	if diff := cmp.Diff(wantAddrs, globalAddrs(t, ns, "eth1")); diff != "" {
		t.Errorf("keepalived's VIPs touched (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"from 198.51.100.100/32 lookup 1 prio 100 proto 18"}, sourceRules(t, ns)); diff != "" {
		t.Errorf("keepalived's rule touched (-want +got):\n%s", diff)
	}
	if !hasTableRoute(t, ns, "eth1", 1, "0.0.0.0/0") {
		t.Error("keepalived's table-1 default route was removed")
	}

	// a new subnet on the VIP port: plug network with vip_net_info updates eth1
	body := fmt.Sprintf(`{"mac_address": %q, "mtu": 1450, "fixed_ips": [
		{"ip_address": %q, "subnet_cidr": "198.51.100.0/24", "gateway": "198.51.100.1", "host_routes": []},
		{"ip_address": "198.18.7.4", "subnet_cidr": "198.18.7.0/24", "gateway": null, "host_routes": []}],
		"vip_net_info": {"vip": %q, "subnet_cidr": "198.51.100.0/24", "gateway": "198.51.100.1", "vrrp_ip": %q,
			"host_routes": [], "mac_address": %q, "mtu": 1450, "is_sriov": false,
			"additional_vips": [{"ip_address": %q, "subnet_cidr": "2001:db8:100::/64", "gateway": "2001:db8:100::1", "host_routes": []}]}}`,
		vipMAC, vrrp4, vip4, vrrp4, vipMAC, vip6)
	nreq, err := ParsePlugNetworkRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.PlugNetwork(ctx, nreq)
	if err != nil || res.Details != "Updated existing interface eth1" {
		t.Fatalf("PlugNetwork vip_net_info: %+v %v", res, err)
	}
	wantAddrs = []string{"198.18.7.4/24", "198.51.100.100/32", "198.51.100.4/24", "2001:db8:100::100/128"}
	if diff := cmp.Diff(wantAddrs, globalAddrs(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 addresses after vip_net_info (-want +got):\n%s", diff)
	}
	f, err := m.readInterfaceFile("eth1")
	if err != nil || f.IfType != IfTypeVIP || len(f.Addresses) != 5 {
		t.Errorf("eth1 file after vip_net_info: %+v %v", f, err)
	}
}

func hasTableRoute(t *testing.T, ns *Namespace, ifname string, table int, dst string) bool {
	t.Helper()
	l := linkIn(t, ns, ifname)
	routes, err := ns.Handle().RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{LinkIndex: l.Attrs().Index, Table: table}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if routeKeyOf(r).dst == dst {
			return true
		}
	}
	return false
}

// SR-IOV VIP: the VIP interface is closed until the controller sends the
// allow-list; each PUT replaces the ruleset atomically.
func TestFirewallRulesSRIOV(t *testing.T) {
	testutil.RequireNetAdmin(t)
	requireNft(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, nsName := newTestManager(t, TopologySingle)
	vipMAC := testutil.NeutronMAC()
	peer := openNS(t, vipNetwork(t, vipMAC))
	body := fmt.Sprintf(`{"subnet_cidr": "198.51.100.0/24", "gateway": "198.51.100.1", "mac_address": %q,
		"vrrp_ip": %q, "mtu": 1500, "is_sriov": true}`, vipMAC, vrrp4)
	req, err := ParsePlugVIPRequest(vip4, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.PlugVIP(ctx, req); err != nil {
		t.Fatalf("PlugVIP: %v", err)
	}
	ns := openNS(t, nsName)
	// SR-IOV: masquerade only, no TCP notrack
	if diff := cmp.Diff(map[string]int{"ip-udp-masq": 1, "ip-sctp-masq": 1}, masqRules(t, ns, false, "eth1")); diff != "" {
		t.Errorf("SR-IOV masquerade rules (-want +got):\n%s", diff)
	}
	serveHTTP(t, ns, net.JoinHostPort(vip4, "8080"))
	serveHTTP(t, ns, net.JoinHostPort(vip4, "8082"))
	reach := func(port string) bool {
		_, err := httpGet(peer, client4, "http://"+net.JoinHostPort(vip4, port)+"/", 1500*time.Millisecond)
		return err == nil
	}
	listTable := func() string {
		return run(t, "ip", "netns", "exec", nsName, "nft", "list", "table", "inet", "amphora_table")
	}

	// drop-all base until rules arrive
	if _, err := os.Stat(m.cfg.RulesFile); err != nil {
		t.Fatalf("no base rules file after an SR-IOV plug: %v", err)
	}
	if reach("8080") {
		t.Error("VIP reachable before any allow-list")
	}

	rules1 := `[{"protocol": "TCP", "cidr": "198.18.99.0/24", "port": 8080},
		{"protocol": "UDP", "cidr": null, "port": 53},
		{"protocol": "sctp", "cidr": "::/0", "port": 9000},
		{"protocol": "VRRP", "cidr": "198.51.100.5/32", "port": 112},
		{"protocol": "vrrp", "cidr": "2001:db8:100::5/128", "port": 112}]`
	if err := m.SetInterfaceRules(ctx, vrrp4, []byte(rules1)); err != nil {
		t.Fatalf("SetInterfaceRules: %v", err)
	}
	if !reach("8080") || reach("8082") {
		t.Errorf("after rules1: 8080 reachable=%v (want true), 8082 reachable=%v (want false)", reach("8080"), reach("8082"))
	}
	if l := listTable(); !strings.Contains(l, "tcp dport 8080 accept") || !strings.Contains(l, `iifname "eth1" goto amphora_vip_chain`) {
		t.Errorf("loaded ruleset:\n%s", l)
	}

	rules2 := `[{"protocol": "tcp", "cidr": null, "port": 8082}]`
	if err := m.SetInterfaceRules(ctx, vrrp4, []byte(rules2)); err != nil {
		t.Fatalf("SetInterfaceRules: %v", err)
	}
	if reach("8080") || !reach("8082") {
		t.Errorf("after rules2: 8080 reachable=%v (want false), 8082 reachable=%v (want true)", reach("8080"), reach("8082"))
	}
	l := listTable()
	if strings.Contains(l, "8080") || !strings.Contains(l, "tcp dport 8082 accept") {
		t.Errorf("ruleset not replaced:\n%s", l)
	}
	parsed2, _ := ParseFirewallRules([]byte(rules2))
	want2 := RenderFirewallRules("eth1", parsed2)
	if b, _ := os.ReadFile(m.cfg.RulesFile); string(b) != want2 {
		t.Errorf("rules file:\n%s\nwant:\n%s", b, want2)
	}
	if st, _ := os.Stat(m.cfg.RulesFile); st.Mode().Perm() != 0o600 {
		t.Errorf("rules file mode %v", st.Mode().Perm())
	}

	// a ruleset nft refuses leaves the previous one, in the kernel and on disk
	bad := "table inet amphora_table {}\ndelete table inet amphora_table\ntable inet amphora_table {\n  chain amphora_chain {\n    type filter hook input priority filter; policy accept;\n    bogus\n  }\n}\n"
	if err := m.installRules(ctx, ns, bad); err == nil {
		t.Fatal("a bad ruleset was accepted")
	}
	if l2 := listTable(); l2 != l {
		t.Errorf("ruleset changed by a failed load:\n%s", l2)
	}
	if b, _ := os.ReadFile(m.cfg.RulesFile); string(b) != want2 {
		t.Errorf("rules file changed by a failed load:\n%s", b)
	}
	if _, err := os.Stat(m.cfg.RulesFile + ".new"); !os.IsNotExist(err) {
		t.Errorf("candidate file left behind: %v", err)
	}
	if !reach("8082") {
		t.Error("8082 unreachable after a failed load")
	}

	// errors of the endpoint
	if err := m.SetInterfaceRules(ctx, "198.51.100.77", []byte(rules2)); !errors.Is(err, ErrAddressNotFound) {
		t.Errorf("unknown IP: %v", err)
	}
	checkBadRequest(t, m.SetInterfaceRules(ctx, "x", []byte(rules2)), MsgInvalidIP, false)
	checkBadRequest(t, m.SetInterfaceRules(ctx, vrrp4, []byte(`[{"protocol": "TCP", "cidr": "nope", "port": 1}]`)), MsgInvalidRulesInfo, true)
	if b, _ := os.ReadFile(m.cfg.RulesFile); string(b) != want2 {
		t.Error("rules file changed by a refused request")
	}

	// an empty list clears the allowed flows (D7)
	if err := m.SetInterfaceRules(ctx, vrrp4, []byte(`[]`)); err != nil {
		t.Fatal(err)
	}
	if reach("8082") {
		t.Error("8082 still reachable after an empty allow-list")
	}

	// Up reloads the existing file (after a reboot the kernel has none)
	run(t, "ip", "netns", "exec", nsName, "nft", "delete", "table", "inet", "amphora_table")
	if !reach("8082") {
		t.Fatal("test setup: 8082 unreachable without any ruleset")
	}
	if _, err := m.Up(ctx, "eth1"); err != nil {
		t.Fatal(err)
	}
	if reach("8082") {
		t.Error("Up did not reload the rules file")
	}
}

// A plug whose bring-up fails is undone: the NIC goes back to the root
// namespace under its old name and the files are as before, so the
// controller's retry starts from scratch.
func TestPlugFailureRollsBack(t *testing.T) {
	testutil.RequireNetAdmin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, nsName := newTestManager(t, TopologySingle, func(c *Config) { c.NFTPath = "/nonexistent/nft" })
	vipMAC := testutil.NeutronMAC()
	rootName := testutil.Hotplug(t, "tnh", vipMAC, testutil.NewNetNS(t, "tnN"), "vip0")
	if err := os.MkdirAll(filepath.Dir(m.cfg.PluggedInterfacesFile), 0o755); err != nil {
		t.Fatal(err)
	}
	before := "fa:16:3e:00:00:99 eth7\n"
	if err := os.WriteFile(m.cfg.PluggedInterfacesFile, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": %q, "vrrp_ip": %q, "is_sriov": true}`, vipMAC, vrrp4)
	req, err := ParsePlugVIPRequest(vip4, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.PlugVIP(ctx, req)
	var pe *PlugError
	if !errors.As(err, &pe) || pe.Message != MsgPlugVIPFailed || !strings.Contains(pe.Details, "/nonexistent/nft") {
		t.Fatalf("PlugVIP: %v, want a *PlugError %q mentioning nft", err, MsgPlugVIPFailed)
	}
	l, err := netlink.LinkByName(rootName)
	if err != nil || l.Attrs().HardwareAddr.String() != vipMAC {
		t.Fatalf("NIC not back in the root namespace as %s: %v", rootName, err)
	}
	if _, err := os.Stat(filepath.Join(m.cfg.NetworkDir, "eth1.json")); !os.IsNotExist(err) {
		t.Errorf("eth1.json left behind: %v", err)
	}
	if b, _ := os.ReadFile(m.cfg.PluggedInterfacesFile); string(b) != before {
		t.Errorf("plugged_interfaces = %q, want %q", b, before)
	}
	ns := openNS(t, nsName)
	if _, err := ns.Handle().LinkByName("eth1"); err == nil {
		t.Error("eth1 still in the namespace")
	}

	// A file whose NIC is gone (no unplug endpoint) is a warning for
	// "all", an error when named (GAPS D4).
	stale := backendFile("eth5", 0, []FixedIP{{IPAddress: "198.18.5.5", SubnetCIDR: "198.18.5.0/24"}}, false)
	if err := m.writeInterfaceFile(stale); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteLoopbackFile(); err != nil {
		t.Fatal(err)
	}
	w, err := m.Up(ctx, "all")
	if err != nil || len(w) != 1 || !strings.Contains(w[0], "eth5") {
		t.Errorf("Up(all) with a stale file: warnings %q, err %v", w, err)
	}
	var ie *InterfaceError
	if _, err := m.Up(ctx, "eth5"); !errors.As(err, &ie) || len(ie.Failures) != 1 || !strings.HasPrefix(err.Error(), "Could not configure interface: Error on action 'up' for interface eth5: ") {
		t.Errorf("Up(eth5): %v", err)
	}
}

func TestEnsureNamespaceOverLeftoverFile(t *testing.T) {
	testutil.RequireNetAdmin(t)
	name := "tnA-" + testutil.RandomSuffix(4)
	p := filepath.Join(runDir, name)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// what a crashed create (or `ip netns add` from another mount
	// namespace) leaves: an empty file, not a namespace mount
	if err := os.WriteFile(p, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := DeleteNamespace(name); err != nil {
			t.Error(err)
		}
	})
	if _, err := OpenNamespace(name); !errors.Is(err, ErrNamespaceAbsent) {
		t.Fatalf("OpenNamespace on a plain file: %v", err)
	}
	ns, created, err := EnsureNamespace(name)
	if err != nil || !created {
		t.Fatalf("EnsureNamespace: created=%v err=%v", created, err)
	}
	lo := linkIn(t, ns, "lo")
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is down")
	}
	ns.Close()
	ns2, created, err := EnsureNamespace(name)
	if err != nil || created {
		t.Fatalf("second EnsureNamespace: created=%v err=%v", created, err)
	}
	ns2.Close()
}
