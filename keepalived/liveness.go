package keepalived

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/octavia-go/amphora-agent/internal/procfs"
)

// VRRPPaths returns the file layout of the VRRP keepalived under
// base_path: BASE/vrrp.
func VRRPPaths(basePath string) Paths { return Paths{Dir: filepath.Join(basePath, "vrrp")} }

// Configured reports whether a VRRP configuration was uploaded: the
// amphora is part of an ACTIVE_STANDBY pair.
func (p Paths) Configured() bool {
	fi, err := os.Stat(p.Config())
	return err == nil && fi.Mode().IsRegular()
}

// Status reports on the VRRP keepalived: configured says a configuration
// was uploaded; problem is "" while keepalived runs, else why it does not
// (the reference's heartbeat gate, HEARTBEAT.md §2 step 1, with a
// stricter idea of running: see checkPID).
func (p Paths) Status() (configured bool, problem string) {
	if !p.Configured() {
		return false, ""
	}
	_, problem = checkPID(p.PIDFile())
	return true, problem
}

// livePID returns the pid on the first line of pidFile when it names a
// live keepalived, else 0.
func livePID(pidFile string) int {
	pid, _ := checkPID(pidFile)
	return pid
}

// checkPID reads a keepalived pid file: it returns the pid when its first
// line holds one and that process exists, is not a zombie, and is
// keepalived (its command name is checked, so a pid recycled by another
// program after keepalived died does not count, unlike the reference's
// signal 0: GAPS B5, E9). Otherwise it returns 0 and why.
func checkPID(pidFile string) (int, string) {
	data, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Sprintf("keepalived pid file %s is missing", pidFile)
	}
	if err != nil {
		return 0, fmt.Sprintf("keepalived pid file unreadable: %v", err)
	}
	pid, first := procfs.ParsePID(data)
	if pid == 0 {
		return 0, fmt.Sprintf("keepalived pid file %s holds no pid: %q", pidFile, first)
	}
	stat := "/proc/" + strconv.Itoa(pid) + "/stat"
	data, err = os.ReadFile(stat)
	if err != nil {
		return 0, fmt.Sprintf("keepalived (pid %d) is not running", pid)
	}
	st, ok := procfs.ParseStat(data)
	if !ok {
		return 0, fmt.Sprintf("keepalived (pid %d): unexpected %s", pid, stat)
	}
	if st.Comm != "keepalived" {
		return 0, fmt.Sprintf("pid %d from %s is %q, not keepalived (stale pid file)", pid, pidFile, st.Comm)
	}
	if st.Gone() {
		return 0, fmt.Sprintf("keepalived (pid %d) has exited", pid)
	}
	return pid, ""
}
