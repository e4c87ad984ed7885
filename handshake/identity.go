package handshake

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// Kind says how the peer proved who it is.
type Kind uint8

// The kinds of identity a handshake can yield.
const (
	KindNone        Kind = iota // no proof: one-way TLS, or a client certificate was optional and absent
	KindCertificate             // a client certificate that verified against the client CA
	KindPSK                     // a pre-shared key looked up by its identity
	KindPinnedKey               // a leaf whose public key is listed by name; nothing chained through it
)

// String returns the name used in logs and config: "none", "certificate", "psk" or
// "pinned_key".
func (k Kind) String() string {
	switch k {
	case KindCertificate:
		return "certificate"
	case KindPSK:
		return "psk"
	case KindPinnedKey:
		return "pinned_key"
	default:
		return "none"
	}
}

// Identity is what a handshake proved about the peer. Every handshake kind yields one; a
// field the kind does not have is left empty. Policy renders the string that is the device
// from these fields (see policy.Template).
type Identity struct {
	Kind Kind

	// From the verified leaf certificate (KindCertificate).
	CommonName         string
	Organization       []string
	OrganizationalUnit []string
	SerialNumber       string // lower-case hex, no separators
	DNSNames           []string
	URIs               []string // SPIFFE IDs among them
	Emails             []string
	Fingerprint        string // lower-case hex SHA-256 of the leaf's DER
	// CommonNames holds every CN attribute of the subject, in order. Go's CommonName keeps
	// the last, Mosquitto's use_identity_as_username the first: policy refuses a subject
	// with more than one rather than pick.
	CommonNames []string

	// KeyName is the operator's name for a pinned public key (KindPinnedKey).
	KeyName string

	// PSKIdentity is the identity the client sent with a pre-shared key (KindPSK).
	PSKIdentity string

	// The session's parameters, for logs.
	TLSVersion  uint16
	CipherSuite uint16
	DTLS        bool

	// chain is what the client presented, leaf first, for re-checking the session after a
	// reload (TLSServer.StillValid). For TLS it is the slice crypto/tls keeps for the
	// connection anyway, so a session pays one slice header for it. DTLS keeps the DER
	// instead (chainDER), parsed again only for a re-check: a parsed certificate costs
	// about 2.5 KiB of heap over its DER for as long as the session lasts.
	chain    []*x509.Certificate
	chainDER [][]byte
}

// oidCommonName is the X.520 commonName attribute type.
var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// FromCertificate fills the certificate fields of an Identity from a verified leaf.
func FromCertificate(leaf *x509.Certificate) Identity {
	id := fromLeaf(leaf)
	id.chain = []*x509.Certificate{leaf}
	return id
}

func fromLeaf(leaf *x509.Certificate) Identity {
	sum := sha256.Sum256(leaf.Raw)
	id := Identity{
		Kind:               KindCertificate,
		CommonName:         leaf.Subject.CommonName,
		Organization:       leaf.Subject.Organization,
		OrganizationalUnit: leaf.Subject.OrganizationalUnit,
		SerialNumber:       leaf.SerialNumber.Text(16),
		DNSNames:           leaf.DNSNames,
		Emails:             leaf.EmailAddresses,
		Fingerprint:        hex.EncodeToString(sum[:]),
	}
	for _, atv := range leaf.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			v, _ := atv.Value.(string)
			id.CommonNames = append(id.CommonNames, v)
		}
	}
	for _, u := range leaf.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	return id
}

// VersionName returns the TLS or DTLS version as logs show it, e.g. "TLS 1.3", or "" when
// no session was negotiated.
func (id Identity) VersionName() string {
	if id.TLSVersion == 0 {
		return ""
	}
	if id.DTLS {
		switch id.TLSVersion {
		case 0xfefd:
			return "DTLS 1.2"
		case 0xfefc:
			return "DTLS 1.3"
		}
	}
	return tls.VersionName(id.TLSVersion)
}

// CipherSuiteName returns the IANA name of the negotiated suite, or "" when none was.
func (id Identity) CipherSuiteName() string {
	if id.CipherSuite == 0 {
		return ""
	}
	if id.DTLS {
		// pion negotiated it, so pion names it: crypto/tls and tlspsk know neither the
		// ECDHE-ECDSA CCM suites nor PSK AES-256-CCM-8, which DTLS offers.
		return dtls.CipherSuiteName(dtls.CipherSuiteID(id.CipherSuite))
	}
	if id.Kind == KindPSK {
		return tlspsk.CipherSuiteName(id.CipherSuite) // crypto/tls knows no PSK suite
	}
	return tls.CipherSuiteName(id.CipherSuite)
}
