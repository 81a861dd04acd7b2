package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/octavia-go/amphora-agent/internal/nsthread"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultNamespace is the data-plane namespace of an amphora.
const DefaultNamespace = "amphora-haproxy"

// runDir is where named namespaces are bind-mounted (as by `ip netns add`).
const runDir = "/run/netns"

// Namespace is an open named network namespace with a netlink handle bound
// to it. Every netlink call for the namespace goes through Handle(); no
// thread changes namespace for netlink work.
type Namespace struct {
	name string
	fd   vnetns.NsHandle
	nl   *netlink.Handle
}

// OpenNamespace opens an existing named namespace. It never creates it: a
// missing namespace gives an error wrapping ErrNamespaceAbsent.
func OpenNamespace(name string) (*Namespace, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	fd, err := openNamed(name)
	if err != nil {
		return nil, err
	}
	return bind(name, fd)
}

// EnsureNamespace opens the named namespace, creating it when absent, and
// converges it to what amphora-netns.service sets up: loopback up and the
// per-namespace sysctls (forwarding, non-local bind, IPVS knobs when the
// IPVS module is loaded). Root-namespace sysctls are not touched.
// created reports whether this call created the namespace.
func EnsureNamespace(name string) (ns *Namespace, created bool, err error) {
	if err := checkName(name); err != nil {
		return nil, false, err
	}
	fd, err := openNamed(name)
	if errors.Is(err, ErrNamespaceAbsent) {
		fd, err = createNamed(name)
		created = err == nil
		if errors.Is(err, unix.EEXIST) { // created concurrently (ip netns add)
			fd, err = openNamed(name)
		}
	}
	if err != nil {
		return nil, false, err
	}
	ns, err = bind(name, fd)
	if err != nil {
		return nil, false, err
	}
	if err := ns.setup(); err != nil {
		ns.Close()
		return nil, false, err
	}
	return ns, created, nil
}

// DeleteNamespace unmounts and removes a named namespace (like
// `ip netns del`). Links of physical devices go back to the root
// namespace when the last reference disappears; veths are destroyed.
func DeleteNamespace(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	p := filepath.Join(runDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// Name is the namespace name.
func (n *Namespace) Name() string { return n.name }

// Handle is the netlink handle bound to the namespace.
func (n *Namespace) Handle() *netlink.Handle { return n.nl }

// Fd is the namespace file descriptor (valid until Close).
func (n *Namespace) Fd() int { return int(n.fd) }

// Close releases the netlink handle and the namespace descriptor.
func (n *Namespace) Close() error {
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.fd.IsOpen() {
		return n.fd.Close()
	}
	return nil
}

// Do runs fn on a dedicated OS thread switched into the namespace, for the
// few things that need it: creating sockets, writing /proc/sys/net values,
// starting programs that must run in the namespace. The thread is switched
// back before it is unlocked; a thread that cannot be restored is never
// unlocked (the runtime then ends it with its goroutine).
func (n *Namespace) Do(fn func() error) error {
	return nsthread.Do(n.fd, fn)
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid namespace name %q", name)
	}
	return nil
}

// openNamed opens /run/netns/<name> and checks that it really is a
// namespace (a leftover plain file is treated as absent).
func openNamed(name string) (vnetns.NsHandle, error) {
	p := filepath.Join(runDir, name)
	fd, err := vnetns.GetFromPath(p)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return vnetns.None(), fmt.Errorf("netns %s: %w", name, ErrNamespaceAbsent)
		}
		return vnetns.None(), fmt.Errorf("open netns %s: %w", name, err)
	}
	if !isNamespaceFd(int(fd)) {
		fd.Close()
		return vnetns.None(), fmt.Errorf("netns %s (%s is not a namespace mount): %w", name, p, ErrNamespaceAbsent)
	}
	return fd, nil
}

func isNamespaceFd(fd int) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// createNamed creates the named namespace like `ip netns add`: a new
// namespace made by a dedicated locked thread, bind-mounted on
// /run/netns/<name>; the thread is restored before it is unlocked.
func createNamed(name string) (vnetns.NsHandle, error) {
	p := filepath.Join(runDir, name)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return vnetns.None(), fmt.Errorf("create %s: %w", runDir, err)
	}
	makeRunDirShared()
	// A leftover file that is not a namespace mount (crash between create
	// and mount, or an `ip netns add` from another mount namespace).
	if _, err := os.Lstat(p); err == nil {
		_ = unix.Unmount(p, unix.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			return vnetns.None(), fmt.Errorf("remove stale %s: %w", p, err)
		}
	}
	fd := vnetns.None()
	err := nsthread.Run(func() error {
		var err error
		fd, err = vnetns.NewNamed(name) // switches this thread on success and on late failures
		return err
	})
	if err != nil {
		if fd.IsOpen() {
			fd.Close()
		}
		fd, err = vnetns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		// NewNamed may leave the empty mount-point file behind.
		if _, err := os.Lstat(p); err == nil {
			if fd, err := vnetns.GetFromPath(p); err == nil {
				if !isNamespaceFd(int(fd)) {
					_ = os.Remove(p)
				}
				fd.Close()
			}
		}
	}
	return fd, err
}

// makeRunDirShared makes /run/netns a shared mount point, as iproute2 does,
// so that namespaces created later are visible in mount namespaces that
// already exist (units started with `ip netns exec`, for instance).
// Best effort: failures only mean reduced propagation.
func makeRunDirShared() {
	if err := unix.Mount("", runDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err == nil {
		return
	}
	if err := unix.Mount(runDir, runDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return
	}
	_ = unix.Mount("", runDir, "none", unix.MS_SHARED|unix.MS_REC, "")
}

func bind(name string, fd vnetns.NsHandle) (*Namespace, error) {
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("netlink handle in netns %s: %w", name, err)
	}
	return &Namespace{name: name, fd: fd, nl: h}, nil
}

// namespaceSysctls are the values amphora-netns.service sets inside the
// namespace (plus the non-local binds of the image's sysctl.d that its
// `sysctl --system` loads there). Keys whose file does not exist (IPv6
// disabled, IPVS module not loaded) are skipped.
var namespaceSysctls = []struct{ key, value string }{
	{"net/ipv4/ip_forward", "1"},
	{"net/ipv6/conf/all/forwarding", "1"},
	{"net/ipv4/ip_nonlocal_bind", "1"},
	{"net/ipv6/ip_nonlocal_bind", "1"},
	{"net/ipv4/vs/conntrack", "1"},
	{"net/ipv4/vs/expire_nodest_conn", "1"},
	{"net/ipv4/vs/expire_quiescent_template", "1"},
	// systemd's sysctl.d default, which `sysctl --system` loads in the
	// reference's namespace: removing a primary address promotes a
	// secondary of its subnet instead of deleting them all (a plug that
	// replaces an interface's address relies on it).
	{"net/ipv4/conf/all/promote_secondaries", "1"},
	{"net/ipv4/conf/default/promote_secondaries", "1"},
}

func (n *Namespace) setup() error {
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netns %s: lo: %w", n.name, err)
	}
	if lo.Attrs().Flags&unix.IFF_UP == 0 {
		if err := n.nl.LinkSetUp(lo); err != nil {
			return fmt.Errorf("netns %s: set lo up: %w", n.name, err)
		}
	}
	return n.Do(func() error {
		var errs []error
		for _, s := range namespaceSysctls {
			if err := writeSysctl(s.key, s.value); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// writeSysctl writes a /proc/sys value of the calling thread's network
// namespace (call it inside Do). It skips the write when the value is
// already set.
func writeSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", key)
	cur, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(cur)) == value {
		return nil
	}
	// procfs: a plain write is the interface (no atomic rename possible).
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, werr)
	}
	return cerr
}

// retryDump runs a netlink dump again when the kernel reports that it was
// interrupted by a concurrent change.
func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		if v, err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}
