package certs

import (
	"os"
	"testing"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

func addPEMSeeds(f *testing.F) {
	f.Helper()
	pki, err := testutil.NewPKI(f.TempDir(), testutil.DefaultAmphoraID)
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range []string{pki.ServerPEM, pki.ClientCA, pki.ServerCA, pki.ClientPEM} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
}

// FuzzParseKeyPair: any upload for PUT /1.0/certificate is a key pair
// with its leaf or an error.
func FuzzParseKeyPair(f *testing.F) {
	addPEMSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		pair, err := ParseKeyPair(data)
		if err == nil && (pair.Leaf == nil || pair.PrivateKey == nil) {
			t.Fatal("accepted without leaf or key")
		}
	})
}

// FuzzParseCAs: any CA bundle is a non-empty pool or an error.
func FuzzParseCAs(f *testing.F) {
	addPEMSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		pool, err := ParseCAs(data)
		if err == nil && pool == nil {
			t.Fatal("accepted without a pool")
		}
	})
}
