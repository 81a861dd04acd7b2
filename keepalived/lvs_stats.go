package keepalived

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// LVSReport is what the LVS listeners contribute to a heartbeat:
// listeners by id (absolute IPVS counters) and pools by bare pool id.
type LVSReport struct {
	Listeners map[string]LVSListenerStats
	Pools     map[string]LVSPool
}

// lvsItem is a running listener with virtual services.
type lvsItem struct {
	id  string
	cfg *LVSConfig
	pid int
}

// ipvsadmTimeout bounds one ipvsadm run.
const ipvsadmTimeout = 5 * time.Second

// Stats collects the heartbeat data of the LVS listeners (HEARTBEAT.md
// §8): every listener whose keepalived runs and that is not disabled is
// reported OPEN; one with VIPs gets its IPVS counters from `ipvsadm -Ln`
// and `ipvsadm -Ln --stats --exact` (each run once for all listeners,
// inside the namespace) and its pool's member statuses from the kernel
// table /proc/net/ip_vs of the namespace.
//
// Failures are isolated (GAPS E5): a listener whose configuration cannot
// be read is left out and a missing checker pid file only means "maybe
// restarting"; only what every listener needs (ipvsadm, the kernel table)
// fails the whole report, and the heartbeat is still sent without the LVS
// listeners.
func (m *LVSManager) Stats(ctx context.Context) (*LVSReport, error) {
	rep := &LVSReport{Listeners: map[string]LVSListenerStats{}, Pools: map[string]LVSPool{}}
	var items []lvsItem
	p := m.Paths()
	for _, id := range m.List() {
		pid := livePID(p.PIDFile(id))
		if pid == 0 {
			continue
		}
		data, err := os.ReadFile(p.Config(id))
		if err != nil {
			m.note(id, "LVS listener left out of the heartbeat: configuration unreadable", err)
			continue
		}
		m.note(id, "", nil)
		c := ParseLVSConfig(data)
		if c.Disabled {
			continue
		}
		// Acknowledged as running; a listener without a virtual server
		// (no pool, no enabled member) keeps these zeros.
		rep.Listeners[id] = LVSListenerStats{Status: "OPEN"}
		if len(c.VIPs) > 0 {
			items = append(items, lvsItem{id: id, cfg: c, pid: pid})
		}
	}
	if len(items) == 0 {
		return rep, nil
	}
	ns := m.opts.Namespace
	plain, err := m.ipvsadm(ctx, ns, "-Ln")
	if err != nil {
		return nil, err
	}
	stats, err := m.ipvsadm(ctx, ns, "-Ln", "--stats", "--exact")
	if err != nil {
		return nil, err
	}
	vsPlain, vsStats := parseIPVSAdm(plain), parseIPVSAdm(stats)
	var kernel ipvsTable
	for _, it := range items {
		rep.Listeners[it.id] = listenerStats(it.cfg, vsPlain, vsStats)
		if it.cfg.PoolID == "" {
			continue
		}
		if kernel == nil {
			if kernel, err = m.kernelTable(items); err != nil {
				return nil, err
			}
		}
		rep.Pools[it.cfg.PoolID] = poolStatus(it.cfg, kernel, m.restarting(it.id))
	}
	return rep, nil
}

func (m *LVSManager) ipvsadm(ctx context.Context, ns string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, ipvsadmTimeout)
	defer cancel()
	argv := append([]string{m.opts.IPCmd, "netns", "exec", ns, "ipvsadm"}, args...)
	out, err := m.opts.Run(ctx, argv...)
	if err != nil {
		return nil, fmt.Errorf("IPVS statistics: %w", err)
	}
	return out, nil
}

// kernelTable reads the namespace's /proc/net/ip_vs through the first
// running keepalived that lets it (they all live in that namespace).
func (m *LVSManager) kernelTable(items []lvsItem) (ipvsTable, error) {
	var errs []error
	for _, it := range items {
		data, err := m.opts.KernelTable(it.pid)
		if err == nil {
			return parseKernelTable(data), nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("IPVS kernel table: %w", errors.Join(errs...))
}

// restarting reports whether the configuration changed after keepalived's
// checker started (the controller restarts it next): absent members are
// then RESTARTING, not DOWN. Without a checker pid file (keepalived is
// starting its checker, or respawning it) nobody can tell, so the
// listener is taken as restarting rather than failing the heartbeat like
// the reference (GAPS E5).
func (m *LVSManager) restarting(id string) bool {
	p := m.Paths()
	conf, err := os.Stat(p.Config(id))
	if err != nil {
		return true
	}
	chk, err := os.Stat(p.CheckersPIDFile(id))
	if err != nil {
		return true
	}
	return conf.ModTime().After(chk.ModTime())
}

// note logs a per-listener problem of the heartbeat once per distinct
// condition (the heartbeat runs every few seconds), and its end.
func (m *LVSManager) note(id, msg string, err error) {
	cond := ""
	if err != nil {
		cond = err.Error()
	}
	m.mu.Lock()
	prev := m.conds[id]
	if cond == "" {
		delete(m.conds, id)
	} else {
		m.conds[id] = cond
	}
	m.mu.Unlock()
	switch {
	case cond != "" && cond != prev:
		m.log.Warn(msg, "listener_id", id, "err", err)
	case cond == "" && prev != "":
		m.log.Info("LVS listener back in the heartbeat", "listener_id", id)
	}
}
