package keepalived

// UDP and SCTP listeners: one keepalived per listener in LVS mode, whose
// configuration the controller renders (octavia/common/jinja/lvs) and
// uploads with PUT /1.0/listeners/<amphora>/<listener>/udp_listener.
//
// Files, all under BASE/lvs:
//
//	octavia-keepalivedlvs-<id>.conf        the configuration (0644)
//	octavia-keepalivedlvs-<id>.pid         keepalived's main pid
//	octavia-keepalivedlvs-<id>.vrrp.pid    its VRRP child (never started: --check)
//	octavia-keepalivedlvs-<id>.check.pid   its checker child; the mtime marks the
//	                                       last (re)start (heartbeat RESTARTING rule)
//	check/udp_check.sh                     the UDP-CONNECT member check (0755)
//
// The service is octavia-keepalivedlvs-<id> under either service manager.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/octavia-go/amphora-agent/internal/execx"
	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/keyedlock"
	"github.com/octavia-go/amphora-agent/service"
)

// LVSServicePrefix starts the service name of every LVS listener.
const LVSServicePrefix = "octavia-keepalivedlvs-"

// LVSServiceName is the service (unit base name) of an LVS listener.
func LVSServiceName(listenerID string) string { return LVSServicePrefix + listenerID }

// Errors of the LVS listeners the REST layer maps to statuses
// (ErrUnknownAction is shared with the VRRP side).
var (
	// ErrListenerNotFound: no LVS configuration for this listener id.
	ErrListenerNotFound = errors.New("UDP listener not found")
	// ErrBadID: an id is not UUID-shaped; nothing was touched.
	ErrBadID = errors.New("invalid id")
)

// LVSOptions configure an LVSManager. Topology is read at every change.
type LVSOptions struct {
	Common
	// Topology returns [controller_worker] loadbalancer_topology (SINGLE
	// or ACTIVE_STANDBY), which PUT /1.0/config may change; nil: SINGLE.
	Topology func() string
	// VRRP is told after an ACTIVE_STANDBY upload, action or delete (the
	// VRRP check covers the LVS listeners); optional.
	VRRP VRRPCheck
	// Advertiser announces a listener's VIPs after a start or restart in
	// SINGLE topology (optional).
	Advertiser Advertiser
	// Run runs ipvsadm for the heartbeat statistics (execx.Run when nil).
	Run func(ctx context.Context, argv ...string) ([]byte, error)
	// KernelTable returns the IPVS table (/proc/net/ip_vs) of the network
	// namespace process pid lives in (reads /proc/<pid>/net/ip_vs when
	// nil).
	KernelTable func(pid int) ([]byte, error)
}

// LVSManager owns the UDP/SCTP listeners of the amphora. Operations on one
// listener are serialized; different listeners proceed in parallel.
type LVSManager struct {
	opts LVSOptions
	log  *slog.Logger

	locks keyedlock.Map // serializes the operations on one listener

	mu    sync.Mutex        // guards conds
	conds map[string]string // last logged problem per listener (heartbeat)
}

// NewLVSManager returns an LVSManager; call Reconcile once at start-up.
func NewLVSManager(o LVSOptions) *LVSManager {
	o.defaults()
	if o.Run == nil {
		o.Run = execx.Run
	}
	if o.KernelTable == nil {
		o.KernelTable = func(pid int) ([]byte, error) {
			return os.ReadFile(fmt.Sprintf("/proc/%d/net/ip_vs", pid))
		}
	}
	return &LVSManager{opts: o, log: o.Log, conds: map[string]string{}}
}

// topologyActiveStandby is the ACTIVE_STANDBY value of LVSOptions.Topology.
const topologyActiveStandby = "ACTIVE_STANDBY"

// LVSPaths is the file layout of the LVS listeners (BASE/lvs).
type LVSPaths struct{ Dir string }

// LVSPathsUnder returns the layout of the LVS listeners under base_path:
// BASE/lvs.
func LVSPathsUnder(basePath string) LVSPaths { return LVSPaths{Dir: filepath.Join(basePath, "lvs")} }

// Paths returns the file layout.
func (m *LVSManager) Paths() LVSPaths { return LVSPathsUnder(m.opts.BasePath) }

func (m *LVSManager) activeStandby() bool {
	return m.opts.Topology != nil && m.opts.Topology() == topologyActiveStandby
}

// servicesChanged tells the VRRP check that the set of listeners that
// should run may have changed.
func (m *LVSManager) servicesChanged(ctx context.Context, activeStandby bool) {
	if activeStandby && m.opts.VRRP != nil {
		m.opts.VRRP.ServicesChanged(ctx)
	}
}

func (p LVSPaths) base(id string) string { return filepath.Join(p.Dir, LVSServicePrefix+id) }

// Config is a listener's configuration file.
func (p LVSPaths) Config(id string) string { return p.base(id) + ".conf" }

// PIDFile is the pid file of a listener's keepalived.
func (p LVSPaths) PIDFile(id string) string { return p.base(id) + ".pid" }

// VRRPPIDFile is the pid file of its VRRP child.
func (p LVSPaths) VRRPPIDFile(id string) string { return p.base(id) + ".vrrp.pid" }

// CheckersPIDFile is the pid file of its checker child.
func (p LVSPaths) CheckersPIDFile(id string) string { return p.base(id) + ".check.pid" }

// CheckDir holds the member check scripts.
func (p LVSPaths) CheckDir() string { return filepath.Join(p.Dir, "check") }

// UDPCheckScript is the MISC_CHECK of UDP-CONNECT health monitors.
func (p LVSPaths) UDPCheckScript() string { return filepath.Join(p.CheckDir(), "udp_check.sh") }

// Exists reports whether the listener has a configuration.
func (m *LVSManager) Exists(id string) bool {
	if !fsutil.ValidID(id) {
		return false
	}
	fi, err := os.Stat(m.Paths().Config(id))
	return err == nil && fi.Mode().IsRegular()
}

// List returns the ids of the configured LVS listeners, sorted.
func (m *LVSManager) List() []string { return m.Paths().List() }

// List returns the ids of the listeners configured in the layout, sorted.
func (p LVSPaths) List() []string {
	entries, err := os.ReadDir(p.Dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), LVSServicePrefix)
		if !ok {
			continue
		}
		id, ok = strings.CutSuffix(id, ".conf")
		if ok && fsutil.ValidID(id) && e.Type().IsRegular() {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Config returns a listener's configuration.
func (m *LVSManager) Config(id string) ([]byte, error) {
	if !fsutil.ValidID(id) {
		return nil, ErrBadID
	}
	data, err := os.ReadFile(m.Paths().Config(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrListenerNotFound
	}
	return data, err
}

// Upload validates body with `keepalived -t` and installs it as the
// listener's configuration, writes the member check script and installs
// (and enables) the listener's service; in ACTIVE_STANDBY it refreshes the
// VRRP check scripts. A refused configuration is kept as
// <conf>.new-failed and the installed one is untouched. It returns the MD5
// of body. Nothing is started or restarted: the controller follows with a
// reload.
//
// body is read while the listener's lock is held: pass a file, not a
// network stream.
func (m *LVSManager) Upload(ctx context.Context, amphoraID, id string, body io.Reader) (string, error) {
	if !fsutil.ValidID(id) || !fsutil.ValidID(amphoraID) {
		return "", ErrBadID
	}
	if m.opts.Units == nil {
		return "", errors.New("keepalived LVS: no service manager")
	}
	unlock, err := m.locks.LockContext(ctx, id)
	if err != nil {
		return "", err
	}
	defer unlock()
	p := m.Paths()
	for _, d := range []string{p.Dir, p.CheckDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if err := m.writeUDPCheck(); err != nil {
		return "", err
	}
	final := p.Config(id)
	in := fsutil.NewDigestReader(body)
	if err := fsutil.WriteCheckedReader(final, in, 0o644, func(staged string) error { return m.validate(ctx, staged) }); err != nil {
		return "", err
	}
	if err := fsutil.Remove(final + ".new-failed"); err != nil {
		m.log.Warn("could not remove a refused LVS configuration", "listener_id", id, "err", err)
	}
	if err := m.install(ctx, id); err != nil {
		return "", err
	}
	m.servicesChanged(ctx, m.activeStandby())
	sum := in.MD5Hex()
	m.log.Info("keepalived LVS configuration installed", "listener_id", id, "bytes", in.N(), "md5", sum)
	return sum, nil
}

// install renders and installs (enables) the listener's service.
func (m *LVSManager) install(ctx context.Context, id string) error {
	fail := func(err error) error {
		return &service.ActionError{Message: "Error enabling octavia-keepalivedlvs service", Err: err}
	}
	svc, err := m.Service(id)
	if err != nil {
		return err
	}
	changed, err := m.opts.Units.Install(ctx, svc)
	if err != nil {
		return fail(err)
	}
	if changed {
		m.log.Info("keepalived LVS service definition updated", "listener_id", id, "unit", svc.Name)
	}
	return nil
}

// Service renders a listener's service for both service managers.
func (m *LVSManager) Service(id string) (service.Service, error) {
	return LVSUnitParams{
		ListenerID: id, Cmd: m.opts.Cmd, IPCmd: m.opts.IPCmd, Namespace: m.opts.Namespace, Netns: m.opts.NetnsUnit,
		LogFacility: m.opts.LogFacility, Paths: m.Paths(),
	}.Service()
}

// Running reports whether the listener's keepalived runs: its pid file
// names a live keepalived, or the service manager reports the service
// active.
func (m *LVSManager) Running(ctx context.Context, id string) bool {
	if livePID(m.Paths().PIDFile(id)) > 0 {
		return true
	}
	if m.opts.Units == nil {
		return false
	}
	st, err := m.opts.Units.State(ctx, LVSServiceName(id))
	return err == nil && st.Active
}

// RunningCount is the number of LVS listeners whose keepalived runs (the
// lvs_listener_process_count of /1.0/details).
func (m *LVSManager) RunningCount() int {
	n := 0
	for _, id := range m.List() {
		if livePID(m.Paths().PIDFile(id)) > 0 {
			n++
		}
	}
	return n
}

// Action starts, stops or reloads a listener's keepalived (the action is
// matched case-insensitively). reload restarts it, so that members start
// again from their initial state (and a stopped listener starts, GAPS C7).
// It returns the reference's success detail ("keepalivedlvs listener <id>
// started", "... restarted", "... stoped").
func (m *LVSManager) Action(ctx context.Context, id, action string) (string, error) {
	action = strings.ToLower(action)
	if action != "start" && action != "stop" && action != "reload" {
		return "", ErrUnknownAction
	}
	if action == "reload" {
		action = "restart"
	}
	if !fsutil.ValidID(id) {
		return "", ErrBadID
	}
	if m.opts.Units == nil {
		return "", errors.New("keepalived LVS: no service manager")
	}
	unlock, err := m.locks.LockContext(ctx, id)
	if err != nil {
		return "", err
	}
	defer unlock()
	if !m.Exists(id) {
		return "", ErrListenerNotFound
	}
	activeStandby := m.activeStandby()
	name := LVSServiceName(id)
	err = m.act(ctx, id, action)
	m.servicesChanged(ctx, activeStandby)
	if err != nil {
		return "", &service.ActionError{Message: "Failed to " + action + " keepalivedlvs listener " + id, Err: err}
	}
	m.log.Info("keepalived LVS "+action+"ed", "listener_id", id, "unit", name)
	if action != "stop" && !activeStandby && m.opts.Advertiser != nil {
		if data, err := os.ReadFile(m.Paths().Config(id)); err == nil {
			m.opts.Advertiser.Announce(ParseLVSConfig(data).VIPAddresses())
		}
	}
	return "keepalivedlvs listener " + id + " " + action + "ed", nil
}

func (m *LVSManager) act(ctx context.Context, id, action string) error {
	name := LVSServiceName(id)
	if action == "stop" {
		if err := m.opts.Units.Stop(ctx, name); err != nil && !errors.Is(err, service.ErrNotFound) {
			return err
		}
		return nil
	}
	if m.opts.Netns != nil {
		if err := m.opts.Netns.EnsureNamespace(); err != nil {
			return err
		}
	}
	// The service definition follows the current configuration (and a
	// service lost with the supervisor's state is restored).
	if err := m.install(ctx, id); err != nil {
		var ae *service.ActionError
		if errors.As(err, &ae) {
			err = ae.Err
		}
		return err
	}
	// Both service managers drop the pid files of a previous instance
	// before they start one (Service.ChildPIDFiles).
	if action == "start" {
		return m.opts.Units.Start(ctx, name)
	}
	return m.opts.Units.Restart(ctx, name)
}

// Delete stops and removes a listener: keepalived, its pid files (each
// one that exists, GAPS C6), its service and its configuration; in
// ACTIVE_STANDBY the VRRP check scripts are refreshed (GAPS C6). Deleting
// an unknown listener succeeds.
func (m *LVSManager) Delete(ctx context.Context, id string) error {
	if !fsutil.ValidID(id) {
		return ErrBadID
	}
	if m.opts.Units == nil {
		return errors.New("keepalived LVS: no service manager")
	}
	unlock, err := m.locks.LockContext(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	if !m.Exists(id) {
		return nil
	}
	name := LVSServiceName(id)
	if m.Running(ctx, id) {
		if err := m.opts.Units.Stop(ctx, name); err != nil && !errors.Is(err, service.ErrNotFound) {
			return &service.ActionError{Message: "Error stopping keepalivedlvs", Err: err}
		}
	}
	p := m.Paths()
	for _, f := range []string{p.PIDFile(id), p.VRRPPIDFile(id), p.CheckersPIDFile(id)} {
		if err := fsutil.Remove(f); err != nil {
			return err
		}
	}
	if err := m.opts.Units.Remove(ctx, name); err != nil {
		return &service.ActionError{Message: "Error disabling octavia-keepalivedlvs-" + id + " service", Err: err}
	}
	// The configuration goes last: an interrupted delete is finished by
	// the controller's retry.
	for _, f := range []string{p.Config(id) + ".new-failed", p.Config(id)} {
		if err := fsutil.Remove(f); err != nil {
			return err
		}
	}
	m.servicesChanged(ctx, m.activeStandby())
	m.log.Info("LVS listener deleted", "listener_id", id)
	return nil
}

// LVSListenerStatus is one entry of GET /1.0/listeners.
type LVSListenerStatus struct {
	Status string
	UUID   string
	// Type is the listener's protocol, UDP or SCTP (GAPS C12: the
	// reference always says UDP); UDP when the configuration has no
	// virtual server to tell.
	Type string
}

// Listeners reports every LVS listener, the way the reference derives the
// status: ACTIVE when keepalived runs and the configuration has a virtual
// server, OFFLINE when it runs without one or is stopped, ERROR when its
// pid file outlived it or the service manager reports it failed (or
// restarting after a failure).
func (m *LVSManager) Listeners(ctx context.Context) []LVSListenerStatus {
	out := []LVSListenerStatus{}
	p := m.Paths()
	for _, id := range m.List() {
		data, err := os.ReadFile(p.Config(id))
		if err != nil {
			m.log.Warn("unreadable LVS configuration skipped", "listener_id", id, "err", err)
			continue
		}
		c := ParseLVSConfig(data)
		st := LVSListenerStatus{Status: "OFFLINE", UUID: id, Type: "UDP"}
		if c.Protocol == "SCTP" {
			st.Type = "SCTP"
		}
		_, pidErr := os.Stat(p.PIDFile(id))
		switch {
		case livePID(p.PIDFile(id)) > 0:
			if c.VirtualServer {
				st.Status = "ACTIVE"
			}
		case pidErr == nil:
			st.Status = "ERROR"
		case m.opts.Units != nil:
			if s, err := m.opts.Units.State(ctx, LVSServiceName(id)); err == nil &&
				(s.ActiveState == "failed" || s.SubState == "auto-restart") {
				st.Status = "ERROR"
			}
		}
		out = append(out, st)
	}
	return out
}

// Reconcile runs at agent start-up: what an interrupted write left is
// removed, every configured listener gets its service installed (never
// restarted), and the member check script follows the agent binary (it
// may have moved with an upgrade).
func (m *LVSManager) Reconcile(ctx context.Context) {
	p := m.Paths()
	var staged []string
	if entries, err := os.ReadDir(p.Dir); err == nil {
		for _, e := range entries {
			if conf, ok := strings.CutSuffix(e.Name(), ".conf"+fsutil.StagedSuffix); ok && strings.HasPrefix(conf, LVSServicePrefix) {
				staged = append(staged, filepath.Join(p.Dir, conf+".conf"))
			}
		}
	}
	removeLeftovers(m.log, []string{p.Dir, p.CheckDir()}, staged)
	if len(m.List()) == 0 {
		return
	}
	// every configured listener has its service (a crash between storing
	// an upload and installing the service; a new rendering)
	for _, id := range m.List() {
		if m.opts.Units == nil {
			break
		}
		if err := m.install(ctx, id); err != nil {
			m.log.Warn("cannot install the service of an LVS listener", "listener_id", id, "err", err)
		}
	}
	if err := os.MkdirAll(m.Paths().CheckDir(), 0o755); err != nil {
		m.log.Warn("LVS check scripts directory", "err", err)
		return
	}
	if err := m.writeUDPCheck(); err != nil {
		m.log.Warn("could not rewrite the UDP member check script", "err", err)
	}
}
