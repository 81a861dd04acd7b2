package haproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/keyedlock"
	"github.com/octavia-go/amphora-agent/service"
)

// Errors the REST layer maps to statuses.
var (
	// ErrNotFound: no load balancer with this id (no haproxy.cfg).
	ErrNotFound = errors.New("load balancer not found")
	// ErrBadID: the id is not UUID-shaped; nothing was touched.
	ErrBadID = errors.New("invalid id")
	// ErrUnknownAction: the action is not start, stop or reload.
	ErrUnknownAction = errors.New("unknown action")
)

// Namespace is the data-plane network namespace haproxy runs in
// (*netns.Manager).
type Namespace interface {
	// EnsureNamespace creates the namespace, if needed, before haproxy
	// starts in it (the built-in supervisor has no amphora-netns unit to
	// do it).
	EnsureNamespace() error
}

// Advertiser announces addresses haproxy starts serving (GARP/NA), in
// the background (*netns.Announcer).
type Advertiser interface {
	Announce(addrs []string)
}

// VRRPCheck is keepalived's check of the load balancers
// (*keepalived.Manager): it covers the haproxy instances that should
// run, so it is told when that set may have changed (ACTIVE_STANDBY).
type VRRPCheck interface {
	ServicesChanged(ctx context.Context)
}

// Options configure a Manager. The plain fields are options that do not
// change while the agent runs; Topology is read at every action.
type Options struct {
	// BasePath holds a directory per load balancer ([haproxy_amphora]
	// base_path).
	BasePath string
	// CertDir holds the certificates, a directory per load balancer
	// ([haproxy_amphora] base_cert_dir).
	CertDir string
	// Cmd is the haproxy binary ([haproxy_amphora] haproxy_cmd).
	Cmd string
	// UserGroupConfig is the user/group snippet given to haproxy with -f
	// ([amphora_agent] haproxy_user_group_config); written when missing.
	UserGroupConfig string
	// Namespace is the data-plane namespace haproxy runs in.
	Namespace string
	// NetnsUnit is the unit creating the namespace, which the haproxy
	// units require (netns.UnitName under systemd; "" for the built-in
	// supervisor).
	NetnsUnit string
	// AmphoraID is [amphora_agent] amphora_id: Reconcile renders the
	// services with its peer name; uploads for another id are logged.
	AmphoraID string
	// Topology returns [controller_worker] loadbalancer_topology (SINGLE
	// or ACTIVE_STANDBY), which PUT /1.0/config may change; nil: SINGLE.
	Topology func() string
	// Units runs the services.
	Units service.Manager
	// Inventory reads what is configured (NewInventory(BasePath, Units,
	// Log) when nil); pass the one keepalived's check reads too.
	Inventory *Inventory
	// Netns, Advertiser and VRRP are the neighbours the life cycle
	// notifies; each is optional.
	Netns      Namespace
	Advertiser Advertiser
	VRRP       VRRPCheck
	Log        *slog.Logger
}

// topologyActiveStandby is the ACTIVE_STANDBY value of Options.Topology.
const topologyActiveStandby = "ACTIVE_STANDBY"

// Manager owns the haproxy load balancers of the amphora: their
// configuration files under base_path, their services and their
// certificates. Operations on one load balancer are serialized; different
// load balancers proceed in parallel. The read side is its Inventory.
type Manager struct {
	*Inventory
	opts Options
	log  *slog.Logger

	locks keyedlock.Map // serializes the operations on one load balancer

	versionMu sync.Mutex // guards the cached haproxy version
	version   Version
	versionAt string
}

// NewManager returns a Manager; call Reconcile once at start-up.
func NewManager(o Options) *Manager {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Inventory == nil {
		o.Inventory = NewInventory(o.BasePath, o.Units, o.Log)
	}
	return &Manager{Inventory: o.Inventory, opts: o, log: o.Log}
}

func (m *Manager) activeStandby() bool {
	return m.opts.Topology != nil && m.opts.Topology() == topologyActiveStandby
}

// servicesChanged tells keepalived's check that the set of haproxy
// instances that should run may have changed.
func (m *Manager) servicesChanged(ctx context.Context, activeStandby bool) {
	if activeStandby && m.opts.VRRP != nil {
		m.opts.VRRP.ServicesChanged(ctx)
	}
}

// haproxyVersion returns the configured binary's version, cached until
// the binary changes.
func (m *Manager) haproxyVersion(ctx context.Context) (Version, error) {
	cmd := m.opts.Cmd
	key := cmd
	if fi, err := os.Stat(cmd); err == nil {
		key = fmt.Sprintf("%s@%s/%d", cmd, fi.ModTime(), fi.Size())
	}
	m.versionMu.Lock()
	defer m.versionMu.Unlock()
	if m.versionAt == key {
		return m.version, nil
	}
	v, err := BinaryVersion(ctx, cmd)
	if err != nil {
		return Version{}, err
	}
	m.version, m.versionAt = v, key
	return v, nil
}

// ensureUserGroup writes the haproxy user/group snippet the image
// normally provides, when it is missing, so validation and start work on
// a host built without the amphora image element.
func (m *Manager) ensureUserGroup() error {
	path := m.opts.UserGroupConfig
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	group := "nogroup"
	if data, err := os.ReadFile("/etc/group"); err == nil && !bytes.Contains(data, []byte("\nnogroup:")) && !bytes.HasPrefix(data, []byte("nogroup:")) {
		group = "haproxy"
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	m.log.Info("writing the missing haproxy user/group snippet", "path", path, "group", group)
	return fsutil.WriteFile(path, []byte("global\n    group "+group+"\n"), 0o644)
}

// Upload validates and installs a load balancer's haproxy configuration.
// The body streams into haproxy.cfg.new (rewritten on the way, see
// Rewrite) and is checked from there with the configured haproxy binary;
// on refusal it is kept as haproxy.cfg.new-failed and the installed
// configuration is untouched. It returns the MD5 of the body as read.
// The caller should have the body at hand (a file, not a network
// stream): it is read while the load balancer's lock is held.
func (m *Manager) Upload(ctx context.Context, amphoraID, lbID string, body io.Reader) (string, error) {
	if !fsutil.ValidID(lbID) || !fsutil.ValidID(amphoraID) {
		return "", ErrBadID
	}
	unlock, err := m.locks.LockContext(ctx, lbID)
	if err != nil {
		return "", err
	}
	defer unlock()
	if own := m.opts.AmphoraID; own != "" && !strings.EqualFold(own, amphoraID) {
		m.log.Warn("haproxy upload for another amphora id; its peer name is used", "lb_id", lbID,
			"amphora_id", amphoraID, "configured_amphora_id", own)
	}
	v, err := m.haproxyVersion(ctx)
	if err != nil {
		return "", err
	}
	if err := m.ensureUserGroup(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(m.dir(lbID), 0o755); err != nil {
		return "", err
	}
	peer := PeerName(amphoraID)
	in := fsutil.NewDigestReader(body)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(RewriteTo(pw, in, v)) }()
	err = fsutil.WriteCheckedReader(m.ConfigPath(lbID), pr, 0o600, func(staged string) error {
		return Check(ctx, m.opts.Cmd, peer, staged, m.opts.UserGroupConfig)
	})
	pr.CloseWithError(io.ErrClosedPipe) // ends the rewrite if the write stopped early
	if err != nil {
		return "", err
	}
	if err := m.installServices(ctx, lbID, peer, v); err != nil {
		return "", err
	}
	sum := in.MD5Hex()
	m.log.Info("haproxy configuration installed", "lb_id", lbID, "bytes", in.N(), "md5", sum)
	return sum, nil
}

func (m *Manager) installServices(ctx context.Context, lbID, peer string, v Version) error {
	svc, err := UnitParams{
		LBID: lbID, Cmd: m.opts.Cmd, Config: m.ConfigPath(lbID), UserGroup: m.opts.UserGroupConfig,
		PIDFile: m.pidPath(lbID), Peer: peer, Namespace: m.opts.Namespace, Netns: m.opts.NetnsUnit, Version: v,
	}.Service()
	if err != nil {
		return err
	}
	changed, err := m.opts.Units.Install(ctx, svc)
	if err != nil {
		return &service.ActionError{Message: "Error enabling haproxy service", Err: err}
	}
	if changed {
		m.log.Info("haproxy service definition updated", "lb_id", lbID, "unit", svc.Name)
	}
	return nil
}

// Action starts, stops or reloads a load balancer. It returns the
// reference's success detail text.
func (m *Manager) Action(ctx context.Context, lbID, action string) (string, error) {
	action = strings.ToLower(action)
	if action != "start" && action != "stop" && action != "reload" {
		return "", ErrUnknownAction
	}
	if !fsutil.ValidID(lbID) {
		return "", ErrBadID
	}
	unlock, err := m.locks.LockContext(ctx, lbID)
	if err != nil {
		return "", err
	}
	defer unlock()
	if !m.Exists(lbID) {
		return "", ErrNotFound
	}
	activeStandby := m.activeStandby()
	name := UnitName(lbID)
	if action != "stop" && m.opts.Netns != nil {
		if err := m.opts.Netns.EnsureNamespace(); err != nil {
			return "", &service.ActionError{Message: "Error " + ing(action) + " haproxy", Err: err}
		}
	}
	switch action {
	case "start":
		err = m.opts.Units.Start(ctx, name)
	case "stop":
		err = m.opts.Units.Stop(ctx, name)
	case "reload":
		action, err = m.reload(ctx, lbID)
	}
	m.servicesChanged(ctx, activeStandby)
	if err != nil {
		return "", &service.ActionError{Message: "Error " + ing(action) + " haproxy", Err: err}
	}
	m.log.Info("haproxy "+pastTense(action), "lb_id", lbID, "unit", name)
	if action != "stop" && !activeStandby && m.opts.Advertiser != nil {
		if data, err := os.ReadFile(m.ConfigPath(lbID)); err == nil {
			m.opts.Advertiser.Announce(Parse(data).BindAddresses)
		}
	}
	if action == "start" {
		return "Configuration file is valid\nhaproxy daemon for " + lbID + " started", nil
	}
	return "Listener " + lbID + " " + pastTense(action), nil
}

// reload saves the servers' state and reloads haproxy hitlessly; a
// stopped haproxy is started instead. It returns the action performed.
func (m *Manager) reload(ctx context.Context, lbID string) (string, error) {
	name := UnitName(lbID)
	st, err := m.opts.Units.State(ctx, name)
	if err != nil && !errors.Is(err, service.ErrNotFound) {
		return "reload", err
	}
	if !st.Active {
		return "start", m.opts.Units.Start(ctx, name)
	}
	m.saveServerState(ctx, lbID)
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err = m.opts.Units.Reload(ctx, name)
		if errors.Is(err, service.ErrNotActive) {
			// It died between the state check and the reload
			// (Restart=always may be bringing it back): start it.
			return "start", m.opts.Units.Start(ctx, name)
		}
		if err == nil || attempt == 3 || ctx.Err() != nil {
			return "reload", err
		}
		m.log.Warn("haproxy reload failed, retrying", "lb_id", lbID, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return "reload", ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// saveServerState writes `show servers state` to the file haproxy reads
// at start-up, so member health survives the reload. Failure is logged:
// the reload goes on without it, as in the reference.
func (m *Manager) saveServerState(ctx context.Context, lbID string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	state, err := NewStatsClient(m.SocketPath(lbID)).ShowServersState(ctx)
	if err == nil {
		if !bytes.HasSuffix(state, []byte("\n")) {
			state = append(state, '\n')
		}
		err = fsutil.WriteFile(m.statePath(lbID), state, 0o644)
	}
	if err != nil {
		m.log.Warn("could not save haproxy server state before reload", "lb_id", lbID, "err", err)
	}
}

// Delete stops and removes everything of a load balancer: service,
// configuration directory, stats socket and certificates. Deleting an
// unknown load balancer succeeds.
func (m *Manager) Delete(ctx context.Context, lbID string) error {
	if !fsutil.ValidID(lbID) {
		return ErrBadID
	}
	unlock, err := m.locks.LockContext(ctx, lbID)
	if err != nil {
		return err
	}
	defer unlock()
	if !m.Exists(lbID) {
		// Finish an interrupted delete (the configuration goes first).
		return m.removeRest(ctx, lbID)
	}
	name := UnitName(lbID)
	if m.Running(ctx, lbID) {
		if err := m.opts.Units.Stop(ctx, name); err != nil {
			return &service.ActionError{Message: "Error stopping haproxy", Err: err}
		}
	}
	socket := m.SocketPath(lbID)
	// Removing the configuration first makes the load balancer disappear
	// atomically; a crash after this point is finished by the next
	// Delete or by Reconcile.
	if err := fsutil.Remove(m.ConfigPath(lbID)); err != nil {
		return err
	}
	m.removeSocket(lbID, socket)
	if err := m.removeRest(ctx, lbID); err != nil {
		return err
	}
	m.servicesChanged(ctx, m.activeStandby())
	m.log.Info("load balancer deleted", "lb_id", lbID)
	return nil
}

// removeSocket removes the stats socket the configuration of lbID
// named, only when the agent owns it: the path must be
// base_path/<lb_id>.sock or lie inside base_path/<lb_id>/ (the path comes
// from an uploaded file: anything else, such as the agent's own key or
// another load balancer's socket, is left alone), it is resolved inside
// base_path without following a symbolic link out of it, and the file is
// removed only when it is a socket itself (lstat).
func (m *Manager) removeSocket(lbID, path string) {
	rel, ok := m.ownedSocket(lbID, path)
	if !ok {
		m.log.Warn("stats socket outside the load balancer's directories left alone", "lb_id", lbID, "path", path)
		return
	}
	root, err := os.OpenRoot(m.opts.BasePath)
	if err != nil {
		m.log.Warn("could not open base_path to remove the stats socket", "lb_id", lbID, "err", err)
		return
	}
	defer root.Close()
	fi, err := root.Lstat(rel)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return
	case err != nil:
		m.log.Warn("stats socket not removed", "lb_id", lbID, "path", path, "err", err)
		return
	case fi.Mode().Type() != os.ModeSocket:
		m.log.Warn("stats socket path is not a socket, left alone", "lb_id", lbID, "path", path, "type", fi.Mode().Type().String())
		return
	}
	if err := root.Remove(rel); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Warn("could not remove stats socket", "lb_id", lbID, "path", path, "err", err)
	}
}

// ownedSocket reports whether path names a socket of lbID's own, and the
// path relative to base_path.
func (m *Manager) ownedSocket(lbID, path string) (string, bool) {
	if !filepath.IsAbs(path) {
		return "", false
	}
	rel, err := filepath.Rel(filepath.Clean(m.opts.BasePath), filepath.Clean(path))
	if err != nil || !filepath.IsLocal(rel) {
		return "", false
	}
	if rel == lbID+".sock" || strings.HasPrefix(rel, lbID+string(filepath.Separator)) {
		return rel, true
	}
	return "", false
}

func (m *Manager) removeRest(ctx context.Context, lbID string) error {
	if err := m.opts.Units.Remove(ctx, UnitName(lbID)); err != nil {
		return &service.ActionError{Message: "Error disabling haproxy service", Err: err}
	}
	if err := os.RemoveAll(filepath.Join(m.opts.CertDir, lbID)); err != nil {
		m.log.Warn("could not remove load balancer certificates", "lb_id", lbID, "err", err)
	}
	return os.RemoveAll(m.dir(lbID))
}

// Reconcile brings the services in line with the configurations on disk
// at start-up: every load balancer gets its service (re)installed — a
// crash between installing a configuration and its service, a lost unit
// file or a new agent version's rendering are all repaired, and a change
// never restarts a running haproxy — and the service of a load balancer
// whose configuration is gone (a delete interrupted by a crash) is
// removed.
func (m *Manager) Reconcile(ctx context.Context) {
	m.removeLeftovers()
	entries, err := os.ReadDir(m.opts.BasePath)
	if err != nil {
		return
	}
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || !fsutil.ValidID(id) {
			continue
		}
		if m.Exists(id) {
			m.reinstall(ctx, id)
			continue
		}
		if _, err := m.opts.Units.State(ctx, UnitName(id)); errors.Is(err, service.ErrNotFound) {
			continue
		}
		m.log.Info("removing the service of a deleted load balancer", "lb_id", id)
		if err := m.opts.Units.Remove(ctx, UnitName(id)); err != nil {
			m.log.Warn("cleanup failed", "lb_id", id, "err", err)
		}
	}
}

// removeLeftovers removes what a crash in the middle of a write leaves in
// the load balancers' directories: temporary files and staged
// configurations that were never checked (a refused one, .new-failed,
// stays for the operator). Reconcile runs it before the API serves.
func (m *Manager) removeLeftovers() {
	var dirs []string
	for _, root := range []string{m.opts.BasePath, m.opts.CertDir} {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			if e.IsDir() && fsutil.ValidID(e.Name()) {
				dirs = append(dirs, filepath.Join(root, e.Name()))
			}
		}
	}
	for _, dir := range dirs {
		m.logRemoved(fsutil.RemoveTemps(dir, nil))
	}
	if ug := m.opts.UserGroupConfig; ug != "" {
		m.logRemoved(fsutil.RemoveTemps(filepath.Dir(ug), func(t string) bool { return t == filepath.Base(ug) }))
	}
	for _, dir := range dirs {
		if !strings.HasPrefix(dir, filepath.Clean(m.opts.BasePath)+string(filepath.Separator)) {
			continue
		}
		staged := filepath.Join(dir, "haproxy.cfg"+fsutil.StagedSuffix)
		if _, err := os.Lstat(staged); err == nil {
			m.log.Info("removing a configuration whose upload was interrupted", "path", staged)
			if err := fsutil.Remove(staged); err != nil {
				m.log.Warn("cannot remove an interrupted upload", "path", staged, "err", err)
			}
		}
	}
}

func (m *Manager) logRemoved(names []string, err error) {
	if len(names) > 0 {
		m.log.Info("temporary files of interrupted writes removed", "files", strings.Join(names, " "))
	}
	if err != nil {
		m.log.Warn("cannot remove temporary files of interrupted writes", "err", err)
	}
}

// reinstall renders and installs the service of an existing load
// balancer, with the peer name of the configured amphora id (the one the
// controller uploads with).
func (m *Manager) reinstall(ctx context.Context, lbID string) {
	amphoraID := m.opts.AmphoraID
	if amphoraID == "" {
		m.log.Warn("cannot refresh the haproxy service without [amphora_agent] amphora_id", "lb_id", lbID)
		return
	}
	v, err := m.haproxyVersion(ctx)
	if err != nil {
		m.log.Warn("cannot refresh the haproxy service", "lb_id", lbID, "err", err)
		return
	}
	defer m.locks.Lock(lbID)()
	if err := m.installServices(ctx, lbID, PeerName(amphoraID), v); err != nil {
		m.log.Warn("cannot refresh the haproxy service", "lb_id", lbID, "err", err)
	}
}

func ing(action string) string {
	switch action {
	case "stop":
		return "stopping"
	case "reload":
		return "reloading"
	}
	return "starting"
}

// pastTense keeps the reference's wording ("stoped"), which tests of the
// reference expect (GAPS C10).
func pastTense(action string) string { return action + "ed" }
