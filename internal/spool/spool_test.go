package spool

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReceive(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("0123456789"), 100000)
	f, err := Receive(dir, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum := md5.Sum(data)
	if f.Size() != int64(len(data)) || f.MD5() != hex.EncodeToString(sum[:]) {
		t.Errorf("size %d md5 %s", f.Size(), f.MD5())
	}
	// The spool file has no name: nothing to leave behind after a crash.
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("spool left a name in its directory: %v", entries)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	all, err := f.ReadAll()
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("ReadAll: %d bytes, %v", len(all), err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestReceiveLimits(t *testing.T) {
	dir := t.TempDir()
	if _, err := Receive(dir, strings.NewReader("12345"), 4); !errors.Is(err, ErrTooLarge) {
		t.Errorf("5 bytes with limit 4: %v", err)
	}
	f, err := Receive(dir, strings.NewReader("1234"), 4)
	if err != nil {
		t.Fatalf("4 bytes with limit 4: %v", err)
	}
	f.Close()
	f, err = Receive(dir, strings.NewReader("unlimited"), 0)
	if err != nil || f.Size() != 9 {
		t.Fatalf("no limit: %v", err)
	}
	f.Close()
	broken := io.MultiReader(strings.NewReader("part"), iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, err := Receive(dir, broken, 100); !errors.Is(err, ErrSource) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("broken input: %v, want ErrSource wrapping the read error", err)
	}
	if _, err := Receive(dir+"/missing", strings.NewReader("x"), 10); err == nil || errors.Is(err, ErrSource) {
		t.Errorf("missing directory: %v, want an error that is not the input's", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("spool left a name in its directory: %v", entries)
	}
}

func TestOpenUnlinked(t *testing.T) {
	dir := t.TempDir()
	f, err := openUnlinked(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("content"); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a name is left: %v", entries)
	}
	if fi, err := f.Stat(); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
}

// TestRemoveLeftovers: the name openUnlinked gives a spool file for an
// instant is recognised and removed; other files stay.
func TestRemoveLeftovers(t *testing.T) {
	dir := t.TempDir()
	f, err := openUnlinked(dir)
	if err != nil {
		t.Fatal(err)
	}
	left := filepath.Base(f.Name())
	f.Close()
	keep := []string{".spool-", ".spool-0123", "spool-0123456789abcdef", "haproxy.cfg"}
	for _, n := range append([]string{left}, keep...) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := RemoveLeftovers(dir)
	if err != nil || len(removed) != 1 || removed[0] != left {
		t.Fatalf("removed %v, %v; want [%s]", removed, err, left)
	}
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if removed, err := RemoveLeftovers(filepath.Join(dir, "absent")); err != nil || removed != nil {
		t.Errorf("missing dir: %v %v", removed, err)
	}
}
