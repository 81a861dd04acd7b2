package nsthread

import (
	"os"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inode is the network namespace of the calling thread.
func inode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create a network namespace")
	}
	var own uint64
	if err := Run(func() error { own = inode(t); return nil }); err != nil {
		t.Fatal(err)
	}
	// a namespace of the test's own, anonymous: gone with its handle
	target := netns.None()
	err := Run(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return err
		}
		var err error
		target, err = netns.Get()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(target), &st); err != nil {
		t.Fatal(err)
	}
	for range 20 { // whichever thread runs it, it is in the target, and back after
		var in uint64
		if err := Do(target, func() error { in = inode(t); return nil }); err != nil {
			t.Fatal(err)
		}
		if in != st.Ino || in == own {
			t.Fatalf("fn ran in namespace %d, want %d", in, st.Ino)
		}
		if err := Run(func() error { in = inode(t); return nil }); err != nil || in != own {
			t.Fatalf("a thread was left in namespace %d (own %d): %v", in, own, err)
		}
	}
	if err := Do(netns.None(), func() error { t.Error("ran without entering"); return nil }); err == nil {
		t.Error("entering a closed handle succeeded")
	}
}
