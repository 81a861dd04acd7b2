package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/keyedlock"
)

// Defaults of SystemdOptions.
const (
	DefaultUnitDir       = "/usr/lib/systemd/system"
	DefaultPrivateSocket = "/run/systemd/private"
)

// reconnectWindow bounds the retries after the connection dropped.
const reconnectWindow = 15 * time.Second

// SystemdOptions configures NewSystemd.
type SystemdOptions struct {
	// UnitDir is where unit files are written ([amphora_agent]
	// systemd_unit_dir). Default DefaultUnitDir.
	UnitDir string
	// PrivateSocket is the manager's private D-Bus socket, talked to
	// directly (no bus daemon). Default DefaultPrivateSocket, the system
	// manager's; a user manager's is $XDG_RUNTIME_DIR/systemd/private.
	PrivateSocket string
	// UserBus connects through the session bus (DBUS_SESSION_BUS_ADDRESS)
	// to the user manager instead of a private socket.
	UserBus bool
	// Logger receives the manager's logs; nil discards them.
	Logger *slog.Logger
}

// Systemd is a Manager driving a systemd manager over D-Bus. It reconnects
// transparently when the connection drops (e.g. daemon-reexec).
type Systemd struct {
	opts  SystemdOptions
	log   *slog.Logger
	locks keyedlock.Map // serializes operations per service name

	// statistics, read by tests
	dials   atomic.Int64
	reloads atomic.Int64

	mu     sync.Mutex // guards the following
	conn   *sddbus.Conn
	sig    *godbus.Conn // the connection under conn that delivers job results
	life   context.Context
	cancel context.CancelFunc
	closed bool
}

var _ Manager = (*Systemd)(nil)

// NewSystemd connects to the systemd manager chosen by opts. ctx bounds
// the initial connection only.
func NewSystemd(ctx context.Context, opts SystemdOptions) (*Systemd, error) {
	if opts.UnitDir == "" {
		opts.UnitDir = DefaultUnitDir
	}
	if opts.PrivateSocket == "" {
		opts.PrivateSocket = DefaultPrivateSocket
	}
	m := &Systemd{opts: opts, log: opts.Logger}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.life, m.cancel = context.WithCancel(context.Background())
	if _, _, err := m.connection(ctx); err != nil {
		m.cancel()
		return nil, err
	}
	// unit files whose write a crash interrupted (only unit names: the
	// directory is shared with the system's units)
	removed, err := fsutil.RemoveTemps(opts.UnitDir, func(t string) bool { return strings.HasSuffix(t, ".service") })
	if len(removed) > 0 || err != nil {
		m.log.Info("temporary files of interrupted writes removed", "dir", opts.UnitDir, "files", fmt.Sprint(removed), "err", err)
	}
	return m, nil
}

// Close closes the D-Bus connection. Units keep running.
func (m *Systemd) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.cancel()
	if m.conn != nil {
		m.conn.Close()
		m.conn, m.sig = nil, nil
	}
	return nil
}

func unitName(name string) string { return name + ".service" }

// Install writes the unit file (GeneratedMarker, then svc.Unit) if its
// content differs, daemon-reloads when it changed and enables the unit.
// A unit file that does not start with GeneratedMarker was written by
// someone else (the image, an operator) and is left alone: nothing is
// written or enabled, and Install reports no change.
func (m *Systemd) Install(ctx context.Context, svc Service) (bool, error) {
	if err := checkName(svc.Name); err != nil {
		return false, &OpError{Name: svc.Name, Op: "install", Err: err}
	}
	if len(svc.Unit) == 0 {
		return false, &OpError{Name: svc.Name, Op: "install", Err: fmt.Errorf("%w: empty unit text", ErrInvalid)}
	}
	unlock, err := m.locks.LockContext(ctx, svc.Name)
	if err != nil {
		return false, &OpError{Name: svc.Name, Op: "install", Err: err}
	}
	defer unlock()
	unit := unitName(svc.Name)
	path := filepath.Join(m.opts.UnitDir, unit)
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, &OpError{Name: svc.Name, Op: "install", Err: err}
	}
	if err == nil && !bytes.HasPrefix(old, []byte(GeneratedMarker)) {
		// The image or an operator provides this unit: theirs wins.
		m.log.Debug("unit file not written by the agent left as it is", "unit", unit, "path", path)
		return false, nil
	}
	text := append([]byte(GeneratedMarker), svc.Unit...)
	changed := err != nil || !bytes.Equal(old, text)
	if changed {
		if err := os.MkdirAll(m.opts.UnitDir, 0o755); err != nil {
			return false, &OpError{Name: svc.Name, Op: "install", Err: err}
		}
		if err := fsutil.WriteFile(path, text, 0o644); err != nil {
			return false, &OpError{Name: svc.Name, Op: "install", Err: err}
		}
		if err := m.daemonReload(ctx); err != nil {
			return true, &OpError{Name: svc.Name, Op: "install", Err: err}
		}
		m.log.Info("unit file written", "unit", unit, "path", path)
	}
	var state string
	err = m.call(ctx, func(c *sddbus.Conn) error {
		p, err := c.GetUnitPropertyContext(ctx, unit, "UnitFileState")
		if err == nil {
			state, _ = p.Value.Value().(string)
		}
		return err
	})
	if err != nil {
		return changed, &OpError{Name: svc.Name, Op: "install", Err: mapDBusErr(err)}
	}
	// "static" (no [Install] section), "enabled"... need nothing; enable
	// again after a change so a changed [Install] section is honoured
	if state == "disabled" || (changed && state == "enabled") {
		err = m.call(ctx, func(c *sddbus.Conn) error {
			_, _, err := c.EnableUnitFilesContext(ctx, []string{unit}, false, true)
			return err
		})
		if err != nil {
			return changed, &OpError{Name: svc.Name, Op: "install", Err: fmt.Errorf("enable: %w", mapDBusErr(err))}
		}
		changed = changed || state == "disabled"
	}
	return changed, nil
}

func (m *Systemd) daemonReload(ctx context.Context) error {
	err := m.call(ctx, func(c *sddbus.Conn) error { return c.ReloadContext(ctx) })
	if err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	m.reloads.Add(1)
	return nil
}

type jobFunc func(c *sddbus.Conn, ctx context.Context, unit, mode string, ch chan<- string) (int, error)

func (m *Systemd) Start(ctx context.Context, name string) error {
	return m.job(ctx, "start", name, (*sddbus.Conn).StartUnitContext)
}

func (m *Systemd) Stop(ctx context.Context, name string) error {
	return m.job(ctx, "stop", name, (*sddbus.Conn).StopUnitContext)
}

func (m *Systemd) Reload(ctx context.Context, name string) error {
	return m.job(ctx, "reload", name, (*sddbus.Conn).ReloadUnitContext)
}

func (m *Systemd) Restart(ctx context.Context, name string) error {
	return m.job(ctx, "restart", name, (*sddbus.Conn).RestartUnitContext)
}

// job queues a job for the unit (mode "replace") and waits for its result.
func (m *Systemd) job(ctx context.Context, op, name string, f jobFunc) error {
	if err := checkName(name); err != nil {
		return &OpError{Name: name, Op: op, Err: err}
	}
	unlock, err := m.locks.LockContext(ctx, name)
	if err != nil {
		return &OpError{Name: name, Op: op, Err: err}
	}
	defer unlock()
	return m.jobLocked(ctx, op, name, f)
}

func (m *Systemd) jobLocked(ctx context.Context, op, name string, f jobFunc) error {
	unit := unitName(name)
	t0 := time.Now()
	limitReset := false
	for attempt := 0; ; attempt++ {
		c, gone, err := m.connection(ctx)
		if err != nil {
			return &OpError{Name: name, Op: op, Err: err}
		}
		ch := make(chan string, 1) // go-systemd sends without blocking on a buffered channel
		id, err := f(c, ctx, unit, "replace", ch)
		if err != nil {
			if attempt == 0 && connLost(c, err) {
				continue
			}
			return &OpError{Name: name, Op: op, Err: mapDBusErr(err)}
		}
		var result string
		select {
		case result = <-ch:
		case <-gone:
			// the job runs on without us: follow it on a new connection
			result, err = m.followJob(ctx, op, unit, uint32(id))
			if err != nil {
				return &OpError{Name: name, Op: op, Err: err}
			}
		case <-ctx.Done():
			return &OpError{Name: name, Op: op, Err: ctx.Err(), State: m.describe(unit)}
		}
		if result == "canceled" {
			m.log.Debug("systemd job replaced by another, checking the outcome", "unit", unit, "op", op)
			// another job (ours from elsewhere, an admin's, Restart=) replaced
			// this one: what counts is the state it leaves
			result = m.settle(ctx, op, unit)
		}
		if result == "done" {
			m.log.Debug("systemd job done", "unit", unit, "op", op, "took", time.Since(t0))
			return nil
		}
		if (op == "start" || op == "restart") && !limitReset && m.serviceResult(ctx, unit) == "start-limit-hit" {
			// an explicit request from the controller deserves an attempt even
			// after a burst of restarts: forget the rate limit once and retry
			limitReset = true
			m.log.Warn("unit hit its start rate limit, resetting it", "unit", unit)
			if err := m.call(ctx, func(c *sddbus.Conn) error { return c.ResetFailedUnitContext(ctx, unit) }); err == nil {
				attempt = -1
				continue
			}
		}
		if op == "reload" && (result == "invalid" || result == "skipped") {
			// the reload job met an inactive unit ("invalid" when it was
			// inactive from the start, "skipped" when it stopped meanwhile)
			if st, err := m.unitState(ctx, unit); err == nil && !st.Active {
				return &OpError{Name: name, Op: op, Result: result, State: st.ActiveState + "/" + st.SubState, Err: ErrNotActive}
			}
		}
		return &OpError{Name: name, Op: op, Result: result, State: m.describe(unit), Err: errJobFailed}
	}
}

var errJobFailed = errors.New("job did not succeed")

// followJob waits, after the connection dropped, until the unit no longer
// runs job id, and derives the result from the unit's state.
func (m *Systemd) followJob(ctx context.Context, op, unit string, id uint32) (string, error) {
	for {
		cur, err := m.unitJob(ctx, unit)
		if err != nil {
			return "", err
		}
		if cur != id {
			return m.outcome(ctx, op, unit), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// settle waits (bounded by ctx) until the unit has no pending job and
// returns "done" if its state is what op wanted, else "canceled".
func (m *Systemd) settle(ctx context.Context, op, unit string) string {
	for {
		cur, err := m.unitJob(ctx, unit)
		if err != nil {
			return "canceled"
		}
		if cur == 0 {
			if m.outcome(ctx, op, unit) == "done" {
				return "done"
			}
			return "canceled"
		}
		select {
		case <-ctx.Done():
			return "canceled"
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unitJob returns the id of the job pending for the unit, 0 when none.
func (m *Systemd) unitJob(ctx context.Context, unit string) (uint32, error) {
	var id uint32
	err := m.call(ctx, func(c *sddbus.Conn) error {
		p, err := c.GetUnitPropertyContext(ctx, unit, "Job")
		if err != nil {
			return err
		}
		var job struct {
			ID   uint32
			Path godbus.ObjectPath
		}
		if err := godbus.Store([]any{p.Value.Value()}, &job); err != nil {
			return err
		}
		id = job.ID
		return nil
	})
	return id, mapDBusErr(err)
}

// outcome tells whether the unit's current state is what op wanted.
func (m *Systemd) outcome(ctx context.Context, op, unit string) string {
	st, err := m.unitState(ctx, unit)
	if err != nil {
		return "failed"
	}
	if op == "stop" {
		if st.ActiveState == "inactive" || st.ActiveState == "failed" {
			return "done"
		}
	} else if st.Active {
		return "done"
	}
	return "failed"
}

// serviceResult returns the Service Result property ("" when unknown).
func (m *Systemd) serviceResult(ctx context.Context, unit string) string {
	var r string
	_ = m.call(ctx, func(c *sddbus.Conn) error {
		p, err := c.GetServicePropertyContext(ctx, unit, "Result")
		if err == nil {
			r, _ = p.Value.Value().(string)
		}
		return err
	})
	return r
}

// describe renders the unit's state for an error message (best effort).
func (m *Systemd) describe(unit string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var props map[string]any
	err := m.call(ctx, func(c *sddbus.Conn) error {
		var err error
		props, err = c.GetUnitTypePropertiesContext(ctx, unit, "Service")
		return err
	})
	st, err2 := m.unitState(ctx, unit)
	if err2 != nil {
		return ""
	}
	parts := []string{st.ActiveState + "/" + st.SubState}
	if err == nil {
		if r, _ := props["Result"].(string); r != "" && r != "success" {
			parts = append(parts, "result="+r)
		}
		if code, _ := props["ExecMainCode"].(int32); code != 0 {
			if s, _ := props["ExecMainStatus"].(int32); code == 1 { // CLD_EXITED
				parts = append(parts, fmt.Sprintf("status=%d", s))
			} else {
				parts = append(parts, fmt.Sprintf("signal=%d", s))
			}
		}
		if n, ok := props["NRestarts"].(uint32); ok && n > 0 {
			parts = append(parts, fmt.Sprintf("restarts=%d", n))
		}
	}
	return strings.Join(parts, " ")
}

// State reads ActiveState, SubState and MainPID. An unknown unit (no unit
// file, not running) gives ErrNotFound.
func (m *Systemd) State(ctx context.Context, name string) (State, error) {
	if err := checkName(name); err != nil {
		return State{}, &OpError{Name: name, Op: "state", Err: err}
	}
	st, err := m.unitState(ctx, unitName(name))
	if err != nil {
		return State{}, &OpError{Name: name, Op: "state", Err: err}
	}
	return st, nil
}

func (m *Systemd) unitState(ctx context.Context, unit string) (State, error) {
	var props map[string]any
	var pid uint32
	err := m.call(ctx, func(c *sddbus.Conn) error {
		var err error
		props, err = c.GetUnitPropertiesContext(ctx, unit)
		if err != nil {
			return err
		}
		if ls, _ := props["LoadState"].(string); ls == "not-found" {
			return nil
		}
		p, err := c.GetServicePropertyContext(ctx, unit, "MainPID")
		if err != nil {
			return err
		}
		pid, _ = p.Value.Value().(uint32)
		return nil
	})
	if err != nil {
		return State{}, mapDBusErr(err)
	}
	st := State{MainPID: int(pid)}
	st.ActiveState, _ = props["ActiveState"].(string)
	st.SubState, _ = props["SubState"].(string)
	st.Active = st.ActiveState == "active" || st.ActiveState == "reloading"
	if ls, _ := props["LoadState"].(string); ls == "not-found" && !st.Active && st.ActiveState != "deactivating" {
		return State{}, ErrNotFound
	}
	return st, nil
}

// Remove stops the unit if it runs, disables it, deletes its file and
// daemon-reloads. An unknown unit is not an error. A unit file the agent
// did not write (not a regular file starting with GeneratedMarker: the
// image's, an operator's, a mask) is stopped but never disabled or
// deleted.
func (m *Systemd) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return &OpError{Name: name, Op: "remove", Err: err}
	}
	unlock, err := m.locks.LockContext(ctx, name)
	if err != nil {
		return &OpError{Name: name, Op: "remove", Err: err}
	}
	defer unlock()
	unit := unitName(name)
	path := filepath.Join(m.opts.UnitDir, unit)
	fileExists, owned := ownedUnitFile(path)

	st, err := m.unitState(ctx, unit)
	switch {
	case errors.Is(err, ErrNotFound):
		if !fileExists {
			return nil
		}
	case err != nil:
		return &OpError{Name: name, Op: "remove", Err: err}
	case st.ActiveState != "inactive" && st.ActiveState != "failed":
		if err := m.jobLocked(ctx, "stop", name, (*sddbus.Conn).StopUnitContext); err != nil &&
			!errors.Is(err, ErrNotFound) {
			return &OpError{Name: name, Op: "remove", Err: err}
		}
	}
	if fileExists && !owned {
		m.log.Warn("unit file not written by the agent kept (stopped, not disabled)", "unit", unit, "path", path)
		return nil
	}
	if fileExists {
		err := m.call(ctx, func(c *sddbus.Conn) error {
			_, err := c.DisableUnitFilesContext(ctx, []string{unit}, false)
			return err
		})
		if err != nil {
			// not fatal: the file goes away anyway; a dangling .wants link is
			// ignored by systemd
			m.log.Warn("disable unit failed", "unit", unit, "err", err)
		}
		if err := fsutil.Remove(path); err != nil {
			return &OpError{Name: name, Op: "remove", Err: err}
		}
	}
	if err := m.daemonReload(ctx); err != nil {
		return &OpError{Name: name, Op: "remove", Err: err}
	}
	// forget a failed state so the unit does not linger in listings
	_ = m.call(ctx, func(c *sddbus.Conn) error { return c.ResetFailedUnitContext(ctx, unit) })
	m.log.Info("unit removed", "unit", unit)
	return nil
}

// ownedUnitFile reports whether a unit file exists at path (a link
// counts) and whether the agent wrote it: a regular file that starts with
// GeneratedMarker.
func ownedUnitFile(path string) (exists, owned bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, false
	}
	if !fi.Mode().IsRegular() {
		return true, false
	}
	f, err := os.Open(path)
	if err != nil {
		return true, false
	}
	defer f.Close()
	head := make([]byte, len(GeneratedMarker))
	n, _ := io.ReadFull(f, head)
	return true, string(head[:n]) == GeneratedMarker
}

// mapDBusErr translates systemd's D-Bus errors into the package sentinels.
func mapDBusErr(err error) error {
	var de godbus.Error
	if !errors.As(err, &de) {
		var pde *godbus.Error
		if !errors.As(err, &pde) {
			return err
		}
		de = *pde
	}
	switch de.Name {
	case "org.freedesktop.systemd1.NoSuchUnit":
		return fmt.Errorf("%w: %v", ErrNotFound, err)
	case "org.freedesktop.systemd1.UnitInactive":
		return fmt.Errorf("%w: %v", ErrNotActive, err)
	}
	return err
}
