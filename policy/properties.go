package policy

// MQTT 5 properties (§2.2.2). They are validated for structure and kept as raw bytes: mqtls
// forwards them untouched except for the identity user property (see Config).

// Property value types (§2.2.2.2).
const (
	propByte   = iota + 1 // one byte
	propUint16            // two-byte integer
	propUint32            // four-byte integer
	propString            // UTF-8 encoded string
	propBinary            // binary data
	propPair              // UTF-8 string pair
)

// Where a property may appear.
const (
	inConnect = 1 << iota // CONNECT properties (§3.1.2.11)
	inWill                // will properties (§3.1.3.2)
)

const (
	propUserProperty = 0x26
	propMaxPacket    = 0x27
	propAuthMethod   = 0x15
	propAuthData     = 0x16
	propReasonString = 0x1f
)

type propInfo struct {
	name    string
	typ     uint8
	where   uint8
	multi   bool // may appear more than once; every other property is a protocol error twice
	nonZero bool // 0 is a protocol error
	boolean bool // only 0 or 1 allowed
}

// propTable lists the properties CONNECT and its will may carry, by identifier. Every
// identifier defined by 5.0 fits in one byte below 0x80, so the identifier's variable byte
// integer form never needs decoding: a byte with the high bit set is simply unknown.
var propTable = [...]propInfo{
	0x01: {name: "payload format indicator", typ: propByte, where: inWill},
	0x02: {name: "message expiry interval", typ: propUint32, where: inWill},
	0x03: {name: "content type", typ: propString, where: inWill},
	0x08: {name: "response topic", typ: propString, where: inWill},
	0x09: {name: "correlation data", typ: propBinary, where: inWill},
	0x11: {name: "session expiry interval", typ: propUint32, where: inConnect},
	0x15: {name: "authentication method", typ: propString, where: inConnect},
	0x16: {name: "authentication data", typ: propBinary, where: inConnect},
	0x17: {name: "request problem information", typ: propByte, where: inConnect, boolean: true},
	0x18: {name: "will delay interval", typ: propUint32, where: inWill},
	0x19: {name: "request response information", typ: propByte, where: inConnect, boolean: true},
	0x21: {name: "receive maximum", typ: propUint16, where: inConnect, nonZero: true},
	0x22: {name: "topic alias maximum", typ: propUint16, where: inConnect},
	0x26: {name: "user property", typ: propPair, where: inConnect | inWill, multi: true},
	0x27: {name: "maximum packet size", typ: propUint32, where: inConnect, nonZero: true},
}

// checkProperties validates b, the properties of one CONNECT section without their length:
// identifiers allowed in that section, values of the right type and in bounds, single-valued
// properties at most once, and authentication data only with a method (§3.1.2.11.10). A
// wrong identifier or type is a malformed packet (§2.2.2.2); repeats and bad values are
// protocol errors in 5.0's terms, reported here as ErrMalformed too.
func checkProperties(b []byte, what string, where uint8) error {
	var seen uint64 // bit i set once identifier i was read; all identifiers are below 64
	r := reader{b: b}
	for r.off < len(r.b) {
		id := r.b[r.off]
		r.off++
		if int(id) >= len(propTable) || propTable[id].typ == 0 || propTable[id].where&where == 0 {
			return malformed("%s: property 0x%02x not allowed here (§2.2.2.2)", what, id)
		}
		p := &propTable[id]
		if !p.multi {
			if seen&(1<<id) != 0 {
				return malformed("%s: %s more than once (§3.1.2.11)", what, p.name)
			}
		}
		seen |= 1 << id
		ok := true
		switch p.typ {
		case propByte:
			var v byte
			if v, ok = r.byte1(); ok && p.boolean && v > 1 {
				return malformed("%s: %s is %d, want 0 or 1 (§3.1.2.11)", what, p.name, v)
			}
		case propUint16:
			var v uint16
			if v, ok = r.uint16(); ok && p.nonZero && v == 0 {
				return malformed("%s: %s is 0 (§3.1.2.11)", what, p.name)
			}
		case propUint32:
			var v []byte
			if v, ok = r.take(4); ok && p.nonZero && v[0]|v[1]|v[2]|v[3] == 0 {
				return malformed("%s: %s is 0 (§3.1.2.11)", what, p.name)
			}
		case propString:
			var v []byte
			if v, ok = r.bytes16(); ok {
				if problem := utf8Problem(Level5, v); problem != "" {
					return malformed("%s: %s %s", what, p.name, problem)
				}
			}
		case propBinary:
			_, ok = r.bytes16()
		case propPair:
			// Both halves are UTF-8 encoded strings [MQTT-1.5.7-1].
			for _, half := range [...]string{"name", "value"} {
				var v []byte
				if v, ok = r.bytes16(); !ok {
					return malformed("%s: %s %s runs past the property length (§2.2.2.1)", what, p.name, half)
				}
				if problem := utf8Problem(Level5, v); problem != "" {
					return malformed("%s: %s %s %s", what, p.name, half, problem)
				}
			}
		}
		if !ok {
			return malformed("%s: %s runs past the property length (§2.2.2.1)", what, p.name)
		}
	}
	if seen&(1<<propAuthData) != 0 && seen&(1<<propAuthMethod) == 0 {
		return malformed("%s: authentication data without authentication method (§3.1.2.11.10)", what)
	}
	return nil
}

// nextProperty splits the first property, identifier included, off b, which must have passed
// checkProperties. value is the property's bytes after the identifier. ok is false at the
// end of b or on bytes checkProperties would refuse.
func nextProperty(b []byte) (id byte, prop, value, rest []byte, ok bool) {
	if len(b) == 0 || int(b[0]) >= len(propTable) {
		return 0, nil, nil, nil, false
	}
	id = b[0]
	n := 0 // value length
	switch propTable[id].typ {
	case propByte:
		n = 1
	case propUint16:
		n = 2
	case propUint32:
		n = 4
	case propString, propBinary:
		if len(b) < 3 {
			return 0, nil, nil, nil, false
		}
		n = 2 + be16(b[1:])
	case propPair:
		if len(b) < 3 {
			return 0, nil, nil, nil, false
		}
		k := 2 + be16(b[1:])
		if len(b) < 1+k+2 {
			return 0, nil, nil, nil, false
		}
		n = k + 2 + be16(b[1+k:])
	default:
		return 0, nil, nil, nil, false
	}
	if len(b) < 1+n {
		return 0, nil, nil, nil, false
	}
	return id, b[:1+n], b[1 : 1+n], b[1+n:], true
}

// withUserProperty returns props without any user property named key, followed by the user
// property (key, value): the client's claim is removed before ours is written, so the
// broker sees exactly one. Other properties keep their order and bytes.
func withUserProperty(props []byte, key, value string) []byte {
	out := appendWithoutUserProperty(make([]byte, 0, len(props)+1+2+len(key)+2+len(value)), props, key)
	out = append(out, propUserProperty)
	out = appendBytes16(out, key)
	return appendBytes16(out, value)
}

// withoutUserProperty returns props without any user property named key: props itself,
// not a copy, when it has none.
func withoutUserProperty(props []byte, key string) []byte {
	for rest := props; ; {
		id, _, v, next, ok := nextProperty(rest)
		if !ok {
			return props
		}
		if isUserProperty(id, v, key) {
			return appendWithoutUserProperty(make([]byte, 0, len(props)), props, key)
		}
		rest = next
	}
}

// appendWithoutUserProperty appends props to dst, leaving out the user properties named key.
func appendWithoutUserProperty(dst, props []byte, key string) []byte {
	for rest := props; ; {
		id, prop, v, next, ok := nextProperty(rest)
		if !ok {
			return dst
		}
		rest = next
		if !isUserProperty(id, v, key) {
			dst = append(dst, prop...)
		}
	}
}

// isUserProperty reports whether the property id with value v is a user property named key.
func isUserProperty(id byte, v []byte, key string) bool {
	return id == propUserProperty && len(v) >= 2 && string(v[2:2+be16(v)]) == key
}

// maxPacketSize returns the Maximum Packet Size the client announced in props, or 0 when it
// set none (no limit beyond the protocol's).
func maxPacketSize(props []byte) int {
	for rest := props; ; {
		id, _, v, next, ok := nextProperty(rest)
		if !ok {
			return 0
		}
		if id == propMaxPacket {
			return int(v[0])<<24 | int(v[1])<<16 | int(v[2])<<8 | int(v[3])
		}
		rest = next
	}
}

// be16 reads the big-endian two-byte integer at the start of b.
func be16(b []byte) int { return int(b[0])<<8 | int(b[1]) }
