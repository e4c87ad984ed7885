package tlspsk

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// Handshake message types (RFC 5246 §7.4).
const (
	typeHelloRequest       uint8 = 0
	typeClientHello        uint8 = 1
	typeServerHello        uint8 = 2
	typeServerKeyExchange  uint8 = 12
	typeServerHelloDone    uint8 = 14
	typeClientKeyExchange  uint8 = 16
	typeFinished           uint8 = 20
	handshakeHeaderLen           = 4
	verifyDataLen                = 12 // RFC 5246 §7.4.9
	maxHandshakeLen              = 1 << 16
	maxIdentityLen               = 1 << 10 // RFC 4279 §5.3 asks for at least 128
	maxHintLen                   = 1 << 10
	clientRandomLen              = 32
	maxSessionIDLen              = 32
	namedCurveType         uint8 = 3 // ECCurveType named_curve, RFC 8422 §5.4
	pointFormatUncompressd uint8 = 0
)

// Extension types.
const (
	extServerName           uint16 = 0      // RFC 6066 §3
	extSupportedGroups      uint16 = 10     // RFC 8422 §5.1.1
	extECPointFormats       uint16 = 11     // RFC 8422 §5.1.2
	extEncryptThenMAC       uint16 = 22     // RFC 7366 §2
	extExtendedMasterSecret uint16 = 23     // RFC 7627 §5.1
	extSupportedVersions    uint16 = 43     // RFC 8446 §4.2.1
	extRenegotiationInfo    uint16 = 0xff01 // RFC 5746 §3.2
	extRecordSizeLimit      uint16 = 28     // RFC 8449 §4
	extPreSharedKey         uint16 = 41     // RFC 8446 §4.2.11
	extEarlyData            uint16 = 42     // RFC 8446 §4.2.10
	extCookie               uint16 = 44     // RFC 8446 §4.2.2
	extPSKKeyExchangeModes  uint16 = 45     // RFC 8446 §4.2.9
	extKeyShare             uint16 = 51     // RFC 8446 §4.2.8
)

// Named groups for ECDHE_PSK.
const (
	groupP256   uint16 = 23 // secp256r1
	groupX25519 uint16 = 29
)

// errMalformed marks a message that does not follow its wire syntax.
var errMalformed = errors.New("malformed")

// clientHello is a parsed ClientHello (RFC 5246 §7.4.1.2) with the extensions this package
// acts on; every other extension is skipped.
type clientHello struct {
	version     uint16
	random      []byte
	sessionID   []byte
	suites      []uint16
	compression []byte

	serverName      string
	groups          []uint16
	hasGroups       bool
	pointFormats    []byte
	hasPointFormats bool
	ems             bool
	etm             bool
	renegInfo       []byte
	hasRenegInfo    bool
	versions        []uint16
	hasVersions     bool

	// TLS 1.3 (RFC 8446 §4.2).
	keyShares       []keyShare
	hasKeyShares    bool
	pskModes        []uint8
	hasPSKModes     bool
	pskIdentities   []pskIdentity
	pskBinders      [][]byte
	hasPSK          bool
	bindersLen      int // bytes at the end of the message taken by the binders list
	earlyData       bool
	recordSizeLimit uint16 // RFC 8449; 0 when not sent
	hasCookie       bool

	rawExts []byte // client side: extensions appended as they are, last
}

func (ch *clientHello) offersSuite(id uint16) bool { return slices.Contains(ch.suites, id) }

// parseClientHello parses the body of a ClientHello, without the 4-byte handshake header.
// The syntax is checked strictly (lengths, duplicate extensions, the bodies of extensions it
// reads); unknown extensions and the TLS 1.3 ones are ignored.
func parseClientHello(body []byte) (*clientHello, error) {
	s := cryptobyte.String(body)
	ch := &clientHello{}
	var sid, suites, comp cryptobyte.String
	if !s.ReadUint16(&ch.version) || !s.ReadBytes(&ch.random, clientRandomLen) ||
		!s.ReadUint8LengthPrefixed(&sid) || len(sid) > maxSessionIDLen {
		return nil, fmt.Errorf("%w ClientHello header", errMalformed)
	}
	ch.sessionID = sid
	if !s.ReadUint16LengthPrefixed(&suites) || len(suites) == 0 || len(suites)%2 != 0 {
		return nil, fmt.Errorf("%w ClientHello cipher_suites", errMalformed)
	}
	ch.suites = make([]uint16, 0, len(suites)/2)
	for !suites.Empty() {
		var id uint16
		suites.ReadUint16(&id)
		ch.suites = append(ch.suites, id)
	}
	if !s.ReadUint8LengthPrefixed(&comp) || len(comp) == 0 {
		return nil, fmt.Errorf("%w ClientHello compression_methods", errMalformed)
	}
	ch.compression = comp
	if s.Empty() {
		return ch, nil // no extensions block (RFC 5246 §7.4.1.2)
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return nil, fmt.Errorf("%w ClientHello extensions block", errMalformed)
	}
	var seen []uint16
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("%w ClientHello extension", errMalformed)
		}
		seen = append(seen, typ)
		if ch.hasPSK {
			// "The pre_shared_key extension MUST be the last extension" (RFC 8446 §4.2.11).
			return nil, errPSKNotLast
		}
		if err := ch.parseExtension(typ, data); err != nil {
			return nil, err
		}
	}
	// "There MUST NOT be more than one extension of the same type." (RFC 5246 §7.4.1.4)
	slices.Sort(seen)
	for i := 1; i < len(seen); i++ {
		if seen[i] == seen[i-1] {
			return nil, fmt.Errorf("%w ClientHello: extension %d twice", errMalformed, seen[i])
		}
	}
	return ch, nil
}

func (ch *clientHello) parseExtension(typ uint16, data cryptobyte.String) error {
	bad := func(name string) error { return fmt.Errorf("%w ClientHello %s extension", errMalformed, name) }
	switch typ {
	case extServerName:
		name, err := parseServerName(data)
		if err != nil {
			return bad("server_name")
		}
		ch.serverName = name
	case extSupportedGroups:
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || len(list) == 0 || len(list)%2 != 0 {
			return bad("supported_groups")
		}
		ch.hasGroups = true
		for !list.Empty() {
			var g uint16
			list.ReadUint16(&g)
			ch.groups = append(ch.groups, g)
		}
	case extECPointFormats:
		var list cryptobyte.String
		if !data.ReadUint8LengthPrefixed(&list) || !data.Empty() || len(list) == 0 {
			return bad("ec_point_formats")
		}
		ch.hasPointFormats = true
		ch.pointFormats = list
	case extExtendedMasterSecret:
		if !data.Empty() {
			return bad("extended_master_secret")
		}
		ch.ems = true
	case extEncryptThenMAC:
		if !data.Empty() {
			return bad("encrypt_then_mac")
		}
		ch.etm = true
	case extRenegotiationInfo:
		var rc cryptobyte.String
		if !data.ReadUint8LengthPrefixed(&rc) || !data.Empty() {
			return bad("renegotiation_info")
		}
		ch.hasRenegInfo = true
		ch.renegInfo = rc
	case extKeyShare, extPreSharedKey, extPSKKeyExchangeModes, extEarlyData, extRecordSizeLimit, extCookie:
		return ch.parseExtension13(typ, data)
	case extSupportedVersions:
		var list cryptobyte.String
		if !data.ReadUint8LengthPrefixed(&list) || !data.Empty() || len(list) == 0 || len(list)%2 != 0 {
			return bad("supported_versions")
		}
		ch.hasVersions = true
		for !list.Empty() {
			var v uint16
			list.ReadUint16(&v)
			ch.versions = append(ch.versions, v)
		}
	}
	return nil
}

// parseServerName reads a server_name extension (RFC 6066 §3) and returns the host name,
// or "" when the name is not a plausible DNS name (it is then ignored, not refused: the name
// is only informative here, but it ends up in logs).
func parseServerName(data cryptobyte.String) (string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
		return "", errMalformed
	}
	var host []byte
	seenHost := false
	for !list.Empty() {
		var nameType uint8
		var name cryptobyte.String
		if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) || name.Empty() {
			return "", errMalformed
		}
		if nameType != 0 { // only host_name(0) is defined
			continue
		}
		if seenHost { // "MUST NOT contain more than one name of the same name_type"
			return "", errMalformed
		}
		seenHost = true
		host = name
	}
	if len(host) > 253 {
		return "", nil
	}
	for _, b := range host {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '.' || b == '_') {
			return "", nil
		}
	}
	return string(host), nil
}

// appendHandshake appends a handshake message header and body.
func appendHandshake(dst []byte, typ uint8, body []byte) []byte {
	n := len(body)
	dst = append(dst, typ, byte(n>>16), byte(n>>8), byte(n))
	return append(dst, body...)
}

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func appendU16Bytes(dst, b []byte) []byte { return append(appendU16(dst, uint16(len(b))), b...) }

func appendU8Bytes(dst, b []byte) []byte { return append(append(dst, byte(len(b))), b...) }

func appendExtension(dst []byte, typ uint16, data []byte) []byte {
	return appendU16Bytes(appendU16(dst, typ), data)
}

// serverHello is the ServerHello (RFC 5246 §7.4.1.3), built by the server and parsed by
// the client.
type serverHello struct {
	version   uint16
	random    []byte
	sessionID []byte
	suite     uint16
	comp      uint8

	ems             bool
	etm             bool
	hasRenegInfo    bool
	renegInfo       []byte
	hasPointFormats bool
	pointFormats    []byte
	sniAck          bool
}

func (sh *serverHello) marshal() []byte {
	var exts []byte
	if sh.hasRenegInfo {
		exts = appendExtension(exts, extRenegotiationInfo, appendU8Bytes(nil, sh.renegInfo))
	}
	if sh.ems {
		exts = appendExtension(exts, extExtendedMasterSecret, nil)
	}
	if sh.etm {
		exts = appendExtension(exts, extEncryptThenMAC, nil)
	}
	if sh.hasPointFormats {
		exts = appendExtension(exts, extECPointFormats, appendU8Bytes(nil, sh.pointFormats))
	}
	body := make([]byte, 0, 2+32+1+len(sh.sessionID)+3+2+len(exts))
	body = appendU16(body, sh.version)
	body = append(body, sh.random...)
	body = appendU8Bytes(body, sh.sessionID)
	body = appendU16(body, sh.suite)
	body = append(body, sh.comp)
	if len(exts) > 0 {
		body = appendU16Bytes(body, exts)
	}
	return appendHandshake(nil, typeServerHello, body)
}

// parseServerHello parses a ServerHello body. Any extension the client did not offer is an
// error (RFC 5246 §7.4.1.4); offered tells which ones it did.
func parseServerHello(body []byte, offered func(uint16) bool) (*serverHello, error) {
	s := cryptobyte.String(body)
	sh := &serverHello{}
	var sid cryptobyte.String
	if !s.ReadUint16(&sh.version) || !s.ReadBytes(&sh.random, clientRandomLen) ||
		!s.ReadUint8LengthPrefixed(&sid) || len(sid) > maxSessionIDLen ||
		!s.ReadUint16(&sh.suite) || !s.ReadUint8(&sh.comp) {
		return nil, fmt.Errorf("%w ServerHello", errMalformed)
	}
	sh.sessionID = sid
	if s.Empty() {
		return sh, nil
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return nil, fmt.Errorf("%w ServerHello extensions block", errMalformed)
	}
	var seen []uint16
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("%w ServerHello extension", errMalformed)
		}
		if slices.Contains(seen, typ) {
			return nil, fmt.Errorf("%w ServerHello: extension %d twice", errMalformed, typ)
		}
		seen = append(seen, typ)
		if !offered(typ) {
			return nil, errUnsolicitedExtension{typ}
		}
		ok := true
		switch typ {
		case extExtendedMasterSecret:
			sh.ems, ok = true, data.Empty()
		case extEncryptThenMAC:
			sh.etm, ok = true, data.Empty()
		case extServerName:
			sh.sniAck, ok = true, data.Empty()
		case extRenegotiationInfo:
			var rc cryptobyte.String
			ok = data.ReadUint8LengthPrefixed(&rc) && data.Empty()
			sh.hasRenegInfo, sh.renegInfo = true, rc
		case extECPointFormats:
			var list cryptobyte.String
			ok = data.ReadUint8LengthPrefixed(&list) && data.Empty() && !list.Empty()
			sh.hasPointFormats, sh.pointFormats = true, list
		}
		if !ok {
			return nil, fmt.Errorf("%w ServerHello extension %d", errMalformed, typ)
		}
	}
	return sh, nil
}

type errUnsolicitedExtension struct{ typ uint16 }

func (e errUnsolicitedExtension) Error() string {
	return fmt.Sprintf("ServerHello carries extension %d, which was not offered", e.typ)
}

// serverKeyExchange is the PSK (RFC 4279 §2) or ECDHE_PSK (RFC 5489 §2) ServerKeyExchange.
type serverKeyExchange struct {
	hint   []byte
	group  uint16 // ECDHE_PSK only
	public []byte // ECDHE_PSK only
}

func (ske *serverKeyExchange) marshal(ecdhe bool) []byte {
	body := appendU16Bytes(nil, ske.hint)
	if ecdhe {
		body = append(body, namedCurveType)
		body = appendU16(body, ske.group)
		body = appendU8Bytes(body, ske.public)
	}
	return appendHandshake(nil, typeServerKeyExchange, body)
}

func parseServerKeyExchange(body []byte, ecdhe bool) (*serverKeyExchange, error) {
	s := cryptobyte.String(body)
	ske := &serverKeyExchange{}
	var hint cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&hint) {
		return nil, fmt.Errorf("%w ServerKeyExchange", errMalformed)
	}
	ske.hint = hint
	if ecdhe {
		var curveType uint8
		var pub cryptobyte.String
		if !s.ReadUint8(&curveType) || curveType != namedCurveType || !s.ReadUint16(&ske.group) ||
			!s.ReadUint8LengthPrefixed(&pub) || pub.Empty() {
			return nil, fmt.Errorf("%w ServerKeyExchange ECDH parameters", errMalformed)
		}
		ske.public = pub
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w ServerKeyExchange: trailing bytes", errMalformed)
	}
	return ske, nil
}

// clientKeyExchange is the PSK (RFC 4279 §2) or ECDHE_PSK (RFC 5489 §2) ClientKeyExchange.
type clientKeyExchange struct {
	identity []byte
	public   []byte // ECDHE_PSK only
}

func (cke *clientKeyExchange) marshal(ecdhe bool) []byte {
	body := appendU16Bytes(nil, cke.identity)
	if ecdhe {
		body = appendU8Bytes(body, cke.public)
	}
	return appendHandshake(nil, typeClientKeyExchange, body)
}

func parseClientKeyExchange(body []byte, ecdhe bool) (*clientKeyExchange, error) {
	s := cryptobyte.String(body)
	cke := &clientKeyExchange{}
	var id cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&id) {
		return nil, fmt.Errorf("%w ClientKeyExchange psk_identity", errMalformed)
	}
	cke.identity = id
	if ecdhe {
		var pub cryptobyte.String
		if !s.ReadUint8LengthPrefixed(&pub) || pub.Empty() {
			return nil, fmt.Errorf("%w ClientKeyExchange ECDH public", errMalformed)
		}
		cke.public = pub
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w ClientKeyExchange: trailing bytes", errMalformed)
	}
	return cke, nil
}

// parseFinished returns the verify_data of a Finished body (RFC 5246 §7.4.9).
func parseFinished(body []byte) ([]byte, error) {
	if len(body) != verifyDataLen {
		return nil, fmt.Errorf("%w Finished: %d bytes of verify_data", errMalformed, len(body))
	}
	return body, nil
}

// marshalClientHello builds the ClientHello this package's client sends.
func marshalClientHello(ch *clientHello) []byte {
	var exts []byte
	if ch.serverName != "" {
		var entry []byte
		entry = append(entry, 0) // host_name
		entry = appendU16Bytes(entry, []byte(ch.serverName))
		exts = appendExtension(exts, extServerName, appendU16Bytes(nil, entry))
	}
	if ch.hasGroups {
		var list []byte
		for _, g := range ch.groups {
			list = appendU16(list, g)
		}
		exts = appendExtension(exts, extSupportedGroups, appendU16Bytes(nil, list))
	}
	if ch.hasPointFormats {
		exts = appendExtension(exts, extECPointFormats, appendU8Bytes(nil, ch.pointFormats))
	}
	if ch.ems {
		exts = appendExtension(exts, extExtendedMasterSecret, nil)
	}
	if ch.etm {
		exts = appendExtension(exts, extEncryptThenMAC, nil)
	}
	if ch.hasRenegInfo {
		exts = appendExtension(exts, extRenegotiationInfo, appendU8Bytes(nil, ch.renegInfo))
	}
	exts = append(exts, ch.rawExts...)
	var body []byte
	body = appendU16(body, ch.version)
	body = append(body, ch.random...)
	body = appendU8Bytes(body, ch.sessionID)
	var suites []byte
	for _, id := range ch.suites {
		suites = appendU16(suites, id)
	}
	body = appendU16Bytes(body, suites)
	body = appendU8Bytes(body, ch.compression)
	if len(exts) > 0 {
		body = appendU16Bytes(body, exts)
	}
	return appendHandshake(nil, typeClientHello, body)
}
