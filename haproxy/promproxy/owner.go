package promproxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Which load balancer is at the other end of a loopback TCP connection.
//
// Every load balancer with a PROMETHEUS listener runs its own haproxy
// exporter on 127.0.0.1:9101 (the controller renders that address), so
// with several of them on one amphora their haproxy processes share the
// port (haproxy binds with SO_REUSEPORT) and the kernel hands each
// connection to one of them. The proxy tells them apart through the
// kernel's socket table: the socket at the other end of a connection has
// an inode, an open file of exactly one process, whose command line names
// its configuration file. No part of this comes from the client.

// procFS reads the socket table of the proxy's network namespace and the
// processes under root ("/proc" in production).
type procFS struct{ root string }

// ErrNoOwner: no haproxy process holds the socket (yet).
var ErrNoOwner = errors.New("socket owner not found")

// socketInode returns the inode of the TCP socket whose local and remote
// addresses are the given ones, from the net/tcp tables of the calling
// process's network namespace.
func (p procFS) socketInode(local, remote netip.AddrPort) (uint64, error) {
	files := []string{"self/net/tcp6"}
	if local.Addr().Is4() {
		files = []string{"self/net/tcp", "self/net/tcp6"}
	}
	for _, name := range files {
		ino, err := p.scanTCP(filepath.Join(p.root, name), local, remote)
		if err == nil {
			return ino, nil
		}
		if !errors.Is(err, ErrNoOwner) && !errors.Is(err, os.ErrNotExist) {
			return 0, err
		}
	}
	return 0, ErrNoOwner
}

func (p procFS) scanTCP(path string, local, remote netip.AddrPort) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<16)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 10 {
			continue
		}
		l, err1 := parseProcAddr(fields[1])
		r, err2 := parseProcAddr(fields[2])
		if err1 != nil || err2 != nil || !sameEndpoint(l, local) || !sameEndpoint(r, remote) {
			continue
		}
		ino, err := strconv.ParseUint(string(fields[9]), 10, 64)
		if err != nil || ino == 0 {
			// 0: still in the accept queue, no file yet
			return 0, ErrNoOwner
		}
		return ino, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, ErrNoOwner
}

// sameEndpoint compares addresses, an IPv4-mapped IPv6 address (tcp6
// table) equal to its IPv4 form.
func sameEndpoint(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}

// parseProcAddr decodes "0100007F:2385": the address as the kernel's
// 32-bit words in host byte order, the port in big-endian hex.
func parseProcAddr(b []byte) (netip.AddrPort, error) {
	addrHex, portHex, ok := bytes.Cut(b, []byte(":"))
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", b)
	}
	port, err := strconv.ParseUint(string(portHex), 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", b)
	}
	raw := make([]byte, hex.DecodedLen(len(addrHex)))
	if _, err := hex.Decode(raw, addrHex); err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", b)
	}
	// each 32-bit word was printed as a host-order integer
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// haproxyHolding returns the configuration files (-f arguments) of the
// haproxy process that has the socket inode open, or ErrNoOwner.
func (p procFS) haproxyHolding(inode uint64) ([]string, error) {
	entries, err := os.ReadDir(p.root)
	if err != nil {
		return nil, err
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(p.root, pid, "comm"))
		if err != nil || !strings.HasPrefix(string(comm), "haproxy") {
			continue
		}
		if !p.holds(pid, want) {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(p.root, pid, "cmdline"))
		if err != nil {
			continue // it exited meanwhile
		}
		return configArgs(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")), nil
	}
	return nil, ErrNoOwner
}

// holds reports whether process pid has an open file that is link.
func (p procFS) holds(pid, link string) bool {
	dir := filepath.Join(p.root, pid, "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == link {
			return true
		}
	}
	return false
}

// configArgs returns the values of haproxy's -f options.
func configArgs(argv []string) []string {
	var out []string
	for i := 1; i < len(argv); i++ {
		switch {
		case argv[i] == "-f" && i+1 < len(argv):
			out = append(out, argv[i+1])
			i++
		case strings.HasPrefix(argv[i], "-f") && len(argv[i]) > 2:
			out = append(out, argv[i][2:])
		}
	}
	return out
}
