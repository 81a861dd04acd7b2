package netns

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

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

// Traffic are the byte counters of one NIC.
type Traffic struct {
	TX, RX uint64
}

// Traffic returns the byte counters of the eth* links of the data-plane
// namespace (GET /1.0/details "networks"). A missing namespace has none;
// it is never created here (GAPS D1).
func (m *Manager) Traffic() map[string]Traffic {
	out := map[string]Traffic{}
	ns, err := OpenNamespace(m.cfg.Namespace)
	if err != nil {
		return out
	}
	defer ns.Close()
	links, err := retryDump(ns.Handle().LinkList)
	if err != nil {
		return out
	}
	for _, l := range links {
		a := l.Attrs()
		if strings.HasPrefix(a.Name, "eth") && a.Statistics != nil {
			out[a.Name] = Traffic{TX: a.Statistics.TxBytes, RX: a.Statistics.RxBytes}
		}
	}
	return out
}
