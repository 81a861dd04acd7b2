package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Accel is how qemu runs the guest's CPU.
type Accel string

const (
	// AccelKVM is hardware virtualisation (/dev/kvm).
	AccelKVM Accel = "kvm"
	// AccelTCG is qemu's software emulation: always available, about
	// ten times slower.
	AccelTCG Accel = "tcg"
)

// probeMarker is what probeinit/main.go prints on the console.
const probeMarker = "amphora-vm-probe: userspace reached"

// AccelChoice is the accelerator the harness runs guests with, and why.
type AccelChoice struct {
	Accel  Accel
	Reason string
	// Probe is how long the KVM probe boot took (0 when none ran).
	Probe time.Duration
}

func (c AccelChoice) String() string {
	return fmt.Sprintf("%s (%s)", c.Accel, c.Reason)
}

// QEMUArgs are the accelerator's qemu options.
func (c AccelChoice) QEMUArgs() []string {
	if c.Accel == AccelKVM {
		return []string{"-accel", "kvm", "-cpu", "host"}
	}
	return []string{"-accel", "tcg"}
}

var (
	accelOnce   sync.Once
	accelChoice AccelChoice
)

// DetectAccel chooses the accelerator once per process:
// $AMPHORA_VM_ACCEL (kvm or tcg) when set, otherwise KVM if a bounded
// probe boot of the host's kernel with a tiny initrd reaches userspace
// under it, otherwise TCG. /dev/kvm existing is not enough: on a host
// that is itself a guest of a paravirtual hypervisor, KVM creates VMs
// whose stock kernels hang at boot, so only a real boot tells.
func DetectAccel(qemu string) AccelChoice {
	accelOnce.Do(func() { accelChoice = detectAccel(qemu) })
	return accelChoice
}

func detectAccel(qemu string) AccelChoice {
	switch a := os.Getenv("AMPHORA_VM_ACCEL"); a {
	case string(AccelKVM), string(AccelTCG):
		return AccelChoice{Accel: Accel(a), Reason: "AMPHORA_VM_ACCEL=" + a}
	case "", "auto":
	default:
		return AccelChoice{Accel: AccelTCG, Reason: fmt.Sprintf("AMPHORA_VM_ACCEL=%q is not kvm, tcg or auto", a)}
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return AccelChoice{Accel: AccelTCG, Reason: "no /dev/kvm"}
	}
	kernel, err := ProbeKernel()
	if err != nil {
		return AccelChoice{Accel: AccelTCG, Reason: "cannot probe KVM: " + err.Error()}
	}
	dir, err := os.MkdirTemp("", "avm-probe-")
	if err != nil {
		return AccelChoice{Accel: AccelTCG, Reason: "cannot probe KVM: " + err.Error()}
	}
	defer os.RemoveAll(dir)
	initrd, err := buildProbeInitrd(dir)
	if err != nil {
		return AccelChoice{Accel: AccelTCG, Reason: "cannot probe KVM: " + err.Error()}
	}
	start := time.Now()
	ok, why := probeBoot(qemu, AccelChoice{Accel: AccelKVM}, kernel, initrd, probeTimeout)
	took := time.Since(start)
	if ok {
		return AccelChoice{Accel: AccelKVM, Reason: fmt.Sprintf("probe boot of %s reached userspace in %v", filepath.Base(kernel), took.Round(10*time.Millisecond)), Probe: took}
	}
	return AccelChoice{Accel: AccelTCG, Reason: "KVM probe boot failed: " + why, Probe: took}
}

// probeTimeout bounds the KVM probe: a working KVM reaches the initrd's
// /init in well under a second of guest time, TCG in about 3 s.
const probeTimeout = 20 * time.Second

// ProbeKernel is the kernel the probe boots: $AMPHORA_VM_PROBE_KERNEL, or
// the newest /boot/vmlinuz-* (Debian's linux-image-amd64).
func ProbeKernel() (string, error) {
	if k := os.Getenv("AMPHORA_VM_PROBE_KERNEL"); k != "" {
		return k, nil
	}
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(ks) == 0 {
		return "", errors.New("no kernel in /boot (install linux-image-amd64)")
	}
	sort.Slice(ks, func(i, j int) bool { return versionLess(ks[i], ks[j]) })
	return ks[len(ks)-1], nil
}

// versionLess compares two names by their dotted/dashed numbers.
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	x, y := split(a), split(b)
	for i := 0; i < len(x) && i < len(y); i++ {
		if x[i] == y[i] {
			continue
		}
		var nx, ny int
		_, ex := fmt.Sscanf(x[i], "%d", &nx)
		_, ey := fmt.Sscanf(y[i], "%d", &ny)
		if ex == nil && ey == nil && nx != ny {
			return nx < ny
		}
		return x[i] < y[i]
	}
	return len(x) < len(y)
}

// buildProbeInitrd builds probeinit (static) and packs it as /init of a
// newc initrd with a /dev/console node, in dir.
func buildProbeInitrd(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "init")
	cmd := exec.Command(goTool(), "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./test/vm/probeinit")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build probe init: %v: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := writeCPIO(&buf, []cpioEntry{
		{Name: "dev", Mode: cpioDir | 0o755},
		{Name: "dev/console", Mode: cpioChr | 0o600, Major: 5, Minor: 1},
		{Name: "init", Mode: cpioReg | 0o755, Data: data},
	}); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "probe.cpio")
	return path, os.WriteFile(path, buf.Bytes(), 0o644)
}

// probeBoot boots kernel+initrd with accel, bounded by limit, and reports
// whether the probe's marker appeared (else the last console line).
func probeBoot(qemu string, accel AccelChoice, kernel, initrd string, limit time.Duration) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	args := append(accel.QEMUArgs(),
		"-machine", "pc", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
		"-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 loglevel=4")
	cmd := exec.CommandContext(ctx, qemu, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	text := out.String()
	if strings.Contains(text, probeMarker) {
		return true, ""
	}
	last := strings.TrimSpace(text)
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	if last == "" {
		last = "nothing on the serial console"
	}
	if ctx.Err() != nil {
		return false, fmt.Sprintf("no userspace within %v (%s)", limit, last)
	}
	return false, fmt.Sprintf("%v (%s)", err, last)
}
