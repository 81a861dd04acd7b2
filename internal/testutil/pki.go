// Package testutil builds what the project's end-to-end tests and the
// demo need around a real agent binary: a throw-away PKI shaped like the
// one the Octavia controller issues, agent configuration files, and a
// running agent process with an mTLS client for it.
package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a set of certificates shaped like Octavia's: a server CA that
// signs the amphora's server certificate (CN and SAN DNS = amphora id), a
// client CA that signs the controller's client certificate, and a rogue
// CA with a client certificate no amphora must accept.
type PKI struct {
	Dir string
	// Files, all PEM.
	ServerCA       string // CA the controller verifies the agent with
	ClientCA       string // CA the agent verifies the controller with (agent_server_ca)
	ServerPEM      string // amphora server certificate + key (agent_server_cert)
	Server2PEM     string // a second server certificate + key, for rotation tests
	ClientPEM      string // controller client certificate + key
	RogueClientPEM string // client certificate + key signed by an unknown CA
	RogueServerPEM string // server certificate + key for the amphora id, signed by an unknown CA
}

// ControllerTLS is the controller side of an mTLS session with the
// amphora amphoraID: certPEM as the client certificate ("" for none), the
// server CA, and the amphora id as the expected server name (the
// controller's hostname check).
func (p *PKI) ControllerTLS(t testing.TB, amphoraID, certPEM string) *tls.Config {
	t.Helper()
	ca, err := os.ReadFile(p.ServerCA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cfg := &tls.Config{RootCAs: pool, ServerName: amphoraID, MinVersion: tls.VersionTLS12}
	if certPEM != "" {
		pair, err := tls.LoadX509KeyPair(certPEM, certPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// NewPKI writes a fresh PKI for amphoraID into dir.
func NewPKI(dir, amphoraID string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{
		Dir:            dir,
		ServerCA:       filepath.Join(dir, "server_ca.pem"),
		ClientCA:       filepath.Join(dir, "client_ca.pem"),
		ServerPEM:      filepath.Join(dir, "server.pem"),
		Server2PEM:     filepath.Join(dir, "server2.pem"),
		ClientPEM:      filepath.Join(dir, "client.pem"),
		RogueClientPEM: filepath.Join(dir, "rogue_client.pem"),
		RogueServerPEM: filepath.Join(dir, "rogue_server.pem"),
	}
	serverCA, err := newCA("Octavia test server CA")
	if err != nil {
		return nil, err
	}
	clientCA, err := newCA("Octavia test client CA")
	if err != nil {
		return nil, err
	}
	rogueCA, err := newCA("Rogue CA")
	if err != nil {
		return nil, err
	}
	server, err := leaf(serverCA, amphoraID, true)
	if err != nil {
		return nil, err
	}
	server2, err := leaf(serverCA, amphoraID, true)
	if err != nil {
		return nil, err
	}
	client, err := leaf(clientCA, "octavia-controller", false)
	if err != nil {
		return nil, err
	}
	rogue, err := leaf(rogueCA, "octavia-controller", false)
	if err != nil {
		return nil, err
	}
	rogueServer, err := leaf(rogueCA, amphoraID, true)
	if err != nil {
		return nil, err
	}
	for path, data := range map[string][]byte{
		p.ServerCA: serverCA.pem, p.ClientCA: clientCA.pem,
		p.ServerPEM: server, p.Server2PEM: server2, p.ClientPEM: client, p.RogueClientPEM: rogue,
		p.RogueServerPEM: rogueServer,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
}

func newCA(cn string) (*issuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &issuer{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// leaf issues a certificate and returns certificate + key as one PEM.
func leaf(ca *issuer, cn string, server bool) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{cn}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})...)
	return out, nil
}
