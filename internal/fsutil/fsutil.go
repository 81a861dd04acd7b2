// Package fsutil holds the file-system primitives every part of the agent
// uses: crash-safe file replacement and path-safe names.
//
// Every file the agent writes goes through WriteFile or WriteReader: the
// content lands in a temporary file in the same directory, is fsynced,
// gets its final mode, and is renamed over the target; the directory is
// fsynced afterwards. A reader (or a crash) sees the old file or the new
// one, never a mix.
package fsutil

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"github.com/google/renameio/v2"
)

// WriteFile atomically replaces path with data, with mode perm exactly
// (neither the umask nor the replaced file's mode matter).
func WriteFile(path string, data []byte, perm os.FileMode) error {
	_, _, err := WriteReader(path, bytes.NewReader(data), perm, 0)
	return err
}

// ErrTooLarge is returned by WriteReader when the input exceeds the limit.
var ErrTooLarge = errors.New("content exceeds the size limit")

// WriteReader streams r into a temporary file next to path and, only when
// r was read to EOF without error, atomically renames it over path.
// It returns the number of bytes written and their lowercase hex MD5.
// limit <= 0 means no limit; above the limit nothing is replaced and
// ErrTooLarge is returned.
func WriteReader(path string, r io.Reader, perm os.FileMode, limit int64) (int64, string, error) {
	// Stage next to the target, always: renameio would otherwise use
	// $TMPDIR when it is on the same file system, leaving key material
	// in a shared, world-listable directory while it is written.
	t, err := renameio.NewPendingFile(path, renameio.WithStaticPermissions(perm), renameio.WithTempDir(filepath.Dir(path)))
	if err != nil {
		return 0, "", fmt.Errorf("write %s: %w", path, err)
	}
	defer t.Cleanup()
	h := md5.New()
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err := io.Copy(io.MultiWriter(t, h), src)
	if err != nil {
		return n, "", fmt.Errorf("write %s: %w", path, err)
	}
	if limit > 0 && n > limit {
		return n, "", ErrTooLarge
	}
	if err := t.CloseAtomicallyReplace(); err != nil {
		return n, "", fmt.Errorf("write %s: %w", path, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), syncDir(filepath.Dir(path))
}

// Rename renames oldpath to newpath and makes the change durable.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	return syncDir(filepath.Dir(newpath))
}

// WriteChecked replaces path with data only when check accepts it: data
// is written as path+".new" and check runs on that file. Refused, the
// file is kept as path+".new-failed" for the operator, path is untouched
// and check's error is returned; accepted, it is renamed over path.
func WriteChecked(path string, data []byte, perm os.FileMode, check func(staged string) error) error {
	return WriteCheckedReader(path, bytes.NewReader(data), perm, check)
}

// WriteCheckedReader is WriteChecked streaming its content from r: the
// staged file is written as r is read, and check reads it from disk.
func WriteCheckedReader(path string, r io.Reader, perm os.FileMode, check func(staged string) error) error {
	staged := path + ".new"
	if _, _, err := WriteReader(staged, r, perm, 0); err != nil {
		return err
	}
	if err := check(staged); err != nil {
		if rerr := Rename(staged, path+".new-failed"); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	return Rename(staged, path)
}

// Remove deletes path; a missing file is not an error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// MD5Hex returns the lowercase hex MD5 of data, the form Octavia uses in
// ETag headers and md5sum fields.
func MD5Hex(data []byte) string {
	s := md5.Sum(data)
	return hex.EncodeToString(s[:])
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// ValidID reports whether id is UUID-shaped, the only form the Octavia
// controller uses for amphora, load-balancer and listener ids. Anything
// else is refused before it can reach a path or a unit name.
func ValidID(id string) bool { return uuidRE.MatchString(id) }

var pemNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.pem$`)

// ValidPEMName reports whether name is a safe certificate file name: one
// path element made of letters, digits, '_', '-' and single dots, ending
// in ".pem", at most 255 bytes. Every name the controller produces
// (<uuid>.pem, <sha1 hex>.pem) passes.
func ValidPEMName(name string) bool {
	return len(name) <= 255 && pemNameRE.MatchString(name)
}
