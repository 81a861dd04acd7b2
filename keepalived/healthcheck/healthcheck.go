// Package healthcheck holds the member checks keepalived runs for the
// UDP and SCTP listeners (keepalived LVS), the reference's
// amphora-health-checker: "amphora-agent health-check sctp|udp ..." and
// the udp_check.sh script call them. The SCTP check builds its packets
// itself (sctp.go) because the amphora kernel may have no SCTP stack.
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// Exit statuses of the SCTP check (the reference's): keepalived's
// MISC_CHECK counts 0 as up.
const (
	SCTPUp      = 0 // INIT-ACK received
	SCTPAbort   = 1 // ABORT received
	SCTPTimeout = 2 // nothing within the timeout
	SCTPOther   = 3 // another chunk type
)

// UDP is the check of UDP members (the reference's "nc -uzv" in
// udp_check.sh): up to three UDP probes to dst within timeout. It returns
// 1 when the member refuses them (ICMP port unreachable, or another ICMP
// error), else 0.
func UDP(ctx context.Context, dst netip.AddrPort, timeout time.Duration, out io.Writer) (int, error) {
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
