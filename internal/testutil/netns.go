package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/octavia-go/amphora-agent/internal/nsthread"
)

// RequireNetAdmin skips the test when it cannot create network
// namespaces: not root, or iproute2 missing.
func RequireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("iproute2 (ip) is not installed")
	}
}

// RandomSuffix returns n random bytes as lowercase hex, for names that
// must not collide with parallel test runs.
func RandomSuffix(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// NetNS is a named network namespace created by a test (`ip netns add`,
// so it is visible under /run/netns to every process, also to ones in
// slave mount namespaces such as a systemd-user.sh manager), with lo up.
// Netlink work goes through a handle bound to the namespace; sockets are
// created on a locked OS thread switched into it (Do).
type NetNS struct {
	Name string
	fd   netns.NsHandle
	nl   *netlink.Handle
	ino  uint64
}

// NewNetNS creates namespace prefix-<random>, brings lo up and registers
// its removal: processes still inside it (started by the code under test)
// are killed by PID, then the namespace (and its veths) are deleted.
func NewNetNS(t testing.TB, prefix string) *NetNS {
	t.Helper()
	RequireNetAdmin(t)
	name := prefix + "-" + RandomSuffix(4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NetNS{Name: name, fd: netns.None()}
	t.Cleanup(func() { n.destroy(t) })
	fd, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n.fd = fd
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd), &st); err != nil {
		t.Fatalf("stat netns %s: %v", name, err)
	}
	n.ino = st.Ino
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.nl = h
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo in %s: %v", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return n
}

func (n *NetNS) destroy(t testing.TB) {
	if pids := n.PIDs(); len(pids) > 0 {
		t.Logf("netns %s: killing leftover processes %v", n.Name, pids)
	}
	if n.nl != nil {
		n.nl.Close()
	}
	if n.fd.IsOpen() {
		n.fd.Close()
	}
	if err := DeleteNetNS(n.Name); err != nil {
		t.Error(err)
	}
}

// DeleteNetNS deletes the named namespace, a missing one being fine:
// processes still inside it (started by the code under test) are killed
// by PID first, then `ip netns del` removes it (and its veths).
func DeleteNetNS(name string) error {
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		return nil
	}
	pids := func() []int { return pidsInNetNS(st.Ino) }
	for _, p := range pids() {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(pids()) > 0; {
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, out)
	}
	return nil
}

// Path is the namespace's bind mount, /run/netns/<name>.
func (n *NetNS) Path() string { return filepath.Join("/run/netns", n.Name) }

// Netlink is a netlink handle bound to the namespace.
func (n *NetNS) Netlink() *netlink.Handle { return n.nl }

// PIDs lists the processes whose network namespace is this one (the test
// process itself excluded).
func (n *NetNS) PIDs() []int { return pidsInNetNS(n.ino) }

// pidsInNetNS lists the processes (but this one) whose network namespace
// has inode ino.
func pidsInNetNS(ino uint64) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st) != nil {
			continue
		}
		if st.Ino == ino {
			out = append(out, pid)
		}
	}
	return out
}

// Do runs f on a thread switched into the namespace (the agent's own
// nsthread.Do): sockets f creates belong to the namespace.
func (n *NetNS) Do(f func() error) error {
	if err := nsthread.Do(n.fd, f); err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return nil
}

// InNetNS runs f on a thread switched into the named namespace, one the
// code under test created (the agent's data-plane namespace), opened for
// this call only: it may be deleted and created again between calls.
func InNetNS(name string, f func() error) error {
	fd, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer fd.Close()
	if err := nsthread.Do(fd, f); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

// Listen creates a listener inside the namespace.
func (n *NetNS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext opens a connection from inside the namespace.
func (n *NetNS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns a client whose connections are dialed inside the
// namespace, one new connection per request (no keep-alive), with the
// given TLS configuration (nil: default) and overall request timeout.
func (n *NetNS) HTTPClient(tlsConf *tls.Config, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       n.DialContext,
			TLSClientConfig:   tlsConf,
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// AddAddr adds an address (CIDR notation) to a link of the namespace and
// sets the link up.
func (n *NetNS) AddAddr(ifname, cidr string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", ifname, n.Name, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if strings.Contains(cidr, ":") {
		a.Flags |= syscall.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to %s in %s: %w", cidr, ifname, n.Name, err)
	}
	return n.nl.LinkSetUp(l)
}

// Veth connects two namespaces with a veth pair (aName in a, bName in b),
// both ends up. It is created directly inside a, so no interface ever
// appears in the root namespace; it goes away with the namespaces.
func Veth(t testing.TB, a *NetNS, aName string, b *NetNS, bName string) {
	t.Helper()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.fd)),
	}
	if err := a.nl.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v", a.Name, aName, b.Name, bName, err)
	}
	for _, e := range []struct {
		ns   *NetNS
		name string
	}{{a, aName}, {b, bName}} {
		l, err := e.ns.nl.LinkByName(e.name)
		if err != nil {
			t.Fatalf("%s in %s: %v", e.name, e.ns.Name, err)
		}
		if err := e.ns.nl.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up in %s: %v", e.name, e.ns.Name, err)
		}
	}
}

// Hotplug simulates Nova attaching a port: a veth whose end with the
// port's MAC (named prefix<random>, no address) appears in the root
// namespace, its peer peerIf (up) in peer. It returns the root-side
// name. The pair goes away at the end of the test, wherever the code
// under test moved the root side.
func Hotplug(t testing.TB, prefix, mac string, peer *NetNS, peerIf string) string {
	t.Helper()
	root := prefix + RandomSuffix(4)
	if out, err := exec.Command("ip", "link", "add", root, "address", mac, "type", "veth", "peer", "name", peerIf, "netns", peer.Name).CombinedOutput(); err != nil {
		t.Fatalf("hot-plug veth %s (%s): %v: %s", root, mac, err, out)
	}
	t.Cleanup(func() {
		// deleting either end removes the pair
		_ = exec.Command("ip", "-n", peer.Name, "link", "del", peerIf).Run()
		_ = exec.Command("ip", "link", "del", root).Run()
	})
	l, err := peer.nl.LinkByName(peerIf)
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.nl.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return root
}

// Get sends GET url with c and returns the status and the body; for a
// member behind a load balancer the body is the member's name.
func Get(ctx context.Context, c *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return resp.StatusCode, "", err
	}
	return resp.StatusCode, buf.String(), nil
}
