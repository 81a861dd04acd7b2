package keepalived

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"
)

// ipvsKey identifies a virtual service: protocol (UDP, SCTP, TCP) and
// address.
type ipvsKey struct {
	Proto string
	Addr  netip.AddrPort
}

// ipvsService is one virtual service of an IPVS table with its columns
// (named by the table's header lines) and its real servers.
type ipvsService struct {
	Values  map[string]string
	Servers []ipvsServer
}

type ipvsServer struct {
	Addr   netip.AddrPort
	Values map[string]string
}

// ipvsTable is a parsed IPVS table, by virtual service.
type ipvsTable map[ipvsKey]*ipvsService

// parseIPVSAdm parses the output of `ipvsadm -Ln` or
// `ipvsadm -Ln --stats --exact`:
//
//	Prot LocalAddress:Port Scheduler Flags
//	  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
//	UDP  198.51.100.10:53 wrr persistent 360
//	  -> 10.0.0.5:5353                Masq    1      0          0
//
// The header lines name the columns after the address of service and
// real-server rows; ipvsadm prints IPv6 addresses as [compressed]:port.
func parseIPVSAdm(out []byte) ipvsTable {
	return parseIPVSTable(out, parseDottedAddr)
}

// parseKernelTable parses /proc/net/ip_vs, where addresses are
// hexadecimal: 0A000025:1E61 (IPv4) or [2001:0db8:...:0010]:0035 (IPv6,
// full form).
func parseKernelTable(out []byte) ipvsTable {
	return parseIPVSTable(out, parseHexAddr)
}

func parseIPVSTable(out []byte, parseAddr func(string) (netip.AddrPort, bool)) ipvsTable {
	t := ipvsTable{}
	var vsCols, rsCols []string
	var cur *ipvsService
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "Prot" && len(f) > 1:
			vsCols = f[2:]
		case f[0] == "->" && len(f) > 1 && f[1] == "RemoteAddress:Port":
			rsCols = f[2:]
		case f[0] == "->" && len(f) > 1:
			if cur == nil {
				continue
			}
			ap, ok := parseAddr(f[1])
			if !ok {
				continue
			}
			cur.Servers = append(cur.Servers, ipvsServer{Addr: ap, Values: columns(rsCols, f[2:])})
		case f[0] == "UDP" || f[0] == "SCTP" || f[0] == "TCP":
			cur = nil
			if len(f) < 2 {
				continue
			}
			ap, ok := parseAddr(f[1])
			if !ok {
				continue
			}
			cur = &ipvsService{Values: columns(vsCols, f[2:])}
			t[ipvsKey{Proto: f[0], Addr: ap}] = cur
		default:
			cur = nil // FWM services, version line
		}
	}
	return t
}

func columns(names, values []string) map[string]string {
	m := make(map[string]string, len(names))
	for i, n := range names {
		if i < len(values) {
			m[n] = values[i]
		}
	}
	return m
}

// parseDottedAddr parses 198.51.100.10:53 or [2001:db8::10]:53.
func parseDottedAddr(s string) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// parseHexAddr parses 0A000025:1E61 or [2001:0db8:...:0010]:0035.
func parseHexAddr(s string) (netip.AddrPort, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(s[i+1:], 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	host := s[:i]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(a, uint16(port)), true
	}
	if len(host) != 8 {
		return netip.AddrPort{}, false
	}
	v, err := strconv.ParseUint(host, 16, 32)
	if err != nil {
		return netip.AddrPort{}, false
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	return netip.AddrPortFrom(netip.AddrFrom4(b), uint16(port)), true
}

// int64Value reads a numeric column; a missing or non-numeric one is 0.
func (s *ipvsService) int64Value(name string) int64 {
	n, _ := strconv.ParseInt(s.Values[name], 10, 64)
	return n
}

// lookup returns the services of the listener's VIPs: of its protocol
// when the configuration names one, else UDP or SCTP.
func (t ipvsTable) lookup(proto string, vips []netip.AddrPort) []*ipvsService {
	var out []*ipvsService
	for _, vip := range vips {
		for _, p := range []string{"UDP", "SCTP"} {
			if proto != "" && p != proto {
				continue
			}
			if s, ok := t[ipvsKey{Proto: p, Addr: vip}]; ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// Member and pool statuses of the heartbeat (HEARTBEAT.md §8.3).
const (
	StatusUp         = "UP"
	StatusDown       = "DOWN"
	StatusDrain      = "DRAIN"
	StatusMaint      = "MAINT"
	StatusNoCheck    = "no check"
	StatusRestarting = "RESTARTING"
)

// LVSPool is the heartbeat entry of an LVS listener's pool.
type LVSPool struct {
	Status  string
	Members map[string]string // member id -> status
}

// poolStatus computes the pool entry from the kernel table the way the
// reference does, for every VIP of the listener (GAPS E5: the reference
// looked at the first matching virtual service only). restarting says the
// configuration changed after keepalived's checker started: absent
// members are then RESTARTING rather than DOWN.
func poolStatus(c *LVSConfig, kernel ipvsTable, restarting bool) LVSPool {
	p := LVSPool{Status: StatusUp, Members: map[string]string{}}
	if len(c.Members) == 0 {
		return p
	}
	healthy := StatusNoCheck
	if c.Monitor {
		healthy = StatusUp
	}
	absent := StatusDown
	if restarting {
		absent = StatusRestarting
	}
	weights := map[netip.AddrPort]string{}
	for _, vs := range kernel.lookup(c.Protocol, c.VIPs) {
		for _, rs := range vs.Servers {
			weights[rs.Addr] = rs.Values["Weight"]
		}
	}
	if len(weights) == 0 {
		// keepalived removed every real server (or has not added them yet)
		if c.Monitor {
			p.Status = StatusDown
		}
		for _, m := range c.Members {
			switch {
			case m.Disabled:
				p.Members[m.ID] = StatusMaint
			case c.Monitor:
				p.Members[m.ID] = absent
			default:
				p.Members[m.ID] = StatusNoCheck
			}
		}
		return p
	}
	for _, m := range c.Members {
		w, present := weights[m.Addr]
		switch {
		case m.Disabled:
			p.Members[m.ID] = StatusMaint
		case !m.Addr.IsValid() || !present:
			p.Members[m.ID] = absent
		case w == "0":
			p.Members[m.ID] = StatusDrain
		default:
			p.Members[m.ID] = healthy
		}
	}
	return p
}

// LVSListenerStats are the absolute IPVS counters of one listener, summed
// over its VIPs: InBytes, OutBytes and Conns of its virtual services
// (`ipvsadm -Ln --stats --exact`) and the ActiveConn of their real
// servers (`ipvsadm -Ln`).
type LVSListenerStats struct {
	Status      string // always OPEN, as the reference
	InBytes     int64
	OutBytes    int64
	Conns       int64
	ActiveConns int64
}

// listenerStats sums the listener's counters. A listener whose virtual
// services are missing from either table gets zeros (keepalived has not
// programmed them, or the pool has no enabled member), as the reference.
func listenerStats(c *LVSConfig, plain, stats ipvsTable) LVSListenerStats {
	s := LVSListenerStats{Status: "OPEN"}
	cur, tot := plain.lookup(c.Protocol, c.VIPs), stats.lookup(c.Protocol, c.VIPs)
	if len(cur) == 0 || len(tot) == 0 {
		return s
	}
	for _, vs := range cur {
		for _, rs := range vs.Servers {
			n, _ := strconv.ParseInt(rs.Values["ActiveConn"], 10, 64)
			s.ActiveConns += n
		}
	}
	for _, vs := range tot {
		s.Conns += vs.int64Value("Conns")
		s.InBytes += vs.int64Value("InBytes")
		s.OutBytes += vs.int64Value("OutBytes")
	}
	return s
}
