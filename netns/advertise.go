package netns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodesMAC  = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
)

// InterfaceForIP returns the name of the interface of the data-plane
// namespace that holds ip (GET /1.0/interface/<ip>). An unparsable ip is a
// *BadRequestError "Invalid IP address"; no such address, or no namespace
// at all, is ErrAddressNotFound. The namespace is never created.
func (m *Manager) InterfaceForIP(ctx context.Context, ip string) (string, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "", &BadRequestError{Message: MsgInvalidIP, Err: err}
	}
	ns, err := OpenNamespace(m.cfg.Namespace)
	if err != nil {
		if errors.Is(err, ErrNamespaceAbsent) {
			return "", fmt.Errorf("%w: %w", ErrAddressNotFound, err)
		}
		return "", err
	}
	defer ns.Close()
	link, err := linkHolding(ns, a)
	if err != nil {
		return "", err
	}
	return link.Attrs().Name, nil
}

// linkHolding finds the link of the namespace that has address a.
func linkHolding(ns *Namespace, a netip.Addr) (netlink.Link, error) {
	a = a.WithZone("").Unmap()
	family := netlink.FAMILY_V4
	if a.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return ns.Handle().AddrList(nil, family) })
	if err != nil {
		return nil, fmt.Errorf("list addresses in netns %s: %w", ns.Name(), err)
	}
	for _, ad := range addrs {
		if addrFromIP(ad.IP) == a {
			link, err := ns.Handle().LinkByIndex(ad.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("link %d in netns %s: %w", ad.LinkIndex, ns.Name(), err)
			}
			return link, nil
		}
	}
	return nil, fmt.Errorf("%s in netns %s: %w", a, ns.Name(), ErrAddressNotFound)
}

// Advertise announces ip on the namespace interface that holds it: a
// gratuitous ARP request for IPv4, an unsolicited neighbour advertisement
// (override flag, target link-layer address option, hop limit 255, to
// ff02::1) for IPv6. The frame is sent AdvertiseCount times,
// AdvertiseInterval apart.
func (m *Manager) Advertise(ctx context.Context, ip string) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return &BadRequestError{Message: MsgInvalidIP, Err: err}
	}
	a = a.WithZone("").Unmap()
	ns, err := OpenNamespace(m.cfg.Namespace)
	if err != nil {
		return err
	}
	defer ns.Close()
	link, err := linkHolding(ns, a)
	if err != nil {
		return err
	}
	attrs := link.Attrs()
	if len(attrs.HardwareAddr) != 6 {
		return fmt.Errorf("advertise %s: %s has no Ethernet address", a, attrs.Name)
	}
	var frame []byte
	var proto int
	var dst net.HardwareAddr
	if a.Is4() {
		frame, err = garpFrame(attrs.HardwareAddr, a)
		proto, dst = unix.ETH_P_ARP, broadcastMAC
	} else {
		frame, err = unsolicitedNAFrame(attrs.HardwareAddr, a)
		proto, dst = unix.ETH_P_IPV6, allNodesMAC
	}
	if err != nil {
		return fmt.Errorf("advertise %s: %w", a, err)
	}
	ifi := &net.Interface{Index: attrs.Index, Name: attrs.Name, HardwareAddr: attrs.HardwareAddr, MTU: attrs.MTU}
	var conn *packet.Conn
	if err := ns.Do(func() error {
		var err error
		conn, err = packet.Listen(ifi, packet.Raw, proto, nil)
		return err
	}); err != nil {
		return fmt.Errorf("advertise %s on %s: %w", a, attrs.Name, err)
	}
	defer conn.Close()
	count := max(m.cfg.AdvertiseCount, 1)
	for i := 0; i < count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(m.cfg.AdvertiseInterval):
			}
		}
		if _, err := conn.WriteTo(frame, &packet.Addr{HardwareAddr: dst}); err != nil {
			return fmt.Errorf("advertise %s on %s: %w", a, attrs.Name, err)
		}
	}
	m.log.Debug("address advertised", "ns", ns.Name(), "interface", attrs.Name, "address", a.String(), "count", count)
	return nil
}

// AdvertiseAll advertises each distinct address of ips (errors joined,
// every address is tried).
func (m *Manager) AdvertiseAll(ctx context.Context, ips []string) error {
	seen := map[string]bool{}
	var errs []error
	for _, ip := range ips {
		if seen[ip] {
			continue
		}
		seen[ip] = true
		if err := m.Advertise(ctx, ip); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// The frames are built by hand: two fixed layouts do not justify a packet
// library in the agent (gopacket's layers were a tenth of the binary's
// code, all of it mapped at start-up). The tests decode them with
// gopacket and compare them with its serialization.

// garpFrame builds a gratuitous ARP request: sender and target protocol
// address = ip, target hardware address broadcast (as the reference),
// padded to Ethernet's 60-byte minimum.
func garpFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 || !ip.Is4() {
		return nil, fmt.Errorf("gratuitous ARP for %s from %s: needs an IPv4 address and a 6-byte MAC", ip, mac)
	}
	v4 := ip.As4()
	f := make([]byte, 0, 60)
	f = append(f, broadcastMAC...)
	f = append(f, mac...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = binary.BigEndian.AppendUint16(f, 1) // hardware type: Ethernet
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IP)
	f = append(f, 6, 4)                     // address sizes
	f = binary.BigEndian.AppendUint16(f, 1) // request
	f = append(f, mac...)
	f = append(f, v4[:]...)
	f = append(f, broadcastMAC...)
	f = append(f, v4[:]...)
	return f[:60], nil // the rest of the capacity is zero padding
}

// unsolicitedNAFrame builds an unsolicited neighbour advertisement for ip
// from ip to all nodes: Override set, Router and Solicited clear (the
// amphora is not a router), target link-layer address option, hop limit
// 255, checksum computed here.
func unsolicitedNAFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 || !ip.Is6() || ip.Is4In6() {
		return nil, fmt.Errorf("neighbour advertisement for %s from %s: needs an IPv6 address and a 6-byte MAC", ip, mac)
	}
	src, dst := ip.As16(), netip.MustParseAddr("ff02::1").As16()
	const icmpLen = 4 + 4 + 16 + 8 // header, flags, target, link-layer option
	f := make([]byte, 0, 14+40+icmpLen)
	f = append(f, allNodesMAC...)
	f = append(f, mac...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_IPV6)
	f = append(f, 6<<4, 0, 0, 0) // version, traffic class, flow label
	f = binary.BigEndian.AppendUint16(f, icmpLen)
	f = append(f, unix.IPPROTO_ICMPV6, 255)
	f = append(f, src[:]...)
	f = append(f, dst[:]...)
	icmp := len(f)
	f = append(f, 136, 0, 0, 0)  // neighbor advertisement, code, checksum
	f = append(f, 0x20, 0, 0, 0) // flags: override
	f = append(f, src[:]...)     // target address
	f = append(f, 2, 1)          // option: target link-layer address, 8 bytes
	f = append(f, mac...)
	binary.BigEndian.PutUint16(f[icmp+2:], icmpv6Checksum(src, dst, f[icmp:]))
	return f, nil
}

// icmpv6Checksum is the ICMPv6 checksum of msg (its checksum field zero)
// with the IPv6 pseudo-header (RFC 4443 2.3, RFC 8200 8.1).
func icmpv6Checksum(src, dst [16]byte, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	sum += uint32(len(msg)) + unix.IPPROTO_ICMPV6
	add(msg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Announcer advertises the addresses a service starts serving, in the
// background: the GARP/NA repeats take a moment and the API answers a
// start without waiting for them. Each batch is bounded in time and
// ends with the context the Announcer was made with; failures are
// logged at debug level (the peer learns the address from traffic too).
type Announcer struct {
	m       *Manager
	ctx     context.Context
	timeout time.Duration
	wg      sync.WaitGroup
}

// Announcer returns an Announcer whose advertisements end with ctx.
func (m *Manager) Announcer(ctx context.Context) *Announcer {
	return &Announcer{m: m, ctx: ctx, timeout: 10 * time.Second}
}

// Announce advertises each distinct address of addrs, in the background.
func (a *Announcer) Announce(addrs []string) {
	a.wg.Go(func() {
		ctx, cancel := context.WithTimeout(a.ctx, a.timeout)
		defer cancel()
		if err := a.m.AdvertiseAll(ctx, addrs); err != nil {
			a.m.log.Debug("VIP advertisement not sent", "addrs", fmt.Sprint(addrs), "err", err)
		}
	})
}

// Wait waits for the advertisements in flight.
func (a *Announcer) Wait() { a.wg.Wait() }
