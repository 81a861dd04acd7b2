package certs

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

func newStore(t *testing.T) (*Store, *testutil.PKI, string) {
	t.Helper()
	dir := t.TempDir()
	p, err := testutil.NewPKI(dir, testutil.DefaultAmphoraID)
	if err != nil {
		t.Fatal(err)
	}
	certPath := filepath.Join(dir, "agent.pem")
	data, _ := os.ReadFile(p.ServerPEM)
	if err := os.WriteFile(certPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{CertPath: certPath, CAPath: p.ClientCA, ServerName: func() string { return testutil.DefaultAmphoraID },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, p, certPath
}

func TestParseKeyPair(t *testing.T) {
	_, p, _ := newStore(t)
	good, _ := os.ReadFile(p.ServerPEM)
	if _, err := ParseKeyPair(good); err != nil {
		t.Fatal(err)
	}
	other, _ := os.ReadFile(p.ClientPEM)
	ca, _ := os.ReadFile(p.ServerCA)
	// certificate of one pair with the key of another
	mixed := append(good[:len(good)-len(keyBlock(t, good))], keyBlock(t, other)...)
	for name, data := range map[string][]byte{"empty": nil, "text": []byte("hello"), "cert only": ca, "mismatched key": mixed} {
		if _, err := ParseKeyPair(data); !errors.Is(err, ErrInvalidKeyPair) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// keyBlock returns the trailing private key block of a PEM written by testutil.
func keyBlock(t *testing.T, pem []byte) []byte {
	t.Helper()
	i := len(pem) - 1
	for ; i > 0; i-- {
		if string(pem[i:min(i+27, len(pem))]) == "-----BEGIN PRIVATE KEY-----" {
			return pem[i:]
		}
	}
	t.Fatal("no key block")
	return nil
}

func TestReplaceRefusesInvalidAndKeepsFile(t *testing.T) {
	s, p, certPath := newStore(t)
	before, _ := os.ReadFile(certPath)
	if err := s.Replace([]byte("junk")); !errors.Is(err, ErrInvalidKeyPair) {
		t.Fatalf("Replace(junk) = %v", err)
	}
	if after, _ := os.ReadFile(certPath); string(after) != string(before) {
		t.Fatal("file changed")
	}
	next, _ := os.ReadFile(p.Server2PEM)
	if err := s.Replace(next); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(certPath); string(after) != string(next) {
		t.Fatal("file not replaced")
	}
	pair, _ := s.Current()
	want, _ := ParseKeyPair(next)
	if string(pair.Certificate[0]) != string(want.Certificate[0]) {
		t.Fatal("new pair not served")
	}
}

func TestExternalChangePickedUpOnlyWhenValid(t *testing.T) {
	s, p, certPath := newStore(t)
	orig, _ := s.Current()
	s.checked = time.Time{}
	if err := os.WriteFile(certPath, []byte("broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Current(); string(got.Certificate[0]) != string(orig.Certificate[0]) {
		t.Fatal("invalid file replaced the served pair")
	}
	next, _ := os.ReadFile(p.Server2PEM)
	os.WriteFile(certPath, next, 0o600)
	s.checked = time.Time{}
	got, _ := s.Current()
	want, _ := ParseKeyPair(next)
	if string(got.Certificate[0]) != string(want.Certificate[0]) {
		t.Fatal("valid external change not picked up")
	}
}
