package netns

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// The frames the agent builds by hand are byte for byte what gopacket
// serializes from the same fields (the agent built them with gopacket
// before), and gopacket decodes them with a valid checksum.

func gopacketGARP(t *testing.T, mac net.HardwareAddr, ip netip.Addr) []byte {
	v4 := ip.As4()
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: broadcastMAC, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{
		AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: mac, SourceProtAddress: v4[:], DstHwAddress: broadcastMAC, DstProtAddress: v4[:],
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, arp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gopacketNA(t *testing.T, mac net.HardwareAddr, ip netip.Addr) []byte {
	src := net.IP(ip.AsSlice())
	eth := &layers.Ethernet{SrcMAC: mac, DstMAC: allNodesMAC, EthernetType: layers.EthernetTypeIPv6}
	ip6 := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: src, DstIP: net.ParseIP("ff02::1")}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip6); err != nil {
		t.Fatal(err)
	}
	na := &layers.ICMPv6NeighborAdvertisement{Flags: 0x20, TargetAddress: src,
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptTargetAddress, Data: mac}}}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip6, icmp, na); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestAdvertisementFrames(t *testing.T) {
	macs := []net.HardwareAddr{{0xfa, 0x16, 0x3e, 0x01, 0x02, 0x03}, {0x02, 0, 0, 0, 0, 0xff}}
	for _, mac := range macs {
		for _, a := range []string{"198.51.100.10", "203.0.113.255", "10.0.0.1"} {
			ip := netip.MustParseAddr(a)
			got, err := garpFrame(mac, ip)
			if err != nil {
				t.Fatal(err)
			}
			if want := gopacketGARP(t, mac, ip); !bytes.Equal(got, want) {
				t.Errorf("GARP %s %s:\n got % x\nwant % x", mac, ip, got, want)
			}
		}
		for _, a := range []string{"2001:db8::10", "fe80::f816:3eff:fe01:203", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"} {
			ip := netip.MustParseAddr(a)
			got, err := unsolicitedNAFrame(mac, ip)
			if err != nil {
				t.Fatal(err)
			}
			if want := gopacketNA(t, mac, ip); !bytes.Equal(got, want) {
				t.Errorf("NA %s %s:\n got % x\nwant % x", mac, ip, got, want)
			}
			p := gopacket.NewPacket(got, layers.LayerTypeEthernet, gopacket.Default)
			if p.ErrorLayer() != nil {
				t.Fatalf("NA does not decode: %v", p.ErrorLayer().Error())
			}
			icmp := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if err := icmp.SetNetworkLayerForChecksum(p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)); err != nil {
				t.Fatal(err)
			}
			if err, res := icmp.VerifyChecksum(); err != nil || !res.Valid {
				t.Errorf("NA %s: checksum %+v %v", ip, res, err)
			}
		}
	}
	if _, err := garpFrame(macs[0], netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("GARP for an IPv6 address built")
	}
	if _, err := unsolicitedNAFrame(macs[0][:4], netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("NA from a 4-byte MAC built")
	}
}
