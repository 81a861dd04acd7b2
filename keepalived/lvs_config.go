package keepalived

import (
	"bufio"
	"bytes"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// LVSConfig is what the agent reads from a keepalived LVS configuration
// the controller rendered (octavia/common/jinja/lvs): the listener's VIPs,
// its pool and members in the order the comments and real_server lines
// give them. The controller writes one "# Configuration for <Type> <id>"
// comment per object (Pool and HealthMonitor once per address family),
// and "# <Type> <id> is disabled" for disabled ones.
type LVSConfig struct {
	// Namespace is the net_namespace line (keepalived is started with
	// --namespace=<agent namespace>, which overrides it).
	Namespace string
	// ListenerID is the id of the "# Configuration for Listener" comment.
	ListenerID string
	// Disabled: "# Listener <id> is disabled"; such a listener is never
	// reported in heartbeats.
	Disabled bool
	// Protocol is the "protocol" of the virtual servers, UDP or SCTP; ""
	// when there is no virtual server (no pool, listener or load balancer
	// disabled).
	Protocol string
	// VIPs are every address line of every virtual_server_group block
	// (all VIPs of every family, GAPS E5), in file order.
	VIPs []netip.AddrPort
	// VirtualServer: the text mentions virtual_server (the reference's
	// ACTIVE/OFFLINE test).
	VirtualServer bool
	// PoolID is the first "# Configuration for Pool" id, "" when the
	// listener has no enabled pool.
	PoolID string
	// Monitor: a health check (MISC_CHECK, HTTP_GET, TCP_CHECK) is
	// configured for the members.
	Monitor bool
	// Members are the enabled members (their real_server address, by
	// order) followed by the disabled ones.
	Members []LVSMember
}

// LVSMember is one member of the listener's pool.
type LVSMember struct {
	ID string
	// Addr is its real_server address; invalid for a disabled member (and
	// for an enabled one whose real_server line is missing).
	Addr     netip.AddrPort
	Disabled bool
}

var (
	lvsCommentRE = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`#\sConfiguration\sfor\s(\w+)\s(\w{8}-\w{4}-\w{4}-\w{4}-\w{12})`)
	})
	lvsDisabledRE = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`#\s(\w+)\s(\w{8}-\w{4}-\w{4}-\w{4}-\w{12}) is disabled`)
	})
	lvsCheckerRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`MISC_CHECK|HTTP_GET|TCP_CHECK`) })
)

// ParseLVSConfig reads an LVS configuration. It never fails: what it
// cannot recognise is left out (an unparsable address line is skipped).
func ParseLVSConfig(data []byte) *LVSConfig {
	c := &LVSConfig{
		VirtualServer: bytes.Contains(data, []byte("virtual_server")),
		Monitor:       lvsCheckerRE().Match(data),
	}
	var (
		enabled  []string
		disabled []string
		servers  []netip.AddrPort
		inGroup  bool
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		if inGroup {
			if strings.HasPrefix(line, "}") {
				inGroup = false
			} else if ap, ok := addrPort(strings.Fields(line)); ok {
				c.VIPs = append(c.VIPs, ap)
			}
			continue
		}
		if m := lvsCommentRE().FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "Listener":
				if c.ListenerID == "" {
					c.ListenerID = m[2]
				}
			case "Pool":
				if c.PoolID == "" {
					c.PoolID = m[2]
				}
			case "Member":
				enabled = append(enabled, m[2])
			}
			continue
		}
		if m := lvsDisabledRE().FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "Listener":
				c.Disabled = true
			case "Member":
				disabled = append(disabled, m[2])
			}
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "net_namespace":
			if len(f) > 1 && c.Namespace == "" {
				c.Namespace = f[1]
			}
		case "virtual_server_group":
			inGroup = strings.HasSuffix(line, "{")
		case "protocol":
			if len(f) > 1 && c.Protocol == "" {
				c.Protocol = strings.ToUpper(f[1])
			}
		case "real_server":
			if ap, ok := addrPort(f[1:]); ok {
				servers = append(servers, ap)
			} else {
				servers = append(servers, netip.AddrPort{})
			}
		}
	}
	for i, id := range enabled {
		m := LVSMember{ID: id}
		if i < len(servers) {
			m.Addr = servers[i]
		}
		c.Members = append(c.Members, m)
	}
	for _, id := range disabled {
		c.Members = append(c.Members, LVSMember{ID: id, Disabled: true})
	}
	return c
}

// VIPAddresses returns the distinct addresses of VIPs, in file order.
func (c *LVSConfig) VIPAddresses() []string {
	var out []string
	seen := map[netip.Addr]bool{}
	for _, v := range c.VIPs {
		if a := v.Addr(); !seen[a] {
			seen[a] = true
			out = append(out, a.String())
		}
	}
	return out
}

// addrPort parses "<ip> <port> ..." fields.
func addrPort(f []string) (netip.AddrPort, bool) {
	if len(f) < 2 {
		return netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return netip.AddrPort{}, false
	}
	p, err := strconv.ParseUint(f[1], 10, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap().WithZone(""), uint16(p)), true
}
