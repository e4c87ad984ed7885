// Package handshaketest builds throw-away PKIs at run time for tests and examples: CAs,
// server and client certificates (valid, expired, from another CA, wrong usage) and CRLs,
// as PEM files on disk. Nothing it makes is meant to be trusted outside a test, and no
// private key is ever committed to the repository.
package handshaketest

import (
	"crypto"
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
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority that issues leaves and CRLs.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
}

// Cert is an issued certificate with its key, in parsed and PEM form.
type Cert struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// Template describes a leaf to issue. Zero NotBefore/NotAfter mean "valid from an hour ago
// for a day"; an empty ExtKeyUsage means client and server auth.
type Template struct {
	CommonName         string
	Organization       []string
	OrganizationalUnit []string
	DNSNames           []string
	IPAddresses        []net.IP
	URIs               []string
	Emails             []string
	NotBefore          time.Time
	NotAfter           time.Time
	ExtKeyUsage        []x509.ExtKeyUsage
}

// nextSerial returns a random 127-bit serial, so concurrent tests never collide.
func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// NewCA creates a self-signed ECDSA P-256 CA named cn.
func NewCA(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"mqtls test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Issue signs a new ECDSA P-256 leaf described by t.
func (ca *CA) Issue(t Template) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := t.NotBefore, t.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	eku := t.ExtKeyUsage
	if len(eku) == 0 {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject: pkix.Name{
			CommonName:         t.CommonName,
			Organization:       t.Organization,
			OrganizationalUnit: t.OrganizationalUnit,
		},
		DNSNames:       t.DNSNames,
		IPAddresses:    t.IPAddresses,
		EmailAddresses: t.Emails,
		NotBefore:      notBefore,
		NotAfter:       notAfter,
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    eku,
	}
	for _, s := range t.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("parsing URI SAN %q: %w", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issuing %q: %w", t.CommonName, err)
	}
	return newCert(der, key)
}

// CRL returns a PEM CRL signed by ca that revokes the given certificates and is valid for a day.
func (ca *CA) CRL(revoked ...*x509.Certificate) ([]byte, error) {
	return ca.CRLWindow(time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), revoked...)
}

// TLSCertificate returns c as a tls.Certificate for in-process clients and servers.
func (c *Cert) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// Pool returns a cert pool holding only ca.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFile writes data to dir/name, readable by everyone (so a broker that drops
// privileges can read it; these are throw-away test files), and returns the path.
func WriteFile(dir, name string, data []byte) (string, error) {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// Files writes c's certificate and key to dir as name.crt and name.key and returns the paths.
func (c *Cert) Files(dir, name string) (certFile, keyFile string, err error) {
	if certFile, err = WriteFile(dir, name+".crt", c.CertPEM); err != nil {
		return "", "", err
	}
	if keyFile, err = WriteFile(dir, name+".key", c.KeyPEM); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// NewSelfSigned creates an ECDSA P-256 certificate signed by its own key, as `openssl req
// -x509` makes it: basic constraints CA:TRUE, no key usage, no extended key usage. Fleets
// without a CA give each device one of these and pin its key. Of t only CommonName and the
// validity dates (defaulted as for Issue) are used.
func NewSelfSigned(t Template) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := t.NotBefore, t.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: t.CommonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating self-signed %q: %w", t.CommonName, err)
	}
	return newCert(der, key)
}

// AsCA returns c as an issuer, so a test can sign with a device's key what an attacker
// would: a certificate for another device, chained through c.
func (c *Cert) AsCA() *CA { return &CA{Cert: c.Cert, Key: c.Key, CertPEM: c.CertPEM} }

// Intermediate issues a CA certificate named cn under ca, allowed to issue leaves.
func (ca *CA) Intermediate(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"mqtls test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("creating intermediate %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Rename returns a CA with ca's key under a new self-signed certificate named cn: the
// same key, another name, for CRLs whose issuer name does not match the key's CA.
func (ca *CA) Rename(cn string) (*CA, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"mqtls test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ca.Key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("renaming CA to %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: ca.Key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// CRLWindow is CRL with explicit thisUpdate and nextUpdate, e.g. to make an expired CRL.
func (ca *CA) CRLWindow(thisUpdate, nextUpdate time.Time, revoked ...*x509.Certificate) ([]byte, error) {
	tmpl := &x509.RevocationList{Number: nextSerial(), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("creating CRL: %w", err)
	}
	return pemBlock("X509 CRL", der), nil
}

// PublicKeyPEM returns c's public key as a PEM "PUBLIC KEY" block (SubjectPublicKeyInfo),
// as `openssl pkey -pubout` writes it.
func (c *Cert) PublicKeyPEM() []byte { return pemBlock("PUBLIC KEY", c.Cert.RawSubjectPublicKeyInfo) }

func newCert(der []byte, key *ecdsa.PrivateKey) (*Cert, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", keyDER)}, nil
}

// ServerFiles makes a CA and a server certificate from it for localhost and 127.0.0.1,
// writes the certificate and key to dir as server.crt and server.key, and returns the CA
// (for the clients' RootCAs) and the two paths.
func ServerFiles(dir string) (ca *CA, certFile, keyFile string, err error) {
	if ca, err = NewCA("server CA"); err != nil {
		return nil, "", "", err
	}
	srv, err := ca.Issue(Template{CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return nil, "", "", err
	}
	if certFile, keyFile, err = srv.Files(dir, "server"); err != nil {
		return nil, "", "", err
	}
	return ca, certFile, keyFile, nil
}
