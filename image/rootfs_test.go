package image

// The amphora root filesystem: a debootstrapped Debian bookworm, built
// once and cached, and a per-test overlay on top of it into which the
// amphora-agent-go element is installed the way diskimage-builder would.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

const (
	suite = "bookworm"
	// rootfsRecipe names the way the cached root filesystem is built;
	// change it when buildRootfs changes, so an old cache is not reused.
	rootfsRecipe = "amphora-agent-test-rootfs/1"
	// elementDir is the diskimage-builder element under test (relative
	// to this package).
	elementDir = "amphora-agent-go"
)

// imagePackages are what an Octavia amphora image brings besides our
// element: the base system (systemd as PID 1, the system bus) and the
// tools the agent drives. The element's package-installs.yaml is added
// to them (diskimage-builder's package-installs would install those).
var imagePackages = []string{
	"systemd", "systemd-sysv", "dbus", "iproute2", "nftables", "haproxy", "keepalived",
	"procps", "ca-certificates",
}

// debianMirror is the mirror debootstrap and apt use
// ($AMPHORA_IMAGE_MIRROR overrides).
func debianMirror() string {
	if m := os.Getenv("AMPHORA_IMAGE_MIRROR"); m != "" {
		return strings.TrimRight(m, "/")
	}
	return "http://deb.debian.org/debian"
}

// elementPackages reads the package names of the element's
// package-installs.yaml ("name:" lines).
func elementPackages(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(elementDir, "package-installs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "-") {
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok || strings.ContainsAny(name, " \t") {
			t.Fatalf("package-installs.yaml: unexpected line %q", line)
		}
		out = append(out, name)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rootfsPackages is the sorted, de-duplicated package list of the image.
func rootfsPackages(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for _, p := range append(append([]string{}, imagePackages...), elementPackages(t)...) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// cacheRoot is where built root filesystems are kept between runs
// ($AMPHORA_IMAGE_CACHE overrides /var/tmp).
func cacheRoot() string {
	if d := os.Getenv("AMPHORA_IMAGE_CACHE"); d != "" {
		return d
	}
	return "/var/tmp"
}

// cachedRootfs returns the cached root filesystem for the package list,
// building it first when absent. A build happens in a temporary
// directory renamed into place only when complete, so a crashed build is
// never reused.
func cachedRootfs(t *testing.T) string {
	t.Helper()
	pkgs := rootfsPackages(t)
	mirror := debianMirror()
	sum := sha256.Sum256([]byte(strings.Join([]string{rootfsRecipe, suite, mirror, strings.Join(pkgs, " ")}, "\n")))
	name := "amphora-agent-test-rootfs-" + hex.EncodeToString(sum[:6])
	final := filepath.Join(cacheRoot(), name)
	if _, err := os.Stat(filepath.Join(final, "etc", "os-release")); err == nil {
		t.Logf("rootfs: reusing %s", final)
		return final
	}
	if err := os.MkdirAll(cacheRoot(), 0o755); err != nil {
		t.Fatal(err)
	}
	removeStaleBuilds(t, name)
	tmp, err := os.MkdirTemp(cacheRoot(), name+".build-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // the container's "/"
		t.Fatal(err)
	}
	defer func() {
		if _, err := os.Stat(tmp); err == nil {
			removeTree(t, tmp)
		}
	}()
	start := time.Now()
	buildRootfs(t, tmp, mirror, pkgs)
	if err := os.Rename(tmp, final); err != nil {
		if _, serr := os.Stat(filepath.Join(final, "etc", "os-release")); serr == nil {
			t.Logf("rootfs: a concurrent build finished first, using %s", final)
			return final
		}
		t.Fatalf("rootfs: %v", err)
	}
	t.Logf("rootfs: built %s in %v (%s)", final, time.Since(start).Round(time.Second), strings.Join(pkgs, " "))
	return final
}

// removeStaleBuilds deletes leftovers of crashed builds of this rootfs
// (older than an hour, so a build running in parallel is left alone).
func removeStaleBuilds(t *testing.T, name string) {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(cacheRoot(), name+".build-*"))
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil || time.Since(st.ModTime()) < time.Hour {
			continue
		}
		t.Logf("rootfs: removing the stale build %s", m)
		removeTree(t, m)
	}
}

// removeTree removes dir unless something is still mounted below it
// (every mount of a build lives in a private mount namespace that died
// with it, but never recurse into a mounted /dev or /proc).
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
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/root"}, env...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, tail(string(out), 60))
	}
	return string(out)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// aptScript installs the packages inside the chroot; no service may
// start (policy-rc.d) and nothing is left in apt's cache.
const aptScript = `set -eu
root="$1"; shift
mount -t proc proc "$root/proc"
chroot "$root" apt-get update -q
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
chroot "$root" apt-get clean
`

// buildRootfs debootstraps a minbase bookworm into dir and installs pkgs
// from the main, updates and security suites. Every mount happens in a
// private mount namespace that ends with the command.
func buildRootfs(t *testing.T, dir, mirror string, pkgs []string) {
	t.Helper()
	start := time.Now()
	run(t, 10*time.Minute, nil, "unshare", "-m", "--propagation", "private",
		"debootstrap", "--variant=minbase", suite, dir, mirror)
	t.Logf("rootfs: debootstrap %v", time.Since(start).Round(time.Second))
	security := strings.TrimSuffix(mirror, "/debian") + "/debian-security"
	sources := fmt.Sprintf("deb %[1]s %[2]s main\ndeb %[1]s %[2]s-updates main\ndeb %[3]s %[2]s-security main\n", mirror, suite, security)
	if err := os.WriteFile(filepath.Join(dir, "etc/apt/sources.list"), []byte(sources), 0o644); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	run(t, 10*time.Minute, nil, append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c", aptScript, "sh", dir}, pkgs...)...)
	t.Logf("rootfs: packages %v", time.Since(start).Round(time.Second))
	if err := os.Remove(policy); err != nil {
		t.Fatal(err)
	}
	// Each boot of an image copy gets its own machine id, as on a new
	// VM; debootstrap copied the build machine's hostname.
	if err := os.WriteFile(filepath.Join(dir, "etc/machine-id"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/hostname"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// amphoraRoot is a per-test copy-on-write root filesystem: an overlay of
// upper (this test's changes, kept across container boots) on the cached
// lower. The overlay is mounted only inside the private mount namespaces
// of the commands that use it, so nothing stays mounted on the host.
type amphoraRoot struct {
	Lower, Upper, Work, Merged string
}

func newAmphoraRoot(t *testing.T, lower, dir string) *amphoraRoot {
	t.Helper()
	r := &amphoraRoot{Lower: lower, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Merged: filepath.Join(dir, "root")}
	for _, d := range []string{r.Upper, r.Work, r.Merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// mountScript is the shell prologue that mounts the overlay at $4 from
// lower $1, upper $2 and work $3 (run under "unshare -m").
const mountScript = `set -eu
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
root="$4"
`

// args are the positional parameters mountScript expects.
func (r *amphoraRoot) args() []string { return []string{r.Lower, r.Upper, r.Work, r.Merged} }

// installScript installs the element as diskimage-builder does: the
// hooks directory at /tmp/in_target.d, /proc, /sys and /dev mounted, the
// static files copied over the root (install-static), then every
// install.d and post-install.d script in order inside the chroot. Last,
// the files the controller puts on a new amphora: the remaining
// arguments are "source destination mode" triples.
const installScript = mountScript + `hooks="$5"; shift 5
mount -t proc proc "$root/proc"
mount -t sysfs -o ro sysfs "$root/sys"
mount --bind /dev "$root/dev"
mkdir -p "$root/tmp/in_target.d"
mount --bind "$hooks" "$root/tmp/in_target.d"
if [ -d "$hooks/static" ]; then cp -R -P "$hooks/static/." "$root/"; fi
for phase in install.d post-install.d; do
  [ -d "$hooks/$phase" ] || continue
  for s in $(ls "$hooks/$phase" | LC_ALL=C sort); do
    case "$s" in *[!A-Za-z0-9_-]*) continue ;; esac
    [ -x "$hooks/$phase/$s" ] || continue
    echo "dib-run-parts: $phase/$s"
    chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      LC_ALL=C HOME=/root DIB_DEBUG_TRACE=1 "/tmp/in_target.d/$phase/$s"
  done
done
umount "$root/tmp/in_target.d"
rmdir "$root/tmp/in_target.d"
while [ $# -ge 3 ]; do
  install -D -m "$3" "$1" "$root$2"
  shift 3
done
`

// stagedFile is a file the controller puts on a new amphora.
type stagedFile struct {
	Src, Dst string // host path, path inside the image
	Mode     string // octal, for install -m
}

// installElement runs the element's extra-data.d on the host (with
// TMP_HOOKS_PATH and DIB_AMPHORA_AGENT_GO_BINARY), then its install.d and
// post-install.d inside the root, then installs the files.
func (r *amphoraRoot) installElement(t *testing.T, binary, hooks string, files []stagedFile) {
	t.Helper()
	elem, err := filepath.Abs(elementDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{"install.d", "post-install.d", "static"} {
		if _, err := os.Stat(filepath.Join(elem, phase)); err == nil {
			run(t, time.Minute, nil, "cp", "-R", "--preserve=mode,links", filepath.Join(elem, phase), hooks+"/")
		}
	}
	scripts, _ := filepath.Glob(filepath.Join(elem, "extra-data.d", "*"))
	sort.Strings(scripts)
	for _, s := range scripts {
		run(t, time.Minute, []string{"TMP_HOOKS_PATH=" + hooks, "DIB_AMPHORA_AGENT_GO_BINARY=" + binary, "DIB_DEBUG_TRACE=1"}, s)
		t.Logf("element: extra-data.d/%s", filepath.Base(s))
	}
	argv := append([]string{"unshare", "-m", "--propagation", "private", "sh", "-c", installScript, "sh"}, r.args()...)
	argv = append(argv, hooks)
	for _, f := range files {
		argv = append(argv, f.Src, f.Dst, f.Mode)
	}
	out := run(t, 2*time.Minute, nil, argv...)
	for _, line := range strings.Split(out, "\n") {
		if s, ok := strings.CutPrefix(line, "dib-run-parts: "); ok {
			t.Logf("element: %s", s)
		}
	}
}

// requireImageTools skips the test when the tools it needs are missing.
func requireImageTools(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: debootstrap, overlay mounts, systemd-nspawn, network namespaces")
	}
	for _, tool := range []struct{ bin, pkg string }{
		{"debootstrap", "debootstrap"}, {"systemd-nspawn", "systemd-container"},
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
