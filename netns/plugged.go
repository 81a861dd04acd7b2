package netns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// pluggedEntry is one line of the plugged-interfaces file: the MAC of a
// NIC and its name inside the namespace.
type pluggedEntry struct {
	MAC  string // lower case
	Name string
}

// readPlugged reads the plugged-interfaces file ("<mac> <name>" lines).
// MACs are lower-cased; malformed lines are skipped. A missing file is
// empty.
func (m *Manager) readPlugged() ([]pluggedEntry, error) {
	data, err := os.ReadFile(m.cfg.PluggedInterfacesFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []pluggedEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		mac, err := normalizeMAC(f[0])
		if err != nil || validIfName(f[1]) != nil {
			continue
		}
		out = append(out, pluggedEntry{MAC: mac, Name: f[1]})
	}
	return out, sc.Err()
}

// recordPlugged records that mac is plugged as name: lines for the same
// MAC or the same name are replaced (a name is reused only after the
// previous NIC left, and a MAC keeps one name), duplicates are dropped,
// and the file is rewritten atomically (mode 0644). Nothing is written
// when the file already says exactly this.
func (m *Manager) recordPlugged(mac, name string) error {
	entries, err := m.readPlugged()
	if err != nil {
		return fmt.Errorf("read %s: %w", m.cfg.PluggedInterfacesFile, err)
	}
	var keep []pluggedEntry
	found := false
	changed := false
	for _, e := range entries {
		switch {
		case e.MAC == mac && e.Name == name && !found:
			found = true
			keep = append(keep, e)
		case e.MAC == mac || e.Name == name:
			changed = true // stale mapping
		default:
			keep = append(keep, e)
		}
	}
	if !found {
		keep = append(keep, pluggedEntry{MAC: mac, Name: name})
		changed = true
	}
	if !changed && !m.pluggedNeedsRewrite(entries) {
		return nil
	}
	return m.writePlugged(keep)
}

// pluggedNeedsRewrite reports whether the file on disk differs from the
// canonical rendering of entries (upper-case MACs, junk lines).
func (m *Manager) pluggedNeedsRewrite(entries []pluggedEntry) bool {
	data, err := os.ReadFile(m.cfg.PluggedInterfacesFile)
	if err != nil {
		return true
	}
	return !bytes.Equal(data, renderPlugged(entries))
}

func renderPlugged(entries []pluggedEntry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%s %s\n", e.MAC, e.Name)
	}
	return b.Bytes()
}

// restorePlugged puts back the file content saved before a failed plug.
func (m *Manager) restorePlugged(saved []byte, existed bool) error {
	if !existed {
		return fsutil.Remove(m.cfg.PluggedInterfacesFile)
	}
	return fsutil.WriteFile(m.cfg.PluggedInterfacesFile, saved, 0o644)
}

func (m *Manager) writePlugged(entries []pluggedEntry) error {
	if err := os.MkdirAll(filepath.Dir(m.cfg.PluggedInterfacesFile), 0o755); err != nil {
		return err
	}
	return fsutil.WriteFile(m.cfg.PluggedInterfacesFile, renderPlugged(entries), 0o644)
}
