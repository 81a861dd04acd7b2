package netns

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Address and network parsing with the reference's (Python ipaddress)
// semantics and error texts, which end up in 400 answers.

// parseIP parses an IPv4 or IPv6 address (no zone).
func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("'%s' does not appear to be an IPv4 or IPv6 address", s)
	}
	return a, nil
}

// parseNetwork parses a network like Python's ip_network: "addr/len",
// "addr/dotted-netmask" (IPv4) or a bare address (full-length prefix).
// strict refuses host bits.
func parseNetwork(s string, strict bool) (netip.Prefix, error) {
	bad := fmt.Errorf("'%s' does not appear to be an IPv4 or IPv6 network", s)
	addrPart, lenPart, hasLen := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addrPart)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, bad
	}
	bits := a.BitLen()
	if hasLen {
		if n, err := strconv.Atoi(lenPart); err == nil && lenPart != "" && lenPart[0] != '+' && lenPart[0] != '-' {
			if n > a.BitLen() {
				return netip.Prefix{}, fmt.Errorf("'%s' is not a valid netmask", lenPart)
			}
			bits = n
		} else if m, err := netip.ParseAddr(lenPart); err == nil && a.Is4() && m.Is4() {
			b := m.As4()
			ones, size := net.IPMask(b[:]).Size()
			if size == 0 {
				return netip.Prefix{}, fmt.Errorf("'%s' is not a valid netmask", lenPart)
			}
			bits = ones
		} else {
			return netip.Prefix{}, fmt.Errorf("'%s' is not a valid netmask", lenPart)
		}
	}
	p := netip.PrefixFrom(a, bits)
	if strict && p.Masked().Addr() != a {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set", s)
	}
	return p, nil
}

// exploded formats an address like Python's ip_address(...).exploded:
// IPv6 as eight groups of four hex digits.
func exploded(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	b := a.As16()
	var sb strings.Builder
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		fmt.Fprintf(&sb, "%02x%02x", b[i], b[i+1])
	}
	return sb.String()
}

// explodedPrefix formats the network of p like Python's
// ip_network(...).exploded.
func explodedPrefix(p netip.Prefix) string {
	p = p.Masked()
	return exploded(p.Addr()) + "/" + strconv.Itoa(p.Bits())
}

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// normAddr is the comparison form of an address: compressed text
// ("" when s is empty or not an address).
func normAddr(s string) string {
	if s == "" {
		return ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	return a.WithZone("").String()
}

// normNet is the comparison form of a network (host bits cleared).
func normNet(s string) string {
	p, err := parseNetwork(s, false)
	if err != nil {
		return s
	}
	return p.Masked().String()
}

func ipNetOf(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrFromIP(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func prefixFromIPNet(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a := addrFromIP(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// normalizeMAC parses a MAC address and returns it in lower-case
// colon-separated form.
func normalizeMAC(s string) (string, error) {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("'%s' is not a MAC address", s)
	}
	return hw.String(), nil
}
