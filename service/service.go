// Package service is the one interface through which the agent controls its
// long-running services (one haproxy per load balancer, keepalived for
// VRRP), with two implementations:
//
//   - Systemd drives the system manager over D-Bus: unit files are written
//     atomically, only when their content changes, followed by an explicit
//     daemon-reload; every start/stop/reload/restart waits for the job
//     result.
//   - Supervisor runs the programs itself, for hosts and containers without
//     systemd: own session per service, readiness wait, restart with
//     back-off, and re-adoption of the running processes after an agent
//     restart (the services outlive the agent, like systemd units).
//
// The caller describes a service once with a Service value carrying both
// forms (unit text for systemd, argv for the supervisor), so the
// haproxy/keepalived packages do not care which manager runs.
package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
)

// Service describes one supervised service. The haproxy/keepalived packages
// fill it; each manager uses the fields it needs.
type Service struct {
	// Name is the unit base name, e.g. "haproxy-<lb_id>" (unit
	// "haproxy-<lb_id>.service"). Letters, digits and "_.@:-" only.
	Name string

	// Unit is the systemd unit file text (Systemd only), without
	// GeneratedMarker, which the manager adds.
	Unit []byte

	// The following fields are used by the Supervisor only.

	// Argv is the foreground command: the program the unit's ExecStart
	// runs, without daemonizing (haproxy -W/-Ws, keepalived -n).
	Argv []string
	// Checks are commands run before every start and reload (like
	// ExecStartPre / the first ExecReload); any failure aborts the
	// operation with the command's output.
	Checks [][]string
	// ReloadSignal is sent to the main process on Reload (SIGUSR2 for
	// haproxy master-worker, SIGHUP for keepalived). Zero: Reload fails.
	ReloadSignal syscall.Signal
	// PIDFile is the pid file the program writes with its own (main) pid.
	// When set, a start is complete only once it is written, and it is how
	// a running instance is found again after an agent restart.
	PIDFile string
	// ChildPIDFiles are further pid files the program writes (keepalived's
	// VRRP and checker children). Like PIDFile they are removed before
	// every start: what they name then is not this service (its processes
	// are gone), and keepalived refuses to start while any of its pid files
	// names a live process, which a pid recycled after a crash or a hard
	// reset can be. Units do the same with an ExecStartPre.
	ChildPIDFiles []string
	// Notify says the program speaks the sd_notify protocol (haproxy -Ws):
	// the supervisor passes NOTIFY_SOCKET and a start or reload completes
	// when the program sends READY=1, like a Type=notify unit.
	Notify bool
}

// State is what a manager knows about a service right now.
type State struct {
	// Active is true while the service's main process runs (systemd
	// ActiveState active or reloading).
	Active bool
	// MainPID is the main process id, 0 when none.
	MainPID int
	// ActiveState and SubState use systemd's vocabulary: ActiveState one of
	// active, reloading, inactive, failed, activating, deactivating;
	// SubState e.g. running, dead, failed, start, auto-restart, stop-sigterm.
	ActiveState string
	SubState    string
}

func (s State) String() string {
	return fmt.Sprintf("%s/%s pid %d", s.ActiveState, s.SubState, s.MainPID)
}

// Manager controls long-running services. All methods are safe for
// concurrent use; operations on one service are serialized.
type Manager interface {
	// Install writes or refreshes what the manager needs for svc and
	// reports whether anything changed. Systemd: writes the unit file
	// atomically (mode 0644) only when its content differs, daemon-reloads
	// when something changed, enables the unit; a unit file the agent did
	// not write (without GeneratedMarker) is never overwritten or
	// enabled. Supervisor: remembers and
	// persists the spec (and re-adopts a running instance it does not know
	// yet). A change never restarts a running service; call Restart when
	// the new definition must take effect.
	Install(ctx context.Context, svc Service) (changed bool, err error)
	// Start starts the service and waits until it is ready; starting an
	// active service does nothing.
	Start(ctx context.Context, name string) error
	// Stop stops the service and waits until it is gone.
	Stop(ctx context.Context, name string) error
	// Reload makes a running service re-read its configuration. Reloading
	// a service that is not running fails with ErrNotActive.
	Reload(ctx context.Context, name string) error
	// Restart stops (if running) and starts the service.
	Restart(ctx context.Context, name string) error
	// State reports the service's actual state (not the desired one).
	State(ctx context.Context, name string) (State, error)
	// Remove stops the service if it runs, disables it and deletes its
	// unit file or persisted spec. Removing an unknown service succeeds.
	Remove(ctx context.Context, name string) error
	// Close releases the manager's resources. Services keep running.
	Close() error
}

// GeneratedMarker is the first line of every unit file the agent writes.
// A unit file without it belongs to someone else (the image ships its
// own amphora-netns.service, an operator may replace a unit): Install
// never overwrites it.
const GeneratedMarker = "# Generated by amphora-agent; rewritten when the agent's rendering changes.\n"

var (
	// ErrNotFound: the service is not installed (unknown unit/spec).
	ErrNotFound = errors.New("service not found")
	// ErrNotActive: a reload was asked for a service that is not running.
	ErrNotActive = errors.New("service not active")
	// ErrClosed: the manager was closed.
	ErrClosed = errors.New("service manager closed")
	// ErrInvalid: the Service description cannot be used.
	ErrInvalid = errors.New("invalid service")
)

// OpError reports a failed operation on a service.
type OpError struct {
	Name string // service name
	Op   string // install, start, stop, reload, restart, remove, state
	// Result is systemd's job result (failed, timeout, canceled,
	// dependency, skipped...) or, for the supervisor, one of
	// check-failed, exited, timeout, signal.
	Result string
	// State describes the service after the failure, e.g.
	// "failed/failed result=exit-code status=1" (empty when unknown).
	State string
	// Output is the output of a failing check command, or the end of what
	// the service printed since it was started (supervisor).
	Output string
	Err    error // underlying cause, may be nil
}

func (e *OpError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Op, e.Name)
	if e.Result != "" {
		fmt.Fprintf(&b, ": %s", e.Result)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.State != "" {
		fmt.Fprintf(&b, " (state %s)", e.State)
	}
	if e.Output != "" {
		fmt.Fprintf(&b, ": %s", e.Output)
	}
	return b.String()
}

func (e *OpError) Unwrap() error { return e.Err }

// ActionError reports a failed action on a service the way the REST API
// answers it: the reference agent's message ("Error starting haproxy",
// "Failed to start octavia-keepalived service", "Error enabling
// octavia-keepalivedlvs service") and the cause, usually an *OpError.
// The haproxy and keepalived packages return it.
type ActionError struct {
	Message string
	Err     error
}

func (e *ActionError) Error() string { return e.Message + ": " + e.Err.Error() }
func (e *ActionError) Unwrap() error { return e.Err }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@:-]*$`)

// ValidName reports whether name can be used as a service name: a unit
// base name without the ".service" suffix, safe in file paths.
func ValidName(name string) bool {
	return len(name) <= 200 && nameRE.MatchString(name) && !strings.HasSuffix(name, ".service") &&
		!strings.Contains(name, "..")
}

func checkName(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: bad name %q", ErrInvalid, name)
	}
	return nil
}

// Booted reports whether systemd is the running system manager (the
// sd_booted test: /run/systemd/system is a directory). The agent uses it
// to resolve service_manager = auto.
func Booted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}
