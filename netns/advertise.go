package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	allNodesMAC  = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	allNodesIP   = net.ParseIP("ff02::1")
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

// garpFrame builds a gratuitous ARP request: sender and target protocol
// address = ip, target hardware address broadcast (as the reference).
func garpFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: broadcastMAC, EthernetType: layers.EthernetTypeARP}
	v4 := ip.As4()
	arp := &layers.ARP{
		AddrType:          layers.LinkTypeEthernet,
		Protocol:          layers.EthernetTypeIPv4,
		HwAddressSize:     6,
		ProtAddressSize:   4,
		Operation:         layers.ARPRequest,
		SourceHwAddress:   mac,
		SourceProtAddress: v4[:],
		DstHwAddress:      broadcastMAC,
		DstProtAddress:    v4[:],
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, arp); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// unsolicitedNAFrame builds an unsolicited neighbour advertisement for ip
// from ip to all nodes: Override set, Router and Solicited clear (the
// amphora is not a router), target link-layer address option, hop limit
// 255, checksum computed here.
func unsolicitedNAFrame(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	src := net.IP(ip.AsSlice())
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: allNodesMAC, EthernetType: layers.EthernetTypeIPv6}
	ip6 := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src, DstIP: allNodesIP}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip6); err != nil {
		return nil, err
	}
	na := &layers.ICMPv6NeighborAdvertisement{
		Flags:         0x20, // override
		TargetAddress: src,
		Options:       layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: mac}},
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip6, icmp, na); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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
