package hostinfo

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageToolsByAbsolutePath: the package versions of /1.0/info come
// from /usr/bin/dpkg-query, never from one found first in $PATH.
func TestPackageToolsByAbsolutePath(t *testing.T) {
	if _, err := os.Stat("/var/lib/dpkg/status"); err != nil {
		t.Skip("not a dpkg system: the agent asks rpm there")
	}
	dir := t.TempDir()
	fake := "#!/bin/sh\necho 6.6.6-planted\n"
	for _, name := range []string{"dpkg-query", "rpm"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	v := New("/usr/sbin/haproxy").Versions(context.Background())
	for name, v := range map[string]*string{"haproxy": v.HAProxy, "keepalived": v.Keepalived, "ipvsadm": v.IPVSAdm} {
		if v != nil && strings.Contains(*v, "planted") {
			t.Errorf("%s version %q came from the dpkg-query found in $PATH", name, *v)
		}
	}
}
