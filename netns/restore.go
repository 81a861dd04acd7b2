package netns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// Two small state files next to the plugged-interfaces list tell the
// restore at an agent start what it may remove (see Up):
//
//   - <plugged>.converge lists the interfaces whose plug (or explicit
//     `interface up <name>`) is under way, "<name> [<mac>]" per line. It
//     is written before the interface file changes and cleared once the
//     interface matches it, so a crash in between leaves the name for
//     the next restore, which then finishes the job, stale addresses
//     included, or, when the NIC of a new plug was not recorded yet,
//     undoes it (the controller, which got no answer, plugs again).
//   - <plugged>.netns identifies the namespace the last restore ran in
//     (boot id and namespace inode). A namespace that does not match is
//     new: the machine rebooted or the namespace was recreated, and
//     nothing in it comes from anyone else yet.

func (m *Manager) convergePath() string { return m.cfg.PluggedInterfacesFile + ".converge" }
func (m *Manager) netnsPath() string    { return m.cfg.PluggedInterfacesFile + ".netns" }

// readConverge returns the interfaces marked for convergence, with the
// MAC of the NIC a plug is bringing in ("" when none).
func (m *Manager) readConverge() map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(m.convergePath())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("cannot read the pending interface changes", "path", m.convergePath(), "err", err)
		}
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || validIfName(f[0]) != nil {
			continue
		}
		out[f[0]] = ""
		if len(f) > 1 {
			if mac, err := normalizeMAC(f[1]); err == nil {
				out[f[0]] = mac
			}
		}
	}
	return out
}

func (m *Manager) writeConverge(names map[string]string) error {
	if len(names) == 0 {
		return fsutil.Remove(m.convergePath())
	}
	list := make([]string, 0, len(names))
	for n, mac := range names {
		list = append(list, strings.TrimSpace(n+" "+mac))
	}
	sort.Strings(list)
	if err := os.MkdirAll(filepath.Dir(m.convergePath()), 0o755); err != nil {
		return err
	}
	return fsutil.WriteFile(m.convergePath(), []byte(strings.Join(list, "\n")+"\n"), 0o644)
}

// markConverge records, durably and before the change, that name is
// being changed, and which NIC (mac, "" for none) a plug brings in as
// name. Called with the lock held.
func (m *Manager) markConverge(name, mac string) error {
	if mac != "" {
		if norm, err := normalizeMAC(mac); err == nil {
			mac = norm
		}
	}
	names := m.readConverge()
	if cur, ok := names[name]; ok && cur == mac {
		return nil
	}
	names[name] = mac
	if err := m.writeConverge(names); err != nil {
		return fmt.Errorf("record the change of %s: %w", name, err)
	}
	return nil
}

// doneConverge clears the mark of name. A failure is logged: the next
// restore converges the interface once more, which is harmless.
func (m *Manager) doneConverge(name string) {
	names := m.readConverge()
	if _, ok := names[name]; !ok {
		return
	}
	delete(names, name)
	if err := m.writeConverge(names); err != nil {
		m.log.Warn("cannot clear the pending change of an interface", "interface", name, "err", err)
	}
}

// namespaceID identifies a namespace for this boot: the kernel's boot id
// and the namespace's inode.
func namespaceID(ns *Namespace) (string, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Fstat(ns.Fd(), &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %d\n", strings.TrimSpace(string(boot)), st.Ino), nil
}

// sameNamespace reports whether the last restore ran in this namespace.
func (m *Manager) sameNamespace(ns *Namespace) bool {
	id, err := namespaceID(ns)
	if err != nil {
		return false
	}
	data, err := os.ReadFile(m.netnsPath())
	return err == nil && string(data) == id
}

// recordNamespace notes that a restore ran in ns.
func (m *Manager) recordNamespace(ns *Namespace) {
	id, err := namespaceID(ns)
	if err == nil && m.sameNamespace(ns) {
		return
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(m.netnsPath()), 0o755)
	}
	if err == nil {
		err = fsutil.WriteFile(m.netnsPath(), []byte(id), 0o644)
	}
	if err != nil {
		m.log.Warn("cannot record the restored namespace; the next start converges every interface", "path", m.netnsPath(), "err", err)
	}
}

// removeTemps removes, under the lock, what a crash in the middle of a
// write left among the package's files: temporary files of the interface
// files, of the plugged-interfaces list and its state files, of the
// nftables rules, and a rules candidate that was never loaded.
func (m *Manager) removeTemps() {
	own := map[string]map[string]bool{}
	add := func(path string) {
		dir, base := filepath.Split(path)
		if own[dir] == nil {
			own[dir] = map[string]bool{}
		}
		own[dir][base] = true
	}
	for _, p := range []string{m.cfg.PluggedInterfacesFile, m.convergePath(), m.netnsPath(), m.cfg.RulesFile, m.cfg.RulesFile + ".new"} {
		add(p)
	}
	report := func(dir string, removed []string, err error) {
		if len(removed) > 0 {
			m.log.Info("temporary files of interrupted writes removed", "dir", dir, "files", strings.Join(removed, " "))
		}
		if err != nil {
			m.log.Warn("cannot remove temporary files of interrupted writes", "dir", dir, "err", err)
		}
	}
	removed, err := fsutil.RemoveTemps(m.cfg.NetworkDir, func(t string) bool { return strings.HasSuffix(t, ".json") })
	report(m.cfg.NetworkDir, removed, err)
	for dir, bases := range own {
		removed, err := fsutil.RemoveTemps(dir, func(t string) bool { return bases[t] })
		report(dir, removed, err)
	}
	if _, err := os.Lstat(m.cfg.RulesFile + ".new"); err == nil {
		m.log.Info("removing nftables rules whose installation was interrupted", "path", m.cfg.RulesFile+".new")
		if err := fsutil.Remove(m.cfg.RulesFile + ".new"); err != nil {
			m.log.Warn("cannot remove interrupted nftables rules", "err", err)
		}
	}
}

// dropInterruptedPlugs undoes the new plugs a crash interrupted before
// their NIC was recorded: the interface file was written, but the NIC is
// neither in the namespace nor in the plugged-interfaces list, so it is
// still in the root namespace where the controller's next plug finds it.
// The file is removed (and the name dropped from files). It returns the
// names removed.
func (m *Manager) dropInterruptedPlugs(ns *Namespace, pending map[string]string, files map[string]*InterfaceFile) []string {
	plugged, err := m.readPlugged()
	if err != nil {
		return nil
	}
	recorded := map[string]bool{}
	for _, e := range plugged {
		recorded[e.MAC+" "+e.Name] = true
	}
	var dropped []string
	for name, mac := range pending {
		if mac == "" || files[name] == nil || recorded[mac+" "+name] {
			continue
		}
		if _, err := ns.Handle().LinkByName(name); err == nil {
			continue
		}
		m.log.Warn("undoing a plug a crash interrupted before its NIC was recorded", "interface", name, "mac", mac)
		if err := fsutil.Remove(m.filePath(name)); err != nil {
			m.log.Error("cannot remove the interface file of an interrupted plug", "interface", name, "err", err)
			continue
		}
		delete(files, name)
		m.doneConverge(name)
		dropped = append(dropped, name)
	}
	return dropped
}
