// Package vm boots the amphora image in QEMU the way Nova does and drives
// it the way the Octavia controller does, for the VM tests (go test
// ./test/vm) and "make vm" (cmd/amphora-vm).
//
// Boot like Nova: a qcow2 overlay on the image (never written; the image
// is hard-linked first so a rebuild cannot change it under a guest), one
// vCPU and 1 GiB, a config drive (ISO 9660 "config-2") carrying exactly
// the files, user data and key pair that Octavia's CertComputeCreate task
// asks Nova for (run by test/interop/amphora_create.py with a recording
// compute driver), the management port on lb-mgmt-net with its address in
// network_data.json, the serial console in a file. Ports are hot-plugged
// into the running guest over QMP (netdev_add + device_add
// virtio-net-pci with the port's MAC).
//
// Drive like the controller: Octavia's AmphoraAPIClient1_0 over mTLS
// (test/interop/octavia_client.py), heartbeats received on lb-mgmt-net
// and decoded with Octavia's unwrap_envelope, syslog receivers for the
// log offloading targets, ssh with the key pair as an operator.
//
// Everything lives in namespaces the lab creates (see Lab): nothing is
// added to the root namespace. qemu runs inside the lab's hypervisor
// namespace, so its taps appear there. Every qemu process is killed by
// PID and every namespace (with its taps, bridges and veths) removed by
// name when the lab closes, also after a failure.
//
// KVM is used only when a bounded probe boot of the host's kernel with a
// tiny initrd of our own (probeinit) reaches userspace under it;
// otherwise guests run under TCG.
//
// Environment:
//
//	AMPHORA_IMAGE            the image (default bin/amphora-x64-haproxy.qcow2)
//	AMPHORA_VM_ACCEL         kvm, tcg or auto (default: probe)
//	AMPHORA_VM_PROBE_KERNEL  the probe's kernel (default: newest /boot/vmlinuz-*)
package vm
