// Package spool holds request bodies on disk while the agent validates
// them, so an upload costs a fixed few kilobytes of memory whatever its
// size, and the network transfer is over before any lock is taken.
//
// A spool file has no name: it is opened with O_TMPFILE in the given
// directory (or created and unlinked at once where the file system does
// not support that), so a crash leaves nothing behind and no other
// process can open it by path. It is not a file the agent stores: its
// content reaches its destination through fsutil's atomic writers.
package spool

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// Errors of Receive.
var (
	// ErrTooLarge: the input exceeds the limit.
	ErrTooLarge = errors.New("content exceeds the size limit")
	// ErrSource wraps an error reading the input (as opposed to writing
	// the spool file).
	ErrSource = errors.New("reading the content")
)

// File is a received body: read it from the start with Read, once
// (Rewind starts over). Close releases its disk space.
type File struct {
	f    *os.File
	size int64
	md5  string
}

// Receive streams r into a new spool file in dir, reading at most limit
// bytes (limit <= 0: no limit). Above the limit it returns ErrTooLarge
// and keeps nothing. On success the file is positioned at its start.
func Receive(dir string, r io.Reader, limit int64) (*File, error) {
	f, err := open(dir)
	if err != nil {
		return nil, err
	}
	h := md5.New()
	var src io.Reader = sourceReader{r}
	if limit > 0 {
		src = io.LimitReader(src, limit+1)
	}
	n, err := io.Copy(io.MultiWriter(f, h), src)
	if err == nil && limit > 0 && n > limit {
		err = ErrTooLarge
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{f: f, size: n, md5: hex.EncodeToString(h.Sum(nil))}, nil
}

// sourceReader tags the errors of the input.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", ErrSource, err)
	}
	return n, err
}

// open returns an anonymous read-write file in dir, mode 0600.
func open(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), dir+"/(spool)"), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("spool in %s: %w", dir, err)
	}
	return openUnlinked(dir)
}

// openUnlinked is open where O_TMPFILE is not supported: a named file,
// unlinked before it holds anything.
func openUnlinked(dir string) (*os.File, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	name := filepath.Join(dir, ".spool-"+hex.EncodeToString(rnd[:]))
	fd, err := unix.Open(name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool in %s: %w", dir, err)
	}
	if err := unix.Unlink(name); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("spool in %s: %w", dir, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

var leftoverRE = regexp.MustCompile(`^\.spool-[0-9a-f]{16}$`)

// RemoveLeftovers removes from dir the spool files a crash between
// creating and unlinking them left (only where O_TMPFILE is not
// supported). Call it at start-up, before anything spools into dir. It
// returns the names removed.
func RemoveLeftovers(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !leftoverRE.MatchString(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// Read reads the received content.
func (s *File) Read(p []byte) (int, error) { return s.f.Read(p) }

// Rewind goes back to the start of the content.
func (s *File) Rewind() error {
	_, err := s.f.Seek(0, io.SeekStart)
	return err
}

// ReadAll returns the whole content (callers bound its size with the
// limit they received it with).
func (s *File) ReadAll() ([]byte, error) {
	if err := s.Rewind(); err != nil {
		return nil, err
	}
	buf := make([]byte, s.size)
	_, err := io.ReadFull(s.f, buf)
	return buf, err
}

// Size is the number of bytes received.
func (s *File) Size() int64 { return s.size }

// MD5 is the lowercase hex MD5 of the content.
func (s *File) MD5() string { return s.md5 }

// Close frees the file. It may be called more than once.
func (s *File) Close() error {
	if s == nil || s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
