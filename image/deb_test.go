package image

// The agent's Debian package: lintian, its contents, and its life on the
// image's root file system (a copy on write of the image diskimage-builder
// made): upgrade, removal, purge and a fresh installation, with dpkg and
// the maintainer scripts running chrooted as in an image build.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/haproxy"
	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/netns"
	"github.com/octavia-go/amphora-agent/service"
)

func TestDebLintian(t *testing.T) {
	deb := debFile(t)
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Skip("lintian is not installed (make deps)")
	}
	out, err := runErr(5*time.Minute, nil, "lintian", "--fail-on", "error", deb)
	var notes []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "E:") || strings.HasPrefix(line, "W:") {
			notes = append(notes, line)
		}
	}
	t.Logf("lintian: %d errors and warnings:\n%s", len(notes), strings.Join(notes, "\n"))
	if err != nil {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	for _, n := range notes {
		if strings.HasPrefix(n, "E:") {
			t.Errorf("lintian error: %s", n)
		}
	}
}

func TestDebContents(t *testing.T) {
	deb := debFile(t)
	list, err := exec.Command("dpkg-deb", "--contents", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]string{} // path -> the listing's line
	for _, line := range strings.Split(string(list), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 {
			entries[strings.TrimPrefix(f[5], ".")] = line
		}
	}
	tmp := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v %s", err, out)
	}
	aliases, err := exec.Command(filepath.Join(tmp, "usr/bin/amphora-agent"), "manual", "--aliases").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(aliases)) {
		line := entries["/usr/bin/"+a]
		if !strings.HasPrefix(line, "h") || !strings.HasSuffix(line, "link to ./usr/bin/amphora-agent") {
			t.Errorf("/usr/bin/%s is not a hard link to the agent: %q", a, line)
		}
		if _, ok := entries["/usr/share/man/man8/"+a+".8.gz"]; !ok {
			t.Errorf("no manual page for %s", a)
		}
	}
	want := []string{"/usr/bin/amphora-agent", "/usr/share/man/man8/amphora-agent.8.gz",
		"/usr/share/doc/amphora-agent/copyright", "/usr/share/doc/amphora-agent/changelog.gz"}
	units, _ := filepath.Glob(filepath.Join("..", "packaging", "systemd", "*.service"))
	if len(units) == 0 {
		t.Fatal("no unit in packaging/systemd")
	}
	for _, u := range units {
		want = append(want, "/usr/lib/systemd/system/"+filepath.Base(u))
	}
	var conffiles []string
	_ = filepath.WalkDir(filepath.Join("..", "packaging", "etc"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(filepath.Join("..", "packaging"), p)
			conffiles = append(conffiles, "/"+rel)
		}
		return nil
	})
	want = append(want, conffiles...)
	for _, w := range want {
		if _, ok := entries[w]; !ok {
			t.Errorf("the package lacks %s", w)
		}
	}
	ctl, err := exec.Command("dpkg-deb", "--info", deb, "conffiles").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(ctl)); strings.Join(got, " ") != strings.Join(conffiles, " ") {
		t.Errorf("conffiles %q, want %q", got, conffiles)
	}
	// postrm purges the units the agent wrote by their first line.
	postrm, err := os.ReadFile(filepath.Join("..", "packaging", "deb", "postrm"))
	if err != nil {
		t.Fatal(err)
	}
	marker := strings.TrimSuffix(service.GeneratedMarker, "\n")
	prefix, _, _ := strings.Cut(marker, ";")
	if !strings.Contains(string(postrm), `GENERATED="`+prefix+`;"`) {
		t.Errorf("postrm does not recognise the agent's units (%q)", marker)
	}
}

func TestDebLifecycle(t *testing.T) {
	requireImageTools(t)
	deb := debFile(t)
	version := debField(t, deb, "Version")
	dir, err := os.MkdirTemp(cacheRoot(), "amphora-deb-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, dir) })
	root := newAmphoraRoot(t, dir)

	// An upgrade: the same program packaged with a higher version.
	x := filepath.Join(dir, "x")
	run(t, time.Minute, nil, "dpkg-deb", "-x", deb, x)
	upVersion := version + "+up1"
	upDeb := filepath.Join(dir, "amphora-agent_up.deb")
	run(t, 2*time.Minute, nil, filepath.Join("..", "scripts", "build-deb.sh"), filepath.Join(x, "usr/bin/amphora-agent"), upVersion, upDeb)
	if out, err := exec.Command("dpkg", "--compare-versions", upVersion, "gt", version).CombinedOutput(); err != nil {
		t.Fatalf("%s does not sort after %s: %s", upVersion, version, out)
	}
	stage := filepath.Join(root.Upper, "var/tmp/debs")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{deb: "first.deb", upDeb: "up.deb"} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(stage, dst), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	status := func(t *testing.T) string {
		t.Helper()
		out, _ := root.chroot(t, "dpkg-query", "-W", "-f", "${Status} ${Version}", "amphora-agent")
		return strings.TrimSpace(out)
	}
	enabled := func(t *testing.T, unit string) string {
		t.Helper()
		out, _ := root.chroot(t, "systemctl", "is-enabled", unit)
		return strings.TrimSpace(out)
	}
	exists := func(t *testing.T, path string) bool {
		t.Helper()
		_, err := root.chroot(t, "test", "-e", path)
		return err == nil
	}
	const conffile = "/etc/rsyslog.d/55-amphora-agent.conf"
	const localEdit = "# changed by the operator"

	t.Run("upgrade", func(t *testing.T) {
		root.mustChroot(t, "sh", "-c", "echo '"+localEdit+"' >> "+conffile)
		out := root.mustChroot(t, "dpkg", "-i", "/var/tmp/debs/up.deb")
		if got := status(t); got != "install ok installed "+upVersion {
			t.Fatalf("after the upgrade: %q\n%s", got, out)
		}
		if !strings.Contains(root.mustChroot(t, "cat", conffile), localEdit) {
			t.Error("the upgrade lost the operator's change of a conffile")
		}
		if got := enabled(t, "amphora-agent.service"); got != "enabled" {
			t.Errorf("amphora-agent.service after the upgrade: %s", got)
		}
		// the same program, repackaged
		if got := strings.TrimSpace(root.mustChroot(t, "amphora-agent", "version")); got != version {
			t.Errorf("amphora-agent version: %s, want %s", got, version)
		}
	})

	// Units the agent wrote for a load balancer (and enabled), and one of
	// an operator's that is not the agent's.
	lbID := testutil.NewUUID()
	svc, err := haproxy.UnitParams{LBID: lbID, Cmd: "/usr/sbin/haproxy", Config: "/var/lib/octavia/" + lbID + "/haproxy.cfg",
		UserGroup: "/var/lib/octavia/haproxy-default-user-group.conf", PIDFile: "/run/octavia/" + lbID + ".pid", Peer: "peer",
		Namespace: "amphora-haproxy", Netns: netns.UnitName, Version: haproxy.Version{Major: 2, Minor: 6}}.Service()
	if err != nil {
		t.Fatal(err)
	}
	lbUnit := svc.Name + ".service"
	for path, text := range map[string]string{
		"usr/lib/systemd/system/" + lbUnit:         service.GeneratedMarker + string(svc.Unit), // as the service manager writes it
		"etc/systemd/system/operator-tool.service": "[Unit]\nDescription=not the agent's\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root.Upper, path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root.Upper, path), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root.mustChroot(t, "systemctl", "enable", lbUnit, "operator-tool.service")

	t.Run("remove", func(t *testing.T) {
		out := root.mustChroot(t, "dpkg", "-r", "amphora-agent")
		if got := status(t); got != "deinstall ok config-files "+upVersion {
			t.Fatalf("after dpkg -r: %q\n%s", got, out)
		}
		left := root.mustChroot(t, "sh", "-c", "find /etc/systemd /usr/lib/systemd /lib/systemd -name 'amphora-agent*' 2>/dev/null; ls /usr/bin/amphora-agent /usr/bin/haproxy-vrrp-check 2>/dev/null; true")
		if strings.TrimSpace(left) != "" {
			t.Errorf("dpkg -r left behind:\n%s", left)
		}
		if !exists(t, conffile) {
			t.Errorf("dpkg -r removed the conffile %s (purge does)", conffile)
		}
		if got := enabled(t, lbUnit); got != "enabled" {
			t.Errorf("dpkg -r touched the load balancer's unit: %s", got)
		}
	})

	t.Run("purge", func(t *testing.T) {
		out := root.mustChroot(t, "dpkg", "--purge", "amphora-agent")
		if got := status(t); !strings.Contains(got, "no packages found") && !strings.HasPrefix(got, "unknown ok not-installed") {
			t.Fatalf("after dpkg --purge: %q\n%s", got, out)
		}
		for _, p := range []string{conffile, "/etc/modules-load.d/amphora-agent.conf", "/usr/lib/systemd/system/" + lbUnit,
			"/etc/systemd/system/multi-user.target.wants/" + lbUnit} {
			if exists(t, p) {
				t.Errorf("dpkg --purge left %s", p)
			}
		}
		if got := enabled(t, "operator-tool.service"); got != "enabled" {
			t.Errorf("dpkg --purge touched a unit that is not the agent's: %s", got)
		}
		for _, p := range []string{"/etc/octavia", "/var/lib/octavia/haproxy-default-user-group.conf"} {
			if !exists(t, p) {
				t.Errorf("dpkg --purge removed %s, which is not the package's", p)
			}
		}
	})

	t.Run("install", func(t *testing.T) {
		out := root.mustChroot(t, "dpkg", "-i", "/var/tmp/debs/first.deb")
		if got := status(t); got != "install ok installed "+version {
			t.Fatalf("after dpkg -i: %q\n%s", got, out)
		}
		if got := enabled(t, "amphora-agent.service"); got != "enabled" {
			t.Errorf("amphora-agent.service after a fresh installation: %s", got)
		}
		if got := strings.TrimSpace(root.mustChroot(t, "stat", "-c", "%a", "/etc/octavia/certs")); got != "700" {
			t.Errorf("/etc/octavia/certs: mode %s", got)
		}
		if strings.Contains(root.mustChroot(t, "cat", conffile), localEdit) {
			t.Error("the purged conffile came back with the operator's change")
		}
	})
}
