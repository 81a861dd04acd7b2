package netns

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addGoldenBodies adds the request bodies of the golden cases.
func addGoldenBodies(f *testing.F, kind string, add func(vip string, body []byte)) {
	f.Helper()
	var cases []struct {
		Kind string         `json:"kind"`
		VIP  string         `json:"vip"`
		Body map[string]any `json:"body"`
	}
	data, err := os.ReadFile(filepath.Join("testdata", "golden_cases.json"))
	if err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		f.Fatal(err)
	}
	for _, c := range cases {
		if c.Kind != kind {
			continue
		}
		b, err := json.Marshal(c.Body)
		if err != nil {
			f.Fatal(err)
		}
		add(c.VIP, b)
	}
}

// isBadRequest: request problems must be 400s (a *BadRequestError), never
// a 500.
func isBadRequest(t *testing.T, err error) {
	t.Helper()
	var bre *BadRequestError
	if !errors.As(err, &bre) {
		t.Fatalf("error %T %v is not a *BadRequestError", err, err)
	}
}

// FuzzParsePlugVIPRequest: any body gives a request or a 400, and an
// accepted request renders an interface file that reads back the same.
func FuzzParsePlugVIPRequest(f *testing.F) {
	addGoldenBodies(f, "vip", func(vip string, body []byte) { f.Add(vip, body) })
	f.Add(vip4, vipBody("fa:16:3e:00:00:01", 1450))
	f.Add("2001:db8::1", []byte(`{"subnet_cidr":"2001:db8::/64","gateway":null,"mac_address":"fa:16:3e:00:00:01","additional_vips":[{"ip_address":"10.0.0.5","subnet_cidr":"10.0.0.0/8"}]}`))
	f.Fuzz(func(t *testing.T, vip string, body []byte) {
		req, err := ParsePlugVIPRequest(vip, body)
		if err != nil {
			isBadRequest(t, err)
			return
		}
		plan, err := req.plan()
		if err != nil {
			t.Fatalf("accepted, then no plan: %v", err)
		}
		for _, topology := range []string{TopologySingle, TopologyActiveStandby} {
			roundTrip(t, vipFile(primaryInterface, req.MTU, plan, nil, topology, req.IsSRIOV))
		}
	})
}

// FuzzParsePlugNetworkRequest: any body gives a request or a 400; an
// accepted one renders a file that reads back the same.
func FuzzParsePlugNetworkRequest(f *testing.F) {
	addGoldenBodies(f, "network", func(_ string, body []byte) { f.Add(body) })
	f.Add(memberBody("fa:16:3e:00:00:02", 1400))
	f.Add([]byte(`{"mac_address":"fa:16:3e:00:00:02","fixed_ips":[]}`))
	f.Add([]byte(`{"mac_address":"fa:16:3e:00:00:02","vip_net_info":{"vip":"10.0.0.2","subnet_cidr":"10.0.0.0/24","gateway":null,"vrrp_ip":"10.0.0.3","host_routes":[]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParsePlugNetworkRequest(body)
		if err != nil {
			isBadRequest(t, err)
			return
		}
		roundTrip(t, backendFile("eth2", req.MTU, req.FixedIPs, req.IsSRIOV))
	})
}

// roundTrip: a file the agent renders parses back to the same bytes.
func roundTrip(t *testing.T, f *InterfaceFile) {
	t.Helper()
	data, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseInterfaceFile(data)
	if err != nil {
		t.Fatalf("rendered file does not parse: %v\n%s", err, data)
	}
	again, err := back.Marshal()
	if err != nil || !bytes.Equal(again, data) {
		t.Fatalf("rendered file does not read back the same (%v):\n%s\n%s", err, data, again)
	}
}

// FuzzParseInterfaceFile: any file content (ours, the reference's, or
// damaged) is read or refused, and what is read renders stably.
func FuzzParseInterfaceFile(f *testing.F) {
	golden, err := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	if err != nil || len(golden) == 0 {
		f.Fatalf("no golden files: %v", err)
	}
	for _, g := range golden {
		data, err := os.ReadFile(g)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"name": "eth1", "addresses": [{"address": "10.0.0.2", "prefixlen": 24}], "routes": [], "rules": []}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := ParseInterfaceFile(data)
		if err != nil {
			return
		}
		if file.Name == "" || file.IfType == "" {
			t.Fatalf("accepted without name or type: %+v", file)
		}
		roundTrip(t, file)
	})
}

// FuzzParseFirewallRules: any body gives rules or a 400; accepted rules
// render a ruleset for the interface.
func FuzzParseFirewallRules(f *testing.F) {
	f.Add([]byte(`[{"protocol":"TCP","cidr":"198.18.99.0/24","port":80},{"protocol":"vrrp","cidr":"198.51.100.5/32","port":112}]`))
	f.Add([]byte(`[{"protocol":"udp","cidr":null,"port":53},{"protocol":"SCTP","cidr":"2001:db8::/64","port":9000}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rules, err := ParseFirewallRules(body)
		if err != nil {
			isBadRequest(t, err)
			return
		}
		text := RenderFirewallRules("eth1", rules)
		if !strings.Contains(text, nftTable) {
			t.Fatalf("ruleset without its table:\n%s", text)
		}
		for _, r := range rules {
			if r.Port < 1 || r.Port > 65535 {
				t.Fatalf("port %d accepted", r.Port)
			}
		}
	})
}

// FuzzParseMasqCommand: any scripts entry is recognised, refused or left
// to run; a recognised one names an interface.
func FuzzParseMasqCommand(f *testing.F) {
	f.Add("/usr/local/bin/lvs-masquerade.sh add ipv4 eth1")
	f.Add("/usr/local/bin/lvs-masquerade.sh delete ipv6 eth2 sriov")
	f.Add("octavia-agent-lvs-masquerade add ipv4 eth1")
	f.Add("/sbin/ip link set eth1 up")
	f.Fuzz(func(t *testing.T, cmd string) {
		mc, ok, err := parseMasqCommand(cmd)
		if ok && err == nil && mc.iface == "" {
			t.Fatalf("%q: recognised without an interface", cmd)
		}
	})
}

// FuzzReadPlugged: any plugged-interfaces file is read without failing
// on its content, every entry is usable, and rewriting it is stable.
func FuzzReadPlugged(f *testing.F) {
	f.Add([]byte("fa:16:3e:00:00:01 eth1\nfa:16:3e:00:00:02 eth2\n"))
	f.Add([]byte("FA:16:3E:00:00:01 eth1\njunk\n\nfa:16:3e:00:00:02 eth2 extra\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "plugged_interfaces")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		m := New(Config{PluggedInterfacesFile: path})
		entries, err := m.readPlugged()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if _, err := normalizeMAC(e.MAC); err != nil || e.MAC != strings.ToLower(e.MAC) || validIfName(e.Name) != nil {
				t.Fatalf("unusable entry %+v", e)
			}
		}
		if err := os.WriteFile(path, renderPlugged(entries), 0o644); err != nil {
			t.Fatal(err)
		}
		again, err := m.readPlugged()
		if err != nil || len(again) != len(entries) {
			t.Fatalf("rewritten file reads %d entries (%v), want %d", len(again), err, len(entries))
		}
	})
}
