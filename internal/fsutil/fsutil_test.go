package fsutil

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFileReplacesWithExactMode(t *testing.T) {
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	defer syscall.Umask(old)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(data) != "new" || fi.Mode().Perm() != 0o644 {
		t.Fatalf("got %q mode %v", data, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestWriteReaderLimitKeepsOldFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := WriteReader(p, strings.NewReader("0123456789"), 0o600, 5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	if data, _ := os.ReadFile(p); string(data) != "old" {
		t.Fatalf("file replaced by a refused write: %q", data)
	}
	n, sum, err := WriteReader(p, strings.NewReader("hello"), 0o600, 5)
	if err != nil || n != 5 || sum != MD5Hex([]byte("hello")) {
		t.Fatalf("WriteReader = %d %s %v", n, sum, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestWriteCheckedKeepsRefusedFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.conf")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("refused")
	var checked string
	err := WriteChecked(p, []byte("bad"), 0o644, func(staged string) error {
		checked = staged
		if data, _ := os.ReadFile(staged); string(data) != "bad" {
			t.Errorf("staged file holds %q", data)
		}
		return refuse
	})
	if !errors.Is(err, refuse) || checked != p+".new" {
		t.Fatalf("WriteChecked = %v, checked %q", err, checked)
	}
	if data, _ := os.ReadFile(p); string(data) != "old" {
		t.Fatalf("refused content installed: %q", data)
	}
	if data, _ := os.ReadFile(p + ".new-failed"); string(data) != "bad" {
		t.Fatalf("refused content not kept: %q", data)
	}
	if err := WriteChecked(p, []byte("good"), 0o644, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if data, _ := os.ReadFile(p); string(data) != "good" || fi.Mode().Perm() != 0o644 {
		t.Fatalf("accepted content: %q mode %v", data, fi.Mode().Perm())
	}
	if _, err := os.Stat(p + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staged file left: %v", err)
	}
}

func TestNames(t *testing.T) {
	for id, want := range map[string]bool{
		"6e9fd1a2-1234-4cde-8f00-aabbccddeeff":  true,
		"6E9FD1A2-1234-4CDE-8F00-AABBCCDDEEFF":  true,
		"..":                                    false,
		"6e9fd1a2-1234-4cde-8f00-aabbccddeef":   false,
		"6e9fd1a2-1234-4cde-8f00-aabbccddeeff/": false,
	} {
		if ValidID(id) != want {
			t.Errorf("ValidID(%q) != %v", id, want)
		}
	}
	for name, want := range map[string]bool{
		"6e9fd1a2-1234-4cde-8f00-aabbccddeeff.pem":     true,
		"0123456789abcdef0123456789abcdef01234567.pem": true,
		"a.b.pem":   true,
		"x.pem.bak": false, "a b.pem": false, ";x.pem": false, "../x.pem": false,
		".pem": false, "a/b.pem": false, "..pem": false, strings.Repeat("a", 252) + ".pem": false,
	} {
		if ValidPEMName(name) != want {
			t.Errorf("ValidPEMName(%q) != %v", name, want)
		}
	}
}

// probeReader lists directories when the writer first reads from it,
// i.e. while the temporary file exists.
type probeReader struct {
	dirs map[string][]string
	done bool
}

func (p *probeReader) Read(b []byte) (int, error) {
	if p.done {
		return 0, io.EOF
	}
	for d := range p.dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			p.dirs[d] = append(p.dirs[d], e.Name())
		}
	}
	p.done = true
	return copy(b, "secret"), nil
}

// TestStagesNextToTarget: the temporary file is never in $TMPDIR, even
// when $TMPDIR is on the target's file system (renameio's default would
// put key material there).
func TestStagesNextToTarget(t *testing.T) {
	tmp, dir := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	p := &probeReader{dirs: map[string][]string{tmp: nil, dir: nil}}
	if _, _, err := WriteReader(filepath.Join(dir, "key.pem"), p, 0o600, 0); err != nil {
		t.Fatal(err)
	}
	if len(p.dirs[tmp]) != 0 {
		t.Fatalf("staged in $TMPDIR: %v", p.dirs[tmp])
	}
	if len(p.dirs[dir]) != 1 {
		t.Fatalf("target dir during the write: %v, want one temporary file", p.dirs[dir])
	}
}

// TestRemoveTemps: what a crash in the middle of WriteReader leaves (its
// temporary file, named after the target) is recognised and removed;
// anything else in the directory stays.
func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	// the name WriteReader uses, seen while it writes
	p := &probeReader{dirs: map[string][]string{dir: nil}}
	if _, _, err := WriteReader(filepath.Join(dir, "haproxy.cfg"), p, 0o600, 0); err != nil {
		t.Fatal(err)
	}
	if len(p.dirs[dir]) != 1 {
		t.Fatalf("during the write: %v", p.dirs[dir])
	}
	if target, ok := TempTarget(p.dirs[dir][0]); !ok || target != "haproxy.cfg" {
		t.Fatalf("TempTarget(%q) = %q, %v", p.dirs[dir][0], target, ok)
	}
	// left by crashes
	for _, n := range []string{p.dirs[dir][0], ".server.pem.tmp-42", ".a.json.tmp-7"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// not ours
	keep := []string{"haproxy.cfg", ".hidden", ".x.tmp-", ".x.tmp-1a", "y.tmp-1", ".vimrc.tmp"}
	for _, n := range keep[1:] {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveTemps(dir, func(target string) bool { return target != "a.json" })
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Errorf("removed %v, want the haproxy.cfg and server.pem temporary files", removed)
	}
	keep = append(keep, ".a.json.tmp-7") // not accepted by owns
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if removed, err := RemoveTemps(filepath.Join(dir, "absent"), nil); err != nil || len(removed) != 0 {
		t.Errorf("missing dir: %v %v", removed, err)
	}
}
