package haproxy

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// Certificate errors.
var (
	ErrBadFilename  = errors.New("filename has wrong format")
	ErrCertNotFound = errors.New("certificate not found")
)

func (m *Manager) certPath(lbID, name string) (string, error) {
	if !fsutil.ValidID(lbID) {
		return "", ErrBadID
	}
	if !fsutil.ValidPEMName(name) {
		return "", ErrBadFilename
	}
	return filepath.Join(m.opts.CertDir, lbID, name), nil
}

// PutCertificate stores a PEM file (a certificate bundle, a CA, a CRL or
// a crt-list) for a load balancer, mode 0600, and returns its MD5. The
// load balancer need not exist yet: the controller uploads certificates
// before the configuration that refers to them. body is read while the
// load balancer's lock is held: pass a file, not a network stream.
func (m *Manager) PutCertificate(ctx context.Context, lbID, name string, body io.Reader, limit int64) (string, error) {
	path, err := m.certPath(lbID, name)
	if err != nil {
		return "", err
	}
	unlock, err := m.locks.LockContext(ctx, lbID)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	_, sum, err := fsutil.WriteReader(path, body, 0o600, limit)
	return sum, err
}

// CertificateMD5 returns the MD5 of a stored PEM file.
func (m *Manager) CertificateMD5(lbID, name string) (string, error) {
	path, err := m.certPath(lbID, name)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", ErrCertNotFound
	}
	if err != nil {
		return "", err
	}
	return fsutil.MD5Hex(data), nil
}

// DeleteCertificate removes a stored PEM file; a missing file is fine.
func (m *Manager) DeleteCertificate(ctx context.Context, lbID, name string) error {
	path, err := m.certPath(lbID, name)
	if err != nil {
		return err
	}
	unlock, err := m.locks.LockContext(ctx, lbID)
	if err != nil {
		return err
	}
	defer unlock()
	return fsutil.Remove(path)
}
