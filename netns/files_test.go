package netns

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type goldenCase struct {
	Name     string          `json:"name"`
	Kind     string          `json:"kind"`
	Topology string          `json:"topology"`
	Ifname   string          `json:"ifname"`
	VIP      string          `json:"vip"`
	Body     json.RawMessage `json:"body"`
}

// The golden files were written by the upstream Octavia code
// (testdata/gen_golden.py): our files must be byte-identical.
func TestInterfaceFilesMatchReference(t *testing.T) {
	data, err := os.ReadFile("testdata/golden_cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []goldenCase
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var f *InterfaceFile
			switch c.Kind {
			case "lo":
				f = loopbackFile()
			case "vip":
				req, err := ParsePlugVIPRequest(c.VIP, c.Body)
				if err != nil {
					t.Fatal(err)
				}
				plan, err := req.plan()
				if err != nil {
					t.Fatal(err)
				}
				f = vipFile(c.Ifname, req.MTU, plan, nil, c.Topology, req.IsSRIOV)
			case "network":
				req, err := ParsePlugNetworkRequest(c.Body)
				if err != nil {
					t.Fatal(err)
				}
				if v := req.VIPNetInfo; v != nil {
					plan, err := buildVIPPlan(v.VIP, v.SubnetCIDR, v.Gateway, v.HostRoutes, v.AdditionalVIPs, v.VRRPIP, MsgInvalidPortInfo)
					if err != nil {
						t.Fatal(err)
					}
					f = vipFile(c.Ifname, req.MTU, plan, req.FixedIPs, c.Topology, req.IsSRIOV)
				} else {
					f = backendFile(c.Ifname, req.MTU, req.FixedIPs, req.IsSRIOV)
				}
			}
			got, err := f.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata/golden", c.Name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("file differs from the reference:\n got: %s\nwant: %s", got, want)
			}
			// and it reads back to the same bytes
			back, err := ParseInterfaceFile(want)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := back.Marshal()
			if string(again) != string(want) {
				t.Errorf("round trip differs:\n got: %s\nwant: %s", again, want)
			}
		})
	}
}

func TestParseInterfaceFileFromOldAgent(t *testing.T) {
	// Files of 11.0.0 agents have neither if_type nor is_sriov (GAPS G1).
	old := map[string]string{
		"eth1": `{"name": "eth1", "addresses": [{"address": "10.0.0.4", "prefixlen": 24}, {"address": "10.0.0.2", "prefixlen": 32, "octavia_owned": false}], "routes": [{"dst": "0.0.0.0/0", "gateway": "10.0.0.1", "flags": ["onlink"]}], "rules": [], "scripts": {"up": [{"command": "octavia-agent-lvs-masquerade add ipv4 eth1"}], "down": []}, "mtu": 1450}`,
		"lo":   `{"name": "lo", "addresses": [{"address": "127.0.0.1", "prefixlen": 8}], "routes": [], "rules": [], "scripts": {"up": [], "down": []}}`,
		"eth2": `{"name": "eth2", "addresses": [{"dhcp": true, "ipv6auto": true}], "routes": [], "rules": [], "scripts": {"up": [], "down": []}}`,
	}
	want := map[string]string{"eth1": IfTypeVIP, "lo": IfTypeLo, "eth2": IfTypeBackend}
	for name, text := range old {
		f, err := ParseInterfaceFile([]byte(text))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if f.IfType != want[name] || f.IsSRIOV {
			t.Errorf("%s: if_type %q sriov %v, want %q false", name, f.IfType, f.IsSRIOV, want[name])
		}
	}
	f, _ := ParseInterfaceFile([]byte(old["eth1"]))
	if f.MTU != 1450 || len(f.Addresses) != 2 || f.Addresses[1].Owned() || !f.Addresses[0].Owned() {
		t.Errorf("eth1 parsed as %+v", f)
	}
	mc, ok, err := parseMasqCommand(f.Scripts.Up[0].Command)
	if err != nil || !ok || !mc.add || mc.ipv6 || mc.iface != "eth1" || mc.sriov {
		t.Errorf("11.0.0 masquerade command parsed as %+v %v %v", mc, ok, err)
	}
	if _, err := ParseInterfaceFile([]byte(`{"addresses": []}`)); err == nil {
		t.Error("a file without a name was accepted")
	}
}

func TestPluggedInterfacesFile(t *testing.T) {
	dir := t.TempDir()
	m := New(Config{PluggedInterfacesFile: filepath.Join(dir, "sub", "plugged_interfaces"), NetworkDir: dir})
	if err := m.recordPlugged("fa:16:3e:00:00:01", "eth1"); err != nil {
		t.Fatal(err)
	}
	// an old agent's file with an upper-case MAC, a stale eth2 line and junk
	old := "FA:16:3E:00:00:01 eth1\nfa:16:3e:00:00:09 eth2\ngarbage\nfa:16:3e:00:00:05 eth3\n"
	if err := os.WriteFile(m.cfg.PluggedInterfacesFile, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, err := m.readPlugged()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]pluggedEntry{{"fa:16:3e:00:00:01", "eth1"}, {"fa:16:3e:00:00:09", "eth2"}, {"fa:16:3e:00:00:05", "eth3"}}, entries); diff != "" {
		t.Errorf("read (-want +got):\n%s", diff)
	}
	// eth2 is now another NIC: the stale line goes; eth3's MAC moved to eth4
	if err := m.recordPlugged("fa:16:3e:00:00:02", "eth2"); err != nil {
		t.Fatal(err)
	}
	if err := m.recordPlugged("fa:16:3e:00:00:05", "eth4"); err != nil {
		t.Fatal(err)
	}
	if err := m.recordPlugged("fa:16:3e:00:00:02", "eth2"); err != nil { // no-op
		t.Fatal(err)
	}
	got, _ := os.ReadFile(m.cfg.PluggedInterfacesFile)
	want := "fa:16:3e:00:00:01 eth1\nfa:16:3e:00:00:02 eth2\nfa:16:3e:00:00:05 eth4\n"
	if string(got) != want {
		t.Errorf("file:\n%s\nwant:\n%s", got, want)
	}
	st, _ := os.Stat(m.cfg.PluggedInterfacesFile)
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode().Perm())
	}
}

func TestPythonSeparators(t *testing.T) {
	in := `{"a":"x, y: z","b":[1,2],"c":{},"d":"q\"uo,te:"}`
	want := `{"a": "x, y: z", "b": [1, 2], "c": {}, "d": "q\"uo,te:"}`
	if got := string(pythonSeparators([]byte(in))); got != want {
		t.Errorf("got %s", got)
	}
}

func TestParsePlugVIPRequestErrors(t *testing.T) {
	ok := `{"subnet_cidr": "198.51.100.0/24", "gateway": "198.51.100.1", "mac_address": "fa:16:3e:00:00:01"}`
	cases := []struct {
		name, vip, body string
		msg             string
		generic         bool
	}{
		{"not json", "198.51.100.10", `not json`, MsgInvalidSubnetInfo, true},
		{"array", "198.51.100.10", `[]`, MsgInvalidSubnetInfo, true},
		{"missing subnet", "198.51.100.10", `{"gateway": null, "mac_address": "fa:16:3e:00:00:01"}`, MsgInvalidSubnetInfo, true},
		{"missing gateway key", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "mac_address": "fa:16:3e:00:00:01"}`, MsgInvalidSubnetInfo, true},
		{"missing mac", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null}`, MsgInvalidSubnetInfo, true},
		{"bad mac", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "nope"}`, MsgInvalidSubnetInfo, true},
		{"mac not string", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": 5}`, MsgInvalidSubnetInfo, true},
		{"bad vip", "bogus", ok, "Invalid VIP: 'bogus' does not appear to be an IPv4 or IPv6 address", false},
		{"host bits", "198.51.100.10", `{"subnet_cidr": "198.51.100.5/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01"}`, "Invalid VIP: 198.51.100.5/24 has host bits set", false},
		{"bad cidr", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/33", "gateway": null, "mac_address": "fa:16:3e:00:00:01"}`, "Invalid VIP: '33' is not a valid netmask", false},
		{"family mismatch", "2001:db8::1", ok, "Invalid VIP: 2001:db8::1 is not in the address family of 198.51.100.0/24", false},
		{"bad vrrp", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "vrrp_ip": "1.2.3"}`, "Invalid VRRP Address: '1.2.3' does not appear to be an IPv4 or IPv6 address", false},
		{"bad gateway", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": "x", "mac_address": "fa:16:3e:00:00:01"}`, MsgInvalidSubnetInfo, true},
		{"mtu string", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "mtu": "1500"}`, MsgInvalidSubnetInfo, true},
		{"mtu tiny", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "mtu": 10}`, MsgInvalidSubnetInfo, true},
		{"host_routes not list", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "host_routes": {}}`, MsgInvalidSubnetInfo, true},
		{"host route no nexthop", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "host_routes": [{"destination": "10.0.0.0/8"}]}`, MsgInvalidSubnetInfo, true},
		{"host route bad dst", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "host_routes": [{"destination": "10.0.0.0/99", "nexthop": "198.51.100.1"}]}`, MsgInvalidSubnetInfo, true},
		// A5: malformed additional VIPs are 400s, not 500s
		{"additional not list", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "additional_vips": "x"}`, MsgInvalidSubnetInfo, true},
		{"additional no ip", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "additional_vips": [{"subnet_cidr": "2001:db8::/64"}]}`, MsgInvalidSubnetInfo, true},
		{"additional no subnet", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "additional_vips": [{"ip_address": "2001:db8::5"}]}`, MsgInvalidSubnetInfo, true},
		{"additional bad ip", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "additional_vips": [{"ip_address": "zz", "subnet_cidr": "2001:db8::/64", "gateway": null, "host_routes": []}]}`, "Invalid VIP: 'zz' does not appear to be an IPv4 or IPv6 address", false},
		{"additional bad cidr", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "additional_vips": [{"ip_address": "2001:db8::5", "subnet_cidr": "2001:db8::1/64", "gateway": null, "host_routes": []}]}`, "Invalid VIP: 2001:db8::1/64 has host bits set", false},
		{"additional entry not object", "198.51.100.10", `{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "fa:16:3e:00:00:01", "additional_vips": [5]}`, MsgInvalidSubnetInfo, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePlugVIPRequest(c.vip, []byte(c.body))
			checkBadRequest(t, err, c.msg, c.generic)
		})
	}
	r, err := ParsePlugVIPRequest("198.51.100.10", []byte(`{"subnet_cidr": "198.51.100.0/24", "gateway": null, "mac_address": "FA:16:3E:00:00:0A", "mtu": null, "vrrp_ip": null, "host_routes": null, "additional_vips": null, "is_sriov": null}`))
	if err != nil {
		t.Fatalf("nulls refused: %v", err)
	}
	if r.MACAddress != "fa:16:3e:00:00:0a" {
		t.Errorf("MAC not normalised: %s", r.MACAddress)
	}
}

func TestParsePlugNetworkRequestErrors(t *testing.T) {
	cases := []struct {
		name, body string
		msg        string
		generic    bool
	}{
		{"not json", `{`, MsgInvalidPortInfo, true},
		{"no mac", `{"fixed_ips": []}`, MsgInvalidPortInfo, true},
		{"bad mac", `{"mac_address": "00:11"}`, MsgInvalidPortInfo, true},
		{"fixed_ips not list", `{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": {}}`, MsgInvalidPortInfo, true},
		{"bad ip", `{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.256", "subnet_cidr": "10.0.0.0/24"}]}`, MsgInvalidNetPort, false},
		// A5: entries the reference answered with 500
		{"no ip_address", `{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"subnet_cidr": "10.0.0.0/24"}]}`, MsgInvalidNetPort, false},
		{"no subnet", `{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.5"}]}`, MsgInvalidNetPort, false},
		{"bad subnet", `{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.5", "subnet_cidr": "10.0.0.5/24"}]}`, MsgInvalidNetPort, false},
		{"entry not object", `{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.5"]}`, MsgInvalidNetPort, false},
		{"bad host route", `{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.5", "subnet_cidr": "10.0.0.0/24", "host_routes": [{"destination": "x", "nexthop": "10.0.0.1"}]}]}`, MsgInvalidNetPort, false},
		{"vip_net_info not object", `{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": []}`, MsgInvalidPortInfo, true},
		{"vip_net_info no vip", `{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": {"subnet_cidr": "10.0.0.0/24", "gateway": null}}`, MsgInvalidPortInfo, true},
		{"vip_net_info no gateway", `{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": {"vip": "10.0.0.2", "subnet_cidr": "10.0.0.0/24"}}`, MsgInvalidPortInfo, true},
		{"vip_net_info bad vip", `{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": {"vip": "10.0.0", "subnet_cidr": "10.0.0.0/24", "gateway": null}}`, "Invalid VIP: '10.0.0' does not appear to be an IPv4 or IPv6 address", false},
		{"vip_net_info bad subnet", `{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": {"vip": "10.0.0.2", "subnet_cidr": "10.0.0.2/24", "gateway": null}}`, "Invalid VIP: 10.0.0.2/24 has host bits set", false},
		{"vip_net_info bad vrrp", `{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": {"vip": "10.0.0.2", "subnet_cidr": "10.0.0.0/24", "gateway": null, "vrrp_ip": "q"}}`, "Invalid VRRP Address: 'q' does not appear to be an IPv4 or IPv6 address", false},
		{"vip_net_info bad additional", `{"mac_address": "fa:16:3e:00:00:01", "vip_net_info": {"vip": "10.0.0.2", "subnet_cidr": "10.0.0.0/24", "gateway": null, "additional_vips": [{"ip_address": "10.1.0.2"}]}}`, MsgInvalidPortInfo, true},
		{"is_sriov string", `{"mac_address": "fa:16:3e:00:00:01", "is_sriov": "yes"}`, MsgInvalidPortInfo, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePlugNetworkRequest([]byte(c.body))
			checkBadRequest(t, err, c.msg, c.generic)
		})
	}
	r, err := ParsePlugNetworkRequest([]byte(`{"mac_address": "fa:16:3e:00:00:01", "fixed_ips": null, "vip_net_info": {}}`))
	if err != nil || r.VIPNetInfo != nil || len(r.FixedIPs) != 0 {
		t.Errorf("empty vip_net_info: %+v %v", r, err)
	}
}

func checkBadRequest(t *testing.T, err error, msg string, generic bool) {
	t.Helper()
	var bre *BadRequestError
	if !errors.As(err, &bre) {
		t.Fatalf("got %v, want a *BadRequestError", err)
	}
	if bre.Message != msg || bre.Generic != generic {
		t.Errorf("got %q (generic %v), want %q (generic %v); err %v", bre.Message, bre.Generic, msg, generic, err)
	}
}

func TestFirewallRules(t *testing.T) {
	rules, err := ParseFirewallRules([]byte(`[
		{"protocol": "TCP", "cidr": "192.0.2.0/24", "port": 8080},
		{"protocol": "udp", "cidr": null, "port": 80},
		{"protocol": "vrrp", "cidr": "203.0.113.4/32", "port": 112},
		{"protocol": "VRRP", "cidr": "2001:db8::4/128", "port": 112},
		{"protocol": "SCTP", "cidr": "::/0", "port": 9000.0},
		{"protocol": "TCP", "cidr": "0.0.0.0/0", "port": 443},
		{"protocol": "TCP", "cidr": "2001:db8::5/64", "port": 22}]`))
	if err != nil {
		t.Fatal(err)
	}
	got := RenderFirewallRules("eth1", rules)
	want := `table inet amphora_table {}
delete table inet amphora_table
table inet amphora_table {
  chain amphora_chain {
    type filter hook input priority filter; policy drop;
      ct state vmap { established : accept, related : accept, invalid : drop }
      iif lo accept
      ip saddr 127.0.0.0/8 drop
      ip6 saddr ::1 drop
      icmp type destination-unreachable accept
      icmpv6 type { nd-neighbor-solicit, nd-router-advert, nd-neighbor-advert, packet-too-big, destination-unreachable } accept
      udp sport 67 udp dport 68 accept
      udp sport 547 udp dport 546 accept
      iifname != "eth1" ct state untracked tcp flags & (syn | ack) != syn accept
      iifname "eth1" goto amphora_vip_chain
  }
  chain amphora_vip_chain {
      ip saddr 192.0.2.0/24 tcp dport 8080 accept
      udp dport 80 accept
      ip saddr 203.0.113.4/32 meta l4proto 112 accept
      ip6 saddr 2001:db8::4/128 meta l4proto 112 accept
      sctp dport 9000 accept
      tcp dport 443 accept
      ip6 saddr 2001:db8::/64 tcp dport 22 accept
  }
}
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("render (-want +got):\n%s", diff)
	}
	if empty := RenderFirewallRules("eth7", nil); !strings.Contains(empty, "chain amphora_vip_chain {\n  }\n") || !strings.Contains(empty, `iifname "eth7" goto`) {
		t.Errorf("empty ruleset:\n%s", empty)
	}

	bad := []string{
		`{}`, `null`, `[1]`, `not json`,
		`[{"protocol": "ICMP", "cidr": null, "port": 1}]`,
		`[{"protocol": "TCP", "cidr": null, "port": 0}]`,
		`[{"protocol": "TCP", "cidr": null, "port": 65536}]`,
		`[{"protocol": "TCP", "cidr": null, "port": 1.5}]`,
		`[{"protocol": "TCP", "cidr": null, "port": "80"}]`,
		`[{"protocol": "TCP", "cidr": "10.0.0.0/33", "port": 80}]`,
		`[{"protocol": "TCP", "cidr": "bogus", "port": 80}]`,
		`[{"protocol": "TCP", "cidr": 5, "port": 80}]`,
		`[{"protocol": "TCP", "port": 80}]`,
		`[{"protocol": "TCP", "cidr": null}]`,
		`[{"cidr": null, "port": 80}]`,
		`[{"protocol": "TCP", "cidr": null, "port": 80, "extra": 1}]`,
	}
	for _, b := range bad {
		_, err := ParseFirewallRules([]byte(b))
		checkBadRequest(t, err, MsgInvalidRulesInfo, true)
	}
	if r, err := ParseFirewallRules([]byte(`[]`)); err != nil || len(r) != 0 {
		t.Errorf("empty list: %v %v", r, err)
	}
}

func TestInterfaceErrorText(t *testing.T) {
	e := &InterfaceError{Action: "up", Failures: []InterfaceFailure{{"eth1", errors.New("boom")}, {"eth2", errors.New("bang")}}}
	want := "Could not configure interface: Error on action 'up' for interface eth1: boom., Error on action 'up' for interface eth2: bang."
	if e.Error() != want {
		t.Errorf("got %q", e.Error())
	}
	nf := &InterfaceError{Action: "down", NotFound: "eth9"}
	if nf.Error() != "Could not configure interface: Could not find interface 'eth9'." {
		t.Errorf("got %q", nf.Error())
	}
}

func TestUnit(t *testing.T) {
	text, err := Unit("amphora-haproxy", []string{"/usr/bin/amphora-agent", "--config-file", "/etc/octavia/a b.conf"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Description=Configure amphora-haproxy network namespace\n",
		"ExecStart=-/sbin/ip netns add amphora-haproxy\n",
		"ExecStart=-/sbin/ip netns exec amphora-haproxy modprobe ip_vs\n",
		"ExecStart=-/usr/bin/amphora-agent --config-file \"/etc/octavia/a b.conf\" interface up all\n",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("unit lacks %q:\n%s", want, text)
		}
	}
	if strings.HasPrefix(string(text), "#") {
		t.Errorf("the service manager adds the marker, not the renderer:\n%s", text)
	}
	if _, err := Unit("../x", nil); err == nil {
		t.Error("a namespace name with a slash was rendered")
	}
}
