package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Config parameterises a Manager. Zero fields get the reference's values.
type Config struct {
	// Namespace is the data-plane namespace (DefaultNamespace).
	Namespace string
	// NetworkDir holds the interface files (/etc/octavia/interfaces).
	NetworkDir string
	// PluggedInterfacesFile lists "<mac> <name>" of plugged NICs
	// (/var/lib/octavia/plugged_interfaces).
	PluggedInterfacesFile string
	// RulesFile is the nftables allow-list (/var/lib/octavia/nftables-vip.rules).
	RulesFile string
	// Topology returns the load-balancer topology (SINGLE or
	// ACTIVE_STANDBY) when a VIP file is written; nil means SINGLE. Pass
	// e.g. func() string { return store.Current().LoadBalancerTopology }.
	Topology func() string
	// PCIRescanPath is poked when a MAC is not found (normally
	// /sys/bus/pci/rescan; only if the file exists; "" disables it).
	PCIRescanPath string
	// PCIRescanInterval rate-limits the rescan (10s).
	PCIRescanInterval time.Duration
	// NFTPath is the nft program (/usr/sbin/nft).
	NFTPath string
	// DHClientPath is the DHCP client for "dhcp" entries (/sbin/dhclient).
	DHClientPath string
	// AdvertiseCount and AdvertiseInterval: how often GARP/NA frames are
	// sent (3 times, 200ms apart).
	AdvertiseCount    int
	AdvertiseInterval time.Duration
	// TentativeTimeout bounds the wait for IPv6 duplicate address
	// detection of file addresses added by others (10s).
	TentativeTimeout time.Duration
	// Logger receives structured logs (discarded when nil).
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.NetworkDir == "" {
		c.NetworkDir = "/etc/octavia/interfaces"
	}
	if c.PluggedInterfacesFile == "" {
		c.PluggedInterfacesFile = "/var/lib/octavia/plugged_interfaces"
	}
	if c.RulesFile == "" {
		c.RulesFile = "/var/lib/octavia/nftables-vip.rules"
	}
	if c.PCIRescanInterval == 0 {
		c.PCIRescanInterval = 10 * time.Second
	}
	if c.NFTPath == "" {
		c.NFTPath = "/usr/sbin/nft"
	}
	if c.DHClientPath == "" {
		c.DHClientPath = "/sbin/dhclient"
	}
	if c.AdvertiseCount == 0 {
		c.AdvertiseCount = 3
	}
	if c.AdvertiseInterval == 0 {
		c.AdvertiseInterval = 200 * time.Millisecond
	}
	if c.TentativeTimeout == 0 {
		c.TentativeTimeout = 10 * time.Second
	}
}

// Manager plugs NICs into the data-plane namespace and keeps them
// configured from their interface files. Its methods are safe for
// concurrent use; changes are serialised.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // serialises every change of files and kernel state (see lock)

	rescanMu   sync.Mutex
	lastRescan time.Time
}

// New returns a Manager for cfg.
func New(cfg Config) *Manager {
	cfg.defaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Manager{cfg: cfg, log: log}
}

// lock serialises a change of files or kernel state within the process
// and with other processes: at boot, amphora-netns.service's "interface up
// all" and the agent's own restore may run at the same time. The
// cross-process lock is a separate file next to the plugged-interfaces
// list, never a file that gets replaced. It returns the unlock function.
func (m *Manager) lock() func() {
	m.mu.Lock()
	path := m.cfg.PluggedInterfacesFile + ".lock"
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err == nil {
		for {
			if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX); !errors.Is(err, syscall.EINTR) {
				break
			}
		}
	}
	if err != nil {
		// The directory may not exist yet on a fresh amphora; the
		// in-process lock still serialises this agent.
		m.log.Debug("interface lock file unavailable", "path", path, "err", err)
		if f != nil {
			f.Close()
			f = nil
		}
	}
	return func() {
		if f != nil {
			f.Close() // releases the flock
		}
		m.mu.Unlock()
	}
}

// Namespace is the name of the data-plane namespace.
func (m *Manager) Namespace() string { return m.cfg.Namespace }

// EnsureNamespace creates the data-plane namespace if needed and applies
// its loopback and sysctl settings.
func (m *Manager) EnsureNamespace() error {
	ns, created, err := EnsureNamespace(m.cfg.Namespace)
	if err != nil {
		return err
	}
	if created {
		m.log.Info("network namespace created", "ns", m.cfg.Namespace)
	}
	return ns.Close()
}

func (m *Manager) ensure() (*Namespace, error) {
	ns, created, err := EnsureNamespace(m.cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("prepare network namespace: %w", err)
	}
	if created {
		m.log.Info("network namespace created", "ns", m.cfg.Namespace)
	}
	return ns, nil
}

func (m *Manager) topology() string {
	if m.cfg.Topology == nil {
		return TopologySingle
	}
	if t := m.cfg.Topology(); t != "" {
		return t
	}
	return TopologySingle
}

// WriteLoopbackFile writes the lo interface file (at every agent start in
// the reference), so that Up("all") brings lo up in the namespace.
func (m *Manager) WriteLoopbackFile() error {
	defer m.lock()()
	return m.writeInterfaceFile(loopbackFile())
}

// PlugResult is a successful plug.
type PlugResult struct {
	Interface string   // name inside the namespace
	Details   string   // the "details" text of the 202 answer
	Warnings  []string // partial failures (routes that could not be added, ...)
}

// PlugVIP plugs the VIP port (POST /1.0/plug/vip/<vip>): the NIC with the
// request's MAC is moved from the root namespace into the data-plane
// namespace as eth1, its VIP interface file is written and applied.
//
// Errors: *BadRequestError (invalid request), ErrInterfaceExists (the MAC
// is already in the namespace), ErrNoInterface (MAC not found; a PCI
// rescan was triggered), *PlugError (found but could not be configured;
// files and NIC placement are rolled back), anything else is internal.
func (m *Manager) PlugVIP(ctx context.Context, req *PlugVIPRequest) (*PlugResult, error) {
	plan, err := req.plan()
	if err != nil {
		return nil, err
	}
	topology := m.topology()
	defer m.lock()()
	ns, err := m.ensure()
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	if l, err := linkByMAC(ns.Handle(), req.MACAddress); err != nil {
		return nil, err
	} else if l != nil {
		return nil, ErrInterfaceExists
	}
	root, err := m.rootLinkByMAC(req.MACAddress)
	if err != nil {
		return nil, err
	}
	file := vipFile(primaryInterface, req.MTU, plan, nil, topology, req.IsSRIOV)
	warn, err := m.plugNew(ctx, ns, root, req.MACAddress, file, MsgPlugVIPFailed)
	if err != nil {
		return nil, err
	}
	texts := make([]string, 0, len(plan.vips))
	for _, v := range plan.vips {
		texts = append(texts, v.text)
	}
	m.log.Info("VIP plugged", "ns", ns.Name(), "interface", primaryInterface, "mac", req.MACAddress, "vips", strings.Join(texts, ","))
	return &PlugResult{
		Interface: primaryInterface,
		Details:   fmt.Sprintf("VIPs plugged on interface %s: %s", primaryInterface, strings.Join(texts, ", ")),
		Warnings:  warn,
	}, nil
}

// PlugNetwork plugs a member-network port, or updates a port already in
// the namespace (POST /1.0/plug/network). A new NIC becomes the first
// free ethN (N ≥ 2). With VIPNetInfo on an existing port, its VIP file is
// rewritten with the fixed IPs as extra addresses. The fixed IPs are
// advertised (GARP/NA) afterwards.
//
// Errors: *BadRequestError, ErrNoInterface, *PlugError, internal.
func (m *Manager) PlugNetwork(ctx context.Context, req *PlugNetworkRequest) (*PlugResult, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	res, err := m.plugNetwork(ctx, req)
	if err != nil {
		return nil, err
	}
	for _, f := range req.FixedIPs {
		if err := m.Advertise(ctx, f.IPAddress); err != nil {
			m.log.Warn("member address not advertised", "ns", m.cfg.Namespace, "interface", res.Interface, "address", f.IPAddress, "err", err)
		}
	}
	return res, nil
}

func (m *Manager) plugNetwork(ctx context.Context, req *PlugNetworkRequest) (*PlugResult, error) {
	topology := m.topology()
	defer m.lock()()
	ns, err := m.ensure()
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	existing, err := linkByMAC(ns.Handle(), req.MACAddress)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		name := existing.Attrs().Name
		var file *InterfaceFile
		failMsg := MsgPlugNetFailed
		if v := req.VIPNetInfo; v != nil {
			plan, err := buildVIPPlan(v.VIP, v.SubnetCIDR, v.Gateway, v.HostRoutes, v.AdditionalVIPs, v.VRRPIP, MsgInvalidPortInfo)
			if err != nil {
				return nil, err
			}
			file = vipFile(name, req.MTU, plan, req.FixedIPs, topology, req.IsSRIOV)
			failMsg = MsgPlugVIPNetFailed
		} else {
			file = backendFile(name, req.MTU, req.FixedIPs, req.IsSRIOV)
		}
		if err := m.writeInterfaceFile(file); err != nil {
			return nil, err
		}
		if err := m.recordPlugged(req.MACAddress, name); err != nil {
			return nil, err
		}
		var warn warnings
		if err := m.upInterface(ctx, ns, file, &warn); err != nil {
			return nil, &PlugError{Message: failMsg, Details: err.Error(), Err: err}
		}
		m.log.Info("interface updated", "ns", ns.Name(), "interface", name, "mac", req.MACAddress)
		return &PlugResult{Interface: name, Details: "Updated existing interface " + name, Warnings: warn}, nil
	}
	root, err := m.rootLinkByMAC(req.MACAddress)
	if err != nil {
		return nil, err
	}
	name, err := nextFreeName(ns.Handle())
	if err != nil {
		return nil, err
	}
	file := backendFile(name, req.MTU, req.FixedIPs, req.IsSRIOV)
	warn, err := m.plugNew(ctx, ns, root, req.MACAddress, file, MsgPlugNetFailed)
	if err != nil {
		return nil, err
	}
	m.log.Info("network plugged", "ns", ns.Name(), "interface", name, "mac", req.MACAddress)
	return &PlugResult{Interface: name, Details: "Plugged on interface " + name, Warnings: warn}, nil
}

// plugNew writes the interface file and the plugged-interfaces entry,
// moves the root-namespace link into the namespace under the file's name
// and applies the file. On failure every step is undone (the NIC goes
// back to the root namespace under its old name, files are restored), so
// that the controller's retry starts from scratch.
func (m *Manager) plugNew(ctx context.Context, ns *Namespace, root netlink.Link, mac string, file *InterfaceFile, failMsg string) (w warnings, err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	path := m.filePath(file.Name)
	oldFile, rerr := os.ReadFile(path)
	fileExisted := rerr == nil
	if err := m.writeInterfaceFile(file); err != nil {
		return nil, err
	}
	undo = append(undo, func() {
		var uerr error
		if fileExisted {
			uerr = fsutil.WriteFile(path, oldFile, 0o644)
		} else {
			uerr = fsutil.Remove(path)
		}
		if uerr != nil {
			m.log.Error("restore interface file failed", "interface", file.Name, "err", uerr)
		}
	})
	oldPlugged, rerr := os.ReadFile(m.cfg.PluggedInterfacesFile)
	pluggedExisted := rerr == nil
	if err := m.recordPlugged(mac, file.Name); err != nil {
		return nil, fmt.Errorf("update %s: %w", m.cfg.PluggedInterfacesFile, err)
	}
	undo = append(undo, func() {
		if uerr := m.restorePlugged(oldPlugged, pluggedExisted); uerr != nil {
			m.log.Error("restore plugged interfaces file failed", "err", uerr)
		}
	})
	rootName := root.Attrs().Name
	if err := setLinkNetnsName(nil, root.Attrs().Index, ns.Fd(), file.Name); err != nil {
		return nil, &PlugError{Message: failMsg, Details: fmt.Sprintf("move %s into namespace %s as %s: %v", rootName, ns.Name(), file.Name, err), Err: err}
	}
	undo = append(undo, func() {
		if uerr := m.moveBack(ns, file.Name, rootName); uerr != nil {
			m.log.Error("moving NIC back to the root namespace failed", "ns", ns.Name(), "interface", file.Name, "err", uerr)
		}
	})
	if err := m.upInterface(ctx, ns, file, &w); err != nil {
		return nil, &PlugError{Message: failMsg, Details: err.Error(), Err: err}
	}
	return w, nil
}

// moveBack returns a link from the namespace to the root namespace.
func (m *Manager) moveBack(ns *Namespace, name, rootName string) error {
	l, err := ns.Handle().LinkByName(name)
	if err != nil {
		return err
	}
	_ = ns.Handle().LinkSetDown(l)
	rootFd, err := rootNamespaceFd()
	if err != nil {
		return err
	}
	defer rootFd.Close()
	// The request must come from the namespace holding the link: use a
	// netlink socket bound there (no thread switch for netlink work).
	sock, err := nl.GetNetlinkSocketAt(ns.fd, vnetns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket in netns %s: %w", ns.Name(), err)
	}
	defer sock.Close()
	return setLinkNetnsName(sock, l.Attrs().Index, int(rootFd), rootName)
}

// rootNamespaceFd opens the agent's own (root) network namespace.
func rootNamespaceFd() (vnetns.NsHandle, error) {
	runtime.LockOSThread() // the thread cannot be switched by others while we read it
	defer runtime.UnlockOSThread()
	return vnetns.Get()
}

// setLinkNetnsName moves a link into the namespace targetFd and renames it
// there, in one netlink request (the name is checked in the target
// namespace). sock is a netlink socket of the namespace that holds the
// link; nil means the agent's own (root) namespace.
func setLinkNetnsName(sock *nl.NetlinkSocket, index, targetFd int, name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	if sock != nil {
		req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	b := make([]byte, 4)
	nl.NativeEndian().PutUint32(b, uint32(targetFd))
	req.AddData(nl.NewRtAttr(unix.IFLA_NET_NS_FD, b))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// linkByMAC finds the link with the MAC through h (nil, nil when absent).
func linkByMAC(h *netlink.Handle, mac string) (netlink.Link, error) {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac) {
			return l, nil
		}
	}
	return nil, nil
}

// rootLinkByMAC finds the NIC in the root namespace; when absent it pokes
// the PCI bus (rate-limited) and returns ErrNoInterface.
func (m *Manager) rootLinkByMAC(mac string) (netlink.Link, error) {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list root links: %w", err)
	}
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac) {
			return l, nil
		}
	}
	m.log.Info("no interface with this MAC yet", "mac", mac)
	m.rescanPCI()
	return nil, ErrNoInterface
}

// rescanPCI asks the kernel to re-enumerate the PCI bus (hot-plugged NICs
// Nova attached but the guest did not notice), at most once per
// PCIRescanInterval.
func (m *Manager) rescanPCI() {
	m.rescanMu.Lock()
	defer m.rescanMu.Unlock()
	if !m.lastRescan.IsZero() && time.Since(m.lastRescan) < m.cfg.PCIRescanInterval {
		return
	}
	st, err := os.Stat(m.cfg.PCIRescanPath)
	if err != nil || !st.Mode().IsRegular() {
		return
	}
	m.lastRescan = time.Now()
	// sysfs: a plain write is the interface.
	f, err := os.OpenFile(m.cfg.PCIRescanPath, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("1")
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		m.log.Warn("PCI rescan failed", "path", m.cfg.PCIRescanPath, "err", err)
	}
}

// nextFreeName is the first ethN, N ≥ 2, not used in the namespace.
func nextFreeName(h *netlink.Handle) (string, error) {
	links, err := retryDump(h.LinkList)
	if err != nil {
		return "", fmt.Errorf("list links: %w", err)
	}
	used := map[string]bool{}
	for _, l := range links {
		used[l.Attrs().Name] = true
	}
	for n := 2; n < 1<<16; n++ {
		name := fmt.Sprintf("eth%d", n)
		if !used[name] {
			return name, nil
		}
	}
	return "", errors.New("no free interface name")
}

// Up applies the interface file of name, or of every file when name is
// "all" (the `amphora-interface up` command and boot-time restoration).
// NICs recorded in the plugged-interfaces file that are in the root
// namespace (after a reboot) are first moved into the namespace under
// their recorded names (MACs compared case-insensitively). With "all",
// files whose NIC is gone are reported as warnings, not failures.
//
// Errors: *InterfaceError (per-interface failures, or NotFound for an
// unknown name); anything else is internal. Warnings are returned on
// success and on failure.
func (m *Manager) Up(ctx context.Context, name string) ([]string, error) {
	return m.upDown(ctx, "up", name)
}

// Down undoes the interface file of name, or of every file ("all").
func (m *Manager) Down(ctx context.Context, name string) ([]string, error) {
	return m.upDown(ctx, "down", name)
}

func (m *Manager) upDown(ctx context.Context, action, name string) ([]string, error) {
	defer m.lock()()
	files, order, bad, err := m.readInterfaceFiles()
	if err != nil {
		return nil, err
	}
	ierr := &InterfaceError{Action: action}
	var targets []string
	switch {
	case name == "all":
		targets = order
		for n, e := range bad {
			ierr.Failures = append(ierr.Failures, InterfaceFailure{Interface: n, Err: e})
		}
	case files[name] != nil:
		targets = []string{name}
	case bad[name] != nil:
		ierr.Failures = append(ierr.Failures, InterfaceFailure{Interface: name, Err: bad[name]})
		return nil, ierr
	default:
		ierr.NotFound = name
		return nil, ierr
	}
	var warn warnings
	var ns *Namespace
	if action == "up" {
		ns, err = m.ensure()
		if err != nil {
			return nil, err
		}
		m.restoreNICs(ns, targets, &warn)
	} else {
		ns, err = OpenNamespace(m.cfg.Namespace)
		if errors.Is(err, ErrNamespaceAbsent) {
			return []string{fmt.Sprintf("namespace %s does not exist: nothing to bring down", m.cfg.Namespace)}, nil
		}
		if err != nil {
			return nil, err
		}
	}
	defer ns.Close()
	for _, n := range targets {
		f := files[n]
		if name == "all" {
			if _, err := ns.Handle().LinkByName(n); err != nil {
				warn.add("%s: interface file present but no such link in namespace %s (NIC detached?)", n, ns.Name())
				continue
			}
		}
		if action == "up" {
			err = m.upInterface(ctx, ns, f, &warn)
		} else {
			err = m.downInterface(ctx, ns, f, &warn)
		}
		if err != nil {
			ierr.Failures = append(ierr.Failures, InterfaceFailure{Interface: n, Err: err})
			m.log.Error("interface "+action+" failed", "ns", ns.Name(), "interface", n, "err", err)
		}
	}
	if len(ierr.Failures) > 0 {
		return warn, ierr
	}
	return warn, nil
}

// restoreNICs moves NICs listed in the plugged-interfaces file from the
// root namespace into the namespace under their recorded names (what
// amphora-netns.service does at boot), for the given interface names.
func (m *Manager) restoreNICs(ns *Namespace, names []string, warn *warnings) {
	entries, err := m.readPlugged()
	if err != nil {
		warn.add("read %s: %v", m.cfg.PluggedInterfacesFile, err)
		return
	}
	if len(entries) == 0 {
		return
	}
	wanted := map[string]bool{}
	for _, n := range names {
		wanted[n] = true
	}
	nsLinks, err := retryDump(ns.Handle().LinkList)
	if err != nil {
		warn.add("list links in namespace %s: %v", ns.Name(), err)
		return
	}
	inNS := map[string]bool{}
	nameUsed := map[string]bool{}
	for _, l := range nsLinks {
		inNS[strings.ToLower(l.Attrs().HardwareAddr.String())] = true
		nameUsed[l.Attrs().Name] = true
	}
	rootLinks, err := retryDump(netlink.LinkList)
	if err != nil {
		warn.add("list root links: %v", err)
		return
	}
	inRoot := map[string]netlink.Link{}
	for _, l := range rootLinks {
		mac := strings.ToLower(l.Attrs().HardwareAddr.String())
		if _, dup := inRoot[mac]; !dup {
			inRoot[mac] = l
		}
	}
	for _, e := range entries {
		if !wanted[e.Name] || inNS[e.MAC] {
			continue
		}
		l, ok := inRoot[e.MAC]
		if !ok {
			continue
		}
		if nameUsed[e.Name] {
			warn.add("cannot restore %s (%s): the name is taken in namespace %s", e.Name, e.MAC, ns.Name())
			continue
		}
		if err := setLinkNetnsName(nil, l.Attrs().Index, ns.Fd(), e.Name); err != nil {
			warn.add("move %s (%s) into namespace %s as %s: %v", l.Attrs().Name, e.MAC, ns.Name(), e.Name, err)
			continue
		}
		inNS[e.MAC], nameUsed[e.Name] = true, true
		m.log.Info("NIC restored into namespace", "ns", ns.Name(), "interface", e.Name, "mac", e.MAC)
	}
}
