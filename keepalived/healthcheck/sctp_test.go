package healthcheck

// This kernel has no SCTP stack (/proc/net/protocols has no SCTP, SCTP
// sockets fail with EPROTONOSUPPORT): the SCTP check is tested against a
// responder written here on a raw SCTP socket, on loopback.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// The SCTP INIT and ABORT are those of the reference's health checker
// (CRC32c and byte order included), checked against its own functions.
func TestSCTPPacketsMatchReference(t *testing.T) {
	testutil.RequireOctavia(t)
	init := sctpInitPacket(40000, 5353, 0xdeadbeef, 0x01020304)
	abort := sctpAbortPacket(40000, 5353, 0xdeadbeef)
	zeroed := bytes.Clone(init)
	binary.BigEndian.PutUint32(zeroed[8:], 0)
	script := `
import sys, warnings
warnings.filterwarnings('ignore')
from octavia.cmd import health_checker as h
init = bytearray.fromhex(sys.argv[1])
crc = h.crc32c(init)
import struct
struct.pack_into('!L', init, 8, crc)
print(init.hex())
print(h._sctp_build_abort_packet(40000, 5353, 0xdeadbeef).hex())
`
	out, err := exec.Command("/usr/bin/python3", "-c", script, hex.EncodeToString(zeroed)).Output()
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 || lines[0] != hex.EncodeToString(init) || lines[1] != hex.EncodeToString(abort) {
		t.Errorf("packets differ from the reference's:\nINIT  go %x\n      py %s\nABORT go %x\n      py %s", init, lines[0], abort, lines[1])
	}
}

// sctpResponder answers INITs to one port on a raw SCTP socket, since
// this kernel has no SCTP stack (see the file comment).
type sctpResponder struct {
	fd    int
	v4    bool
	port  uint16
	reply byte // chunk type of the answer; 0: none

	mu      sync.Mutex
	inits   int
	badCRC  int
	tag     uint32
	aborts  []string // "flags=<n> tag-ok=<bool>"
	stopped chan struct{}
}

func startSCTPResponder(t *testing.T, v4 bool, reply byte) *sctpResponder {
	t.Helper()
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()})
	if v4 {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		t.Skipf("raw SCTP socket: %v (needs CAP_NET_RAW)", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000}); err != nil {
		t.Fatal(err)
	}
	r := &sctpResponder{fd: fd, v4: v4, port: uint16(20000 + time.Now().UnixNano()%40000), reply: reply, stopped: make(chan struct{})}
	stop := make(chan struct{})
	go r.serve(stop)
	t.Cleanup(func() { close(stop); <-r.stopped; unix.Close(fd) })
	return r
}

func (r *sctpResponder) serve(stop chan struct{}) {
	defer close(r.stopped)
	buf := make([]byte, 2048)
	for {
		select {
		case <-stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			continue
		}
		pkt := buf[:n]
		if r.v4 {
			pkt = pkt[int(pkt[0]&0x0f)<<2:]
		}
		if len(pkt) < 16 || binary.BigEndian.Uint16(pkt[2:]) != r.port || binary.BigEndian.Uint16(pkt[0:]) == r.port {
			continue
		}
		sum := binary.LittleEndian.Uint32(pkt[8:])
		zeroed := bytes.Clone(pkt)
		binary.BigEndian.PutUint32(zeroed[8:], 0)
		crcOK := crc32.Checksum(zeroed, crc32.MakeTable(crc32.Castagnoli)) == sum
		r.mu.Lock()
		switch pkt[12] {
		case sctpChunkInit:
			r.inits++
			if !crcOK {
				r.badCRC++
			}
			r.tag = binary.BigEndian.Uint32(pkt[16:])
			if r.reply != 0 {
				ans := make([]byte, 20)
				binary.BigEndian.PutUint16(ans[0:], r.port)
				copy(ans[2:4], pkt[0:2])
				binary.BigEndian.PutUint32(ans[4:], r.tag)
				ans[12] = r.reply
				binary.BigEndian.PutUint16(ans[14:], 8)
				sctpChecksum(ans)
				_ = unix.Sendto(r.fd, ans, 0, from)
			}
		case sctpChunkAbort:
			r.aborts = append(r.aborts, fmt.Sprintf("flags=%d tag-ok=%v crc-ok=%v", pkt[13], binary.BigEndian.Uint32(pkt[4:]) == r.tag, crcOK))
		}
		r.mu.Unlock()
	}
}

func TestSCTP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raw SCTP sockets need root (CAP_NET_RAW)")
	}
	if kernelHasSCTP() {
		t.Log("this kernel has SCTP: the checker relies on it for the ABORT")
	}
	for _, c := range []struct {
		name  string
		v4    bool
		reply byte
		code  int
		abort bool
	}{
		{"INIT-ACK v4", true, sctpChunkInitAck, 0, true},
		{"INIT-ACK v6", false, sctpChunkInitAck, 0, true},
		{"ABORT", true, sctpChunkAbort, 1, false},
		{"no answer", true, 0, 2, false},
		{"other chunk", false, 4, 3, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := startSCTPResponder(t, c.v4, c.reply)
			addr := "::1"
			if c.v4 {
				addr = "127.0.0.1"
			}
			start := time.Now()
			var out bytes.Buffer
			code, err := SCTP(context.Background(), netip.AddrPortFrom(netip.MustParseAddr(addr), r.port), time.Second, &out)
			if err != nil || code != c.code {
				t.Errorf("exit %d (%v), want %d:\n%s", code, err, c.code, out.String())
			}
			if c.code == 2 && time.Since(start) < time.Second {
				t.Errorf("timed out after %s, before the 1 s timeout", time.Since(start))
			}
			wantAbort := c.abort && !kernelHasSCTP()
			testutil.WaitFor(t, 3*time.Second, func() (bool, string) {
				r.mu.Lock()
				defer r.mu.Unlock()
				return r.inits == 1 && (!wantAbort || len(r.aborts) == 1), fmt.Sprintf("responder: %d INITs, ABORTs %v", r.inits, r.aborts)
			})
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.badCRC != 0 {
				t.Error("INIT with a bad CRC32c")
			}
			if wantAbort && (len(r.aborts) != 1 || r.aborts[0] != "flags=1 tag-ok=true crc-ok=true") {
				t.Errorf("ABORT after the check: %v", r.aborts)
			}
			if !wantAbort && len(r.aborts) != 0 {
				t.Errorf("unexpected ABORT: %v", r.aborts)
			}
		})
	}
}

func TestUDP(t *testing.T) {
	open, closed := testutil.UDPPorts(t)
	var out bytes.Buffer
	if code, err := UDP(context.Background(), open, time.Second, &out); code != 0 || err != nil {
		t.Errorf("open port: exit %d %v %s", code, err, out.String())
	}
	out.Reset()
	if code, err := UDP(context.Background(), closed, 2*time.Second, &out); code != 1 || err != nil ||
		!strings.Contains(out.String(), "failed: connection refused") {
		t.Errorf("closed port: exit %d %v %s", code, err, out.String())
	}
}
