package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/octavia-go/amphora-agent/internal/testutil"
)

// lbSpec describes a load balancer for Octavia's own templater
// (test/interop/render_haproxy.py): listeners HTTP listeners on
// vip:10001.., each with a pool of members servers, every object with a
// random UUID as in production (they are what a heartbeat carries, and
// they do not compress). Health monitors are off (haproxy stays quiet);
// one member in four is disabled and one in four has weight 0, so the
// reports carry "no check", MAINT and DRAIN. connection_limit stays
// small: the global maxconn is their sum and the fd hard limit here is
// 20000.
func lbSpec(amphoraID, lbID, base, vip string, listeners, members int) testutil.RenderSpec {
	spec := testutil.RenderSpec{
		AmphoraID: amphoraID, LBID: lbID, BasePath: base, CertDir: base + "/certs", VIP: vip,
	}
	off := false
	for l := range listeners {
		rl := testutil.RenderListener{
			ID: randomUUID(), Protocol: "HTTP", Port: 10001 + l,
			PoolID: randomUUID(), ConnectionLimit: 20, Monitor: &off,
		}
		for m := range members {
			rm := testutil.RenderMember{ID: randomUUID(), Address: "127.0.0.2", Port: 8000 + m, Weight: 1}
			switch m % 4 {
			case 1:
				rm.Enabled = &off
			case 2:
				rm.Weight = 0
			}
			rl.Members = append(rl.Members, rm)
		}
		spec.Listeners = append(spec.Listeners, rl)
	}
	return spec
}

// dpMemberAddr is the member server of the data-plane phase, inside the
// sandbox's namespace.
const dpMemberAddr = "127.0.0.1:18080"

// dataPlaneSpec is the heartbeat's load balancer with the members of its
// first listener on the data-plane phase's member server, and a
// connection limit that does not throttle the load.
func dataPlaneSpec(hb testutil.RenderSpec) testutil.RenderSpec {
	spec := hb
	spec.Listeners = slices.Clone(hb.Listeners)
	l := spec.Listeners[0]
	l.ConnectionLimit = 2000
	l.Members = slices.Clone(l.Members)
	host, port, _ := strings.Cut(dpMemberAddr, ":")
	p, _ := strconv.Atoi(port)
	for i := range l.Members {
		l.Members[i].Address, l.Members[i].Port = host, p
	}
	spec.Listeners[0] = l
	return spec
}

// renderAll renders the specs concurrently, at most two at a time (the
// templater is a Python process taking seconds).
func renderAll(ctx context.Context, specs map[string]testutil.RenderSpec) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	type res struct {
		name string
		text string
		err  error
	}
	sem := make(chan struct{}, 2)
	out := make(chan res, len(specs))
	for name, spec := range specs {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			text, err := testutil.RenderHAProxy(ctx, spec)
			out <- res{name, text, err}
		}()
	}
	cfgs := map[string][]byte{}
	var first error
	for range specs {
		r := <-out
		if r.err != nil && first == nil {
			first = fmt.Errorf("render %s: %w", r.name, r.err)
		}
		cfgs[r.name] = []byte(r.text)
	}
	return cfgs, first
}

// lbCertificate returns a PEM the way the controller uploads a listener's
// TLS material: an RSA 2048 certificate followed by its key.
func lbCertificate() ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "www.example.com"},
		DNSNames:     []string{"www.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})...)
	return out, nil
}
