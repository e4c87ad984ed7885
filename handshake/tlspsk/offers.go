package tlspsk

import (
	"golang.org/x/crypto/cryptobyte"
)

// OffersPSK reports whether raw bytes from the start of a connection (one or more TLS
// records, as peeked from the wire, possibly cut short) hold a ClientHello that offers a
// suite a default Config would accept: an AEAD PSK suite, or a CBC PSK suite together with
// encrypt_then_mac. A mixed certificate/PSK listener routes on it. It never panics and
// answers false when it cannot tell.
func OffersPSK(clientHelloRecord []byte) bool {
	// Gather the handshake bytes of the leading handshake records.
	var hs []byte
	b := clientHelloRecord
	for len(b) >= recordHeaderLen && b[0] == recordTypeHandshake && b[1] == 3 {
		n := int(b[3])<<8 | int(b[4])
		if n == 0 || n > maxPlaintext {
			break
		}
		frag := b[recordHeaderLen:]
		if len(frag) > n {
			frag = frag[:n]
		}
		hs = append(hs, frag...)
		if len(frag) < n {
			break
		}
		b = b[recordHeaderLen+n:]
	}
	if len(hs) < handshakeHeaderLen || hs[0] != typeClientHello {
		return false
	}
	n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	body := hs[handshakeHeaderLen:]
	complete := len(body) >= n
	if complete {
		body = body[:n]
	}

	// The cipher suites come early; read up to them even from a cut-short hello.
	s := cryptobyte.String(body)
	var version uint16
	var sid, suites cryptobyte.String
	if !s.ReadUint16(&version) || !s.Skip(clientRandomLen) || !s.ReadUint8LengthPrefixed(&sid) ||
		!s.ReadUint16LengthPrefixed(&suites) {
		return false
	}
	cbc := false
	for !suites.Empty() {
		var id uint16
		if !suites.ReadUint16(&id) {
			return false
		}
		if st := suiteByID(id); st != nil && !st.tls13 {
			if st.aead() {
				return true
			}
			cbc = true
		}
	}
	if !cbc || !complete {
		return false
	}
	ch, err := parseClientHello(body)
	return err == nil && ch.etm
}
