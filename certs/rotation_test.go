package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"
)

const amphoraID = "5d1ff8e1-3a6c-4d38-9e2f-2d7a1f0b6c11"

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{c, key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs a server certificate; edit adjusts the template. A nil ca
// makes it self-signed.
func issue(t *testing.T, ca *testCA, edit func(*x509.Certificate)) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: amphoraID},
		DNSNames:  []string{amphoraID},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if edit != nil {
		edit(tmpl)
	}
	parent, signer := tmpl, any(key)
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestCheckRotation(t *testing.T) {
	serverCA, clientCA, rogueCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "rogue CA")
	// A rogue CA that copies the real one's name: same issuer text, other key.
	impostor := newTestCA(t, "server CA")
	now := time.Now()
	cur := issue(t, serverCA, nil)

	for _, tc := range []struct {
		name    string
		next    tls.Certificate
		cur     *tls.Certificate
		roots   *x509.CertPool
		id      string
		wantErr string
	}{
		{name: "two CAs: same issuer", next: issue(t, serverCA, nil), cur: &cur, roots: clientCA.pool(), id: amphoraID},
		{name: "two CAs: name from the served certificate", next: issue(t, serverCA, nil), cur: &cur, roots: clientCA.pool()},
		{name: "two CAs: upper-case SAN", next: issue(t, serverCA, func(c *x509.Certificate) { c.DNSNames = []string{strings.ToUpper(amphoraID)} }), cur: &cur, roots: clientCA.pool(), id: amphoraID},
		{name: "CN only, no SAN", next: issue(t, serverCA, func(c *x509.Certificate) { c.DNSNames = nil }), cur: &cur, roots: clientCA.pool(), id: amphoraID},
		{name: "starts within the clock skew", next: issue(t, serverCA, func(c *x509.Certificate) { c.NotBefore = now.Add(time.Minute) }), cur: &cur, roots: clientCA.pool(), id: amphoraID},
		{name: "one CA: signed by agent_server_ca", next: issue(t, serverCA, nil), cur: &cur, roots: serverCA.pool(), id: amphoraID},
		{name: "self-signed", next: issue(t, nil, nil), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "issued by"},
		{name: "unknown CA", next: issue(t, rogueCA, nil), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "issued by"},
		{name: "impostor CA with the same name", next: issue(t, impostor, nil), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "issued by"},
		{name: "one CA: unknown CA", next: issue(t, rogueCA, nil), cur: &cur, roots: serverCA.pool(), id: amphoraID, wantErr: "agent_server_ca"},
		{name: "one CA: self-signed", next: issue(t, nil, nil), cur: &cur, roots: serverCA.pool(), id: amphoraID, wantErr: "agent_server_ca"},
		{name: "wrong name", next: issue(t, serverCA, func(c *x509.Certificate) { c.DNSNames = []string{"other"}; c.Subject.CommonName = "other" }), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "not for the amphora id"},
		{name: "right CN but other SAN", next: issue(t, serverCA, func(c *x509.Certificate) { c.DNSNames = []string{"other"} }), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "not for the amphora id"},
		{name: "expired", next: issue(t, serverCA, func(c *x509.Certificate) { c.NotBefore, c.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Hour) }), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "expired"},
		{name: "not yet valid", next: issue(t, serverCA, func(c *x509.Certificate) { c.NotBefore = now.Add(time.Hour); c.NotAfter = now.Add(2 * time.Hour) }), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "not valid before"},
		{name: "client-only usage", next: issue(t, serverCA, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }), cur: &cur, roots: clientCA.pool(), id: amphoraID, wantErr: "server authentication"},
		{name: "nothing served yet, unknown CA", next: issue(t, serverCA, nil), roots: clientCA.pool(), id: amphoraID, wantErr: "agent_server_ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckRotation(tc.next, tc.cur, tc.roots, tc.id, now)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && (err == nil || !errors.Is(err, ErrUnacceptable) || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got %v, want an ErrUnacceptable mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// TestReplaceRefusesLockOut: a well-formed pair for the right name from an
// unknown issuer is refused; the old file stays and keeps being served.
func TestReplaceRefusesLockOut(t *testing.T) {
	s, p, certPath := newStore(t)
	before, _ := os.ReadFile(certPath)
	served, _ := s.Current()
	rogue, _ := os.ReadFile(p.RogueServerPEM)
	if err := s.Replace(rogue); !errors.Is(err, ErrUnacceptable) {
		t.Fatalf("Replace(rogue) = %v", err)
	}
	if after, _ := os.ReadFile(certPath); string(after) != string(before) {
		t.Fatal("file changed")
	}
	if now, _ := s.Current(); string(now.Certificate[0]) != string(served.Certificate[0]) {
		t.Fatal("refused pair is served")
	}
}
