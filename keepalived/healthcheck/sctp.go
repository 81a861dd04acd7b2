package healthcheck

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SCTP chunk types.
const (
	sctpChunkInit    = 1
	sctpChunkInitAck = 2
	sctpChunkAbort   = 6
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpChecksum stores the CRC32c of an SCTP packet (whose checksum field
// is zero) in its header, in the byte order RFC 4960 appendix B gives
// (the reference's pack('<I') then '!L').
func sctpChecksum(pkt []byte) {
	binary.BigEndian.PutUint32(pkt[8:12], 0)
	binary.LittleEndian.PutUint32(pkt[8:12], crc32.Checksum(pkt, castagnoli))
}

// sctpInitPacket builds the INIT the check sends: verification tag 0,
// a_rwnd 106496, 10 outbound and 65535 inbound streams.
func sctpInitPacket(srcPort, dstPort uint16, tag, tsn uint32) []byte {
	pkt := make([]byte, 32)
	binary.BigEndian.PutUint16(pkt[0:], srcPort)
	binary.BigEndian.PutUint16(pkt[2:], dstPort)
	pkt[12] = sctpChunkInit
	binary.BigEndian.PutUint16(pkt[14:], 20) // chunk length
	binary.BigEndian.PutUint32(pkt[16:], tag)
	binary.BigEndian.PutUint32(pkt[20:], 106496)
	binary.BigEndian.PutUint16(pkt[24:], 10)
	binary.BigEndian.PutUint16(pkt[26:], 65535)
	binary.BigEndian.PutUint32(pkt[28:], tsn)
	sctpChecksum(pkt)
	return pkt
}

// sctpAbortPacket builds the ABORT sent after an INIT-ACK: T bit set,
// verification tag = the check's own initiate tag (as the reference).
func sctpAbortPacket(srcPort, dstPort uint16, tag uint32) []byte {
	pkt := make([]byte, 16)
	binary.BigEndian.PutUint16(pkt[0:], srcPort)
	binary.BigEndian.PutUint16(pkt[2:], dstPort)
	binary.BigEndian.PutUint32(pkt[4:], tag)
	pkt[12] = sctpChunkAbort
	pkt[13] = 1                             // T bit
	binary.BigEndian.PutUint16(pkt[14:], 4) // chunk length
	sctpChecksum(pkt)
	return pkt
}

// sctpAnswer returns the first chunk type of a received packet that
// answers the check's INIT (verification tag = its initiate tag). IPv4
// raw sockets deliver the IP header, IPv6 ones do not.
func sctpAnswer(buf []byte, v4 bool, tag uint32) (byte, bool) {
	off := 0
	if v4 {
		if len(buf) < 1 {
			return 0, false
		}
		off = int(buf[0]&0x0f) << 2
	}
	if len(buf)-off < 16 {
		return 0, false
	}
	if binary.BigEndian.Uint32(buf[off+4:]) != tag {
		return 0, false
	}
	return buf[off+12], true
}

// kernelHasSCTP reports whether /proc/net/protocols lists SCTP: then
// closing the raw socket lets the kernel abort the association itself.
func kernelHasSCTP() bool {
	f, err := os.Open("/proc/net/protocols")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "SCTP") {
			return true
		}
	}
	return false
}

// randUint32 is a random number in [lo, hi].
func randUint32(lo, hi uint32) uint32 {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(hi)-int64(lo)+1))
	if err != nil {
		return lo
	}
	return lo + uint32(n.Int64())
}

// SCTP is the check of SCTP members: it sends an INIT to dst over a raw
// SCTP socket (random source port and initiate tag, CRC32c) and waits up
// to timeout for the answer, writing what happens to out like the
// reference. It returns the exit status keepalived reads: SCTPUp on
// INIT-ACK, SCTPAbort on ABORT, SCTPTimeout without answer, SCTPOther on
// any other chunk. After an INIT-ACK (or an unexpected chunk) on a kernel
// without SCTP it sends the ABORT the kernel would have sent, so the
// member does not keep a half-open association.
func SCTP(ctx context.Context, dst netip.AddrPort, timeout time.Duration, out io.Writer) (int, error) {
	return sctpCheck(ctx, dst, timeout, out, kernelHasSCTP)
}

// sctpCheck is SCTP, with the kernel's SCTP support given.
func sctpCheck(ctx context.Context, dst netip.AddrPort, timeout time.Duration, out io.Writer, hasSCTP func() bool) (int, error) {
	v4 := dst.Addr().Is4()
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.Addr().As16()}
	if v4 {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Addr: dst.Addr().As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return 0, fmt.Errorf("raw SCTP socket: %w", err)
	}
	defer unix.Close(fd)
	// a connected raw socket only receives what dst sends
	if err := unix.Connect(fd, sa); err != nil {
		return 0, fmt.Errorf("connect %s: %w", dst.Addr(), err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		return 0, err
	}
	tag := randUint32(1, 1<<32-1)
	src := uint16(randUint32(1024, 65535))
	fmt.Fprintf(out, "Sending INIT packet to %s\n", dst)
	if _, err := unix.Write(fd, sctpInitPacket(src, dst.Port(), tag, randUint32(1, 1<<32-1))); err != nil {
		return 0, fmt.Errorf("send INIT to %s: %w", dst, err)
	}
	code, abort := SCTPTimeout, false
	buf := make([]byte, 1500)
	deadline := time.Now().Add(timeout)
wait:
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, fmt.Errorf("receive from %s: %w", dst.Addr(), err)
		}
		typ, ok := sctpAnswer(buf[:n], v4, tag)
		if !ok {
			continue
		}
		switch typ {
		case sctpChunkInitAck:
			fmt.Fprintln(out, "Received INIT ACK")
			code, abort = SCTPUp, true
		case sctpChunkAbort:
			fmt.Fprintln(out, "Received ABORT")
			code = SCTPAbort
		default:
			fmt.Fprintf(out, "Received %d Type chunk\n", typ)
			code, abort = SCTPOther, true
		}
		break wait
	}
	if code == SCTPTimeout {
		fmt.Fprintf(out, "Timeout after %s.\n", timeout)
	}
	if abort && !hasSCTP() {
		fmt.Fprintln(out, "Sending ABORT packet")
		if _, err := unix.Write(fd, sctpAbortPacket(src, dst.Port(), tag)); err != nil {
			fmt.Fprintf(out, "ABORT not sent: %v\n", err)
		}
	}
	return code, nil
}
