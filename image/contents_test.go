package image

// The image diskimage-builder made, checked from outside: its root file
// system mounted read-only, inspected with the image's own tools
// (chroot: dpkg-query, systemctl is-enabled, stat), nothing booted.

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// debField reads a control field of the package.
func debField(t *testing.T, deb, field string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "--field", deb, field).Output()
	if err != nil {
		t.Fatalf("dpkg-deb --field %s %s: %v", deb, field, err)
	}
	return strings.TrimSpace(string(out))
}

// helperNames are the names the package links to the agent ("amphora-agent
// manual --aliases" of the binary in the image).
func helperNames(t *testing.T) []string {
	t.Helper()
	out, err := inImage(t, "/usr/bin/amphora-agent", "manual", "--aliases")
	if err != nil {
		t.Fatalf("amphora-agent manual --aliases in the image: %v\n%s", err, out)
	}
	names := strings.Fields(out)
	if len(names) < 3 {
		t.Fatalf("helper names: %q", names)
	}
	return names
}

func TestImageContents(t *testing.T) {
	requireImageTools(t)
	deb := debFile(t)
	st, err := os.Stat(imageFile(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s: %d MiB", imageFile(t), st.Size()>>20)

	must := func(t *testing.T, argv ...string) string {
		t.Helper()
		out, err := inImage(t, argv...)
		if err != nil {
			t.Fatalf("in the image: %s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return out
	}

	t.Run("agent package", func(t *testing.T) {
		want := "install ok installed " + debField(t, deb, "Version")
		if got := strings.TrimSpace(must(t, "dpkg-query", "-W", "-f", "${Status} ${Version}", "amphora-agent")); got != want {
			t.Errorf("amphora-agent in the image: %q, want %q (the package make deb built)", got, want)
		}
		if got := strings.TrimSpace(must(t, "amphora-agent", "version")); got != debField(t, deb, "Version") {
			t.Errorf("amphora-agent version: %q", got)
		}
	})

	t.Run("helpers are hard links", func(t *testing.T) {
		names := helperNames(t)
		argv := []string{"stat", "-c", "%i %h %a", "/usr/bin/amphora-agent"}
		for _, n := range names {
			argv = append(argv, "/usr/bin/"+n)
		}
		lines := strings.Split(strings.TrimSpace(must(t, argv...)), "\n")
		for i, l := range lines {
			f := strings.Fields(l)
			if len(f) != 3 || l != lines[0] || f[1] != strconv.Itoa(len(names)+1) || f[2] != "755" {
				t.Errorf("%s: inode/links/mode %q, want those of amphora-agent (%q) with %d links", argv[3+i], l, lines[0], len(names)+1)
			}
		}
	})

	t.Run("units", func(t *testing.T) {
		want := map[string]string{
			"amphora-agent.service":    "enabled",
			"rsyslog.service":          "enabled",
			"cloud-init.service":       "enabled",
			"cloud-init-local.service": "enabled",
			"ssh.service":              "enabled",
			"haproxy.service":          "disabled",
			"keepalived.service":       "disabled",
		}
		for unit, state := range want {
			out, _ := inImage(t, "systemctl", "is-enabled", unit)
			if got := strings.TrimSpace(out); got != state {
				t.Errorf("%s is %q in the image, want %q", unit, got, state)
			}
		}
		text := must(t, "cat", "/usr/lib/systemd/system/amphora-agent.service")
		repo, err := os.ReadFile(filepath.Join("..", "packaging", "systemd", "amphora-agent.service"))
		if err != nil {
			t.Fatal(err)
		}
		if text != string(repo) {
			t.Errorf("amphora-agent.service in the image differs from packaging/systemd:\n%s", text)
		}
	})

	t.Run("logging", func(t *testing.T) {
		// haproxy's log socket, in the config rsyslog reads, which is valid.
		conf := must(t, "cat", "/etc/rsyslog.d/55-amphora-agent.conf")
		if !strings.Contains(conf, `Socket="/run/rsyslog/octavia/log"`) {
			t.Errorf("55-amphora-agent.conf:\n%s", conf)
		}
		if out, err := inImage(t, "rsyslogd", "-N1", "-f", "/etc/rsyslog.conf"); err != nil {
			t.Errorf("rsyslogd -N1: %v\n%s", err, out)
		}
		if !strings.Contains(must(t, "cat", "/etc/rsyslog.conf"), `module(load="imuxsock")`) {
			t.Error("/etc/rsyslog.conf does not load imuxsock, which the socket input needs")
		}
		// Ubuntu's rsyslog profile includes rsyslog.d/ (Debian has none).
		must(t, "test", "-f", "/etc/apparmor.d/rsyslog.d/amphora-agent-go")
	})

	t.Run("cloud-init", func(t *testing.T) {
		ds := must(t, "cat", "/etc/cloud/cloud.cfg.d/91-dib-cloud-init-datasources.cfg")
		if !strings.Contains(ds, "ConfigDrive") {
			t.Errorf("cloud-init datasources: %s", ds)
		}
		must(t, "test", "-x", "/usr/bin/cloud-init")
		// cloud-init renders the management NIC; no stanza of the build
		// may configure a NIC the agent will move into its namespace.
		if out := strings.TrimSpace(must(t, "sh", "-c", "ls -A /etc/network/interfaces.d; grep -v '^#' /etc/network/interfaces | grep -E 'iface|auto|allow' || true")); out != "" &&
			out != "auto lo\niface lo inet loopback" {
			t.Errorf("network configuration left by the build:\n%s", out)
		}
	})

	t.Run("no Python agent", func(t *testing.T) {
		for _, p := range []string{"octavia-agent", "python3-octavia", "octavia-common"} {
			if out, err := inImage(t, "dpkg-query", "-W", "-f", "${Status}", p); err == nil && strings.Contains(out, "ok installed") {
				t.Errorf("%s is installed in the image", p)
			}
		}
		for _, p := range []string{"/opt/amphora-agent-venv", "/opt/amphora-agent", "/usr/local/bin/amphora-agent"} {
			if _, err := inImage(t, "test", "-e", p); err == nil {
				t.Errorf("%s exists in the image", p)
			}
		}
		if head := must(t, "head", "-c", "4", "/usr/bin/amphora-agent"); head != "\x7fELF" {
			t.Errorf("/usr/bin/amphora-agent is not a program: %q", head)
		}
	})

	t.Run("what the agent runs", func(t *testing.T) {
		for _, p := range []string{"/usr/sbin/haproxy", "/usr/sbin/keepalived", "/usr/sbin/ipvsadm", "/usr/sbin/nft",
			"/sbin/ip", "/bin/kill", "/sbin/sysctl", "/sbin/modprobe", "/sbin/dhclient", "/var/lib/octavia/ping-wrapper.sh"} {
			if out, err := inImage(t, "test", "-x", p); err != nil {
				t.Errorf("%s is missing or not executable in the image %s", p, out)
			}
		}
		if got := must(t, "cat", "/var/lib/octavia/haproxy-default-user-group.conf"); got != "global\n    group nogroup\n" {
			t.Errorf("haproxy-default-user-group.conf: %q", got)
		}
		if got := strings.TrimSpace(must(t, "stat", "-c", "%a", "/etc/octavia/certs")); got != "700" {
			t.Errorf("/etc/octavia/certs mode %s", got)
		}
		// The settings of haproxy-octavia, applied at boot and in the
		// namespace (sysctl --system).
		sysctls := must(t, "sh", "-c", "cat /etc/sysctl.d/*.conf")
		for _, s := range []string{"net.ipv4.ip_nonlocal_bind = 1", "net.core.somaxconn = 65534", "fs.nr_open = 2600000",
			"net.ipv4.tcp_max_syn_backlog = 100000", "net.ipv4.ping_group_range = 0 2147483647"} {
			if !strings.Contains(sysctls, s) {
				t.Errorf("sysctl %q missing", s)
			}
		}
		if !strings.Contains(must(t, "cat", "/etc/modules-load.d/amphora-agent.conf"), "nf_conntrack") {
			t.Error("nf_conntrack is not loaded at boot")
		}
	})

	t.Run("boot", func(t *testing.T) {
		grub := must(t, "cat", "/boot/grub/grub.cfg")
		if !strings.Contains(grub, "console=ttyS0") {
			t.Error("grub.cfg: no serial console")
		}
		// the last setting wins (diskimage-builder appends its own)
		timeout := ""
		sc := bufio.NewScanner(strings.NewReader(must(t, "cat", "/etc/default/grub")))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "GRUB_TIMEOUT="); ok {
				timeout = v
			}
		}
		if timeout != "0" {
			t.Errorf("/etc/default/grub: GRUB_TIMEOUT=%s, want 0", timeout)
		}
		must(t, "test", "-e", "/vmlinuz")
	})
}
