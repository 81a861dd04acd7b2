package vm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCPIOUnpacks(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio is not installed: the archive cannot be checked with it")
	}
	var buf bytes.Buffer
	if err := writeCPIO(&buf, []cpioEntry{
		{Name: "dev", Mode: cpioDir | 0o755},
		{Name: "init", Mode: cpioReg | 0o755, Data: []byte("#!/bin/sh\n")},
		{Name: "etc", Mode: cpioDir | 0o700},
		{Name: "etc/odd", Mode: cpioReg | 0o644, Data: []byte("12345")},
	}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(cpio, "-t", "-v")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	for _, want := range []string{"drwxr-xr-x", "dev\n", "-rwxr-xr-x", " init\n", " 5 ", "etc/odd\n", "drwx------"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio -tv lacks %q:\n%s", want, out)
		}
	}
}

func TestVersionLess(t *testing.T) {
	ks := []string{"/boot/vmlinuz-6.1.0-9-amd64", "/boot/vmlinuz-6.1.0-57-amd64", "/boot/vmlinuz-5.10.0-30-amd64"}
	if !versionLess(ks[0], ks[1]) || versionLess(ks[1], ks[0]) || !versionLess(ks[2], ks[0]) {
		t.Errorf("versionLess orders %v wrongly", ks)
	}
}

// TestProbeInitrdBootsUnderTCG boots the probe initrd with the host's
// kernel under software emulation: the probe itself must work, or a
// failed KVM probe would mean nothing.
func TestProbeInitrdBootsUnderTCG(t *testing.T) {
	qemu := requireQEMU(t)
	kernel, err := ProbeKernel()
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	initrd, err := buildProbeInitrd(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(initrd); err != nil || fi.Size() == 0 {
		t.Fatalf("initrd %s: %v", initrd, err)
	}
	ok, why := probeBoot(qemu, AccelChoice{Accel: AccelTCG}, kernel, initrd, 2*probeTimeout)
	if !ok {
		t.Fatalf("%s + %s under TCG: %s", filepath.Base(kernel), initrd, why)
	}
	t.Logf("accelerator for the guests: %s", DetectAccel(qemu))
}
