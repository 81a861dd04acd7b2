package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSystemdManager(t *testing.T) {
	m := StartSystemdManager(t)
	unit := "[Service]\nExecStart=/bin/sleep 300\n"
	if err := os.WriteFile(filepath.Join(m.UnitDir, "tsd-sleep.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"daemon-reload"}, {"start", "tsd-sleep.service"}} {
		if out, err := m.Systemctl(args...); err != nil {
			t.Fatalf("systemctl %v: %v: %s", args, err, out)
		}
	}
	out, _ := m.Systemctl("show", "-p", "ActiveState", "-p", "MainPID", "tsd-sleep.service")
	if !strings.Contains(out, "ActiveState=active") {
		t.Fatalf("unit not active: %s\n%s", out, m.Log())
	}
	// Inside the manager's mount namespace it is "the" system manager.
	argv := append(m.Prefix(), "systemctl", "is-active", "tsd-sleep.service")
	if got, err := runOut(argv...); err != nil || strings.TrimSpace(got) != "active" {
		t.Fatalf("systemctl through /run/systemd/private: %q %v", got, err)
	}
}

func runOut(argv ...string) (string, error) {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}
