package tlspsk

import (
	"golang.org/x/crypto/cryptobyte"
)

// OffersPSK reports whether raw bytes from the start of a connection (one or more TLS
// records, as peeked from the wire, possibly cut short) hold a ClientHello for this
// package rather than for a certificate server. A mixed certificate/PSK listener routes on
// it. It never panics and answers false when it cannot tell.
//
// A ClientHello with a TLS 1.3 pre_shared_key extension is routed by its identities'
// obfuscated_ticket_age: an external PSK has age 0 (RFC 8446 §4.2.11 says it SHOULD, and
// OpenSSL, GnuTLS, mbedTLS, wolfSSL, Node and this package's client send 0), while a
// session ticket from crypto/tls (a certificate client resuming) carries its ticket age
// plus a random 32-bit ticket_age_add, which is 0 only once in 2^32. All ages 0: PSK
// server; any other: crypto/tls. Without a pre_shared_key, a hello offering an AEAD TLS
// 1.2 PSK suite (or a CBC one together with encrypt_then_mac) goes to the PSK server.
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

	if complete {
		if ch, err := parseClientHello(body); err == nil && ch.hasPSK {
			return ch.offersVersion(VersionTLS13) && externalPSK(ch)
		}
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

// externalPSK reports whether every offered PSK identity looks external (age 0).
func externalPSK(ch *clientHello) bool {
	for _, id := range ch.pskIdentities {
		if id.age != 0 {
			return false
		}
	}
	return true
}
