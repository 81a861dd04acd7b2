package testutil

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Readers of a namespace's network state, through a netlink handle bound
// to it, as sorted strings tests compare with cmp.Diff.

// LinkOf returns the named link, failing the test when it is absent.
func LinkOf(t testing.TB, h *netlink.Handle, name string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	return l
}

// LinkAddrs lists a link's addresses but IPv6 link-local ones, as
// "addr/len".
func LinkAddrs(t testing.TB, h *netlink.Handle, name string) []string {
	t.Helper()
	addrs, err := h.AddrList(LinkOf(t, h, name), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IPNet.String())
		}
	}
	sort.Strings(out)
	return out
}

// StaticRoutes lists a link's static routes of every table as
// "dst [via gw] [src s] table n".
func StaticRoutes(t testing.TB, h *netlink.Handle, name string) []string {
	t.Helper()
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{LinkIndex: LinkOf(t, h, name).Attrs().Index, Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		if r.Protocol != unix.RTPROT_STATIC {
			continue
		}
		s := "0.0.0.0/0"
		if r.Family == unix.AF_INET6 {
			s = "::/0"
		}
		if r.Dst != nil {
			s = r.Dst.String()
		}
		if r.Gw != nil {
			s += " via " + r.Gw.String()
		}
		if r.Src != nil {
			s += " src " + r.Src.String()
		}
		out = append(out, fmt.Sprintf("%s table %d", s, r.Table))
	}
	sort.Strings(out)
	return out
}

// SourceRules lists the policy rules with a source as
// "from s lookup t prio p proto x".
func SourceRules(t testing.TB, h *netlink.Handle) []string {
	t.Helper()
	rules, err := h.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rules {
		if r.Src != nil {
			out = append(out, fmt.Sprintf("from %s lookup %d prio %d proto %d", r.Src, r.Table, r.Priority, r.Protocol))
		}
	}
	sort.Strings(out)
	return out
}

// IPState is what `ip addr`, `ip route` (every table) and `ip rule` show
// inside the named namespace, both families, in a form two snapshots can
// be compared in (address lifetimes left out). It first waits, up to 10
// s, for IPv6 duplicate address detection to finish: an address still
// tentative turns into a settled one (and gains its local-table routes)
// on its own, which is no change anybody made.
func IPState(t testing.TB, ns string) string {
	t.Helper()
	settleDAD(ns, 10*time.Second)
	var b strings.Builder
	for _, argv := range [][]string{
		{"-o", "addr", "show"},
		{"-4", "route", "show", "table", "all"},
		{"-6", "route", "show", "table", "all"},
		{"-4", "rule", "show"},
		{"-6", "rule", "show"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "ip", append([]string{"-n", ns}, argv...)...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("ip %v in %s: %v\n%s", argv, ns, err, out)
		}
		b.WriteString("# ip " + strings.Join(argv, " ") + "\n")
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "valid_lft") && strings.HasPrefix(strings.TrimSpace(l), `\`) {
				continue
			}
			if i := strings.Index(l, "valid_lft"); i >= 0 {
				if j := strings.LastIndex(l[:i], `\`); j >= 0 {
					l = strings.TrimRight(l[:j], " ")
				}
			}
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// settleDAD waits until no address in ns is tentative, or limit passes
// (an interface without carrier keeps its addresses tentative for good;
// the snapshot then shows them as they are).
func settleDAD(ns string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-o", "addr", "show", "tentative").Output()
		cancel()
		if err != nil || len(strings.TrimSpace(string(out))) == 0 || time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
