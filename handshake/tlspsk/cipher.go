package tlspsk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"io"
	"slices"

	"github.com/pion/dtls/v3/pkg/crypto/ccm"
	"golang.org/x/crypto/chacha20poly1305"
)

// Record sizes (RFC 5246 §6.2).
const (
	recordHeaderLen    = 5
	maxPlaintext       = 1 << 14             // TLSPlaintext.length and TLSCompressed.length limit
	maxCiphertext      = maxPlaintext + 2048 // TLSCiphertext.length limit
	explicitNonceLen   = 8                   // GCM and CCM (RFC 5288 §3, RFC 6655 §3)
	aesBlockLen        = 16
	sha256Len          = 32
	maxRecordOverhead  = aesBlockLen + aesBlockLen + sha256Len // CBC: IV, padding, MAC
	maxRecordBufferLen = recordHeaderLen + maxCiphertext
)

// errRecordAuth is the one error every failed record authentication yields, whatever the
// cause (short record, wrong tag, bad padding), so nothing distinguishes them.
var errRecordAuth = errors.New("record authentication failed")

// recordCipher protects the records of one direction of one connection.
type recordCipher interface {
	// seal appends the protected fragment of a record (what follows the 5-byte header) to
	// dst. hdr is that header with the plaintext length; the AAD is built from it.
	seal(dst []byte, seq uint64, hdr []byte, plaintext []byte) []byte
	// open authenticates and decrypts a fragment in place and returns the plaintext, which
	// aliases fragment. hdr is the record header as received.
	open(seq uint64, hdr []byte, fragment []byte) ([]byte, error)
	// overhead is the largest number of bytes seal adds to a plaintext of n bytes.
	overhead() int
}

// additionalData builds the AEAD additional data of RFC 5246 §6.2.3.3:
// seq_num(8) + type(1) + version(2) + length(2), where length is the plaintext length.
func additionalData(buf *[13]byte, seq uint64, hdr []byte, plainLen int) []byte {
	binary.BigEndian.PutUint64(buf[0:8], seq)
	buf[8] = hdr[0]
	buf[9] = hdr[1]
	buf[10] = hdr[2]
	binary.BigEndian.PutUint16(buf[11:13], uint16(plainLen))
	return buf[:]
}

// newRecordCipher builds the protection of one direction from its share of the key block.
func newRecordCipher(s *suite, macKey, key, iv []byte) (recordCipher, error) {
	switch s.prot {
	case protGCM, protCCM, protCCM8:
		a, err := newAEAD(s.prot, key)
		if err != nil {
			return nil, err
		}
		c := &explicitNonceAEAD{aead: a}
		copy(c.salt[:], iv)
		return c, nil
	case protChaCha:
		a, err := newAEAD(s.prot, key)
		if err != nil {
			return nil, err
		}
		c := &xorNonceAEAD{aead: a}
		copy(c.iv[:], iv)
		return c, nil
	case protCBCSHA256:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return &cbcETM{block: block, mac: hmac.New(sha256.New, macKey), rand: rand.Reader}, nil
	}
	return nil, errors.New("unknown record protection")
}

// newAEAD builds the AEAD of an AEAD protection (the same primitives serve TLS 1.2 and
// TLS 1.3; only nonces and additional data differ).
func newAEAD(p protection, key []byte) (cipher.AEAD, error) {
	if p == protChaCha {
		return chacha20poly1305.New(key)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	switch p {
	case protGCM:
		return cipher.NewGCM(block)
	case protCCM:
		return ccm.NewCCM(block, 16, 12)
	case protCCM8:
		return ccm.NewCCM(block, 8, 12)
	}
	return nil, errors.New("not an AEAD protection")
}

// explicitNonceAEAD is AES-GCM (RFC 5288 §3) and AES-CCM (RFC 6655 §3): the nonce is a
// 4-byte salt from the key block followed by an 8-byte explicit part carried in the record.
// The explicit part is the record's sequence number, which never repeats under one key.
type explicitNonceAEAD struct {
	aead  cipher.AEAD
	salt  [4]byte
	nonce [12]byte
	ad    [13]byte
}

func (c *explicitNonceAEAD) overhead() int { return explicitNonceLen + c.aead.Overhead() }

func (c *explicitNonceAEAD) seal(dst []byte, seq uint64, hdr []byte, plaintext []byte) []byte {
	copy(c.nonce[:4], c.salt[:])
	binary.BigEndian.PutUint64(c.nonce[4:], seq)
	dst = append(dst, c.nonce[4:]...)
	return c.aead.Seal(dst, c.nonce[:], plaintext, additionalData(&c.ad, seq, hdr, len(plaintext)))
}

func (c *explicitNonceAEAD) open(seq uint64, hdr []byte, fragment []byte) ([]byte, error) {
	if len(fragment) < explicitNonceLen+c.aead.Overhead() {
		return nil, errRecordAuth
	}
	copy(c.nonce[:4], c.salt[:])
	copy(c.nonce[4:], fragment[:explicitNonceLen])
	ct := fragment[explicitNonceLen:]
	plainLen := len(ct) - c.aead.Overhead()
	pt, err := c.aead.Open(ct[:0], c.nonce[:], ct, additionalData(&c.ad, seq, hdr, plainLen))
	if err != nil {
		return nil, errRecordAuth
	}
	return pt, nil
}

// xorNonceAEAD is ChaCha20-Poly1305 in TLS 1.2 (RFC 7905 §2): the nonce is the 12-byte IV
// from the key block XORed with the sequence number, left-padded to 12 bytes; nothing
// explicit travels in the record.
type xorNonceAEAD struct {
	aead  cipher.AEAD
	iv    [12]byte
	nonce [12]byte
	ad    [13]byte
}

func (c *xorNonceAEAD) overhead() int { return c.aead.Overhead() }

func (c *xorNonceAEAD) setNonce(seq uint64) { xorNonce(&c.nonce, &c.iv, seq) }

// xorNonce sets nonce to iv XOR the sequence number, left-padded to 12 bytes (RFC 7905 §2,
// RFC 8446 §5.3).
func xorNonce(nonce, iv *[12]byte, seq uint64) {
	*nonce = *iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	for i := range s {
		nonce[4+i] ^= s[i]
	}
}

func (c *xorNonceAEAD) seal(dst []byte, seq uint64, hdr []byte, plaintext []byte) []byte {
	c.setNonce(seq)
	return c.aead.Seal(dst, c.nonce[:], plaintext, additionalData(&c.ad, seq, hdr, len(plaintext)))
}

func (c *xorNonceAEAD) open(seq uint64, hdr []byte, fragment []byte) ([]byte, error) {
	if len(fragment) < c.aead.Overhead() {
		return nil, errRecordAuth
	}
	c.setNonce(seq)
	plainLen := len(fragment) - c.aead.Overhead()
	pt, err := c.aead.Open(fragment[:0], c.nonce[:], fragment, additionalData(&c.ad, seq, hdr, plainLen))
	if err != nil {
		return nil, errRecordAuth
	}
	return pt, nil
}

// cbcETM is AES-128-CBC with HMAC-SHA256 in encrypt-then-MAC order (RFC 7366 §3):
//
//	fragment = IV || CBC(plaintext || padding || padding_length) || MAC
//	MAC      = HMAC(mac_key, seq_num || type || version || length || IV || ciphertext)
//
// where length counts IV and ciphertext. The MAC is checked over the ciphertext, in
// constant time, before anything is decrypted, so padding can leak nothing (no Lucky13).
type cbcETM struct {
	block cipher.Block
	mac   hash.Hash
	rand  io.Reader // source of the per-record IV; tests swap it for known answers
	ad    [13]byte
	sum   [sha256Len]byte
}

func (c *cbcETM) overhead() int { return maxRecordOverhead }

func (c *cbcETM) macOf(seq uint64, hdr []byte, ivAndCT []byte) []byte {
	c.mac.Reset()
	c.mac.Write(additionalData(&c.ad, seq, hdr, len(ivAndCT)))
	c.mac.Write(ivAndCT)
	return c.mac.Sum(c.sum[:0])
}

func (c *cbcETM) seal(dst []byte, seq uint64, hdr []byte, plaintext []byte) []byte {
	padLen := aesBlockLen - 1 - len(plaintext)%aesBlockLen // 0..15; padding_length byte follows
	ctLen := len(plaintext) + padLen + 1
	start := len(dst)
	dst = slices.Grow(dst, aesBlockLen+ctLen+sha256Len)[:start+aesBlockLen+ctLen]
	iv := dst[start : start+aesBlockLen]
	if _, err := io.ReadFull(c.rand, iv); err != nil {
		// crypto/rand does not fail on supported platforms; a failure here must not
		// produce a record under a predictable IV.
		panic("tlspsk: reading a random CBC IV: " + err.Error())
	}
	body := dst[start+aesBlockLen:]
	copy(body, plaintext)
	for i := len(plaintext); i < ctLen; i++ {
		body[i] = byte(padLen)
	}
	cipher.NewCBCEncrypter(c.block, iv).CryptBlocks(body, body)
	return append(dst, c.macOf(seq, hdr, dst[start:])...)
}

func (c *cbcETM) open(seq uint64, hdr []byte, fragment []byte) ([]byte, error) {
	n := len(fragment) - sha256Len - aesBlockLen // ciphertext length
	if n < aesBlockLen || n%aesBlockLen != 0 {
		return nil, errRecordAuth
	}
	ivAndCT := fragment[:aesBlockLen+n]
	got := fragment[aesBlockLen+n:]
	if !hmac.Equal(c.macOf(seq, hdr, ivAndCT), got) {
		return nil, errRecordAuth
	}
	// Authentic: what follows is what the peer sent, so its padding is not a secret.
	ct := ivAndCT[aesBlockLen:]
	cipher.NewCBCDecrypter(c.block, ivAndCT[:aesBlockLen]).CryptBlocks(ct, ct)
	padLen := int(ct[n-1])
	if padLen+1 > n {
		return nil, errRecordAuth
	}
	for _, b := range ct[n-1-padLen : n-1] {
		if int(b) != padLen {
			return nil, errRecordAuth
		}
	}
	return ct[:n-1-padLen], nil
}
