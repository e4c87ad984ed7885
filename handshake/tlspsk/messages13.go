package tlspsk

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// TLS 1.3 handshake message types (RFC 8446 §4).
const (
	typeNewSessionTicket    uint8 = 4
	typeEncryptedExtensions uint8 = 8
	typeKeyUpdate           uint8 = 24
	typeMessageHash         uint8 = 254
)

// PSK key exchange modes (RFC 8446 §4.2.9).
const (
	pskModeKE    uint8 = 0 // psk_ke: PSK only, no forward secrecy
	pskModeDHEKE uint8 = 1 // psk_dhe_ke: PSK with (EC)DHE
)

// Limits on what a ClientHello may carry, checked before anything is kept.
const (
	maxPSKIdentities = 16
	maxKeyShares     = 16
	minRecordLimit   = 64 // RFC 8449 §4
)

// helloRetryRandom is the ServerHello.random that marks a HelloRetryRequest:
// SHA-256("HelloRetryRequest") (RFC 8446 §4.1.3).
var helloRetryRandom = []byte{
	0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
	0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
}

var errPSKNotLast = fmt.Errorf("%w ClientHello: pre_shared_key is not the last extension", errMalformed)

// keyShare is one KeyShareEntry (RFC 8446 §4.2.8).
type keyShare struct {
	group uint16
	data  []byte
}

// pskIdentity is one PskIdentity (RFC 8446 §4.2.11).
type pskIdentity struct {
	identity []byte
	age      uint32 // obfuscated_ticket_age: 0 for external PSKs (RFC 8446 §4.2.11)
}

// parseExtension13 reads the TLS 1.3 extensions of a ClientHello.
func (ch *clientHello) parseExtension13(typ uint16, data cryptobyte.String) error {
	bad := func(name string) error { return fmt.Errorf("%w ClientHello %s extension", errMalformed, name) }
	switch typ {
	case extKeyShare:
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
			return bad("key_share")
		}
		ch.hasKeyShares = true
		for !list.Empty() {
			var ks keyShare
			var pub cryptobyte.String
			if !list.ReadUint16(&ks.group) || !list.ReadUint16LengthPrefixed(&pub) || pub.Empty() ||
				len(ch.keyShares) == maxKeyShares {
				return bad("key_share")
			}
			// "Clients MUST NOT offer multiple KeyShareEntry values for the same group."
			for _, o := range ch.keyShares {
				if o.group == ks.group {
					return bad("key_share")
				}
			}
			ks.data = pub
			ch.keyShares = append(ch.keyShares, ks)
		}
	case extPSKKeyExchangeModes:
		var list cryptobyte.String
		if !data.ReadUint8LengthPrefixed(&list) || !data.Empty() || list.Empty() {
			return bad("psk_key_exchange_modes")
		}
		ch.hasPSKModes, ch.pskModes = true, list
	case extEarlyData:
		if !data.Empty() {
			return bad("early_data")
		}
		ch.earlyData = true
	case extRecordSizeLimit:
		if !data.ReadUint16(&ch.recordSizeLimit) || !data.Empty() {
			return bad("record_size_limit")
		}
	case extCookie:
		ch.hasCookie = true
	case extPreSharedKey:
		var ids, binders cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&ids) || ids.Empty() {
			return bad("pre_shared_key")
		}
		ch.bindersLen = len(data)
		if !data.ReadUint16LengthPrefixed(&binders) || !data.Empty() || binders.Empty() {
			return bad("pre_shared_key")
		}
		for !ids.Empty() {
			var id pskIdentity
			var name cryptobyte.String
			if !ids.ReadUint16LengthPrefixed(&name) || name.Empty() || len(name) > maxIdentityLen ||
				!ids.ReadUint32(&id.age) || len(ch.pskIdentities) == maxPSKIdentities {
				return bad("pre_shared_key")
			}
			id.identity = name
			ch.pskIdentities = append(ch.pskIdentities, id)
		}
		for !binders.Empty() {
			var b cryptobyte.String
			if !binders.ReadUint8LengthPrefixed(&b) || len(b) < 32 {
				return bad("pre_shared_key binder")
			}
			ch.pskBinders = append(ch.pskBinders, b)
		}
		if len(ch.pskBinders) != len(ch.pskIdentities) {
			return bad("pre_shared_key: identities and binders differ in number")
		}
		ch.hasPSK = true
	}
	return nil
}

func (ch *clientHello) offersVersion(v uint16) bool {
	return ch.hasVersions && slices.Contains(ch.versions, v)
}

func (ch *clientHello) offersPSKMode(m uint8) bool { return slices.Contains(ch.pskModes, m) }

func (ch *clientHello) share(group uint16) []byte {
	for _, ks := range ch.keyShares {
		if ks.group == group {
			return ks.data
		}
	}
	return nil
}

// serverHello13 is a TLS 1.3 ServerHello or HelloRetryRequest (RFC 8446 §4.1.3-4).
type serverHello13 struct {
	random      []byte
	sessionID   []byte
	suite       uint16
	group       uint16 // key_share group: the selected group (HRR) or the server's share's
	share       []byte // the server's key share; nil in a HelloRetryRequest or with psk_ke
	hasPSK      bool   // pre_shared_key with selected_identity
	selectedPSK uint16
	hasKeyShare bool
}

func (sh *serverHello13) marshal() []byte {
	var exts []byte
	exts = appendExtension(exts, extSupportedVersions, appendU16(nil, VersionTLS13))
	if sh.hasKeyShare {
		ks := appendU16(nil, sh.group)
		if sh.share != nil {
			ks = appendU16Bytes(ks, sh.share)
		}
		exts = appendExtension(exts, extKeyShare, ks)
	}
	if sh.hasPSK {
		exts = appendExtension(exts, extPreSharedKey, appendU16(nil, sh.selectedPSK))
	}
	body := make([]byte, 0, 2+32+1+len(sh.sessionID)+3+2+len(exts))
	body = appendU16(body, VersionTLS12) // legacy_version
	body = append(body, sh.random...)
	body = appendU8Bytes(body, sh.sessionID)
	body = appendU16(body, sh.suite)
	body = append(body, 0)
	body = appendU16Bytes(body, exts)
	return appendHandshake(nil, typeServerHello, body)
}

// parseServerHello13 reads the TLS 1.3 extensions of a ServerHello or HelloRetryRequest
// whose fixed part parseServerHello already read (client side).
func parseServerHello13(body []byte) (*serverHello13, uint16, error) {
	s := cryptobyte.String(body)
	sh := &serverHello13{}
	var legacy uint16
	var sid, exts cryptobyte.String
	var comp uint8
	if !s.ReadUint16(&legacy) || !s.ReadBytes(&sh.random, 32) || !s.ReadUint8LengthPrefixed(&sid) ||
		!s.ReadUint16(&sh.suite) || !s.ReadUint8(&comp) || !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() || comp != 0 {
		return nil, 0, fmt.Errorf("%w ServerHello", errMalformed)
	}
	sh.sessionID = sid
	var version uint16
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, 0, fmt.Errorf("%w ServerHello extension", errMalformed)
		}
		ok := true
		switch typ {
		case extSupportedVersions:
			ok = data.ReadUint16(&version) && data.Empty()
		case extKeyShare:
			sh.hasKeyShare = true
			ok = data.ReadUint16(&sh.group)
			if ok && !data.Empty() {
				var pub cryptobyte.String
				ok = data.ReadUint16LengthPrefixed(&pub) && data.Empty()
				sh.share = pub
			}
		case extPreSharedKey:
			sh.hasPSK = true
			ok = data.ReadUint16(&sh.selectedPSK) && data.Empty()
		case extCookie:
		default:
			return nil, 0, errUnsolicitedExtension{typ}
		}
		if !ok {
			return nil, 0, fmt.Errorf("%w ServerHello extension %d", errMalformed, typ)
		}
	}
	return sh, version, nil
}

// marshalEncryptedExtensions builds the server's EncryptedExtensions: only
// record_size_limit, when the client sent one (RFC 8449 §4).
func marshalEncryptedExtensions(recordLimit uint16) []byte {
	var exts []byte
	if recordLimit != 0 {
		exts = appendExtension(exts, extRecordSizeLimit, appendU16(nil, recordLimit))
	}
	return appendHandshake(nil, typeEncryptedExtensions, appendU16Bytes(nil, exts))
}

// parseEncryptedExtensions returns the server's record_size_limit (0 if none). Anything
// the client did not ask for is an error.
func parseEncryptedExtensions(body []byte, offeredLimit bool) (uint16, error) {
	s := cryptobyte.String(body)
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return 0, fmt.Errorf("%w EncryptedExtensions", errMalformed)
	}
	var limit uint16
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return 0, fmt.Errorf("%w EncryptedExtensions", errMalformed)
		}
		switch {
		case typ == extRecordSizeLimit && offeredLimit:
			if !data.ReadUint16(&limit) || !data.Empty() || limit < minRecordLimit {
				return 0, fmt.Errorf("%w record_size_limit", errMalformed)
			}
		case typ == extServerName && data.Empty():
		case typ == extSupportedGroups: // the server's preferences, for later (RFC 8446 §4.2.7)
		default:
			return 0, errUnsolicitedExtension{typ}
		}
	}
	return limit, nil
}

// messageHash is the synthetic message that stands for ClientHello1 in the transcript
// after a HelloRetryRequest (RFC 8446 §4.4.1).
func messageHash(hash []byte) []byte {
	return appendHandshake(nil, typeMessageHash, hash)
}

var errEarlyDataAfterHRR = errors.New("the second ClientHello offers early_data")
