package service

// What outlives the agent: the persisted specs and desired states under
// StateDir, and the re-adoption of running instances after a restart.

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
	"github.com/octavia-go/amphora-agent/internal/procfs"
)

// adopt looks for a running instance of u through its pid file: the
// process must be alive and its command line must match u's argv (a
// recycled pid is not adopted). It then watches it like its own child.
func (s *Supervisor) adopt(u *unit) bool {
	u.mu.Lock()
	spec := u.spec
	u.mu.Unlock()
	if spec.PIDFile == "" {
		return false
	}
	pid, err := readPIDFile(spec.PIDFile)
	if err != nil {
		return false
	}
	// open first, then check: the pidfd pins the process the checks see
	p, err := openProcess(pid)
	if err != nil {
		return false
	}
	cmdline, err := procfs.Cmdline(pid)
	if err != nil || !cmdlineMatches(cmdline, spec.Argv) || !p.alive() {
		p.f.Close()
		if err == nil && len(cmdline) > 0 {
			s.log.Warn("pid file names an unrelated process, not adopting", "unit", u.name, "pid", pid,
				"cmdline", strings.Join(cmdline, " "))
		}
		return false
	}
	// it speaks sd_notify to us only if it was started with our socket
	p.notify = spec.Notify && hasEnv(pid, "NOTIFY_SOCKET="+s.notifyPath(u.name))
	if err := s.watchProcess(u, p); err != nil {
		return false
	}
	u.mu.Lock()
	u.proc = p
	u.phase = phaseRunning
	u.mu.Unlock()
	s.log.Info("re-adopted running service", "unit", u.name, "pid", pid)
	return true
}

// persistedSpec is the on-disk form of a service (StateDir/<name>.json).
type persistedSpec struct {
	Version       int        `json:"version"`
	Name          string     `json:"name"`
	Argv          []string   `json:"argv"`
	Checks        [][]string `json:"checks,omitempty"`
	ReloadSignal  int        `json:"reload_signal,omitempty"`
	PIDFile       string     `json:"pid_file,omitempty"`
	ChildPIDFiles []string   `json:"child_pid_files,omitempty"`
	Notify        bool       `json:"notify,omitempty"`
	Desired       string     `json:"desired"` // started or stopped
}

func (s *Supervisor) persist(u *unit) error {
	u.mu.Lock()
	ps := persistedSpec{
		Version:       1,
		Name:          u.name,
		Argv:          u.spec.Argv,
		Checks:        u.spec.Checks,
		ReloadSignal:  int(u.spec.ReloadSignal),
		PIDFile:       u.spec.PIDFile,
		ChildPIDFiles: u.spec.ChildPIDFiles,
		Notify:        u.spec.Notify,
		Desired:       "stopped",
	}
	if u.desired {
		ps.Desired = "started"
	}
	u.mu.Unlock()
	b, err := json.MarshalIndent(ps, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(s.specPath(u.name), append(b, '\n'), 0o600)
}

func loadSpec(path string) (Service, bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Service{}, false, err
	}
	var ps persistedSpec
	if err := json.Unmarshal(b, &ps); err != nil {
		return Service{}, false, err
	}
	if ps.Version != 1 {
		return Service{}, false, fmt.Errorf("unknown version %d", ps.Version)
	}
	if !ValidName(ps.Name) || filepath.Base(path) != ps.Name+".json" || len(ps.Argv) == 0 {
		return Service{}, false, fmt.Errorf("%w: bad spec", fs.ErrInvalid)
	}
	svc := Service{
		Name:          ps.Name,
		Argv:          ps.Argv,
		Checks:        ps.Checks,
		ReloadSignal:  syscall.Signal(ps.ReloadSignal),
		PIDFile:       ps.PIDFile,
		ChildPIDFiles: ps.ChildPIDFiles,
		Notify:        ps.Notify,
	}
	return svc, ps.Desired == "started", nil
}

func cloneSpec(svc Service) Service {
	svc.Unit = nil // systemd's business
	svc.Argv = slices.Clone(svc.Argv)
	checks := make([][]string, len(svc.Checks))
	for i, c := range svc.Checks {
		checks[i] = slices.Clone(c)
	}
	svc.Checks = checks
	svc.ChildPIDFiles = slices.Clone(svc.ChildPIDFiles)
	return svc
}

func sameSpec(a, b Service) bool {
	return slices.Equal(a.Argv, b.Argv) &&
		slices.EqualFunc(a.Checks, b.Checks, slices.Equal[[]string]) &&
		a.ReloadSignal == b.ReloadSignal && a.PIDFile == b.PIDFile && a.Notify == b.Notify &&
		slices.Equal(a.ChildPIDFiles, b.ChildPIDFiles)
}
