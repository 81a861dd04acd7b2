package vm

import (
	"os/exec"
	"testing"
)

func requireQEMU(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed (scripts/deps.sh installs qemu-system-x86)")
	}
	return p
}
