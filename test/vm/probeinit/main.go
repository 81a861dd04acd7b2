// Command probeinit is the /init of the tiny initrd the VM harness boots
// to find out whether KVM works on this host: it writes a marker line to
// the console and powers the machine off, so that a working accelerator
// shows as the marker followed by qemu exiting.
package main

import (
	"os"
	"syscall"
)

// Marker is what the harness waits for on the serial console.
const Marker = "amphora-vm-probe: userspace reached"

func main() {
	out := os.Stdout
	if _, err := out.WriteString(Marker + "\n"); err != nil {
		// No console on fd 1: open the one in the initrd.
		if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
			_, _ = f.WriteString(Marker + "\n")
		}
	}
	syscall.Sync()
	_ = syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	// Reboot only returns on failure; the kernel panics when init exits,
	// which qemu -no-reboot turns into an exit as well.
	os.Exit(1)
}
