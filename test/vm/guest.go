package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// GuestSpec is one virtual machine, shaped like the server Nova boots
// for an amphora: a qcow2 overlay on the amphora image, a config drive on
// an IDE CD-ROM, virtio NICs on taps, the serial console in a file.
type GuestSpec struct {
	Name        string // short (at most 4 characters): tap names are avm-<Name>-<nic>
	UUID        string // the Nova server id (SMBIOS, metadata)
	Dir         string // overlay, qemu log, QMP socket, console log
	Image       string // the base image; never written (see PinImage)
	ConfigDrive string // ISO 9660 "config-2"
	Accel       AccelChoice
	QEMU        string // qemu-system-x86_64
	MemoryMiB   int    // default 1024 (Octavia's amphora flavor)
	CPUs        int    // default 1
	// Netns is where qemu runs: its taps are created there.
	Netns *Netns
	// NICs are the ports plugged at start (the first is the management
	// port); hot-plugged ones are appended, so a guest started again
	// (after a power-off) has them all, as Nova's instance does.
	NICs []NIC
	// Detach starts qemu in its own session, so it outlives the caller.
	Detach bool
}

// NIC is one port of the guest.
type NIC struct {
	ID     string // short id: "mgmt", "vip", "mem" (at most 4 characters)
	MAC    string // fa:16:3e:...
	Bridge string // bridge in the guest's namespace the tap joins
}

// Guest is a running qemu.
type Guest struct {
	Spec    GuestSpec
	Cmd     *exec.Cmd
	QMP     *QMP
	Console string // serial console log (appended across boots)
	// Started is when the guest's CPU started (qemu runs paused until its
	// taps are on their bridges).
	Started time.Time

	mu      sync.Mutex
	exited  chan struct{}
	exitErr error
}

// Tap is the host-side interface name of a NIC of the guest.
func (s *GuestSpec) Tap(nicID string) string {
	return "avm-" + s.Name + "-" + nicID
}

func (s *GuestSpec) overlay() string { return filepath.Join(s.Dir, "disk.qcow2") }
func (s *GuestSpec) qmpPath() string { return filepath.Join(s.Dir, "qmp.sock") }

// PinImage makes the guests' base image immune to a rebuild of image
// (make image renames a new file into place): a hard link to it in dir
// (a copy across file systems), read-only.
func PinImage(image, dir string) (string, error) {
	abs, err := filepath.Abs(image)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("amphora image: %w (make image builds it)", err)
	}
	pinned := filepath.Join(dir, "base-"+filepath.Base(abs))
	_ = os.Remove(pinned)
	if err := os.Link(abs, pinned); err != nil {
		out, cerr := exec.Command("cp", "--reflink=auto", abs, pinned).CombinedOutput()
		if cerr != nil {
			return "", fmt.Errorf("copy %s: %v: %s", abs, cerr, out)
		}
	}
	return pinned, nil
}

// StartGuest creates the overlay (first start only), starts qemu paused
// inside spec.Netns, attaches its taps to their bridges and lets the CPU
// run. A failure after qemu started kills it.
func StartGuest(ctx context.Context, spec GuestSpec) (*Guest, error) {
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = 1024
	}
	if spec.CPUs == 0 {
		spec.CPUs = 1
	}
	if len(spec.Name) > 4 {
		return nil, fmt.Errorf("guest name %q: at most 4 characters", spec.Name)
	}
	if _, err := os.Stat(spec.overlay()); errors.Is(err, os.ErrNotExist) {
		out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
			"-b", spec.Image, spec.overlay()).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("qemu-img create overlay: %v: %s", err, out)
		}
	}
	_ = os.Remove(spec.qmpPath())
	g := &Guest{Spec: spec, Console: filepath.Join(spec.Dir, "console.log"), exited: make(chan struct{})}
	args := append([]string{
		"-name", "guest=amphora-" + spec.Name + ",debug-threads=on",
		"-uuid", spec.UUID,
		"-machine", "pc", "-m", fmt.Sprint(spec.MemoryMiB), "-smp", fmt.Sprint(spec.CPUs),
	}, spec.Accel.QEMUArgs()...)
	args = append(args,
		"-nodefaults", "-no-user-config", "-display", "none", "-S",
		"-smbios", "type=1,manufacturer=OpenStack Foundation,product=OpenStack Nova,family=Virtual Machine,uuid="+spec.UUID+",serial="+spec.UUID,
		"-rtc", "base=utc",
		"-drive", "file="+spec.overlay()+",if=none,id=disk0,format=qcow2,cache=unsafe,discard=unmap",
		"-device", "virtio-blk-pci,drive=disk0,bootindex=1",
		"-drive", "file="+spec.ConfigDrive+",if=ide,index=1,media=cdrom,readonly=on,format=raw",
		"-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
		"-chardev", "file,id=serial0,path="+g.Console+",append=on", "-serial", "chardev:serial0",
		"-qmp", "unix:"+spec.qmpPath()+",server=on,wait=off",
	)
	for _, n := range spec.NICs {
		args = append(args,
			"-netdev", "tap,id=net-"+n.ID+",ifname="+spec.Tap(n.ID)+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev=net-"+n.ID+",mac="+n.MAC+",id=nic-"+n.ID)
	}
	logf, err := os.OpenFile(filepath.Join(spec.Dir, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// ip netns exec replaces itself with qemu: the PID is qemu's.
	g.Cmd = exec.Command("ip", append([]string{"netns", "exec", spec.Netns.Name, spec.QEMU}, args...)...)
	g.Cmd.Stdout, g.Cmd.Stderr = logf, logf
	g.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !spec.Detach, Setsid: spec.Detach}
	if err := g.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() {
		err := g.Cmd.Wait()
		g.mu.Lock()
		g.exitErr = err
		g.mu.Unlock()
		close(g.exited)
	}()
	fail := func(err error) (*Guest, error) {
		g.Kill()
		return nil, fmt.Errorf("guest %s: %w%s", spec.Name, err, g.qemuLogTail())
	}
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dialed := make(chan struct{})
	go func() {
		select {
		case <-g.exited:
			cancel()
		case <-dialed:
		}
	}()
	g.QMP, err = DialQMP(qctx, spec.qmpPath())
	close(dialed)
	if err != nil {
		return fail(err)
	}
	for _, n := range spec.NICs {
		if err := g.attachTap(n); err != nil {
			return fail(err)
		}
	}
	if _, err := g.QMP.Execute(qctx, "cont", nil); err != nil {
		return fail(err)
	}
	g.Started = time.Now()
	return g, nil
}

func (g *Guest) attachTap(n NIC) error {
	tap := g.Spec.Tap(n.ID)
	if err := g.Spec.Netns.IP("link", "set", tap, "master", n.Bridge); err != nil {
		return err
	}
	return g.Spec.Netns.IP("link", "set", tap, "up")
}

// PID is qemu's process id.
func (g *Guest) PID() int { return g.Cmd.Process.Pid }

// Exited is closed when qemu has exited.
func (g *Guest) Exited() <-chan struct{} { return g.exited }

// Running reports whether qemu still runs.
func (g *Guest) Running() bool {
	select {
	case <-g.exited:
		return false
	default:
		return true
	}
}

// HotplugNIC attaches a port to the running guest as Nova does through
// libvirt: a tap backend (netdev_add), the tap on its bridge, then a
// virtio-net-pci device with the port's MAC (device_add).
func (g *Guest) HotplugNIC(ctx context.Context, n NIC) error {
	if len(n.ID) > 4 {
		return fmt.Errorf("NIC id %q: at most 4 characters", n.ID)
	}
	if err := g.QMP.NetdevAddTap(ctx, "net-"+n.ID, g.Spec.Tap(n.ID)); err != nil {
		return err
	}
	if err := g.attachTap(n); err != nil {
		return err
	}
	if err := g.QMP.DeviceAddNIC(ctx, "nic-"+n.ID, "net-"+n.ID, n.MAC); err != nil {
		return err
	}
	g.Spec.NICs = append(g.Spec.NICs, n)
	return nil
}

// WaitExit waits for qemu to exit, bounded by ctx.
func (g *Guest) WaitExit(ctx context.Context) error {
	select {
	case <-g.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("guest %s (qemu pid %d) still running: %w", g.Spec.Name, g.PID(), ctx.Err())
	}
}

// Kill ends qemu at once (SIGKILL by PID) and waits for it.
func (g *Guest) Kill() {
	if g.Running() {
		_ = syscall.Kill(g.PID(), syscall.SIGKILL)
		select {
		case <-g.exited:
		case <-time.After(10 * time.Second):
		}
	}
	if g.QMP != nil {
		g.QMP.Close()
	}
}

// Stop asks qemu to quit, then kills it if it has not exited within 10 s.
func (g *Guest) Stop() {
	if g.Running() && g.QMP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if g.QMP.Quit(ctx) == nil {
			_ = g.WaitExit(ctx)
		}
		cancel()
	}
	g.Kill()
}

// ConsoleTail is the end of the serial console log (at most n lines).
func (g *Guest) ConsoleTail(n int) string {
	return tailFile(g.Console, n)
}

func (g *Guest) qemuLogTail() string {
	t := tailFile(filepath.Join(g.Spec.Dir, "qemu.log"), 20)
	if t == "" {
		return ""
	}
	return "\nqemu: " + t
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(bytes.ReplaceAll(data, []byte("\r"), nil)), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
