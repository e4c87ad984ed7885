package tlspsk

import (
	"crypto/ecdh"
	"errors"

	"github.com/pion/dtls/v3/pkg/crypto/prf"
)

// maxKeyLen bounds a pre-shared key. RFC 4279 §5.3 asks for at least 64 bytes; the
// premaster secret carries the length in 16 bits.
const maxKeyLen = 1 << 10

// pskPremaster is the premaster secret of the PSK key exchange (RFC 4279 §2): the other
// secret is as many zero bytes as the key is long.
func pskPremaster(psk []byte) []byte { return prf.PSKPreMasterSecret(psk) }

// ecdhePSKPremaster is the premaster secret of the ECDHE_PSK key exchange (RFC 5489 §2):
// the other secret is the ECDH shared secret Z.
//
//	uint16 len(Z) || Z || uint16 len(psk) || psk
func ecdhePSKPremaster(z, psk []byte) []byte {
	out := make([]byte, 0, 2+len(z)+2+len(psk))
	out = appendU16Bytes(out, z)
	return appendU16Bytes(out, psk)
}

// curveFor returns the crypto/ecdh curve of a named group this package supports.
func curveFor(group uint16) ecdh.Curve {
	switch group {
	case groupX25519:
		return ecdh.X25519()
	case groupP256:
		return ecdh.P256()
	}
	return nil
}

// masterSecret derives the master secret (RFC 5246 §8.1), or the extended master secret
// over the session hash of the transcript up to ClientKeyExchange (RFC 7627 §4).
func masterSecret(s *suite, premaster, transcript, clientRandom, serverRandom []byte, ems bool) ([]byte, error) {
	if ems {
		h := s.prfHash()
		h.Write(transcript)
		return prf.ExtendedMasterSecret(premaster, h.Sum(nil), s.prfHash)
	}
	return prf.MasterSecret(premaster, clientRandom, serverRandom, s.prfHash)
}

// sessionKeys is both directions' record protection.
type sessionKeys struct {
	client, server recordCipher
}

// deriveKeys runs the key expansion (RFC 5246 §6.3) and builds both record ciphers.
func deriveKeys(s *suite, master, clientRandom, serverRandom []byte) (*sessionKeys, error) {
	kb, err := prf.GenerateEncryptionKeys(master, clientRandom, serverRandom, s.macLen, s.keyLen, s.ivLen, s.prfHash)
	if err != nil {
		return nil, err
	}
	client, err := newRecordCipher(s, kb.ClientMACKey, kb.ClientWriteKey, kb.ClientWriteIV)
	if err != nil {
		return nil, err
	}
	server, err := newRecordCipher(s, kb.ServerMACKey, kb.ServerWriteKey, kb.ServerWriteIV)
	if err != nil {
		return nil, err
	}
	// The key block's slices are no longer needed; the ciphers hold their own copies.
	clear(kb.ClientMACKey)
	clear(kb.ServerMACKey)
	clear(kb.ClientWriteKey)
	clear(kb.ServerWriteKey)
	clear(kb.ClientWriteIV)
	clear(kb.ServerWriteIV)
	return &sessionKeys{client: client, server: server}, nil
}

// validKey checks a key before it is used.
func validKey(key []byte) error {
	switch {
	case len(key) == 0:
		return errors.New("the key for this identity is empty")
	case len(key) > maxKeyLen:
		return errors.New("the key for this identity is longer than 1024 bytes")
	}
	return nil
}
