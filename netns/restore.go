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
//     `interface up <name>`) is under way. It is written before the
//     interface file changes and cleared once the interface matches it,
//     so a crash in between leaves the name for the next restore, which
//     then finishes the job, stale addresses included.
//   - <plugged>.netns identifies the namespace the last restore ran in
//     (boot id and namespace inode). A namespace that does not match is
//     new: the machine rebooted or the namespace was recreated, and
//     nothing in it comes from anyone else yet.

func (m *Manager) convergePath() string { return m.cfg.PluggedInterfacesFile + ".converge" }
func (m *Manager) netnsPath() string    { return m.cfg.PluggedInterfacesFile + ".netns" }

// readConverge returns the interfaces marked for convergence.
func (m *Manager) readConverge() map[string]bool {
	out := map[string]bool{}
	data, err := os.ReadFile(m.convergePath())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("cannot read the pending interface changes", "path", m.convergePath(), "err", err)
		}
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if n := strings.TrimSpace(sc.Text()); validIfName(n) == nil {
			out[n] = true
		}
	}
	return out
}

func (m *Manager) writeConverge(names map[string]bool) error {
	if len(names) == 0 {
		return fsutil.Remove(m.convergePath())
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	sort.Strings(list)
	if err := os.MkdirAll(filepath.Dir(m.convergePath()), 0o755); err != nil {
		return err
	}
	return fsutil.WriteFile(m.convergePath(), []byte(strings.Join(list, "\n")+"\n"), 0o644)
}

// markConverge records, durably and before the change, that name is
// being changed. Called with the lock held.
func (m *Manager) markConverge(name string) error {
	names := m.readConverge()
	if names[name] {
		return nil
	}
	names[name] = true
	if err := m.writeConverge(names); err != nil {
		return fmt.Errorf("record the change of %s: %w", name, err)
	}
	return nil
}

// doneConverge clears the mark of name. A failure is logged: the next
// restore converges the interface once more, which is harmless.
func (m *Manager) doneConverge(name string) {
	names := m.readConverge()
	if !names[name] {
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
