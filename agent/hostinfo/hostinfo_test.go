package hostinfo

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// System reads /proc the way the reference does, from a fake /proc.
func TestSystem(t *testing.T) {
	dir := t.TempDir()
	proc, root := filepath.Join(dir, "proc"), filepath.Join(dir, "root")
	for path, text := range map[string]string{
		filepath.Join(proc, "stat"):                     "cpu  10 1 20 300 4 0 7 0 0 0\ncpu0 5 0 10 150 2 0 3 0 0 0\ncpu1 5 1 10 150 2 0 4 0 0 0\nintr 1\n",
		filepath.Join(proc, "meminfo"):                  "MemTotal: 2048 kB\nMemFree: 1024 kB\nBuffers: 8 kB\nCached: 16 kB\nSwapCached: 1 kB\nShmem: 2 kB\nSlab: 4 kB\nHugePages_Total: 0\n",
		filepath.Join(proc, "loadavg"):                  "0.42 0.41 0.21 1/100 1234\n",
		filepath.Join(root, "etc/tuned/active_profile"): "  amphora virtual-guest\n",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := New("/nonexistent/haproxy")
	p.ProcRoot, p.Root = proc, root
	got, err := p.System()
	if err != nil {
		t.Fatal(err)
	}
	if got.Disk.Available == 0 {
		t.Errorf("disk of the test's file system: %+v", got.Disk)
	}
	got.Disk = Disk{}
	want := &System{
		CPUCount:      2,
		CPU:           CPU{Total: 342, User: "10", System: "20", SoftIRQ: "7"},
		Memory:        Memory{Total: 2048, Free: 1024, Buffers: 8, Cached: 16, SwapCached: 1, Shmem: 2, Slab: 4},
		Load:          []string{"0.42", "0.41", "0.21"},
		TunedProfiles: "amphora virtual-guest",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if err := os.WriteFile(filepath.Join(proc, "stat"), []byte("intr 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.System(); err == nil {
		t.Error("a /proc/stat without the cpu line was accepted")
	}
}
