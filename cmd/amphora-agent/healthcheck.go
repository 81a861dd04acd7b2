package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/keepalived"
)

// helperAliases are the reference's helper programs this binary answers
// to when it is invoked under that name (argv[0]), so that configurations
// rendered by the controller work unchanged: keepalived's MISC_CHECK runs
// "amphora-health-checker sctp ...". For keepalived the name must be a
// hard link (or a copy): it resolves scripts found by PATH search with
// realpath() and runs the target under the resolved name, so a symlink
// would run as amphora-agent.
var helperAliases = map[string]string{
	"amphora-health-checker": "health-check",
	"haproxy-vrrp-check":     "vrrp-check",
	"amphora-interface":      "interface",
}

// aliasArgs turns the command line of a helper alias into the
// subcommand's: "amphora-health-checker sctp ..." is
// "amphora-agent health-check sctp ...".
func aliasArgs(argv0 string, args []string) []string {
	if sub, ok := helperAliases[filepath.Base(argv0)]; ok {
		return append([]string{sub}, args...)
	}
	return args
}

// Exit statuses of "health-check sctp" (the reference's
// amphora-health-checker): keepalived's MISC_CHECK counts 0 as up.
const (
	sctpUp      = 0 // INIT-ACK received
	sctpAbort   = 1 // ABORT received (also: unsupported protocol, errors)
	sctpTimeout = 2 // nothing within the timeout
	sctpOther   = 3 // another chunk type
)

// runHealthCheck is "amphora-agent health-check <sctp|udp> [-t seconds]
// <address> <port>", the member checks keepalived runs for the LVS
// listeners:
//
//   - sctp: a raw SCTP INIT (random source port and initiate tag, CRC32c)
//     and a wait for the answer; exit 0 on INIT-ACK, 1 on ABORT, 2 on
//     timeout (default 3 s), 3 on any other chunk. After an INIT-ACK (or
//     an unexpected chunk) on a kernel without SCTP it sends the ABORT the
//     kernel would have sent, so the member does not keep a half-open
//     association.
//   - udp: a UDP probe; exit 1 when an ICMP port unreachable comes back
//     within the timeout (default 1 s), else 0 (the reference's
//     "nc -uzv" in udp_check.sh).
func runHealthCheck(ctx context.Context, g *globals, args []string) error {
	var timeout time.Duration
	setTimeout := func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 3600 {
			return fmt.Errorf("invalid timeout %q (seconds)", v)
		}
		timeout = time.Duration(f * float64(time.Second))
		return nil
	}
	defineTimeout := func(fs *flag.FlagSet) { fs.Func("t", "timeout in seconds", setTimeout) }
	usage := exitError{code: 1, msg: "usage: amphora-agent health-check <sctp|udp> [-t seconds] <address> <port>"}
	rest, err := subFlags(g, "health-check", args, defineTimeout)
	if err != nil || len(rest) == 0 {
		return usage
	}
	given := rest[0]
	proto := strings.ToLower(given)
	// the reference's order: protocol, then -t
	fs := flag.NewFlagSet("amphora-agent health-check "+proto, flag.ContinueOnError)
	fs.SetOutput(g.stderr)
	defineTimeout(fs)
	if err := fs.Parse(rest[1:]); err != nil {
		return usage
	}
	rest = fs.Args()
	if proto != "sctp" && proto != "udp" {
		return exitError{code: 1, msg: fmt.Sprintf("Unsupported protocol '%s'", given)}
	}
	if len(rest) != 2 {
		return usage
	}
	addr, err := netip.ParseAddr(rest[0])
	if err != nil {
		return exitError{code: 1, msg: "health-check: invalid address " + strconv.Quote(rest[0])}
	}
	port, err := strconv.ParseUint(rest[1], 10, 16)
	if err != nil || port == 0 {
		return exitError{code: 1, msg: "health-check: invalid port " + strconv.Quote(rest[1])}
	}
	dst := netip.AddrPortFrom(addr.Unmap(), uint16(port))
	var code int
	if proto == "sctp" {
		if timeout == 0 {
			timeout = 3 * time.Second
		}
		code, err = sctpCheck(ctx, dst, timeout, g.stdout, kernelHasSCTP)
	} else {
		if timeout == 0 {
			timeout = time.Second
		}
		code, err = udpCheckProbe(ctx, dst, timeout, g.stdout)
	}
	if err != nil {
		return exitError{code: 1, msg: "health-check: " + err.Error()}
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

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

func randUint32(lo, hi uint32) uint32 {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(hi)-int64(lo)+1))
	if err != nil {
		return lo
	}
	return lo + uint32(n.Int64())
}

// sctpCheck sends an INIT to dst over a raw SCTP socket and waits up to
// timeout for the answer. It returns the exit status.
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
	code, abort := sctpTimeout, false
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
			code, abort = sctpUp, true
		case sctpChunkAbort:
			fmt.Fprintln(out, "Received ABORT")
			code = sctpAbort
		default:
			fmt.Fprintf(out, "Received %d Type chunk\n", typ)
			code, abort = sctpOther, true
		}
		break wait
	}
	if code == sctpTimeout {
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

// udpCheckProbe sends up to three UDP probes to dst within timeout and
// returns 1 when the member refuses them (ICMP port unreachable, or
// another ICMP error), else 0.
func udpCheckProbe(ctx context.Context, dst netip.AddrPort, timeout time.Duration, out io.Writer) (int, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	step := timeout / 3
	buf := make([]byte, 1500)
	for i := 0; i < 3 && ctx.Err() == nil; i++ {
		if _, err := conn.Write([]byte("X")); err != nil {
			return refused(out, dst, err)
		}
		until := time.Now().Add(step)
		if i == 2 || until.After(deadline) {
			until = deadline
		}
		if err := conn.SetReadDeadline(until); err != nil {
			return 0, err
		}
		if _, err := conn.Read(buf); err == nil {
			fmt.Fprintf(out, "Connection to %s succeeded (answered)\n", dst)
			return 0, nil
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			return refused(out, dst, err)
		}
	}
	fmt.Fprintf(out, "Connection to %s succeeded\n", dst)
	return 0, nil
}

func refused(out io.Writer, dst netip.AddrPort, err error) (int, error) {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		fmt.Fprintf(out, "Connection to %s failed: %v\n", dst, errno)
		return 1, nil
	}
	return 0, err
}

// runLVSCheck is "amphora-agent lvs-check [--] <pid file>...", the check
// keepalived runs through check_scripts/lvs_udp_check.sh: exit 0 when
// every pid file names a live keepalived (none given: 0, no LVS listener
// has to run), else 1.
func runLVSCheck(_ context.Context, g *globals, args []string) error {
	files, err := subFlags(g, "lvs-check", args, nil)
	if err != nil {
		return err
	}
	if err := keepalived.CheckLVS(files); err != nil {
		return exitError{code: 1, msg: "lvs-check: " + strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	return nil
}
