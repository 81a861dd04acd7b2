// Package fsutil holds the file-system primitives every part of the agent
// uses: crash-safe file replacement and path-safe names.
//
// Every file the agent writes goes through WriteFile or WriteReader: the
// content lands in a temporary file in the same directory, is fsynced,
// gets its final mode, and is renamed over the target; the directory is
// fsynced afterwards. A reader (or a crash) sees the old file or the new
// one, never a mix; what a crash leaves is a temporary file, which its
// owner removes at start-up (RemoveTemps).
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
//
// The temporary file is ".<name>.tmp-<random>" in path's directory,
// always: never in a shared directory such as /tmp (key material), and
// under a name RemoveTemps recognises when a crash left it behind.
func WriteReader(path string, r io.Reader, perm os.FileMode, limit int64) (n int64, sum string, err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempInfix+"*")
	if err != nil {
		return 0, "", fmt.Errorf("write %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// The mode exactly, whatever the umask (CreateTemp makes 0600).
	if err := f.Chmod(perm); err != nil {
		return 0, "", fmt.Errorf("write %s: %w", path, err)
	}
	h := md5.New()
	src := r
	if limit > 0 {
		src = io.LimitReader(r, limit+1)
	}
	n, err = io.Copy(io.MultiWriter(f, h), src)
	if err != nil {
		return n, "", fmt.Errorf("write %s: %w", path, err)
	}
	if limit > 0 && n > limit {
		return n, "", ErrTooLarge
	}
	if err := f.Sync(); err != nil {
		return n, "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return n, "", fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		done = true
		return n, "", fmt.Errorf("write %s: %w", path, err)
	}
	done = true
	return n, hex.EncodeToString(h.Sum(nil)), syncDir(dir)
}

// tempInfix marks the temporary files of WriteReader.
const tempInfix = ".tmp-"

var tempRE = regexp.MustCompile(`^\.(.+)\.tmp-[0-9]+$`)

// TempTarget reports whether name is a temporary file of WriteReader and
// the name of the file it was to replace.
func TempTarget(name string) (target string, ok bool) {
	m := tempRE.FindStringSubmatch(name)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// RemoveTemps removes from dir the temporary files WriteReader left
// behind (a crash between creating one and renaming it), those whose
// target owns accepts (nil: all of them). Call it where no write into dir
// can be under way: at start-up, or under the lock of dir's owner. It
// returns the names removed; a missing dir is not an error.
func RemoveTemps(dir string, owns func(target string) bool) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		target, ok := TempTarget(e.Name())
		if !ok || !e.Type().IsRegular() || owns != nil && !owns(target) {
			continue
		}
		if err := Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	if len(removed) > 0 {
		if err := syncDir(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// StagedSuffix is the suffix of the file WriteChecked stages.
const StagedSuffix = ".new"

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
//
// Only the accepted file has to survive a crash, and only once it has
// its final name: the staged file is not synced before check runs (a
// crash leaves it for the start-up clean-up, as it would a temporary
// file); its data is flushed to disk while check reads it from the page
// cache, and must be on disk before the rename that makes it the file.
// That takes two of the three syncs of a write-then-rename out of an
// upload's latency.
func WriteCheckedReader(path string, r io.Reader, perm os.FileMode, check func(staged string) error) error {
	staged := path + StagedSuffix
	dir, base := filepath.Split(staged)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempInfix+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", staged, err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", staged, err)
	}
	// The mode exactly, whatever the umask (CreateTemp makes 0600).
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := io.Copy(f, r); err != nil {
		return fail(err)
	}
	if err := os.Rename(f.Name(), staged); err != nil {
		return fail(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	checkErr := check(staged)
	syncErr := errors.Join(<-synced, f.Close())
	if checkErr != nil {
		if rerr := Rename(staged, path+".new-failed"); rerr != nil {
			checkErr = errors.Join(checkErr, rerr)
		}
		return checkErr
	}
	if syncErr != nil {
		os.Remove(staged)
		return fmt.Errorf("write %s: %w", staged, syncErr)
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
