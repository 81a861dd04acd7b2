package image

// The amphora image under test is the qcow2 "make image" builds with
// diskimage-builder (bin/amphora-x64-haproxy.qcow2, or $AMPHORA_IMAGE).
// The tests never change it: they convert it to a raw copy, mount its
// root file system read-only (a loop device at the partition's offset;
// no device-mapper, no network block device needed) and put a per-test
// overlay on top. Every mount happens in the private mount namespace of
// the command that uses it, so nothing stays mounted on the host.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// imageFile returns the qcow2 under test. Without one the test is skipped
// on a developer's machine ("make image" builds it; "make test" always
// does), and fails in CI.
func imageFile(t *testing.T) string {
	t.Helper()
	p := os.Getenv("AMPHORA_IMAGE")
	if p == "" {
		p = filepath.Join("..", "bin", "amphora-x64-haproxy.qcow2")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		if os.Getenv("CI") != "" || os.Getenv("AMPHORA_IMAGE") != "" {
			t.Fatalf("the amphora image is missing: %v (make image)", err)
		}
		t.Skipf("no amphora image at %s: run 'make image' (make test does)", abs)
	}
	return abs
}

// debFile returns the agent package the image was built from
// ($AMPHORA_DEB, else the one in ../bin).
func debFile(t *testing.T) string {
	t.Helper()
	p := os.Getenv("AMPHORA_DEB")
	if p == "" {
		matches, _ := filepath.Glob(filepath.Join("..", "bin", "amphora-agent_*.deb"))
		if len(matches) != 1 {
			t.Fatalf("AMPHORA_DEB is not set and ../bin has %d agent packages (make deb)", len(matches))
		}
		p = matches[0]
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("agent package: %v (make deb)", err)
	}
	return abs
}

// cacheRoot is where the raw copy of the image and the tests' overlays
// live ($AMPHORA_IMAGE_TEST_DIR overrides /var/tmp: overlayfs needs a
// real file system, not the tmpfs /tmp may be).
func cacheRoot() string {
	if d := os.Getenv("AMPHORA_IMAGE_TEST_DIR"); d != "" {
		return d
	}
	return "/var/tmp"
}

// rawImage is the image's disk as a raw file and the byte offset of its
// root file system.
type rawImage struct {
	Path   string
	Offset int64
}

var (
	rawOnce sync.Once
	rawImg  rawImage
	rawErr  error
	rawDir  string
)

// TestMain removes the raw copy shared by the tests of this package.
func TestMain(m *testing.M) {
	code := m.Run()
	if rawDir != "" {
		_ = os.RemoveAll(rawDir)
	}
	os.Exit(code)
}

// raw converts the image once per test run (sparse; a few seconds) and
// finds its root partition: the largest one.
func raw(t *testing.T) rawImage {
	t.Helper()
	qcow2 := imageFile(t)
	rawOnce.Do(func() {
		start := time.Now()
		rawDir, rawErr = os.MkdirTemp(cacheRoot(), "amphora-image-raw-")
		if rawErr != nil {
			return
		}
		rawImg.Path = filepath.Join(rawDir, "disk.raw")
		if out, err := exec.Command("qemu-img", "convert", "-O", "raw", qcow2, rawImg.Path).CombinedOutput(); err != nil {
			rawErr = fmt.Errorf("qemu-img convert: %v: %s", err, out)
			return
		}
		out, err := exec.Command("partx", "-g", "-b", "-o", "START,SECTORS", rawImg.Path).CombinedOutput()
		if err != nil {
			rawErr = fmt.Errorf("partx: %v: %s", err, out)
			return
		}
		var best int64
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			s, err1 := strconv.ParseInt(f[0], 10, 64)
			n, err2 := strconv.ParseInt(f[1], 10, 64)
			if err1 == nil && err2 == nil && n > best {
				best, rawImg.Offset = n, s*512
			}
		}
		if best == 0 {
			rawErr = fmt.Errorf("no partition in %s: %s", qcow2, out)
			return
		}
		t.Logf("image: %s converted to raw in %v, root file system at byte %d", qcow2, time.Since(start).Round(100*time.Millisecond), rawImg.Offset)
	})
	if rawErr != nil {
		t.Fatal(rawErr)
	}
	return rawImg
}

// removeTree removes dir unless something is still mounted below it
// (every mount lives in a private mount namespace that died with its
// command, but never recurse into a mounted /dev or /proc).
func removeTree(t *testing.T, dir string) {
	t.Helper()
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Errorf("read mounts: %v", err)
		return
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			t.Errorf("not removing %s: %s is mounted", dir, f[1])
			return
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove %s: %v", dir, err)
	}
}

// run runs argv (bounded by timeout) and fails the test with its output
// on error; it returns the combined output.
func run(t *testing.T, timeout time.Duration, env []string, argv ...string) string {
	t.Helper()
	out, err := runErr(timeout, env, argv...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, tail(out, 60))
	}
	return out
}

// runErr runs argv bounded by timeout and returns its combined output.
func runErr(timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/root"}, env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lowerScript mounts the image's root file system read-only at $3 (from
// the raw disk $2 at byte offset $1; noload: never replay a journal).
const lowerScript = `set -eu
mount -o ro,noload,loop,offset="$1" "$2" "$3"
`

// inImage runs argv chrooted into the read-only image (the image's own
// programs) and returns its combined output and error.
func inImage(t *testing.T, argv ...string) (string, error) {
	t.Helper()
	r := raw(t)
	dir := t.TempDir()
	full := append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c",
		lowerScript + `shift 3; exec chroot "$0" "$@"`, dir, strconv.FormatInt(r.Offset, 10), r.Path, dir}, argv...)
	return runErr(time.Minute, nil, full...)
}

// amphoraRoot is a per-test copy-on-write root file system: an overlay of
// upper (this test's changes, kept across container boots) on the
// image's read-only root.
type amphoraRoot struct {
	Image                      rawImage
	Lower, Upper, Work, Merged string
}

func newAmphoraRoot(t *testing.T, dir string) *amphoraRoot {
	t.Helper()
	r := &amphoraRoot{Image: raw(t), Lower: filepath.Join(dir, "lower"), Upper: filepath.Join(dir, "upper"),
		Work: filepath.Join(dir, "work"), Merged: filepath.Join(dir, "root")}
	for _, d := range []string{r.Lower, r.Upper, r.Work, r.Merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// mountScript is the shell prologue that mounts the overlay at $6: the
// image's root (offset $1 of raw disk $2) at $3, upper $4, work $5 (run
// under "unshare -m"). It leaves the root in $root.
const mountScript = lowerScript + `mount -t overlay overlay -o "lowerdir=$3,upperdir=$4,workdir=$5" "$6"
root="$6"
`

// args are the positional parameters mountScript expects.
func (r *amphoraRoot) args() []string {
	return []string{strconv.FormatInt(r.Image.Offset, 10), r.Image.Path, r.Lower, r.Upper, r.Work, r.Merged}
}

// chrootScript runs the remaining arguments chrooted into the overlay,
// with /proc, /sys and /dev mounted (dpkg and its maintainer scripts).
const chrootScript = mountScript + `shift 6
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount --bind /dev "$root/dev"
exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root DEBIAN_FRONTEND=noninteractive "$@"
`

// chroot runs argv inside the (powered-off) root and returns its output.
func (r *amphoraRoot) chroot(t *testing.T, argv ...string) (string, error) {
	t.Helper()
	full := append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c", chrootScript, "sh"}, r.args()...)
	return runErr(2*time.Minute, nil, append(full, argv...)...)
}

// mustChroot is chroot failing the test on error.
func (r *amphoraRoot) mustChroot(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := r.chroot(t, argv...)
	if err != nil {
		t.Fatalf("in the image: %s: %v\n%s", strings.Join(argv, " "), err, tail(out, 40))
	}
	return out
}

// stagedFile is a file put into the image before it boots.
type stagedFile struct {
	Src, Dst string // host path, path inside the image
	Mode     os.FileMode
}

// stage installs files into the powered-off image (modes given, missing
// parent directories 0755, existing ones left as they are), as cloud-init
// writes them at first boot.
func (r *amphoraRoot) stage(t *testing.T, files []stagedFile) {
	t.Helper()
	const inImageDir = "/var/tmp/amphora-image-test-stage"
	dir := filepath.Join(r.Upper, inImageDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	script := "set -eu\n"
	for i, f := range files {
		data, err := os.ReadFile(f.Src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		script += fmt.Sprintf("install -D -m %o %s/%d %q\n", f.Mode, inImageDir, i, f.Dst)
	}
	script += "rm -rf " + inImageDir + "\n"
	r.mustChroot(t, "sh", "-c", script)
}

// requireImageTools skips the test when the tools it needs are missing.
func requireImageTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop mounts, overlays, chroot, systemd-nspawn, network namespaces")
	}
	for _, tool := range []struct{ bin, pkg string }{
		{"qemu-img", "qemu-utils"}, {"partx", "util-linux"}, {"systemd-nspawn", "systemd-container"},
		{"unshare", "util-linux"}, {"nsenter", "util-linux"}, {"chroot", "coreutils"}, {"ip", "iproute2"},
	} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			t.Skipf("%s is not installed (apt-get install %s, or make deps)", tool.bin, tool.pkg)
		}
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(fs), "\toverlay\n") {
		// overlay may be a module that is loaded on first mount
		if _, merr := exec.Command("modprobe", "-n", "overlay").CombinedOutput(); merr != nil {
			t.Skip("the kernel has no overlay file system")
		}
	}
	testutil.RequireRenderer(t)
}
