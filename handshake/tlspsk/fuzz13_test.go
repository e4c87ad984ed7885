package tlspsk

import (
	"bytes"
	"testing"
)

// hello13Seeds are TLS 1.3 ClientHello messages (header included) from the package's
// client: plain, asking for a HelloRetryRequest, with early data, with two identities and
// record_size_limit, in compatibility mode, psk_ke.
func hello13Seeds() [][]byte {
	var out [][]byte
	for _, k := range []tls13ClientKnobs{
		{},
		{shareGroups: []uint16{}},
		{earlyData: []byte("0rtt")},
		{extraIdentity: "other", recordSizeLimit: 256},
		{compat: true, pskModes: []uint8{pskModeKE, pskModeDHEKE}},
	} {
		m := &memConn{r: bytes.NewReader(nil)}
		Client(m, client13(k)).Handshake()
		if b := m.w.Bytes(); len(b) > recordHeaderLen {
			n := int(b[3])<<8 | int(b[4])
			out = append(out, b[recordHeaderLen:recordHeaderLen+n])
		}
	}
	return out
}

// FuzzParseClientHello13 checks what the TLS 1.3 parse promises the server: as many
// binders as identities, and the binders exactly at the end of the message.
func FuzzParseClientHello13(f *testing.F) {
	for _, m := range hello13Seeds() {
		f.Add(m[handshakeHeaderLen:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ch, err := parseClientHello(body)
		if err != nil || !ch.hasPSK {
			return
		}
		if len(ch.pskBinders) != len(ch.pskIdentities) || len(ch.pskIdentities) == 0 || len(ch.pskIdentities) > maxPSKIdentities {
			t.Fatalf("%d identities, %d binders", len(ch.pskIdentities), len(ch.pskBinders))
		}
		if ch.bindersLen < 2+33 || ch.bindersLen > len(body) {
			t.Fatalf("binders length %d in a %d-byte body", ch.bindersLen, len(body))
		}
		last := ch.pskBinders[len(ch.pskBinders)-1]
		if !bytes.HasSuffix(body, last) {
			t.Fatal("the last binder is not at the end of the message")
		}
	})
}

// FuzzParseServerHello13 exercises the client's TLS 1.3 ServerHello and
// EncryptedExtensions parsers.
func FuzzParseServerHello13(f *testing.F) {
	sh := &serverHello13{random: make([]byte, 32), sessionID: []byte{1, 2}, suite: TLS_AES_128_GCM_SHA256, hasKeyShare: true, group: groupX25519, share: make([]byte, 32), hasPSK: true}
	f.Add(sh.marshal()[handshakeHeaderLen:])
	hrr := &serverHello13{random: helloRetryRandom, suite: TLS_AES_128_GCM_SHA256, hasKeyShare: true, group: groupP256}
	f.Add(hrr.marshal()[handshakeHeaderLen:])
	f.Add(marshalEncryptedExtensions(maxPlaintext + 1)[handshakeHeaderLen:])
	f.Fuzz(func(t *testing.T, body []byte) {
		parseServerHello13(body)
		parseEncryptedExtensions(body, true)
		parseEncryptedExtensions(body, false)
	})
}

// FuzzServerHandshake13 feeds a TLS 1.3 ClientHello and arbitrary bytes after it to the
// server. Nothing may panic and no handshake may succeed (the Finished needs the keys).
func FuzzServerHandshake13(f *testing.F) {
	for _, m := range hello13Seeds() {
		f.Add(record(22, 0x0301, m))
		f.Add(append(append(record(22, 0x0301, m), record(20, 0x0303, []byte{1})...), record(23, 0x0303, make([]byte, 40))...))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := Server(&memConn{r: bytes.NewReader(in)}, &Config{Lookup: testLookup, AllowPSKKE: true})
		if err := c.Handshake(); err == nil {
			t.Fatal("a handshake succeeded on fuzz input")
		}
	})
}

// FuzzRecordReader13 feeds arbitrary records to an established TLS 1.3 connection of each
// suite (fixed keys) through Read: inner content types, padding, KeyUpdate, alerts.
func FuzzRecordReader13(f *testing.F) {
	for i, s := range tls13Suites {
		w := fixedKeyConn13(s, nil)
		w.out.cipher = w.in.cipher
		var recs []byte
		recs = w.appendRecord(recs, recordTypeApplicationData, []byte("hello"))
		recs = w.appendRecord(recs, recordTypeHandshake, appendHandshake(nil, typeKeyUpdate, []byte{0}))
		f.Add(uint8(i), recs)
		w = fixedKeyConn13(s, nil)
		w.out.cipher = w.in.cipher
		f.Add(uint8(i), w.appendRecord(w.appendRecord(nil, recordTypeApplicationData, nil), recordTypeAlert, []byte{1, 0}))
	}
	f.Fuzz(func(t *testing.T, which uint8, in []byte) {
		s := tls13Suites[int(which)%len(tls13Suites)]
		c := fixedKeyConn13(s, bytes.NewReader(in))
		buf := make([]byte, 1<<15)
		for range 100 {
			n, err := c.Read(buf)
			if n > maxPlaintext {
				t.Fatalf("Read returned %d bytes from one record", n)
			}
			if err != nil {
				return
			}
		}
	})
}

// fixedKeyConn13 is a TLS 1.3 Conn past its handshake whose read side uses fixed keys.
func fixedKeyConn13(s *suite, r *bytes.Reader) *Conn {
	if r == nil {
		r = bytes.NewReader(nil)
	}
	secret := bytes.Repeat([]byte{0x42}, hashLen)
	rc, err := newCipher13(s, secret)
	if err != nil {
		panic(err)
	}
	c := &Conn{conn: &memConn{r: r}, isClient: true, tls13: true, suite13: s}
	c.in.cipher, c.in.secret = rc, [hashLen]byte(secret)
	c.out.secret = [hashLen]byte(secret)
	c.in.sawRecord, c.in.strictVersion = true, true
	c.hsDone.Store(true)
	return c
}
