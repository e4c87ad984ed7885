package handshake

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"time"
)

// DefaultCRLWarnWindow is how long before a CRL's nextUpdate an operator is warned (by the
// expiry check and `mqtls check`), separate from the certificates' window: CRLs live days,
// not years, and one that goes stale refuses every device its CA issued (crl_expired).
const DefaultCRLWarnWindow = 24 * time.Hour

// caCRLs is what the CRLs of one CA say: the serials they revoke, and until when the newest
// of them is current.
type caCRLs struct {
	subject    []byte // the CA's raw subject; the map holding this is keyed by its key
	revoked    map[string]struct{}
	nextUpdate time.Time
}

// crlSet maps a CA's raw SubjectPublicKeyInfo to the CRLs of the CAs with that key. A CRL
// belongs to a CA only if it names the CA's subject and verifies with the CA's key, so both
// are compared.
type crlSet map[string][]*caCRLs

// lookup returns the CRLs of issuer, or nil when none was loaded for it.
func (s crlSet) lookup(issuer *x509.Certificate) *caCRLs {
	for _, c := range s[string(issuer.RawSubjectPublicKeyInfo)] {
		if bytes.Equal(c.subject, issuer.RawSubject) {
			return c
		}
	}
	return nil
}

// add records crl under ca, creating the CA's entry on first use.
func (s crlSet) add(ca *x509.Certificate, crl *x509.RevocationList) {
	c := s.lookup(ca)
	if c == nil {
		c = &caCRLs{subject: ca.RawSubject, revoked: map[string]struct{}{}}
		k := string(ca.RawSubjectPublicKeyInfo)
		s[k] = append(s[k], c)
	}
	for _, e := range crl.RevokedCertificateEntries {
		c.revoked[e.SerialNumber.String()] = struct{}{}
	}
	// Several CRLs of one CA all revoke what they list (a revocation is never undone by an
	// older list); the newest says how long the set is current.
	if crl.NextUpdate.After(c.nextUpdate) {
		c.nextUpdate = crl.NextUpdate
	}
}

// ParseCRLFile returns every CRL in the CRL file called name: each PEM "X509 CRL" block in
// order, or the whole file as one DER CRL when it holds no PEM. Any block that does not
// parse, is not a CRL, has no nextUpdate or carries a critical extension mqtls does not
// implement (a delta CRL, an issuing distribution point that scopes it to part of a CA's
// certificates) fails the whole file, naming the block: a CRL silently skipped would let
// the devices it revokes in.
func ParseCRLFile(name string, data []byte) ([]*x509.RevocationList, error) {
	headers := bytes.Count(data, []byte("-----BEGIN"))
	if headers == 0 {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, fmt.Errorf("CRL file %s is empty", name)
		}
		crl, err := parseCRL(data)
		if err != nil {
			return nil, fmt.Errorf("%s: block 1 (DER): %w", name, err)
		}
		return []*x509.RevocationList{crl}, nil
	}
	var crls []*x509.RevocationList
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n := len(crls) + 1
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("%s: block %d: PEM block is %q, want \"X509 CRL\"", name, n, block.Type)
		}
		crl, err := parseCRL(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: block %d: %w", name, n, err)
		}
		crls = append(crls, crl)
	}
	if len(crls) != headers {
		return nil, fmt.Errorf("%s: %d PEM headers but %d blocks decode: block %d is not well-formed PEM", name, headers, len(crls), len(crls)+1)
	}
	return crls, nil
}

func parseCRL(der []byte) (*x509.RevocationList, error) {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parsing CRL: %w", err)
	}
	if crl.NextUpdate.IsZero() {
		return nil, fmt.Errorf("CRL of %q has no nextUpdate, so it could never go stale", crl.Issuer)
	}
	for _, ext := range crl.Extensions {
		if ext.Critical {
			return nil, fmt.Errorf("CRL of %q has critical extension %v, which mqtls does not implement (delta CRLs and issuing distribution points are not supported)", crl.Issuer, ext.Id)
		}
	}
	for _, e := range crl.RevokedCertificateEntries {
		for _, ext := range e.Extensions {
			if ext.Critical {
				return nil, fmt.Errorf("CRL of %q: the entry for serial %x has critical extension %v, which mqtls does not implement (indirect CRLs are not supported)", crl.Issuer, e.SerialNumber, ext.Id)
			}
		}
	}
	return crl, nil
}

// loadCRLs reads the CRL files into m.crls and m.files. Each CRL must name a CA of cas
// and verify with its key; afterwards every CA must have a CRL, since a certificate whose
// issuer has none could not fail closed.
func (m *tlsMaterial) loadCRLs(files []string, caFile string, cas []*x509.Certificate) error {
	m.crls = crlSet{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("reading CRL: %w", err)
		}
		crls, err := ParseCRLFile(file, data)
		if err != nil {
			return err
		}
		for i, crl := range crls {
			if err := m.crls.addFor(crl, cas); err != nil {
				return fmt.Errorf("%s: block %d: %w", file, i+1, err)
			}
			m.files = append(m.files, FileInfo{File: file, Role: "crl", Subject: crl.Issuer.String(),
				NotAfter: crl.NextUpdate, ThisUpdate: crl.ThisUpdate, Block: i + 1})
		}
	}
	for _, ca := range cas {
		if m.crls.lookup(ca) == nil {
			return fmt.Errorf("client CA %q in %s has no CRL in the CRL files: add its CRL (an empty one if it revokes nothing); with CRLs configured, a certificate it issued could not be checked", ca.Subject, caFile)
		}
	}
	return nil
}

// addFor records crl under every CA of cas whose subject it names and whose key signed it.
func (s crlSet) addFor(crl *x509.RevocationList, cas []*x509.Certificate) error {
	var sigErr error
	matched := false
	for _, ca := range cas {
		if !bytes.Equal(crl.RawIssuer, ca.RawSubject) {
			continue
		}
		if err := crl.CheckSignatureFrom(ca); err != nil {
			sigErr = err
			continue
		}
		s.add(ca, crl)
		matched = true
	}
	switch {
	case matched:
		return nil
	case sigErr != nil:
		return fmt.Errorf("CRL of %q does not verify with the key of the client CA of that name: %w", crl.Issuer, sigErr)
	}
	return fmt.Errorf("CRL issuer %q is not the subject of any client CA", crl.Issuer)
}
