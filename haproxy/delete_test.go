package haproxy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
	"github.com/octavia-go/amphora-agent/service"
)

// deleteEnv is a Manager on a temporary base path with the real built-in
// supervisor (nothing runs: Delete of a stopped load balancer).
func deleteEnv(t *testing.T) (*Manager, string) {
	t.Helper()
	dir := testutil.ShortDir(t, "hd") // unix socket paths below it
	sup, err := service.NewSupervisor(service.SupervisorOptions{StateDir: filepath.Join(dir, "sup")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close() })
	m := NewManager(Options{
		BasePath: filepath.Join(dir, "lib"),
		CertDir:  filepath.Join(dir, "lib", "certs"),
		Cmd:      "/usr/sbin/haproxy",
		Units:    sup,
	})
	if err := os.MkdirAll(m.opts.BasePath, 0o755); err != nil {
		t.Fatal(err)
	}
	return m, dir
}

// listenUnix creates a unix socket at path that stays until the test ends.
func listenUnix(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	t.Cleanup(func() { ln.Close() })
}

// installConfig stands for an uploaded configuration whose global
// section declares the given stats socket.
func installConfig(t *testing.T, m *Manager, lbID, socket string) {
	t.Helper()
	if err := os.MkdirAll(m.dir(lbID), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := "global\n    daemon\n    stats socket " + socket + " mode 0666 level user\n\ndefaults\n    mode tcp\n"
	if err := os.WriteFile(m.ConfigPath(lbID), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteRemovesOnlyOwnedSockets: DELETE /1.0/listeners/<lb> removes
// the stats socket its configuration names only when the agent owns it
// (base_path/<lb>.sock or inside base_path/<lb>/, a socket, reached
// without following a link out of base_path). Before the fix (issue 13,
// defect 2) the agent unlinked whatever file the uploaded configuration
// named: the regular-file, foreign-socket, ".." and symlink cases below
// failed.
func TestDeleteRemovesOnlyOwnedSockets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, dir := deleteEnv(t)
	base := m.opts.BasePath
	outside := filepath.Join(dir, "outside")
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(outside, "server.pem") // the agent's own key, say
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(outside, "other.sock") // another daemon's socket
	listenUnix(t, foreign)

	type tc struct {
		name    string
		socket  func(lbID string) string // the path the configuration names
		prepare func(lbID string)
		kept    []string // must exist after the delete
		gone    []string // must not
	}
	other := testutil.NewUUID()
	cases := []tc{{
		name:   "own socket in base_path is removed",
		socket: func(lb string) string { return filepath.Join(base, lb+".sock") },
		prepare: func(lb string) {
			listenUnix(t, filepath.Join(base, lb+".sock"))
		},
		gone: []string{"BASE/LB.sock"},
	}, {
		name:   "regular file outside base_path",
		socket: func(string) string { return key },
		kept:   []string{key},
	}, {
		name:   "socket of another program",
		socket: func(string) string { return foreign },
		kept:   []string{foreign},
	}, {
		name:   "dot-dot out of base_path",
		socket: func(string) string { return filepath.Join(base, "..", "outside", "server.pem") },
		kept:   []string{key},
	}, {
		name:   "own socket name as a symlink to a file",
		socket: func(lb string) string { return filepath.Join(base, lb+".sock") },
		prepare: func(lb string) {
			if err := os.Symlink(key, filepath.Join(base, lb+".sock")); err != nil {
				t.Fatal(err)
			}
		},
		kept: []string{key, "BASE/LB.sock"},
	}, {
		name:   "own socket name as a regular file",
		socket: func(lb string) string { return filepath.Join(base, lb+".sock") },
		prepare: func(lb string) {
			if err := os.WriteFile(filepath.Join(base, lb+".sock"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		},
		kept: []string{"BASE/LB.sock"},
	}, {
		name:   "another load balancer's socket",
		socket: func(string) string { return filepath.Join(base, other+".sock") },
		prepare: func(string) {
			if _, err := os.Lstat(filepath.Join(base, other+".sock")); err != nil {
				listenUnix(t, filepath.Join(base, other+".sock"))
			}
		},
		kept: []string{"BASE/" + other + ".sock"},
	}, {
		name:   "through a directory link out of base_path",
		socket: func(lb string) string { return filepath.Join(base, lb, "run", "other.sock") },
		prepare: func(lb string) {
			if err := os.MkdirAll(filepath.Join(base, lb), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(base, lb, "run")); err != nil {
				t.Fatal(err)
			}
		},
		kept: []string{foreign},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lb := testutil.NewUUID()
			expand := func(p string) string {
				p = filepath.Join(filepath.Dir(p), strings.Replace(filepath.Base(p), "LB.", lb+".", 1))
				if rest, ok := strings.CutPrefix(p, "BASE/"); ok {
					return filepath.Join(base, rest)
				}
				return p
			}
			if c.prepare != nil {
				c.prepare(lb)
			}
			installConfig(t, m, lb, c.socket(lb))
			if err := m.Delete(ctx, lb); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			for _, p := range c.kept {
				if _, err := os.Lstat(expand(p)); err != nil {
					t.Errorf("%s was removed by the delete: %v", expand(p), err)
				}
			}
			for _, p := range c.gone {
				if _, err := os.Lstat(expand(p)); err == nil {
					t.Errorf("%s is still there after the delete", expand(p))
				}
			}
			if m.Exists(lb) {
				t.Error("the load balancer still exists")
			}
			if _, err := os.Lstat(m.dir(lb)); err == nil {
				t.Errorf("%s is still there", m.dir(lb))
			}
			_ = os.Remove(filepath.Join(base, lb+".sock"))
		})
	}
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("the key is gone: %v", err)
	}
}
