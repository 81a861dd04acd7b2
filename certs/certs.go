// Package certs owns the agent's own TLS material: the server key pair
// (certificate and key in one PEM file, as the controller ships it) and
// the CA that client certificates must chain to.
//
// Files are the source of truth, as in the reference agent, but a file is
// only ever replaced by a validated key pair (Replace), and a file that
// changed on disk behind our back is picked up by the next handshake only
// if it is valid; otherwise the last good pair keeps serving.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/octavia-go/amphora-agent/internal/fsutil"
)

// ErrInvalidKeyPair reports PEM data that is not a usable certificate and
// matching private key.
var ErrInvalidKeyPair = errors.New("not a valid certificate and private key pair")

// ParseKeyPair parses a combined PEM document (certificate chain and
// private key, in any order) and checks that the key matches the leaf.
func ParseKeyPair(data []byte) (tls.Certificate, error) {
	pair, err := tls.X509KeyPair(data, data)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%w: %v", ErrInvalidKeyPair, err)
	}
	if pair.Leaf == nil {
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%w: %v", ErrInvalidKeyPair, err)
		}
		pair.Leaf = leaf
	}
	return pair, nil
}

// ParseCAs parses every CERTIFICATE block of a PEM bundle into a pool.
func ParseCAs(data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse CA certificate: %w", err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no CA certificate found")
	}
	return pool, nil
}

// fileState identifies a version of a file on disk cheaply.
type fileState struct {
	mod  time.Time
	size int64
	ino  uint64
}

func stat(path string) (fileState, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, err
	}
	return fileState{mod: fi.ModTime(), size: fi.Size(), ino: inode(fi)}, nil
}

// recheck bounds how often a handshake stats the files.
const recheck = time.Second

// Store serves the server key pair and the client CA pool to the TLS
// server, reloading them when their files change.
type Store struct {
	certPath, caPath string
	serverName       func() string
	log              *slog.Logger

	mu        sync.Mutex // guards the following
	pair      *tls.Certificate
	certState fileState
	pool      *x509.CertPool
	caState   fileState
	checked   time.Time
}

// Options say where the agent's TLS material lives and whom it serves.
type Options struct {
	CertPath string // server certificate and key, one PEM file (agent_server_cert)
	CAPath   string // CA bundle client certificates must chain to (agent_server_ca)
	// ServerName returns the name the controller expects in the server
	// certificate: the amphora id. Empty (or nil) means "the name of the
	// certificate served now".
	ServerName func() string
	Log        *slog.Logger
}

// Open loads both files; an unreadable or invalid file is an error, so the
// agent refuses to start rather than serve nothing.
func Open(o Options) (*Store, error) {
	certPath, caPath := o.CertPath, o.CAPath
	s := &Store{certPath: certPath, caPath: caPath, serverName: o.ServerName, log: o.Log}
	// a rotation a crash interrupted leaves a temporary file
	if removed, err := fsutil.RemoveTemps(filepath.Dir(certPath), func(t string) bool { return t == filepath.Base(certPath) }); (len(removed) > 0 || err != nil) && s.log != nil {
		s.log.Info("temporary files of an interrupted certificate rotation removed", "files", fmt.Sprint(removed), "err", err)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	pair, err := ParseKeyPair(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	st, err := stat(certPath)
	if err != nil {
		return nil, err
	}
	s.pair, s.certState = &pair, st
	cas, err := os.ReadFile(caPath)
	if err != nil {
		return nil, err
	}
	pool, err := ParseCAs(cas)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caPath, err)
	}
	if st, err = stat(caPath); err != nil {
		return nil, err
	}
	s.pool, s.caState = pool, st
	s.checked = time.Now()
	return s, nil
}

// Replace validates data as a key pair the controller will accept (see
// CheckRotation) and, only if it is one, atomically writes it to the
// certificate file (mode 0600) and serves it to every new connection. On
// error the old file and pair stay in place and keep being served.
func (s *Store) Replace(data []byte) error {
	pair, err := ParseKeyPair(data)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := ""
	if s.serverName != nil {
		name = s.serverName()
	}
	if err := CheckRotation(pair, s.pair, s.pool, name, time.Now()); err != nil {
		return err
	}
	if err := fsutil.WriteFile(s.certPath, data, 0o600); err != nil {
		return err
	}
	st, err := stat(s.certPath)
	if err != nil {
		return err
	}
	s.pair, s.certState = &pair, st
	s.log.Info("server certificate replaced", "subject", pair.Leaf.Subject.CommonName, "not_after", pair.Leaf.NotAfter)
	return nil
}

// refresh reloads files that changed on disk; must hold s.mu.
func (s *Store) refresh() {
	now := time.Now()
	if now.Sub(s.checked) < recheck {
		return
	}
	s.checked = now
	if st, err := stat(s.certPath); err == nil && st != s.certState {
		s.certState = st
		if data, err := os.ReadFile(s.certPath); err != nil {
			s.log.Warn("server certificate file unreadable, keeping the loaded one", "path", s.certPath, "err", err)
		} else if pair, err := ParseKeyPair(data); err != nil {
			s.log.Warn("server certificate file changed but is invalid, keeping the loaded one", "path", s.certPath, "err", err)
		} else {
			s.pair = &pair
			s.log.Info("server certificate reloaded from disk", "path", s.certPath)
		}
	}
	if st, err := stat(s.caPath); err == nil && st != s.caState {
		s.caState = st
		if data, err := os.ReadFile(s.caPath); err != nil {
			s.log.Warn("client CA file unreadable, keeping the loaded one", "path", s.caPath, "err", err)
		} else if pool, err := ParseCAs(data); err != nil {
			s.log.Warn("client CA file changed but is invalid, keeping the loaded one", "path", s.caPath, "err", err)
		} else {
			s.pool = pool
			s.log.Info("client CA reloaded from disk", "path", s.caPath)
		}
	}
}

// Current returns the key pair and CA pool to use for a new connection.
func (s *Store) Current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh()
	return s.pair, s.pool
}

// Leaf returns the server certificate currently served.
func (s *Store) Leaf() *x509.Certificate {
	p, _ := s.Current()
	return p.Leaf
}

// ServerConfig returns a TLS configuration that requires client
// certificates signed by the CA and serves the current key pair, both
// looked up per handshake so rotation needs no restart.
func (s *Store) ServerConfig(minVersion uint16) *tls.Config {
	base := &tls.Config{MinVersion: minVersion}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pair, pool := s.Current()
		return &tls.Config{
			MinVersion:   minVersion,
			Certificates: []tls.Certificate{*pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			NextProtos:   []string{"http/1.1"},
		}, nil
	}
	return base
}
