package tlspsk

import (
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
)

// The TLS 1.3 key schedule (RFC 8446 §7.1). Every suite here, and every external PSK, is
// bound to SHA-256 (RFC 9257 §6: an external PSK names its hash; OpenSSL, GnuTLS, mbedTLS
// and wolfSSL clients assume SHA-256 unless told otherwise).

const hashLen = sha256.Size

var zeroHash [hashLen]byte

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1). Every length asked for is at most one
// SHA-256 block, so HKDF-Expand (RFC 5869 §2.3) is the single block
// T(1) = HMAC-Hash(PRK, info || 0x01), written out here: crypto/hkdf's general loop costs
// twice as much per call, and a handshake makes about twenty of them.
func expandLabel(secret []byte, label string, context []byte, length int) []byte {
	if length > hashLen {
		panic("tlspsk: HKDF-Expand-Label longer than one block")
	}
	var buf [2 + 1 + 6 + 32 + 1 + hashLen + 1]byte
	info := buf[:0]
	info = appendU16(info, uint16(length))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = appendU8Bytes(info, context)
	info = append(info, 1)
	m := hmac.New(sha256.New, secret)
	m.Write(info)
	return m.Sum(nil)[:length]
}

// extract is HKDF-Extract with SHA-256 (RFC 5869 §2.2): HMAC-Hash(salt, IKM).
func extract(ikm, salt []byte) []byte {
	m := hmac.New(sha256.New, salt)
	m.Write(ikm)
	return m.Sum(nil)
}

// deriveSecret is Derive-Secret(secret, label, transcript hash) (RFC 8446 §7.1).
func deriveSecret(secret []byte, label string, transcriptHash []byte) []byte {
	return expandLabel(secret, label, transcriptHash, hashLen)
}

// emptyHash is SHA-256 of the empty string, the context of the "derived" and binder
// secrets.
var emptyHash = func() []byte { h := sha256.Sum256(nil); return h[:] }()

// earlySecret and binderKey start the schedule from an external PSK.
func earlySecret(psk []byte) []byte { return extract(psk, zeroHash[:]) }

func binderKey(early []byte) []byte { return deriveSecret(early, "ext binder", emptyHash) }

// finishedMAC is the verify_data of a Finished or a PSK binder: HMAC over a transcript
// hash with the finished key of base (RFC 8446 §4.4.4).
func finishedMAC(base, transcriptHash []byte) []byte {
	key := expandLabel(base, "finished", nil, hashLen)
	m := hmac.New(sha256.New, key)
	m.Write(transcriptHash)
	clear(key)
	return m.Sum(nil)
}

// handshakeSecret is the second stage: (EC)DHE shared secret, or zeros with psk_ke.
func handshakeSecret(early, shared []byte) []byte {
	if shared == nil {
		shared = zeroHash[:]
	}
	return extract(shared, deriveSecret(early, "derived", emptyHash))
}

// masterSecret13 is the third stage.
func masterSecret13(hs []byte) []byte {
	return extract(zeroHash[:], deriveSecret(hs, "derived", emptyHash))
}

// nextTrafficSecret is the KeyUpdate step (RFC 8446 §7.2).
func nextTrafficSecret(secret []byte) []byte {
	return expandLabel(secret, "traffic upd", nil, hashLen)
}

// transcript hashes handshake messages as they go by.
type transcript struct{ h hash.Hash }

func newTranscript() *transcript { return &transcript{h: sha256.New()} }

func (t *transcript) add(msgs ...[]byte) {
	for _, m := range msgs {
		t.h.Write(m)
	}
}

func (t *transcript) sum() []byte { return t.h.Sum(nil) }

// aead13 protects the records of one direction in TLS 1.3 (RFC 8446 §5.2-5.3): the nonce
// is the IV XORed with the sequence number, the additional data is the record header, and
// the plaintext is TLSInnerPlaintext (content, type, zero padding).
type aead13 struct {
	aead  cipher.AEAD
	iv    [12]byte
	nonce [12]byte
}

func (c *aead13) overhead() int { return 1 + c.aead.Overhead() }

func (c *aead13) setNonce(seq uint64) { xorNonce(&c.nonce, &c.iv, seq) }

// trafficPair is both directions' traffic secrets of one stage and their protection.
type trafficPair struct {
	clientSecret, serverSecret []byte
	client, server             *aead13
}

// trafficKeys derives the "c hs traffic"/"s hs traffic" or "c ap traffic"/"s ap traffic"
// pair (stage "hs" or "ap") from secret and a transcript hash.
func trafficKeys(s *suite, secret []byte, stage string, transcriptHash []byte) (*trafficPair, error) {
	p := &trafficPair{
		clientSecret: deriveSecret(secret, "c "+stage+" traffic", transcriptHash),
		serverSecret: deriveSecret(secret, "s "+stage+" traffic", transcriptHash),
	}
	var err error
	if p.client, err = newCipher13(s, p.clientSecret); err != nil {
		return nil, err
	}
	if p.server, err = newCipher13(s, p.serverSecret); err != nil {
		return nil, err
	}
	return p, nil
}

// seal encrypts an inner plaintext; hdr is the record header carrying the ciphertext
// length, which is the additional data.
func (c *aead13) seal(dst []byte, seq uint64, hdr []byte, inner []byte) []byte {
	c.setNonce(seq)
	return c.aead.Seal(dst, c.nonce[:], inner, hdr)
}

// open decrypts in place and returns the inner plaintext (padding still on).
func (c *aead13) open(seq uint64, hdr []byte, fragment []byte) ([]byte, error) {
	if len(fragment) < c.aead.Overhead() {
		return nil, errRecordAuth
	}
	c.setNonce(seq)
	pt, err := c.aead.Open(fragment[:0], c.nonce[:], fragment, hdr)
	if err != nil {
		return nil, errRecordAuth
	}
	return pt, nil
}

// newCipher13 derives the key and IV of a traffic secret (RFC 8446 §7.3) and builds the
// record protection.
func newCipher13(s *suite, secret []byte) (*aead13, error) {
	key := expandLabel(secret, "key", nil, s.keyLen)
	iv := expandLabel(secret, "iv", nil, 12)
	defer clear(key)
	if !s.tls13 {
		return nil, errors.New("not a TLS 1.3 suite")
	}
	a, err := newAEAD(s.prot, key)
	if err != nil {
		return nil, err
	}
	c := &aead13{aead: a}
	copy(c.iv[:], iv)
	return c, nil
}
