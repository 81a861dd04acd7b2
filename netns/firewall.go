package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/octavia-go/amphora-agent/internal/execx"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// FirewallRule is one allowed flow of PUT /1.0/interface/<ip>/rules.
type FirewallRule struct {
	Protocol string       // TCP, UDP, SCTP or VRRP (upper case after parsing)
	CIDR     netip.Prefix // zero value (invalid) = any source
	Port     int          // 1..65535
}

// Names of the nftables objects (NETWORK.md §12).
const (
	nftFamily   = "inet"
	nftTable    = "amphora_table"
	nftChain    = "amphora_chain"
	nftVIPChain = "amphora_vip_chain"
)

// ParseFirewallRules validates the body of PUT /1.0/interface/<ip>/rules:
// a JSON array of objects with exactly the keys protocol (TCP, UDP, SCTP,
// VRRP in any case), cidr (a CIDR or null) and port (integer 1-65535).
// Any problem is a generic *BadRequestError "Invalid rules information".
func ParseFirewallRules(body []byte) ([]FirewallRule, error) {
	bad := func(format string, args ...any) error {
		return genericBadRequest(MsgInvalidRulesInfo, format, args...)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, bad("body is not JSON: %w", err)
	}
	if dec.More() {
		return nil, bad("trailing data after the JSON value")
	}
	list, ok := v.([]any)
	if !ok {
		return nil, bad("body is not a JSON array")
	}
	out := make([]FirewallRule, 0, len(list))
	for i, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			return nil, bad("rule %d is not an object", i)
		}
		for k := range m {
			if k != "protocol" && k != "cidr" && k != "port" {
				return nil, bad("rule %d: unexpected key %q", i, k)
			}
		}
		var r FirewallRule
		p, ok := m["protocol"].(string)
		if !ok {
			return nil, bad("rule %d: protocol missing or not a string", i)
		}
		switch up := strings.ToUpper(p); up {
		case "TCP", "UDP", "SCTP", "VRRP":
			r.Protocol = up
		default:
			return nil, bad("rule %d: unknown protocol %q", i, p)
		}
		c, present := m["cidr"]
		if !present {
			return nil, bad("rule %d: cidr missing", i)
		}
		if c != nil {
			s, ok := c.(string)
			if !ok {
				return nil, bad("rule %d: cidr is not a string", i)
			}
			pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil || pfx.Addr().Zone() != "" {
				return nil, bad("rule %d: cidr %q is not a CIDR", i, s)
			}
			pfx = pfx.Masked()
			if pfx.Bits() != 0 { // 0.0.0.0/0 and ::/0 mean any source
				r.CIDR = pfx
			}
		}
		n, ok := m["port"].(json.Number)
		if !ok {
			return nil, bad("rule %d: port missing or not a number", i)
		}
		port, err := n.Int64()
		if err != nil {
			f, ferr := n.Float64()
			if ferr != nil || f != math.Trunc(f) || f < 1 || f > 65535 {
				return nil, bad("rule %d: port %s is not an integer in 1-65535", i, n)
			}
			port = int64(f)
		}
		if port < 1 || port > 65535 {
			return nil, bad("rule %d: port %d is not in 1-65535", i, port)
		}
		r.Port = int(port)
		out = append(out, r)
	}
	return out, nil
}

// RenderFirewallRules renders the complete nftables file for the VIP
// interface ifname and the allowed flows: loading it replaces the
// previous amphora table atomically (create, delete, define). An empty
// list gives the "drop everything on the VIP interface" ruleset.
func RenderFirewallRules(ifname string, rules []FirewallRule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {}\n", nftFamily, nftTable)
	fmt.Fprintf(&b, "delete table %s %s\n", nftFamily, nftTable)
	fmt.Fprintf(&b, "table %s %s {\n", nftFamily, nftTable)
	fmt.Fprintf(&b, "  chain %s {\n", nftChain)
	b.WriteString("    type filter hook input priority filter; policy drop;\n")
	b.WriteString("      ct state vmap { established : accept, related : accept, invalid : drop }\n")
	b.WriteString("      iif lo accept\n")
	b.WriteString("      ip saddr 127.0.0.0/8 drop\n")
	b.WriteString("      ip6 saddr ::1 drop\n")
	b.WriteString("      icmp type destination-unreachable accept\n")
	b.WriteString("      icmpv6 type { nd-neighbor-solicit, nd-router-advert, nd-neighbor-advert, packet-too-big, destination-unreachable } accept\n")
	b.WriteString("      udp sport 67 udp dport 68 accept\n")
	b.WriteString("      udp sport 547 udp dport 546 accept\n")
	// Member (non-SR-IOV) interfaces carry the masquerade script's TCP
	// notrack rules, so replies to haproxy's connections to members arrive
	// untracked and the vmap above cannot accept them: without this line
	// every member behind a non-SR-IOV member network is unreachable once
	// an allow-list is loaded. Opening segments (SYN without ACK) are
	// still dropped, so only replies pass, as conntrack would decide.
	fmt.Fprintf(&b, "      iifname != %q ct state untracked tcp flags & (syn | ack) != syn accept\n", ifname)
	fmt.Fprintf(&b, "      iifname %q goto %s\n", ifname, nftVIPChain)
	b.WriteString("  }\n")
	fmt.Fprintf(&b, "  chain %s {\n", nftVIPChain)
	for _, r := range rules {
		fmt.Fprintf(&b, "      %s\n", ruleLine(r))
	}
	b.WriteString("  }\n")
	b.WriteString("}\n")
	return b.String()
}

func ruleLine(r FirewallRule) string {
	prefix := ""
	if r.CIDR.IsValid() {
		if r.CIDR.Addr().Is4() {
			prefix = "ip saddr " + r.CIDR.String() + " "
		} else {
			prefix = "ip6 saddr " + r.CIDR.String() + " "
		}
	}
	switch r.Protocol {
	case "VRRP":
		// meta l4proto works for both families (IPv6 VRRP peers too).
		return prefix + "meta l4proto 112 accept"
	default:
		return fmt.Sprintf("%s%s dport %d accept", prefix, strings.ToLower(r.Protocol), r.Port)
	}
}

// ApplyFirewallRules installs the allowed flows for the VIP interface
// ifname: the full ruleset is rendered in memory, written next to the
// rules file, loaded inside the namespace with `nft -f` (one atomic
// transaction) and only then renamed over the rules file. When nft
// refuses it, the previous ruleset stays loaded and the previous file
// stays in place.
func (m *Manager) ApplyFirewallRules(ctx context.Context, ifname string, rules []FirewallRule) error {
	if err := validIfName(ifname); err != nil {
		return err
	}
	defer m.lock()()
	ns, err := OpenNamespace(m.cfg.Namespace)
	if err != nil {
		return err
	}
	defer ns.Close()
	return m.installRules(ctx, ns, RenderFirewallRules(ifname, rules))
}

// SetInterfaceRules is the whole of PUT /1.0/interface/<ip>/rules in the
// reference's order: resolve the interface holding ip (a
// *BadRequestError "Invalid IP address" or ErrAddressNotFound), validate
// the body (*BadRequestError "Invalid rules information"), then
// ApplyFirewallRules (any other error: 500).
func (m *Manager) SetInterfaceRules(ctx context.Context, ip string, body []byte) error {
	ifname, err := m.InterfaceForIP(ctx, ip)
	if err != nil {
		return err
	}
	rules, err := ParseFirewallRules(body)
	if err != nil {
		return err
	}
	return m.ApplyFirewallRules(ctx, ifname, rules)
}

// installRules writes text as a candidate file, loads it in the namespace
// and replaces the rules file with it.
func (m *Manager) installRules(ctx context.Context, ns *Namespace, text string) error {
	path := m.cfg.RulesFile
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	candidate := path + ".new"
	if err := fsutil.WriteFile(candidate, []byte(text), 0o600); err != nil {
		return err
	}
	if err := m.loadRulesFile(ctx, ns, candidate); err != nil {
		_ = fsutil.Remove(candidate)
		return err
	}
	if err := fsutil.Rename(candidate, path); err != nil {
		return fmt.Errorf("install %s: %w", path, err)
	}
	return nil
}

func (m *Manager) loadRulesFile(ctx context.Context, ns *Namespace, path string) error {
	return ns.Do(func() error {
		_, err := execx.Run(ctx, m.cfg.NFTPath, "-f", path)
		return err
	})
}

// ensureSRIOVRules is the SR-IOV part of bringing a VIP interface up: the
// existing rules file is (re)loaded; without one, the empty allow-list
// (everything but replies, ICMP errors, neighbour discovery and DHCP is
// dropped on the VIP interface) is installed until the controller sends
// the rules.
func (m *Manager) ensureSRIOVRules(ctx context.Context, ns *Namespace, f *InterfaceFile) error {
	if _, err := os.Stat(m.cfg.RulesFile); err == nil {
		if err := m.loadRulesFile(ctx, ns, m.cfg.RulesFile); err != nil {
			return fmt.Errorf("load %s: %w", m.cfg.RulesFile, err)
		}
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ifname := f.Name
	if f.IfType != IfTypeVIP {
		ifname = primaryInterface
	}
	return m.installRules(ctx, ns, RenderFirewallRules(ifname, nil))
}
