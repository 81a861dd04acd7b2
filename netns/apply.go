package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/internal/execx"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol numbers of policy rules that belong to others: the kernel's
// defaults and keepalived's virtual_rules.
const (
	rtprotKernel     = 2
	rtprotKeepalived = 18
)

// rulePriority is the priority of the "from VIP lookup 1" rules (what the
// reference ends up with through pyroute2's default).
const rulePriority = 32000

// warnings collects non-fatal problems of one operation (reported to the
// caller instead of only logged, GAPS D9).
type warnings []string

func (w *warnings) add(format string, args ...any) {
	*w = append(*w, fmt.Sprintf(format, args...))
}

// applyMode says what applying an interface file may remove.
type applyMode int

const (
	// converge makes the interface match its file exactly: permanent
	// addresses, static routes of the link and source rules the file
	// does not list are removed. Plugs, an explicit `interface up
	// <name>`, the restore of a namespace that was just created (boot)
	// and the restore of an interface whose plug a crash interrupted
	// converge.
	converge applyMode = iota
	// restore only adds what the file lists and the kernel lacks; it
	// removes nothing. The restore at an agent start in a running
	// namespace uses it: what others added (an operator, keepalived, a
	// debugging session) stays, and an interface that already matches
	// its file is left alone.
	restore
)

func (a applyMode) String() string {
	if a == restore {
		return "restore"
	}
	return "converge"
}

// upInterface applies an interface file to its link inside the namespace
// (what `amphora-interface up <name>` does). Fatal problems are returned
// as the error; route failures and the like are appended to warn.
func (m *Manager) upInterface(ctx context.Context, ns *Namespace, f *InterfaceFile, mode applyMode, warn *warnings) error {
	h := ns.Handle()
	if f.IsSRIOV {
		if err := m.ensureSRIOVRules(ctx, ns, f); err != nil {
			return err
		}
	}
	link, err := h.LinkByName(f.Name)
	if err != nil {
		return fmt.Errorf("link %s not found in namespace %s: %w", f.Name, ns.Name(), err)
	}
	attrs := link.Attrs()
	wasDown := attrs.Flags&net.FlagUp == 0
	if f.MTU > 0 && attrs.MTU != f.MTU {
		if err := h.LinkSetMTU(link, f.MTU); err != nil {
			return fmt.Errorf("set mtu %d on %s: %w", f.MTU, f.Name, err)
		}
	}
	if wasDown {
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", f.Name, err)
		}
		for _, a := range f.Addresses {
			if a.DHCP {
				m.dhclient(ctx, ns, f.Name, false, warn)
			}
			if a.IPv6Auto {
				m.ipv6Auto(ns, f.Name, true, warn)
			}
		}
	}
	if err := m.addressesUp(ctx, ns, link, f, mode, warn); err != nil {
		return err
	}
	m.routesUp(ctx, ns, link, f, mode, warn)
	if f.IfType == IfTypeVIP {
		if err := m.rulesUp(ctx, ns, f, mode); err != nil {
			return err
		}
	}
	for _, s := range f.Scripts.Up {
		if err := m.runScript(ctx, ns, s.Command); err != nil {
			return err
		}
	}
	return nil
}

// downInterface undoes an interface file (`amphora-interface down`).
// Only the link lookup is fatal; everything else is best effort.
func (m *Manager) downInterface(ctx context.Context, ns *Namespace, f *InterfaceFile, warn *warnings) error {
	h := ns.Handle()
	for _, a := range f.Addresses {
		if a.DHCP {
			m.dhclient(ctx, ns, f.Name, true, warn)
		}
		if a.IPv6Auto {
			m.ipv6Auto(ns, f.Name, false, warn)
		}
	}
	link, err := h.LinkByName(f.Name)
	if err != nil {
		return fmt.Errorf("link %s not found in namespace %s: %w", f.Name, ns.Name(), err)
	}
	wasUp := link.Attrs().Flags&net.FlagUp != 0
	if !wasUp {
		return nil
	}
	idx := link.Attrs().Index
	if f.IfType == IfTypeVIP {
		for _, r := range f.Rules {
			nr, err := fileRule(r)
			if err == nil {
				_ = h.RuleDel(nr)
			}
		}
	}
	for _, r := range f.Routes {
		nr, err := fileRoute(r, idx)
		if err == nil {
			_ = h.RouteDel(nr)
		}
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err == nil {
		for i := range addrs {
			_ = h.AddrDel(link, &addrs[i])
		}
	}
	if err := h.LinkSetDown(link); err != nil {
		warn.add("set %s down: %v", f.Name, err)
	}
	for _, s := range f.Scripts.Down {
		if err := m.runScript(ctx, ns, s.Command); err != nil {
			warn.add("%s: %v", f.Name, err)
			m.log.Warn("down script failed", "ns", ns.Name(), "interface", f.Name, "err", err)
		}
	}
	return nil
}

type addrKey struct {
	addr string
	plen int
}

func (m *Manager) addressesUp(ctx context.Context, ns *Namespace, link netlink.Link, f *InterfaceFile, mode applyMode, warn *warnings) error {
	h := ns.Handle()
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", f.Name, err)
	}
	current := map[addrKey]netlink.Addr{}
	for _, a := range addrs {
		if a.Flags&unix.IFA_F_PERMANENT == 0 {
			continue // DHCP / SLAAC addresses are not ours
		}
		ip := addrFromIP(a.IP)
		if ip.Is6() && (ip.IsLinkLocalUnicast() || ip.IsLoopback()) {
			continue // kernel-made link-local and ::1 stay
		}
		ones, _ := a.Mask.Size()
		current[addrKey{ip.String(), ones}] = a
	}
	var want6 []netip.Addr
	for _, a := range f.Addresses {
		if a.Address == "" || a.DHCP || a.IPv6Auto {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			return fmt.Errorf("%s: bad address %q in interface file", f.Name, a.Address)
		}
		ip = ip.Unmap()
		k := addrKey{ip.String(), a.Prefixlen}
		if _, ok := current[k]; ok {
			delete(current, k)
			if ip.Is6() {
				want6 = append(want6, ip)
			}
			continue
		}
		if !a.Owned() {
			continue // keepalived's
		}
		na := &netlink.Addr{IPNet: ipNetOf(netip.PrefixFrom(ip, a.Prefixlen))}
		if ip.Is6() {
			na.Flags = unix.IFA_F_NODAD
			want6 = append(want6, ip)
		}
		if err := h.AddrAdd(link, na); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s/%d to %s: %w", a.Address, a.Prefixlen, f.Name, err)
		}
	}
	m.waitTentative(ctx, ns, link, want6, warn)
	if mode == restore {
		return nil
	}
	for _, a := range current {
		if err := h.AddrDel(link, &a); err != nil {
			m.log.Debug("delete address failed", "ns", ns.Name(), "interface", f.Name, "address", a.IPNet.String(), "err", err)
		}
	}
	return nil
}

// waitTentative waits (bounded) until none of the given IPv6 addresses is
// still doing duplicate address detection. Addresses we add carry
// IFA_F_NODAD, so this only waits for addresses added by others.
func (m *Manager) waitTentative(ctx context.Context, ns *Namespace, link netlink.Link, want []netip.Addr, warn *warnings) {
	if len(want) == 0 {
		return
	}
	deadline := time.Now().Add(m.cfg.TentativeTimeout)
	for {
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return ns.Handle().AddrList(link, netlink.FAMILY_V6) })
		if err != nil {
			return
		}
		tentative := false
		for _, a := range addrs {
			ip := addrFromIP(a.IP)
			for _, w := range want {
				if ip != w {
					continue
				}
				if a.Flags&unix.IFA_F_DADFAILED != 0 {
					warn.add("%s: duplicate address detection failed for %s", link.Attrs().Name, ip)
				} else if a.Flags&unix.IFA_F_TENTATIVE != 0 {
					tentative = true
				}
			}
		}
		if !tentative {
			return
		}
		if time.Now().After(deadline) {
			warn.add("%s: IPv6 addresses still tentative after %s", link.Attrs().Name, m.cfg.TentativeTimeout)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type routeKey struct {
	dst, gw, src string
	table        int
}

func routeKeyOf(r netlink.Route) routeKey {
	dst := prefixFromIPNet(r.Dst)
	if r.Dst == nil {
		if r.Family == unix.AF_INET6 {
			dst = netip.MustParsePrefix("::/0")
		} else {
			dst = netip.MustParsePrefix("0.0.0.0/0")
		}
	}
	k := routeKey{dst: dst.Masked().String(), table: r.Table}
	if r.Gw != nil {
		k.gw = addrFromIP(r.Gw).String()
	}
	if r.Src != nil {
		k.src = addrFromIP(r.Src).String()
	}
	return k
}

func fileRouteKey(r Route) routeKey {
	t := r.Table
	if t == 0 {
		t = unix.RT_TABLE_MAIN
	}
	return routeKey{dst: normNet(r.Dst), gw: normAddr(r.Gateway), src: normAddr(r.Prefsrc), table: t}
}

// fileRoute converts a file route for netlink.
func fileRoute(r Route, linkIndex int) (*netlink.Route, error) {
	dst, err := parseNetwork(r.Dst, false)
	if err != nil {
		return nil, err
	}
	nr := &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       ipNetOf(dst.Masked()),
		Table:     r.Table,
		Protocol:  unix.RTPROT_STATIC,
	}
	if nr.Table == 0 {
		nr.Table = unix.RT_TABLE_MAIN
	}
	if r.Gateway != "" {
		gw, err := parseIP(r.Gateway)
		if err != nil {
			return nil, err
		}
		if gw.Is4() != dst.Addr().Is4() {
			return nil, fmt.Errorf("gateway %s does not match destination %s", r.Gateway, r.Dst)
		}
		nr.Gw = net.IP(gw.AsSlice())
	}
	if r.Prefsrc != "" {
		src, err := parseIP(r.Prefsrc)
		if err != nil {
			return nil, err
		}
		nr.Src = net.IP(src.AsSlice())
	}
	switch r.Scope {
	case "", "universe", "global":
		nr.Scope = netlink.SCOPE_UNIVERSE
	case "link":
		nr.Scope = netlink.SCOPE_LINK
	case "host":
		nr.Scope = netlink.SCOPE_HOST
	default:
		return nil, fmt.Errorf("unknown route scope %q", r.Scope)
	}
	for _, fl := range r.Flags {
		if fl == "onlink" {
			nr.Flags |= int(netlink.FLAG_ONLINK)
		}
	}
	return nr, nil
}

func (m *Manager) routesUp(ctx context.Context, ns *Namespace, link netlink.Link, f *InterfaceFile, mode applyMode, warn *warnings) {
	h := ns.Handle()
	idx := link.Attrs().Index
	filter := &netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_UNSPEC}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		warn.add("%s: list routes: %v", f.Name, err)
		return
	}
	current := map[routeKey][]netlink.Route{}
	for _, r := range routes {
		if r.Protocol != unix.RTPROT_STATIC {
			continue
		}
		k := routeKeyOf(r)
		current[k] = append(current[k], r)
	}
	for _, r := range f.Routes {
		k := fileRouteKey(r)
		if l := current[k]; len(l) > 0 {
			if len(l) == 1 {
				delete(current, k)
			} else {
				current[k] = l[1:]
			}
			continue
		}
		nr, err := fileRoute(r, idx)
		if err != nil {
			warn.add("%s: route to %s: %v", f.Name, r.Dst, err)
			continue
		}
		if err := retryEINVAL(ctx, func() error { return h.RouteAdd(nr) }); err != nil && !errors.Is(err, unix.EEXIST) {
			warn.add("%s: add route %s: %v", f.Name, describeRoute(r), err)
			m.log.Warn("route not added", "ns", ns.Name(), "interface", f.Name, "route", describeRoute(r), "err", err)
		}
	}
	if mode == restore {
		return
	}
	for _, l := range current {
		for i := range l {
			if err := h.RouteDel(&l[i]); err != nil {
				m.log.Debug("delete route failed", "ns", ns.Name(), "interface", f.Name, "route", l[i].String(), "err", err)
			}
		}
	}
}

func describeRoute(r Route) string {
	s := r.Dst
	if r.Gateway != "" {
		s += " via " + r.Gateway
	}
	if r.Prefsrc != "" {
		s += " src " + r.Prefsrc
	}
	if r.Table != 0 {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}

// retryEINVAL retries an add the kernel refuses with EINVAL (a source
// address that is not usable yet), bounded.
func retryEINVAL(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < 10; i++ {
		if err = f(); !errors.Is(err, unix.EINVAL) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

type ruleKey struct {
	table  int
	src    string
	srcLen int
}

func fileRule(r Rule) (*netlink.Rule, error) {
	src, err := parseIP(r.Src)
	if err != nil {
		return nil, err
	}
	if r.SrcLen < 0 || r.SrcLen > src.BitLen() {
		return nil, fmt.Errorf("bad src_len %d", r.SrcLen)
	}
	nr := netlink.NewRule()
	nr.Family = unix.AF_INET
	if src.Is6() {
		nr.Family = unix.AF_INET6
	}
	nr.Src = ipNetOf(netip.PrefixFrom(src, r.SrcLen))
	nr.Table = r.Table
	if nr.Table == 0 {
		nr.Table = unix.RT_TABLE_MAIN
	}
	nr.Priority = rulePriority
	nr.Protocol = unix.RTPROT_STATIC
	return nr, nil
}

// rulesUp converges the "from VIP lookup <table>" policy rules of the
// namespace with those of a VIP file (restore: adds the missing ones
// only). Rules of the kernel and keepalived are left alone.
func (m *Manager) rulesUp(ctx context.Context, ns *Namespace, f *InterfaceFile, mode applyMode) error {
	h := ns.Handle()
	rules, err := retryDump(func() ([]netlink.Rule, error) { return h.RuleList(netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	current := map[ruleKey][]netlink.Rule{}
	for _, r := range rules {
		if r.Src == nil || r.Protocol == rtprotKernel || r.Protocol == rtprotKeepalived {
			continue
		}
		ones, _ := r.Src.Mask.Size()
		k := ruleKey{r.Table, addrFromIP(r.Src.IP).String(), ones}
		current[k] = append(current[k], r)
	}
	for _, r := range f.Rules {
		nr, err := fileRule(r)
		if err != nil {
			return fmt.Errorf("%s: rule from %s: %w", f.Name, r.Src, err)
		}
		k := ruleKey{nr.Table, normAddr(r.Src), r.SrcLen}
		if l := current[k]; len(l) > 0 {
			if len(l) == 1 {
				delete(current, k)
			} else {
				current[k] = l[1:]
			}
			continue
		}
		if err := retryEINVAL(ctx, func() error { return h.RuleAdd(nr) }); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add rule from %s/%d lookup %d: %w", r.Src, r.SrcLen, nr.Table, err)
		}
	}
	if mode == restore {
		return nil
	}
	for _, l := range current {
		for i := range l {
			if err := h.RuleDel(&l[i]); err != nil {
				m.log.Debug("delete rule failed", "ns", ns.Name(), "rule", l[i].String(), "err", err)
			}
		}
	}
	return nil
}

// runScript runs one scripts entry: the masquerade commands are applied
// with nftables directly (the script is not shipped), anything else is
// run inside the namespace, split on spaces, without a shell.
func (m *Manager) runScript(ctx context.Context, ns *Namespace, command string) error {
	mc, ok, err := parseMasqCommand(command)
	if err != nil {
		return err
	}
	if ok {
		return applyMasquerade(ns, mc)
	}
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return nil
	}
	return ns.Do(func() error {
		_, err := execx.Run(ctx, argv...)
		return err
	})
}

// dhclient starts (or releases) DHCPv4 on the interface inside the
// namespace, as the reference does, when dhclient is installed.
func (m *Manager) dhclient(ctx context.Context, ns *Namespace, ifname string, release bool, warn *warnings) {
	bin := m.cfg.DHClientPath
	if _, err := os.Stat(bin); err != nil {
		warn.add("%s: DHCP requested but %s is not available", ifname, bin)
		return
	}
	leases := fmt.Sprintf("/var/lib/dhclient/dhclient-%s.leases", ifname)
	argv := []string{bin}
	if release {
		argv = append(argv, "-r")
	} else {
		_ = os.MkdirAll(filepath.Dir(leases), 0o755)
	}
	argv = append(argv, "-lf", leases, "-pf", fmt.Sprintf("/run/dhclient-%s.pid", ifname), ifname)
	err := ns.Do(func() error {
		_, err := execx.Run(ctx, argv...)
		return err
	})
	if err != nil {
		warn.add("%s: %v", ifname, err)
	}
}

// ipv6Auto enables (accept_ra=2, autoconf=1) or disables SLAAC on the
// interface inside the namespace.
func (m *Manager) ipv6Auto(ns *Namespace, ifname string, enable bool, warn *warnings) {
	ra, auto := "0", "0"
	if enable {
		ra, auto = "2", "1"
	}
	err := ns.Do(func() error {
		base := filepath.Join("net/ipv6/conf", ifname)
		if _, err := os.Stat(filepath.Join("/proc/sys", base)); err != nil {
			return fmt.Errorf("SLAAC requested but IPv6 is not available on %s", ifname)
		}
		return errors.Join(writeSysctl(base+"/accept_ra", ra), writeSysctl(base+"/autoconf", auto))
	})
	if err != nil {
		warn.add("%s: %v", ifname, err)
	}
}
