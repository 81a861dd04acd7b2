package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrUnacceptable reports a key pair that parses but that the controller
// would refuse to talk to: serving it would lock the controller out of the
// amphora for good, since the only way back is another upload.
var ErrUnacceptable = errors.New("server certificate would not be accepted by the controller")

// clockSkew is how far in the future a new certificate's validity may
// start. The controller signs it moments before the upload with its own
// clock, which may run ahead of the amphora's; it verifies with that
// clock too, so a few minutes of skew must not refuse a good certificate.
const clockSkew = 5 * time.Minute

// CheckRotation decides whether next may replace the server key pair cur
// (nil: no pair yet) at time now. next must be a server certificate the
// controller accepts for this amphora:
//
//   - valid now (a start up to clockSkew ahead is tolerated) and not expired;
//   - for name (the amphora id; empty means "the name cur is for"): a DNS
//     subject alternative name, or without DNS names the common name, as
//     the controller's hostname check does (case-insensitive);
//   - usable for server authentication when it restricts its key usage;
//   - issued by a CA the controller trusts. The amphora does not hold the
//     controller's server CA, only clientCAs (agent_server_ca). Deployments
//     with one CA for both directions sign server certificates with a CA
//     in that bundle: then next must verify against it (with intermediates
//     from its own PEM). Deployments with two CAs (Octavia's recommended
//     layout) sign them with a CA the amphora never sees: then next must
//     come from the same issuer as cur (issuer name and authority key id),
//     the CA the controller has been verifying the amphora with.
//
// The private key matching the certificate is checked by ParseKeyPair.
func CheckRotation(next tls.Certificate, cur *tls.Certificate, clientCAs *x509.CertPool, name string, now time.Time) error {
	leaf := next.Leaf
	if leaf == nil {
		return fmt.Errorf("%w: no certificate", ErrUnacceptable)
	}
	if now.Add(clockSkew).Before(leaf.NotBefore) {
		return fmt.Errorf("%w: not valid before %s", ErrUnacceptable, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: expired at %s", ErrUnacceptable, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if name == "" && cur != nil && cur.Leaf != nil {
		name = identity(cur.Leaf)
	}
	if name != "" && !matchesName(leaf, name) {
		return fmt.Errorf("%w: issued for %q, not for the amphora id %q", ErrUnacceptable, identity(leaf), name)
	}
	if !serverUsage(leaf) {
		return fmt.Errorf("%w: extended key usage does not allow server authentication", ErrUnacceptable)
	}
	if verifies(next, clientCAs, now) {
		return nil
	}
	if cur == nil || cur.Leaf == nil {
		return fmt.Errorf("%w: not signed by a CA in agent_server_ca", ErrUnacceptable)
	}
	if verifies(*cur, clientCAs, now) {
		// One CA for both directions: the served certificate proves it.
		return fmt.Errorf("%w: not signed by a CA in agent_server_ca, which signed the certificate served now", ErrUnacceptable)
	}
	if !sameIssuer(leaf, cur.Leaf) {
		return fmt.Errorf("%w: issued by %q, the certificate served now by %q", ErrUnacceptable, leaf.Issuer.String(), cur.Leaf.Issuer.String())
	}
	return nil
}

// verifies reports whether the pair's leaf chains to a CA in roots, with
// the intermediates that came with it, for server authentication.
func verifies(pair tls.Certificate, roots *x509.CertPool, now time.Time) bool {
	if roots == nil || pair.Leaf == nil {
		return false
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err := pair.Leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err == nil {
		return true
	}
	// A certificate that starts within the tolerated skew verifies a
	// moment later; only the time may differ.
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired && now.Before(pair.Leaf.NotBefore) {
		return verifies(pair, roots, pair.Leaf.NotBefore)
	}
	return false
}

// identity is the name a certificate is for: its first DNS name, else its
// common name.
func identity(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}

// matchesName applies the controller's hostname check: DNS subject
// alternative names when there are any, the common name otherwise.
func matchesName(c *x509.Certificate, name string) bool {
	if len(c.DNSNames) > 0 {
		for _, n := range c.DNSNames {
			if strings.EqualFold(n, name) {
				return true
			}
		}
		return false
	}
	return strings.EqualFold(c.Subject.CommonName, name)
}

func serverUsage(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// sameIssuer reports whether a and b were signed by the same CA as far as
// a certificate shows it: the same issuer name and, when both carry one,
// the same authority key identifier.
func sameIssuer(a, b *x509.Certificate) bool {
	if !bytes.Equal(a.RawIssuer, b.RawIssuer) {
		return false
	}
	if len(a.AuthorityKeyId) > 0 && len(b.AuthorityKeyId) > 0 {
		return bytes.Equal(a.AuthorityKeyId, b.AuthorityKeyId)
	}
	return true
}
