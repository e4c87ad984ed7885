package tlspsk

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/pion/dtls/v3/pkg/crypto/prf"
)

// katVector is one suite's entry in testdata/kat/vectors.json, computed by
// testdata/kat/vectors.py straight from the RFCs with Python's hmac and the `cryptography`
// package, independently of this package and of pion.
type katVector struct {
	Suite          uint16 `json:"suite"`
	Name           string `json:"name"`
	ECDHE          bool   `json:"ecdhe"`
	PSK            string `json:"psk"`
	Z              string `json:"z"`
	ClientRandom   string `json:"client_random"`
	ServerRandom   string `json:"server_random"`
	Transcript     string `json:"transcript"`
	Premaster      string `json:"premaster"`
	Master         string `json:"master"`
	ExtendedMaster string `json:"extended_master"`
	ClientVerify   string `json:"client_verify"`
	ServerVerify   string `json:"server_verify"`
	ClientMAC      string `json:"client_mac"`
	ServerMAC      string `json:"server_mac"`
	ClientKey      string `json:"client_key"`
	ServerKey      string `json:"server_key"`
	ClientIV       string `json:"client_iv"`
	ServerIV       string `json:"server_iv"`
	Records        []struct {
		Direction string `json:"direction"`
		Seq       uint64 `json:"seq"`
		Plaintext string `json:"plaintext"`
		CBCIV     string `json:"cbc_iv"`
		Record    string `json:"record"`
	} `json:"records"`
}

func loadVectors(t *testing.T) []katVector {
	t.Helper()
	b, err := os.ReadFile("testdata/kat/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v []katVector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v) != len(allSuites) {
		t.Fatalf("%d vectors for %d suites; regenerate with testdata/kat/vectors.py", len(v), len(allSuites))
	}
	return v
}

func h(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eq(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %x\nwant %x", what, got, want)
	}
}

// TestKeyScheduleKnownAnswers checks premaster (RFC 4279 §2, RFC 5489 §2), master secret
// (RFC 5246 §8.1), extended master secret (RFC 7627 §4), key expansion (§6.3) and
// verify_data (§7.4.9) against the independent vectors.
func TestKeyScheduleKnownAnswers(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			s := suiteByID(v.Suite)
			if s == nil || s.ecdhe != v.ECDHE {
				t.Fatalf("suite %04x does not match the vector", v.Suite)
			}
			psk, cr, sr, transcript := h(t, v.PSK), h(t, v.ClientRandom), h(t, v.ServerRandom), h(t, v.Transcript)
			var pms []byte
			if s.ecdhe {
				pms = ecdhePSKPremaster(h(t, v.Z), psk)
			} else {
				pms = pskPremaster(psk)
			}
			eq(t, "premaster", pms, h(t, v.Premaster))
			ms, err := masterSecret(s, pms, transcript, cr, sr, false)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "master secret", ms, h(t, v.Master))
			ems, err := masterSecret(s, pms, transcript, cr, sr, true)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "extended master secret", ems, h(t, v.ExtendedMaster))
			kb, err := prf.GenerateEncryptionKeys(ms, cr, sr, s.macLen, s.keyLen, s.ivLen, s.prfHash)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "client MAC key", kb.ClientMACKey, h(t, v.ClientMAC))
			eq(t, "server MAC key", kb.ServerMACKey, h(t, v.ServerMAC))
			eq(t, "client write key", kb.ClientWriteKey, h(t, v.ClientKey))
			eq(t, "server write key", kb.ServerWriteKey, h(t, v.ServerKey))
			eq(t, "client IV", kb.ClientWriteIV, h(t, v.ClientIV))
			eq(t, "server IV", kb.ServerWriteIV, h(t, v.ServerIV))
			cv, _ := prf.VerifyDataClient(ms, transcript, s.prfHash)
			sv, _ := prf.VerifyDataServer(ms, transcript, s.prfHash)
			eq(t, "client verify_data", cv, h(t, v.ClientVerify))
			eq(t, "server verify_data", sv, h(t, v.ServerVerify))
		})
	}
}

// TestRecordKnownAnswers seals each vector's plaintext with this package's record layer
// and compares the whole record byte for byte (AAD, nonce construction, padding, MAC
// order), then opens it again and opens a tampered copy.
func TestRecordKnownAnswers(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			s := suiteByID(v.Suite)
			for _, r := range v.Records {
				macKey, key, iv := h(t, v.ClientMAC), h(t, v.ClientKey), h(t, v.ClientIV)
				if r.Direction == "server" {
					macKey, key, iv = h(t, v.ServerMAC), h(t, v.ServerKey), h(t, v.ServerIV)
				}
				seal, err := newRecordCipher(s, macKey, key, iv)
				if err != nil {
					t.Fatal(err)
				}
				if cbc, ok := seal.(*cbcETM); ok {
					cbc.rand = bytes.NewReader(h(t, r.CBCIV))
				}
				pt, want := h(t, r.Plaintext), h(t, r.Record)
				c := &Conn{}
				c.out.cipher, c.out.seq = seal, r.Seq
				got := c.appendRecord(nil, recordTypeApplicationData, pt)
				eq(t, r.Direction+" record "+string(rune('0'+r.Seq)), got, want)

				open, _ := newRecordCipher(s, macKey, key, iv)
				frag := bytes.Clone(want[recordHeaderLen:])
				opened, err := open.open(r.Seq, want[:recordHeaderLen], frag)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				eq(t, "opened plaintext", opened, pt)
				if _, err := open.open(r.Seq+1, want[:recordHeaderLen], bytes.Clone(want[recordHeaderLen:])); err == nil {
					t.Error("a record opened under the wrong sequence number")
				}
				for _, i := range []int{0, len(frag) / 2, len(frag) - 1} {
					bad := bytes.Clone(want[recordHeaderLen:])
					bad[i] ^= 0x80
					if _, err := open.open(r.Seq, want[:recordHeaderLen], bad); err == nil {
						t.Errorf("a record with byte %d flipped opened", i)
					}
				}
			}
		})
	}
}

// TestGCMRecordByHand rebuilds one AES-GCM record from crypto/cipher alone, following
// RFC 5288 §3 word by word, as a second opinion on the nonce and AAD layout.
func TestGCMRecordByHand(t *testing.T) {
	key := bytes.Repeat([]byte{0x11}, 16)
	salt := []byte{0xde, 0xad, 0xbe, 0xef}
	const seq = 0x0102030405060708
	pt := []byte("RFC 5288 says: nonce = salt || explicit; AAD = seq || type || version || length")

	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	explicit := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	nonce := append(append([]byte{}, salt...), explicit...)
	aad := append(append([]byte{}, explicit...), 23, 3, 3, 0, byte(len(pt)))
	want := append([]byte{23, 3, 3, 0, byte(8 + len(pt) + 16)}, explicit...)
	want = gcm.Seal(want, nonce, pt, aad)

	rc, err := newRecordCipher(suiteByID(TLS_PSK_WITH_AES_128_GCM_SHA256), nil, key, salt)
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{}
	c.out.cipher, c.out.seq = rc, seq
	eq(t, "GCM record", c.appendRecord(nil, recordTypeApplicationData, pt), want)
}

// TestCBCPaddingChecked: a record whose MAC is right but whose padding is wrong must still
// fail (RFC 7366 §3 leaves padding to be checked after the MAC).
func TestCBCPaddingChecked(t *testing.T) {
	s := suiteByID(TLS_PSK_WITH_AES_128_CBC_SHA256)
	key, macKey := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 32)
	rc, _ := newRecordCipher(s, macKey, key, nil)
	cbc := rc.(*cbcETM)
	// Encrypt a block with a bad padding byte pattern and MAC it correctly.
	iv := bytes.Repeat([]byte{3}, 16)
	block := []byte("0123456789ab\x05\x05\x05\x03") // padding_length 3, but a 5 inside
	ct := make([]byte, 16)
	cipher.NewCBCEncrypter(cbc.block, iv).CryptBlocks(ct, block)
	hdr := []byte{23, 3, 3, 0, 0}
	frag := append(append(iv, ct...), cbc.macOf(0, hdr, append(iv, ct...))...)
	if _, err := cbc.open(0, hdr, frag); err == nil {
		t.Fatal("a record with inconsistent padding opened")
	}
	// padding_length larger than the record.
	block = []byte("0123456789abcde\x20")
	cipher.NewCBCEncrypter(cbc.block, iv).CryptBlocks(ct, block)
	frag = append(append(bytes.Clone(iv), ct...), cbc.macOf(0, hdr, append(bytes.Clone(iv), ct...))...)
	if _, err := cbc.open(0, hdr, frag); err == nil {
		t.Fatal("a record with padding_length past its start opened")
	}
}
