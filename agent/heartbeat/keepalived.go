package heartbeat

import (
	"errors"
	"fmt"
	"os"

	"github.com/octavia-go/amphora-agent/internal/procfs"
)

// CheckKeepalived is the keepalived gate of the reference sender
// (HEARTBEAT.md §2 step 1), for Source implementations: when confPath (the
// VRRP configuration, BASE/vrrp/octavia-keepalived.conf) exists, keepalived
// must be running, else heartbeats are suppressed so the controller fails
// the amphora over. Running means: pidPath holds a pid on its first line,
// and that process exists, is not a zombie, and is keepalived (its command
// name is checked, so a pid recycled by another program after keepalived
// died does not count as running, unlike the reference's signal 0).
func CheckKeepalived(confPath, pidPath string) (skip bool, reason string) {
	return checkKeepalived("/proc", confPath, pidPath)
}

func checkKeepalived(proc, confPath, pidPath string) (bool, string) {
	if fi, err := os.Stat(confPath); err != nil || !fi.Mode().IsRegular() {
		return false, "" // not an ACTIVE_STANDBY amphora
	}
	data, err := os.ReadFile(pidPath)
	if errors.Is(err, os.ErrNotExist) {
		return true, fmt.Sprintf("keepalived pid file %s is missing", pidPath)
	}
	if err != nil {
		return true, fmt.Sprintf("keepalived pid file unreadable: %v", err)
	}
	pid, first := procfs.ParsePID(data)
	if pid == 0 {
		return true, fmt.Sprintf("keepalived pid file %s holds no pid: %q", pidPath, first)
	}
	data, err = os.ReadFile(fmt.Sprintf("%s/%d/stat", proc, pid))
	if err != nil {
		return true, fmt.Sprintf("keepalived (pid %d) is not running", pid)
	}
	st, ok := procfs.ParseStat(data)
	if !ok {
		return true, fmt.Sprintf("keepalived (pid %d): unexpected %s/%d/stat", pid, proc, pid)
	}
	if st.Comm != "keepalived" {
		return true, fmt.Sprintf("pid %d from %s is %q, not keepalived (stale pid file)", pid, pidPath, st.Comm)
	}
	if st.Gone() {
		return true, fmt.Sprintf("keepalived (pid %d) has exited", pid)
	}
	return false, ""
}
