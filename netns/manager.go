package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
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
	ns, _, err := m.ensureCreated()
	return ns, err
}

// ensureCreated is ensure that also reports whether it created the
// namespace.
func (m *Manager) ensureCreated() (*Namespace, bool, error) {
	ns, created, err := EnsureNamespace(m.cfg.Namespace)
	if err != nil {
		return nil, false, fmt.Errorf("prepare network namespace: %w", err)
	}
	if created {
		m.log.Info("network namespace created", "ns", m.cfg.Namespace)
	}
	return ns, created, nil
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
	if cur, err := m.readInterfaceFile("lo"); err == nil {
		if want, err := loopbackFile().Marshal(); err == nil {
			if have, err := cur.Marshal(); err == nil && bytes.Equal(have, want) {
				return nil // already there: no write at every start
			}
		}
	}
	return m.writeInterfaceFile(loopbackFile())
}

// Up applies the interface file of name, or of every file when name is
// "all" (the `amphora-interface up` command, boot-time restoration and
// the restore at every agent start). NICs recorded in the
// plugged-interfaces file that are in the root namespace (after a
// reboot) are first moved into the namespace under their recorded names
// (MACs compared case-insensitively). With "all", files whose NIC is gone
// are reported as warnings, not failures.
//
// A named interface is converged with its file (what the file does not
// list is removed). "all" converges only where removing is safe: in a
// namespace that is new since the last restore (boot: nobody else has
// added anything yet) and for interfaces whose plug a crash interrupted;
// everywhere else it only adds what is missing, so restarting the agent
// never removes an address, route or rule someone else added, and an
// interface that matches its file is left alone.
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
	if action == "up" && name == "all" {
		m.removeTemps()
	}
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
	modes := map[string]applyMode{}
	if action == "up" {
		var created bool
		ns, created, err = m.ensureCreated()
		if err != nil {
			return nil, err
		}
		if name == "all" {
			fresh := created || !m.sameNamespace(ns)
			pending := m.readConverge()
			m.restoreNICs(ns, targets, &warn)
			if dropped := m.dropInterruptedPlugs(ns, pending, files); len(dropped) > 0 {
				targets = slices.DeleteFunc(targets, func(n string) bool { return slices.Contains(dropped, n) })
			}
			// a plug interrupted before it wrote the interface file
			// changed nothing: only its mark is left
			for n := range pending {
				if files[n] == nil && bad[n] == nil {
					m.doneConverge(n)
				}
			}
			for _, n := range targets {
				_, marked := pending[n]
				modes[n] = restore
				if fresh || marked {
					modes[n] = converge
				}
			}
			if fresh {
				m.log.Info("namespace new since the last restore: interfaces converge with their files", "ns", ns.Name())
			}
		} else {
			modes[name] = converge
			if err := m.markConverge(name, ""); err != nil {
				ns.Close()
				return nil, err
			}
			m.restoreNICs(ns, targets, &warn)
		}
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
			err = m.upInterface(ctx, ns, f, modes[n], &warn)
		} else {
			err = m.downInterface(ctx, ns, f, &warn)
		}
		if err != nil {
			ierr.Failures = append(ierr.Failures, InterfaceFailure{Interface: n, Err: err})
			m.log.Error("interface "+action+" failed", "ns", ns.Name(), "interface", n, "err", err)
			continue
		}
		if action == "up" && modes[n] == converge {
			m.doneConverge(n)
		}
	}
	if action == "up" && name == "all" {
		m.recordNamespace(ns)
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
