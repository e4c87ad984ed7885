package handshaketest

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestIssueVerifiesAndCRLRevokes(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(Template{CommonName: "dev-1", URIs: []string{"spiffe://example.org/dev-1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("issued leaf does not verify: %v", err)
	}
	expired, err := ca.Issue(Template{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := expired.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Fatal("expired leaf verified")
	}
	crlPEM, err := ca.CRL(leaf.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if len(crlPEM) == 0 || leaf.Cert.URIs[0].String() != "spiffe://example.org/dev-1" {
		t.Fatal("CRL or URI SAN missing")
	}
}
