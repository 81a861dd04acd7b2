// Package keepalived runs the VRRP side of an ACTIVE_STANDBY amphora:
// the keepalived configuration the controller uploads (checked with
// `keepalived -t` before it replaces the installed one), the
// octavia-keepalived service under either service manager, and the chain
// of check scripts keepalived runs to decide whether this amphora may hold
// the VIP.
//
// Files, all under BASE/vrrp (BASE = [haproxy_amphora] base_path):
//
//	octavia-keepalived.conf        the configuration (0644)
//	octavia-keepalived.pid         keepalived's main pid (the heartbeat gate reads it)
//	octavia-keepalived.vrrp.pid    its VRRP child
//	octavia-keepalived.check.pid   its checker child (never started: no virtual_server)
//	check_script.sh                the vrrp_script of the configuration (0755)
//	check_scripts/                 every script there must succeed
//	check_scripts/haproxy_check_script.sh   "amphora-agent vrrp-check <stats sockets>"
//
// The child pid files are named explicitly so that keepalived never
// falls back to /run/keepalived_vrrp.pid, which a host keepalived (or a
// second amphora sharing /run in tests) would also use.
package keepalived

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/keyedlock"
	"github.com/octavia-go/amphora-agent/service"
)

// ServiceName is the service (systemd unit base name) of the VRRP keepalived.
const ServiceName = "octavia-keepalived"

// DefaultCmd is the keepalived binary the reference runs.
const DefaultCmd = "/usr/sbin/keepalived"

// Errors the REST layer maps to statuses.
var (
	// ErrUnknownAction: the action is not start, stop or reload.
	ErrUnknownAction = errors.New("unknown action")
	// ErrNotConfigured: start or reload before any configuration was
	// uploaded.
	ErrNotConfigured = errors.New("no keepalived configuration has been uploaded (PUT /1.0/vrrp/upload)")
)

// ValidationError reports a configuration keepalived refused; nothing was
// installed.
type ValidationError struct {
	// Output lists keepalived's diagnostics, one per line, duplicates
	// removed; the ones that made the configuration fail come first.
	Output string
	Err    error
}

func (e *ValidationError) Error() string {
	return "keepalived rejected the configuration: " + strings.ReplaceAll(e.Output, "\n", "; ")
}

func (e *ValidationError) Unwrap() error { return e.Err }

// Namespace is the data-plane network namespace keepalived runs in
// (*netns.Manager).
type Namespace interface {
	// EnsureNamespace creates the namespace, if needed, before
	// keepalived starts in it.
	EnsureNamespace() error
}

// Advertiser announces addresses an LVS listener starts serving
// (GARP/NA), in the background (*netns.Announcer).
type Advertiser interface {
	Announce(addrs []string)
}

// LoadBalancers is what the VRRP check needs of the haproxy side
// (*haproxy.Inventory).
type LoadBalancers interface {
	// CheckSockets returns the stats sockets of the haproxy instances
	// that must answer for this amphora to hold the VIP.
	CheckSockets(ctx context.Context) []string
}

// VRRPCheck is the VRRP check the LVS listeners are part of (*Manager):
// it is told when the set of listeners that should run may have changed
// (ACTIVE_STANDBY).
type VRRPCheck interface {
	ServicesChanged(ctx context.Context)
}

// Common are the options of every keepalived the agent runs, the VRRP
// one and those of the LVS listeners. They do not change while the agent
// runs.
type Common struct {
	// BasePath is [haproxy_amphora] base_path: the VRRP files live in
	// BASE/vrrp (VRRPPaths), the LVS listeners' in BASE/lvs
	// (LVSPathsUnder).
	BasePath string
	// Namespace is the data-plane namespace keepalived runs in.
	Namespace string
	// LogFacility is keepalived's syslog LOG_LOCAL<n>
	// ([amphora_agent] administrative_log_facility).
	LogFacility int
	// Units runs the services; an LVSManager without one only reads
	// (listing, heartbeat statistics) for the operator subcommands.
	Units service.Manager
	// NetnsUnit is the unit creating the data-plane namespace, which the
	// keepalived units require (netns.UnitName under systemd; "" for the
	// built-in supervisor).
	NetnsUnit string
	// Cmd is the keepalived binary (DefaultCmd when empty); IPCmd the
	// iproute2 binary that enters the namespace ("/sbin/ip" when empty).
	Cmd, IPCmd string
	// Agent is the absolute path of the amphora-agent binary, which the
	// check scripts run (vrrp-check, lvs-check, health-check udp).
	Agent string
	// Netns creates the namespace before keepalived starts (optional).
	Netns Namespace
	Log   *slog.Logger
}

func (c *Common) defaults() {
	if c.Cmd == "" {
		c.Cmd = DefaultCmd
	}
	if c.IPCmd == "" {
		c.IPCmd = "/sbin/ip"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Options configure a Manager.
type Options struct {
	Common
	// LoadBalancers tells which haproxy instances the check covers
	// (none when nil).
	LoadBalancers LoadBalancers
}

// Manager owns the VRRP keepalived of the amphora. Upload and actions are
// serialized; the check-script refresh has its own lock so the
// load-balancer life cycle can call it at any time.
type Manager struct {
	opts Options
	log  *slog.Logger

	serial  keyedlock.Map // serializes Upload and Action (one key); waits honour the context
	checkMu sync.Mutex    // serializes writes of the check scripts
}

// NewManager returns a Manager.
func NewManager(o Options) *Manager {
	o.defaults()
	return &Manager{opts: o, log: o.Log}
}

// Paths returns the file layout.
func (m *Manager) Paths() Paths { return VRRPPaths(m.opts.BasePath) }

// Paths is the file layout of the VRRP keepalived under one directory
// (BASE/vrrp).
type Paths struct{ Dir string }

// Config is the installed configuration, octavia-keepalived.conf.
func (p Paths) Config() string { return filepath.Join(p.Dir, "octavia-keepalived.conf") }

// PIDFile is keepalived's main pid file, octavia-keepalived.pid.
func (p Paths) PIDFile() string { return filepath.Join(p.Dir, "octavia-keepalived.pid") }

// VRRPPIDFile is the pid file of keepalived's VRRP child.
func (p Paths) VRRPPIDFile() string { return filepath.Join(p.Dir, "octavia-keepalived.vrrp.pid") }

// CheckersPIDFile is the pid file of keepalived's checker child.
func (p Paths) CheckersPIDFile() string { return filepath.Join(p.Dir, "octavia-keepalived.check.pid") }

// CheckScript is the vrrp_script the controller's configuration runs.
func (p Paths) CheckScript() string { return filepath.Join(p.Dir, "check_script.sh") }

// CheckScriptsDir holds the scripts CheckScript runs.
func (p Paths) CheckScriptsDir() string { return filepath.Join(p.Dir, "check_scripts") }

// HAProxyCheckScript is the check of the load balancers' haproxy.
func (p Paths) HAProxyCheckScript() string {
	return filepath.Join(p.CheckScriptsDir(), "haproxy_check_script.sh")
}

// Configured reports whether a configuration was uploaded.
func (m *Manager) Configured() bool { return m.Paths().Configured() }

// Upload validates body with `keepalived -t` and installs it as the VRRP
// configuration, (re)writes the check scripts and installs the service.
// A refused configuration is kept as octavia-keepalived.conf.new-failed
// and the installed one is untouched. It returns the MD5 of body. A
// running keepalived is not reloaded (the controller asks for that).
//
// body is read while the lock is held: pass a file, not a network stream.
func (m *Manager) Upload(ctx context.Context, body io.Reader) (string, error) {
	unlock, err := m.serial.LockContext(ctx, "")
	if err != nil {
		return "", err
	}
	defer unlock()
	p := m.Paths()
	for _, d := range []string{p.Dir, p.CheckScriptsDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	// The scripts first: keepalived -t checks that the configured
	// vrrp_script exists and may be run.
	if err := m.writeScripts(ctx); err != nil {
		return "", err
	}
	in := fsutil.NewDigestReader(body)
	if err := fsutil.WriteCheckedReader(p.Config(), in, 0o644, func(staged string) error { return m.Validate(ctx, staged) }); err != nil {
		return "", err
	}
	if err := m.install(ctx); err != nil {
		return "", err
	}
	sum := in.MD5Hex()
	m.log.Info("keepalived configuration installed", "unit", ServiceName, "bytes", in.N(), "md5", sum)
	return sum, nil
}

// writeScripts (re)writes check_script.sh and the haproxy check (GAPS
// C3: always, not only with a new unit).
func (m *Manager) writeScripts(ctx context.Context) error {
	p := m.Paths()
	if err := fsutil.WriteFile(p.CheckScript(), checkScript(p.CheckScriptsDir()), 0o755); err != nil {
		return err
	}
	return m.RefreshCheck(ctx)
}

// install renders the service (every time, GAPS C1) and enables it.
func (m *Manager) install(ctx context.Context) error {
	svc, err := m.Service()
	if err != nil {
		return err
	}
	changed, err := m.opts.Units.Install(ctx, svc)
	if err != nil {
		return &service.ActionError{Message: "Error enabling octavia-keepalived service", Err: err}
	}
	if changed {
		m.log.Info("keepalived service definition updated", "unit", svc.Name)
	}
	return nil
}

// Service renders the octavia-keepalived service for both service
// managers from the current configuration.
func (m *Manager) Service() (service.Service, error) {
	return UnitParams{
		Cmd: m.opts.Cmd, IPCmd: m.opts.IPCmd, Namespace: m.opts.Namespace, Netns: m.opts.NetnsUnit,
		LogFacility: m.opts.LogFacility, Paths: m.Paths(),
	}.Service()
}

// Running reports whether keepalived runs: its pid file names a live
// keepalived process (a recycled pid does not count, GAPS B5), or the
// service manager reports the service active.
func (m *Manager) Running(ctx context.Context) bool {
	if livePID(m.Paths().PIDFile()) > 0 {
		return true
	}
	st, err := m.opts.Units.State(ctx, ServiceName)
	return err == nil && st.Active
}

// Action starts, stops or reloads keepalived (the action is matched
// case-insensitively). start on a running keepalived reloads it and
// reload on a stopped one starts it. It returns the reference's success
// detail ("keepalived started", "keepalived reloaded", "keepalived
// stoped"), naming the operation actually performed.
func (m *Manager) Action(ctx context.Context, action string) (string, error) {
	action = strings.ToLower(action)
	if action != "start" && action != "stop" && action != "reload" {
		return "", ErrUnknownAction
	}
	unlock, err := m.serial.LockContext(ctx, "")
	if err != nil {
		return "", err
	}
	defer unlock()
	if action == "stop" {
		err := m.opts.Units.Stop(ctx, ServiceName)
		if err != nil && !errors.Is(err, service.ErrNotFound) {
			return "", &service.ActionError{Message: "Failed to stop octavia-keepalived service", Err: err}
		}
		m.log.Info("keepalived stopped", "unit", ServiceName)
		return "keepalived stoped", nil
	}
	if !m.Configured() {
		return "", &service.ActionError{Message: "Failed to " + action + " octavia-keepalived service", Err: ErrNotConfigured}
	}
	if m.Running(ctx) {
		action = "reload"
	} else {
		action = "start"
	}
	fail := func(err error) (string, error) {
		return "", &service.ActionError{Message: "Failed to " + action + " octavia-keepalived service", Err: err}
	}
	if m.opts.Netns != nil {
		if err := m.opts.Netns.EnsureNamespace(); err != nil {
			return fail(err)
		}
	}
	// The service definition follows the current configuration (a
	// service state lost with the supervisor's directory is restored).
	if err := m.install(ctx); err != nil {
		var ae *service.ActionError
		if errors.As(err, &ae) {
			err = ae.Err
		}
		return fail(err)
	}
	if action == "reload" {
		err = m.opts.Units.Reload(ctx, ServiceName)
		if errors.Is(err, service.ErrNotActive) {
			// it died between the check and the reload
			action = "start"
			err = m.opts.Units.Start(ctx, ServiceName)
		}
	} else {
		err = m.opts.Units.Start(ctx, ServiceName)
	}
	if err != nil {
		return fail(err)
	}
	m.log.Info("keepalived "+action+"ed", "unit", ServiceName)
	return "keepalived " + action + "ed", nil
}

// Reconcile runs at agent start-up: it removes what an interrupted write
// left and, when a configuration exists, installs its service (a crash
// between storing an upload and installing the service, or a new
// rendering; a running keepalived is not restarted), rewrites
// check_script.sh (GAPS C3) and writes the haproxy check only if it is
// missing. The socket list is not recomputed here: at boot the
// load balancers' services may not have been started yet, and dropping
// them from the check would let this amphora become MASTER without them.
func (m *Manager) Reconcile(ctx context.Context) {
	p := m.Paths()
	removeLeftovers(m.log, []string{p.Dir, p.CheckScriptsDir()}, []string{p.Config()})
	if !m.Configured() {
		return
	}
	if m.opts.Units != nil {
		if err := m.install(ctx); err != nil {
			m.log.Warn("cannot install the keepalived service", "err", err)
		}
	}
	if err := os.MkdirAll(p.CheckScriptsDir(), 0o755); err != nil {
		m.log.Warn("keepalived check scripts directory", "err", err)
		return
	}
	if err := fsutil.WriteFile(p.CheckScript(), checkScript(p.CheckScriptsDir()), 0o755); err != nil {
		m.log.Warn("could not rewrite the keepalived check script", "err", err)
	}
	if _, err := os.Stat(p.HAProxyCheckScript()); errors.Is(err, os.ErrNotExist) && !m.lvsGoverns() {
		if err := m.RefreshCheck(ctx); err != nil {
			m.log.Warn("could not write the haproxy check script", "err", err)
		}
	}
}

// removeLeftovers removes what a crash in the middle of a write leaves:
// the temporary files in dirs, and for each configuration in configs its
// staged copy (and the copy an LVS check makes of it) that was never
// checked. Reconcile runs it before the API serves.
func removeLeftovers(log *slog.Logger, dirs, configs []string) {
	for _, dir := range dirs {
		removed, err := fsutil.RemoveTemps(dir, nil)
		if len(removed) > 0 {
			log.Info("temporary files of interrupted writes removed", "dir", dir, "files", strings.Join(removed, " "))
		}
		if err != nil {
			log.Warn("cannot remove temporary files of interrupted writes", "dir", dir, "err", err)
		}
	}
	for _, c := range configs {
		for _, p := range []string{c + fsutil.StagedSuffix, c + fsutil.StagedSuffix + "-check"} {
			if _, err := os.Lstat(p); err != nil {
				continue
			}
			log.Info("removing a configuration whose upload was interrupted", "path", p)
			if err := fsutil.Remove(p); err != nil {
				log.Warn("cannot remove an interrupted upload", "path", p, "err", err)
			}
		}
	}
}
