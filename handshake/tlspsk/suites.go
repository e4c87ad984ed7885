package tlspsk

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"slices"
)

// The cipher suites this package implements, by their IANA names.
const (
	// TLS 1.3 (RFC 8446 §B.4, and RFC 8998's CCM suites): key exchange is negotiated
	// apart from the suite.
	TLS_AES_128_GCM_SHA256       uint16 = 0x1301
	TLS_CHACHA20_POLY1305_SHA256 uint16 = 0x1303
	TLS_AES_128_CCM_SHA256       uint16 = 0x1304
	TLS_AES_128_CCM_8_SHA256     uint16 = 0x1305

	// ECDHE_PSK (RFC 5489 key exchange): forward secret.
	TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256 uint16 = 0xCCAC // RFC 7905
	TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256       uint16 = 0xD001 // RFC 8442
	TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256       uint16 = 0xC037 // RFC 5489; only with encrypt_then_mac

	// PSK (RFC 4279 key exchange): no forward secrecy.
	TLS_PSK_WITH_CHACHA20_POLY1305_SHA256 uint16 = 0xCCAB // RFC 7905
	TLS_PSK_WITH_AES_128_GCM_SHA256       uint16 = 0x00A8 // RFC 5487
	TLS_PSK_WITH_AES_256_GCM_SHA384       uint16 = 0x00A9 // RFC 5487
	TLS_PSK_WITH_AES_128_CCM              uint16 = 0xC0A4 // RFC 6655
	TLS_PSK_WITH_AES_128_CCM_8            uint16 = 0xC0A8 // RFC 6655
	TLS_PSK_WITH_AES_128_CBC_SHA256       uint16 = 0x00AE // RFC 5487; only with encrypt_then_mac
)

// Signalling values that may appear in a cipher_suites list.
const (
	scsvRenegotiation uint16 = 0x00FF // TLS_EMPTY_RENEGOTIATION_INFO_SCSV, RFC 5746 §3.3
)

// protection is how a suite protects records.
type protection uint8

const (
	protGCM       protection = iota // AES-GCM, 4-byte salt + 8-byte explicit nonce (RFC 5288 §3)
	protChaCha                      // ChaCha20-Poly1305, 12-byte IV XOR sequence number (RFC 7905 §2)
	protCCM                         // AES-CCM, 16-byte tag, nonce as for GCM (RFC 6655 §3)
	protCCM8                        // AES-CCM, 8-byte tag
	protCBCSHA256                   // AES-CBC + HMAC-SHA256, encrypt-then-MAC only (RFC 7366)
)

// suite describes one cipher suite: key exchange, record protection and PRF hash.
type suite struct {
	id    uint16
	name  string
	ecdhe bool
	prot  protection
	// Key block sizes (RFC 5246 §6.3): MAC key, encryption key, fixed IV.
	macLen, keyLen, ivLen int
	// prfHash is the hash of the TLS 1.2 PRF and of the Finished transcript.
	prfHash func() hash.Hash
	// tls13 marks a TLS 1.3 suite (always SHA-256 here, the hash external PSKs are bound to).
	tls13 bool
}

func (s *suite) aead() bool { return s.prot != protCBCSHA256 }

// allSuites is the default order of preference: forward secrecy first, then AEAD, then
// cheaper or more common ciphers. The two CBC suites are only ever chosen together with
// encrypt_then_mac.
var allSuites = []*suite{
	{id: TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, name: "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256", ecdhe: true, prot: protChaCha, keyLen: 32, ivLen: 12, prfHash: sha256.New},
	{id: TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256, name: "TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256", ecdhe: true, prot: protGCM, keyLen: 16, ivLen: 4, prfHash: sha256.New},
	{id: TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, name: "TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256", ecdhe: true, prot: protCBCSHA256, macLen: 32, keyLen: 16, ivLen: 16, prfHash: sha256.New},
	{id: TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, name: "TLS_PSK_WITH_CHACHA20_POLY1305_SHA256", prot: protChaCha, keyLen: 32, ivLen: 12, prfHash: sha256.New},
	{id: TLS_PSK_WITH_AES_128_GCM_SHA256, name: "TLS_PSK_WITH_AES_128_GCM_SHA256", prot: protGCM, keyLen: 16, ivLen: 4, prfHash: sha256.New},
	{id: TLS_PSK_WITH_AES_256_GCM_SHA384, name: "TLS_PSK_WITH_AES_256_GCM_SHA384", prot: protGCM, keyLen: 32, ivLen: 4, prfHash: sha512.New384},
	{id: TLS_PSK_WITH_AES_128_CCM, name: "TLS_PSK_WITH_AES_128_CCM", prot: protCCM, keyLen: 16, ivLen: 4, prfHash: sha256.New},
	{id: TLS_PSK_WITH_AES_128_CCM_8, name: "TLS_PSK_WITH_AES_128_CCM_8", prot: protCCM8, keyLen: 16, ivLen: 4, prfHash: sha256.New},
	{id: TLS_PSK_WITH_AES_128_CBC_SHA256, name: "TLS_PSK_WITH_AES_128_CBC_SHA256", prot: protCBCSHA256, macLen: 32, keyLen: 16, ivLen: 16, prfHash: sha256.New},
}

// tls13Suites are the TLS 1.3 suites, in the server's order: AES-GCM (hardware on most
// servers), ChaCha20 (fast without it), then the CCM pair that constrained devices carry.
// TLS_AES_256_GCM_SHA384 is left out: an external PSK is bound to SHA-256.
var tls13Suites = []*suite{
	{id: TLS_AES_128_GCM_SHA256, name: "TLS_AES_128_GCM_SHA256", prot: protGCM, keyLen: 16, ivLen: 12, prfHash: sha256.New, tls13: true},
	{id: TLS_CHACHA20_POLY1305_SHA256, name: "TLS_CHACHA20_POLY1305_SHA256", prot: protChaCha, keyLen: 32, ivLen: 12, prfHash: sha256.New, tls13: true},
	{id: TLS_AES_128_CCM_SHA256, name: "TLS_AES_128_CCM_SHA256", prot: protCCM, keyLen: 16, ivLen: 12, prfHash: sha256.New, tls13: true},
	{id: TLS_AES_128_CCM_8_SHA256, name: "TLS_AES_128_CCM_8_SHA256", prot: protCCM8, keyLen: 16, ivLen: 12, prfHash: sha256.New, tls13: true},
}

// defaultSuites is every suite, TLS 1.3 ones first; the order matters within a version only.
var defaultSuites = append(slices.Clone(tls13Suites), allSuites...)

func suiteByID(id uint16) *suite {
	for _, s := range defaultSuites {
		if s.id == id {
			return s
		}
	}
	return nil
}

// DefaultSuites returns the suites a nil Config.Suites stands for, in the server's order
// of preference: the TLS 1.3 suites, then for TLS 1.2 forward secrecy first (every
// ECDHE_PSK suite before every PSK suite), then AEAD before CBC within each key exchange.
// A list without any TLS 1.3 suite turns TLS 1.3 off; one without TLS 1.2 suites, TLS 1.2.
func DefaultSuites() []uint16 {
	ids := make([]uint16, len(defaultSuites))
	for i, s := range defaultSuites {
		ids[i] = s.id
	}
	return ids
}

// CipherSuiteName returns the IANA name of a suite this package implements, or "0xXXXX".
func CipherSuiteName(id uint16) string {
	if s := suiteByID(id); s != nil {
		return s.name
	}
	return fmt.Sprintf("0x%04X", id)
}

// resolveSuites turns a configured list into suites, refusing unknown and repeated ids.
func resolveSuites(ids []uint16) ([]*suite, error) {
	if ids == nil {
		return defaultSuites, nil
	}
	if len(ids) == 0 {
		return nil, errors.New("config Suites is empty; leave it nil for the defaults (DefaultSuites)")
	}
	out := make([]*suite, 0, len(ids))
	for _, id := range ids {
		s := suiteByID(id)
		if s == nil {
			return nil, fmt.Errorf("config Suites holds 0x%04X, which this package does not implement; see DefaultSuites", id)
		}
		for _, o := range out {
			if o == s {
				return nil, fmt.Errorf("config Suites lists %s twice", s.name)
			}
		}
		out = append(out, s)
	}
	return out, nil
}
