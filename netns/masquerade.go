package netns

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The LVS masquerade / TCP notrack rules of the reference's
// lvs-masquerade.sh (NETWORK.md §9), kept idempotently: every rule carries
// the interface name as its comment, "add" replaces that interface's
// rules instead of appending more, "delete" removes only that interface's
// rules (and chains left empty).

// masqCommand is a parsed "lvs-masquerade.sh add|delete ipv4|ipv6 <if> [sriov]".
type masqCommand struct {
	add    bool
	ipv6   bool
	iface  string
	sriov  bool
	family nftables.TableFamily
}

var masqueradeNames = map[string]bool{
	"lvs-masquerade.sh":            true,
	"udp-masquerade.sh":            true,
	"octavia-agent-lvs-masquerade": true, // 11.0.0 files
}

// parseMasqCommand recognises the masquerade script commands of the
// interface files. ok is false for any other command.
func parseMasqCommand(cmd string) (mc masqCommand, ok bool, err error) {
	f := strings.Fields(cmd)
	if len(f) == 0 || !masqueradeNames[filepath.Base(f[0])] {
		return mc, false, nil
	}
	if len(f) < 4 || len(f) > 5 {
		return mc, true, fmt.Errorf("malformed masquerade command %q", cmd)
	}
	switch f[1] {
	case "add":
		mc.add = true
	case "delete":
	default:
		return mc, true, fmt.Errorf("malformed masquerade command %q", cmd)
	}
	switch f[2] {
	case "ipv4":
		mc.family = nftables.TableFamilyIPv4
	case "ipv6":
		mc.ipv6 = true
		mc.family = nftables.TableFamilyIPv6
	default:
		return mc, true, fmt.Errorf("malformed masquerade command %q", cmd)
	}
	mc.iface = f[3]
	if err := validIfName(mc.iface); err != nil {
		return mc, true, err
	}
	if len(f) == 5 {
		if f[4] != "sriov" {
			return mc, true, fmt.Errorf("malformed masquerade command %q", cmd)
		}
		mc.sriov = true
	}
	return mc, true, nil
}

type masqChain struct {
	name     string
	typ      nftables.ChainType
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
	notrack  bool  // prerouting/output notrack chains (skipped for SR-IOV)
	proto    uint8 // masquerade chains: udp or sctp
	inbound  bool  // match iifname instead of oifname
}

func masqTableName(ipv6 bool) string {
	if ipv6 {
		return "octavia-ipv6"
	}
	return "octavia-ipv4"
}

func masqChains(ipv6 bool) []masqChain {
	p := "ip"
	if ipv6 {
		p = "ip6"
	}
	raw := nftables.ChainPriorityRef(-300)
	return []masqChain{
		{name: p + "-udp-masq", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, priority: nftables.ChainPriorityNATSource, proto: unix.IPPROTO_UDP},
		{name: p + "-sctp-masq", typ: nftables.ChainTypeNAT, hook: nftables.ChainHookPostrouting, priority: nftables.ChainPriorityNATSource, proto: unix.IPPROTO_SCTP},
		{name: "prerouting", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookPrerouting, priority: raw, notrack: true, inbound: true},
		{name: "output", typ: nftables.ChainTypeFilter, hook: nftables.ChainHookOutput, priority: raw, notrack: true},
	}
}

// ifnameBytes is an interface name as nftables compares it (IFNAMSIZ,
// NUL padded).
func ifnameBytes(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func (c masqChain) exprs(iface string) []expr.Any {
	key := expr.MetaKeyOIFNAME
	if c.inbound {
		key = expr.MetaKeyIIFNAME
	}
	proto := c.proto
	if c.notrack {
		proto = unix.IPPROTO_TCP
	}
	e := []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(iface)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if c.notrack {
		return append(e, &expr.Notrack{})
	}
	return append(e, &expr.Masq{})
}

func ruleTag(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// applyMasquerade converges the masquerade/notrack rules of one interface
// and family in the namespace, in one atomic nftables batch.
func applyMasquerade(ns *Namespace, mc masqCommand) error {
	c, err := nftables.New(nftables.WithNetNSFd(ns.Fd()))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tbl := &nftables.Table{Family: mc.family, Name: masqTableName(mc.ipv6)}
	tables, err := c.ListTablesOfFamily(mc.family)
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	tableExists := false
	for _, t := range tables {
		if t.Name == tbl.Name {
			tableExists = true
		}
	}
	if !tableExists && !mc.add {
		return nil
	}
	existing := map[string]*nftables.Chain{}
	if tableExists {
		chains, err := c.ListChainsOfTableFamily(mc.family)
		if err != nil {
			return fmt.Errorf("nftables: list chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table != nil && ch.Table.Name == tbl.Name {
				existing[ch.Name] = ch
			}
		}
	}
	if mc.add {
		c.AddTable(tbl)
	}
	remaining := len(existing)
	for _, spec := range masqChains(mc.ipv6) {
		want := mc.add && !(spec.notrack && mc.sriov)
		ch, present := existing[spec.name]
		others := 0
		if present {
			rules, err := c.GetRules(tbl, ch)
			if err != nil {
				return fmt.Errorf("nftables: list rules of %s: %w", spec.name, err)
			}
			for _, r := range rules {
				if ruleTag(r) == mc.iface {
					if err := c.DelRule(r); err != nil {
						return fmt.Errorf("nftables: delete rule: %w", err)
					}
				} else {
					others++
				}
			}
		}
		switch {
		case want:
			if !present {
				ch = c.AddChain(&nftables.Chain{Name: spec.name, Table: tbl, Type: spec.typ, Hooknum: spec.hook, Priority: spec.priority})
				remaining++
			}
			c.AddRule(&nftables.Rule{
				Table: tbl, Chain: ch, Exprs: spec.exprs(mc.iface),
				UserData: userdata.AppendString(nil, userdata.TypeComment, mc.iface),
			})
		case present && others == 0:
			c.DelChain(ch)
			remaining--
		}
	}
	if !mc.add && remaining == 0 {
		c.DelTable(tbl)
	}
	if err := c.Flush(); err != nil {
		action := "delete"
		if mc.add {
			action = "add"
		}
		return fmt.Errorf("nftables: %s masquerade rules for %s: %w", action, mc.iface, err)
	}
	return nil
}
