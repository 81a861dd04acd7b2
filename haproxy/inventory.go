package haproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/procfs"
	"github.com/octavia-go/amphora-agent/service"
)

// Inventory reads the load balancers configured on the amphora: their
// files under base_path and, with a service manager, the state of their
// services. It changes nothing (Manager does). The REST API, the
// heartbeat, keepalived's VRRP check and the operator subcommands read
// through it; those subcommands use one without a service manager.
//
// "A load balancer exists" means BASE/<lb_id>/haproxy.cfg exists, as in
// the reference.
type Inventory struct {
	basePath string
	units    service.Manager // nil: pid files only
	log      *slog.Logger

	mu      sync.Mutex // guards sockets
	sockets map[string]cachedSocket
}

type cachedSocket struct{ key, path string }

// NewInventory returns the inventory of the load balancers under
// basePath; units and log may be nil.
func NewInventory(basePath string, units service.Manager, log *slog.Logger) *Inventory {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Inventory{basePath: basePath, units: units, log: log, sockets: map[string]cachedSocket{}}
}

// Paths of one load balancer.
func (v *Inventory) dir(lbID string) string        { return filepath.Join(v.basePath, lbID) }
func (v *Inventory) ConfigPath(lbID string) string { return filepath.Join(v.dir(lbID), "haproxy.cfg") }
func (v *Inventory) pidPath(lbID string) string    { return filepath.Join(v.dir(lbID), lbID+".pid") }
func (v *Inventory) statePath(lbID string) string  { return filepath.Join(v.dir(lbID), "servers-state") }

// SocketPath is the stats socket of a load balancer: the one its
// configuration declares, else base_path/<lb>.sock. The answer is cached
// until the configuration file changes (the heartbeat asks every tick).
func (v *Inventory) SocketPath(lbID string) string {
	def := filepath.Join(v.basePath, lbID+".sock")
	cfgPath := v.ConfigPath(lbID)
	fi, err := os.Stat(cfgPath)
	if err != nil {
		return def
	}
	key := fmt.Sprintf("%s/%d/%s", fi.ModTime(), fi.Size(), cfgPath)
	v.mu.Lock()
	c, ok := v.sockets[lbID]
	v.mu.Unlock()
	if ok && c.key == key {
		return c.path
	}
	path := def
	if data, err := os.ReadFile(cfgPath); err == nil {
		if p := Parse(data).StatsSocket; p != "" {
			path = p
		}
	}
	v.mu.Lock()
	v.sockets[lbID] = cachedSocket{key: key, path: path}
	v.mu.Unlock()
	return path
}

// Exists reports whether the load balancer has an installed configuration.
func (v *Inventory) Exists(lbID string) bool {
	if !fsutil.ValidID(lbID) {
		return false
	}
	_, err := os.Stat(v.ConfigPath(lbID))
	return err == nil
}

// List returns the ids of the configured load balancers, sorted.
func (v *Inventory) List() []string {
	entries, err := os.ReadDir(v.basePath)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && fsutil.ValidID(e.Name()) && v.Exists(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// Config returns the installed configuration of a load balancer.
func (v *Inventory) Config(lbID string) ([]byte, error) {
	if !fsutil.ValidID(lbID) {
		return nil, ErrBadID
	}
	data, err := os.ReadFile(v.ConfigPath(lbID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	return data, err
}

// Running reports whether the load balancer's haproxy runs: its pid file
// names a live haproxy process started with this load balancer's
// configuration (a recycled pid does not count, GAPS B5), or the service
// manager reports the service active.
func (v *Inventory) Running(ctx context.Context, lbID string) bool {
	if processRuns(v.pidPath(lbID), v.ConfigPath(lbID)) {
		return true
	}
	if v.units == nil {
		return false
	}
	st, err := v.units.State(ctx, UnitName(lbID))
	return err == nil && st.Active
}

// processRuns reports whether the pid on the first line of pidFile is a
// live (not zombie) process whose command line mentions arg.
func processRuns(pidFile, arg string) bool {
	pid := procfs.ReadPID(pidFile)
	if !procfs.Alive(pid) {
		return false
	}
	argv, err := procfs.Cmdline(pid)
	return err == nil && slices.Contains(argv, arg)
}

// RunningLoadBalancers returns the load balancers whose haproxy runs.
func (v *Inventory) RunningLoadBalancers(ctx context.Context) []string {
	var out []string
	for _, lb := range v.List() {
		if v.Running(ctx, lb) {
			out = append(out, lb)
		}
	}
	return out
}

// CheckSockets returns the stats sockets keepalived's VRRP check covers:
// every configured load balancer except the ones whose service is
// inactive, i.e. stopped through the API or never started. A load
// balancer whose haproxy died (failed, or being restarted) stays in the
// list, so the check fails and the peer takes the VIP. This replaces the
// reference's "all load balancers minus the one being stopped", which
// puts a stopped load balancer back at the next refresh and then fails
// the check of an amphora that is fine.
func (v *Inventory) CheckSockets(ctx context.Context) []string {
	var out []string
	for _, id := range v.List() {
		if v.units != nil {
			if st, err := v.units.State(ctx, UnitName(id)); err == nil && st.ActiveState == "inactive" {
				continue
			}
		}
		out = append(out, v.SocketPath(id))
	}
	return out
}

// ListenerStatus is one entry of GET /1.0/listeners.
type ListenerStatus struct {
	Status string `json:"status"`
	UUID   string `json:"uuid"`
	Type   string `json:"type"`
}

// Listeners lists every frontend of every load balancer. Status is
// ACTIVE for a configured listener, ERROR when its haproxy failed; a
// configuration that cannot be read is skipped, not fatal (GAPS C13).
func (v *Inventory) Listeners(ctx context.Context) []ListenerStatus {
	out := []ListenerStatus{}
	for _, lb := range v.List() {
		data, err := os.ReadFile(v.ConfigPath(lb))
		if err != nil {
			v.log.Warn("unreadable haproxy configuration skipped", "lb_id", lb, "err", err)
			continue
		}
		status := "ACTIVE"
		if v.units != nil {
			if st, err := v.units.State(ctx, UnitName(lb)); err == nil && st.ActiveState == "failed" {
				status = "ERROR"
			}
		}
		for _, f := range Parse(data).Frontends {
			out = append(out, ListenerStatus{Status: status, UUID: f.Name, Type: f.Mode})
		}
	}
	return out
}

// ListenerIDs returns the frontend names of every load balancer, sorted.
func (v *Inventory) ListenerIDs() []string {
	ids := []string{}
	for _, lb := range v.List() {
		if data, err := os.ReadFile(v.ConfigPath(lb)); err == nil {
			for _, f := range Parse(data).Frontends {
				ids = append(ids, f.Name)
			}
		}
	}
	sort.Strings(ids)
	return ids
}
