package policy

import (
	"bytes"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Protocol levels, the byte after the protocol name.
const (
	Level31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"
	Level311 byte = 4 // MQTT 3.1.1, protocol name "MQTT"
	Level5   byte = 5 // MQTT 5.0, protocol name "MQTT"
)

// Connect flag bits (3.1.1 §3.1.2.3, 5.0 §3.1.2.3).
const (
	flagReserved   = 0x01
	flagCleanStart = 0x02
	flagWill       = 0x04
	flagWillQoS    = 0x18
	flagWillRetain = 0x20
	flagPassword   = 0x40
	flagUsername   = 0x80
)

// Connect is a parsed CONNECT packet. Every []byte aliases Raw, so parsing copies nothing;
// each is capped at its own length, so appending to one never overwrites Raw.
//
// A field is written by AppendEncode when Flags (and Level, for the v5-only ones) say it is
// present, whatever its length; so change Flags together with the field.
type Connect struct {
	Raw            []byte // the whole packet as received, fixed header included
	ProtocolName   []byte // "MQTT", or "MQIsdp" for 3.1
	Level          byte   // Level31, Level311 or Level5
	Flags          byte   // connect flags byte as received
	KeepAlive      uint16 // seconds
	Properties     []byte // v5 only: property bytes without their length prefix, byte-exact
	ClientID       []byte
	WillProperties []byte // v5 only: property bytes without their length prefix
	WillTopic      []byte
	WillPayload    []byte
	Username       []byte
	Password       []byte
}

// CleanStart reports the Clean Start (5.0) or Clean Session (3.x) flag.
func (c *Connect) CleanStart() bool { return c.Flags&flagCleanStart != 0 }

// HasWill reports the Will flag.
func (c *Connect) HasWill() bool { return c.Flags&flagWill != 0 }

// WillQoS returns the Will QoS bits (0, 1 or 2 in a parsed packet).
func (c *Connect) WillQoS() byte { return c.Flags & flagWillQoS >> 3 }

// WillRetain reports the Will Retain flag.
func (c *Connect) WillRetain() bool { return c.Flags&flagWillRetain != 0 }

// HasUsername reports the User Name flag.
func (c *Connect) HasUsername() bool { return c.Flags&flagUsername != 0 }

// HasPassword reports the Password flag.
func (c *Connect) HasPassword() bool { return c.Flags&flagPassword != 0 }

// clause picks the conformance statement ID for the packet's level: 3.1 has none of its
// own, so it is held to the 3.1.1 wording.
func clause(level byte, v3, v5 string) string {
	if level == Level5 {
		return v5
	}
	return v3
}

// ParseConnect parses pkt, which must be exactly one whole CONNECT packet, fixed header
// included. On success every []byte in the result aliases pkt and nothing is allocated.
//
// Errors:
//   - ErrNotConnect: the packet type is not CONNECT (checked on the first byte).
//   - ErrIncomplete: pkt is shorter than its fixed header says.
//   - ErrMalformed: any breach of the spec; the message names the clause.
//   - *Reject with CodeUnsupportedVersion: a known protocol name with an unknown level,
//     which the spec answers with a CONNACK rather than a plain close [MQTT-3.1.2-2].
//
// On error the Connect holds what was parsed before the failure; in particular Level is set
// once it was read, so a caller can answer a *Reject in the client's version.
//
// Rules that depend on the client ID as forwarded (3.1's 1–23 bytes, 3.1.1's empty ID with
// clean session 0 [MQTT-3.1.3-8]) are left to Policy.Bind, because a rewrite policy replaces
// the ID first; so always pass an accepted CONNECT through Bind before forwarding it.
func ParseConnect(pkt []byte) (Connect, error) {
	var c Connect
	if len(pkt) > 0 && pkt[0]>>4 != typeConnect {
		return c, fmt.Errorf("%w: packet type %d", ErrNotConnect, pkt[0]>>4)
	}
	first, remaining, hl, err := ParseFixedHeader(pkt)
	if err != nil {
		return c, err
	}
	// 3.1.1 [MQTT-2.2.2-2], 5.0 [MQTT-2.1.3-1]: CONNECT's fixed-header flags are reserved as 0.
	if first&0x0f != 0 {
		return c, malformed("CONNECT fixed header flags 0x%x, want 0 [MQTT-2.2.2-2]", first&0x0f)
	}
	n := hl + remaining
	if len(pkt) < n {
		return c, fmt.Errorf("%w: have %d of %d bytes", ErrIncomplete, len(pkt), n)
	}
	if len(pkt) > n {
		return c, malformed("%d bytes after the %d-byte packet", len(pkt)-n, n)
	}
	c.Raw = pkt[:n:n]
	r := reader{b: c.Raw, off: hl}

	// Variable header: protocol name, level, flags, keep alive (§3.1.2).
	name, ok := r.bytes16()
	if !ok {
		return c, malformed("protocol name runs past the end of the packet")
	}
	c.ProtocolName = name
	if c.Level, ok = r.byte1(); !ok {
		return c, malformed("protocol level missing")
	}
	isMQTT, isMQIsdp := string(name) == "MQTT", string(name) == "MQIsdp"
	switch {
	case !isMQTT && !isMQIsdp:
		// [MQTT-3.1.2-1]: not MQTT; the server may close the connection.
		return c, malformed("protocol name %s is neither MQTT nor MQIsdp [MQTT-3.1.2-1]", quote(name))
	case isMQIsdp && c.Level == Level31, isMQTT && (c.Level == Level311 || c.Level == Level5):
		// A known pair.
	case isMQIsdp && (c.Level == Level311 || c.Level == Level5), isMQTT && c.Level == Level31:
		// No version of the spec pairs these: the client is confused, not newer than us.
		return c, malformed("protocol name %s with level %d [MQTT-3.1.2-1]", name, c.Level)
	default:
		// [MQTT-3.1.2-2]: an unsupported level is answered with CONNACK 0x01 (3.x) / 0x84 (5.0).
		return c, reject(CodeUnsupportedVersion, ReasonUnsupportedVersion,
			"protocol %s level %d is not 3.1, 3.1.1 or 5.0 [MQTT-3.1.2-2]", name, c.Level)
	}
	if c.Flags, ok = r.byte1(); !ok {
		return c, malformed("connect flags missing")
	}
	if err := checkFlags(c.Level, c.Flags); err != nil {
		return c, err
	}
	if c.KeepAlive, ok = r.uint16(); !ok {
		return c, malformed("keep alive missing")
	}
	if c.Level == Level5 {
		if c.Properties, err = r.properties("CONNECT properties", inConnect); err != nil {
			return c, err
		}
	}

	// Payload, in this order when present [MQTT-3.1.3-1] (§3.1.3).
	if c.ClientID, err = r.utf8(c.Level, "client ID", "[MQTT-3.1.3-3]"); err != nil {
		return c, err
	}
	if c.HasWill() {
		// [MQTT-3.1.2-9]: with the will flag set, the will fields must be present.
		if c.Level == Level5 {
			if c.WillProperties, err = r.properties("will properties", inWill); err != nil {
				return c, err
			}
		}
		if c.WillTopic, err = r.utf8(c.Level, "will topic", "[MQTT-3.1.2-9]"); err != nil {
			return c, err
		}
		if c.WillPayload, ok = r.bytes16(); !ok {
			return c, malformed("will payload runs past the end of the packet [MQTT-3.1.2-9]")
		}
	}
	if c.HasUsername() {
		if c.Username, err = r.utf8(c.Level, "user name", clause(c.Level, "[MQTT-3.1.2-19]", "[MQTT-3.1.2-17]")); err != nil {
			return c, err
		}
	}
	if c.HasPassword() {
		// Binary data in 3.1.1 and 5.0. 3.1 calls it a string, but brokers treat it as
		// bytes and so do we: it is a secret, never inspected.
		if c.Password, ok = r.bytes16(); !ok {
			return c, malformed("password runs past the end of the packet %s",
				clause(c.Level, "[MQTT-3.1.2-21]", "[MQTT-3.1.2-19]"))
		}
	}
	if left := len(r.b) - r.off; left != 0 {
		// A field the flags do not announce, e.g. a user name with the flag clear
		// ([MQTT-3.1.2-18] / 5.0 [MQTT-3.1.2-16]), or a remaining length that overshoots.
		return c, malformed("%d bytes after the last field the connect flags announce %s",
			left, clause(c.Level, "[MQTT-3.1.2-18]", "[MQTT-3.1.2-16]"))
	}
	return c, nil
}

// checkFlags applies the connect flag rules (§3.1.2.3) that need no payload.
func checkFlags(level, f byte) error {
	qos := f & flagWillQoS >> 3
	switch {
	case f&flagReserved != 0:
		return malformed("reserved connect flag set [MQTT-3.1.2-3]")
	case f&flagWill == 0 && qos != 0:
		return malformed("will QoS %d without the will flag %s", qos, clause(level, "[MQTT-3.1.2-13]", "[MQTT-3.1.2-11]"))
	case f&flagWill == 0 && f&flagWillRetain != 0:
		return malformed("will retain without the will flag %s", clause(level, "[MQTT-3.1.2-15]", "[MQTT-3.1.2-13]"))
	case qos == 3:
		return malformed("will QoS 3 %s", clause(level, "[MQTT-3.1.2-14]", "[MQTT-3.1.2-12]"))
	case level != Level5 && f&flagPassword != 0 && f&flagUsername == 0:
		// 5.0 dropped this rule so a password can carry a token on its own.
		return malformed("password flag without user name flag [MQTT-3.1.2-22]")
	}
	return nil
}

// utf8Problem returns "" when s is a valid UTF-8 encoded string, else what is wrong with it
// and the clause: it must be well formed, without surrogates ([MQTT-1.5.3-1], 5.0
// [MQTT-1.5.4-1]; utf8.Valid refuses surrogates and overlong forms), and without U+0000
// ([MQTT-1.5.3-2], 5.0 [MQTT-1.5.4-2]). The strings are constants so the check allocates
// nothing until an error is built.
func utf8Problem(level byte, s []byte) string {
	switch {
	case !utf8.Valid(s) && level == Level5:
		return "is not well-formed UTF-8 [MQTT-1.5.4-1]"
	case !utf8.Valid(s):
		return "is not well-formed UTF-8 [MQTT-1.5.3-1]"
	// In valid UTF-8 a zero byte can only be U+0000.
	case bytes.IndexByte(s, 0) >= 0 && level == Level5:
		return "contains U+0000 [MQTT-1.5.4-2]"
	case bytes.IndexByte(s, 0) >= 0:
		return "contains U+0000 [MQTT-1.5.3-2]"
	}
	return ""
}

// validString reports whether s can be written as an MQTT UTF-8 encoded string.
func validString(s string) bool {
	return len(s) <= 0xffff && utf8.ValidString(s) && !containsZero(s)
}

func containsZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// reader walks a packet whose bytes are all present. Every read is checked against what is
// left, so a claimed length can never index past the end or size an allocation.
type reader struct {
	b   []byte
	off int
}

func (r *reader) byte1() (byte, bool) {
	if r.off >= len(r.b) {
		return 0, false
	}
	r.off++
	return r.b[r.off-1], true
}

func (r *reader) uint16() (uint16, bool) {
	if len(r.b)-r.off < 2 {
		return 0, false
	}
	r.off += 2
	return uint16(r.b[r.off-2])<<8 | uint16(r.b[r.off-1]), true
}

// take returns the next n bytes, capped so an append to them cannot write into what follows.
func (r *reader) take(n int) ([]byte, bool) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, false
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s, true
}

// bytes16 reads a two-byte length and that many bytes (binary data, §1.5.6).
func (r *reader) bytes16() ([]byte, bool) {
	n, ok := r.uint16()
	if !ok {
		return nil, false
	}
	return r.take(int(n))
}

// utf8 reads a UTF-8 encoded string (§1.5.4). missing is the clause a truncated field breaks.
func (r *reader) utf8(level byte, what, missing string) ([]byte, error) {
	s, ok := r.bytes16()
	if !ok {
		return nil, malformed("%s runs past the end of the packet %s", what, missing)
	}
	if p := utf8Problem(level, s); p != "" {
		return nil, malformed("%s %s", what, p)
	}
	return s, nil
}

// properties reads a v5 property length and the properties it covers, validates them for
// the place they appear, and returns them without the length prefix.
func (r *reader) properties(what string, where uint8) ([]byte, error) {
	n, vl, err := readVBIIn(r.b[r.off:], what)
	if err != nil {
		return nil, err
	}
	r.off += vl
	p, ok := r.take(n)
	if !ok {
		return nil, malformed("%s length %d runs past the end of the packet", what, n)
	}
	if err := checkProperties(p, what, where); err != nil {
		return nil, err
	}
	return p, nil
}

// AppendEncode appends the CONNECT that c's fields describe, with every length recomputed;
// Raw is ignored. The v5-only fields are written when Level is Level5, and the optional
// payload fields when Flags announce them. For any pkt that ParseConnect accepts,
// AppendEncode(nil) of the result equals pkt byte for byte, because every length in an
// accepted packet is in its only (shortest) form.
//
// Fields must fit their length prefixes (65,535 bytes each, MaxRemainingLength in all);
// AppendEncode does not check, and an oversized field yields a packet that does not parse.
func (c *Connect) AppendEncode(dst []byte) []byte {
	rem := c.remainingLength()
	dst = slices.Grow(dst, 1+vbiLen(rem)+rem)
	dst = append(dst, typeConnect<<4)
	dst = appendVBI(dst, rem)
	dst = appendBytes16(dst, c.ProtocolName)
	dst = append(dst, c.Level, c.Flags, byte(c.KeepAlive>>8), byte(c.KeepAlive))
	if c.Level == Level5 {
		dst = appendVBI(dst, len(c.Properties))
		dst = append(dst, c.Properties...)
	}
	dst = appendBytes16(dst, c.ClientID)
	if c.HasWill() {
		if c.Level == Level5 {
			dst = appendVBI(dst, len(c.WillProperties))
			dst = append(dst, c.WillProperties...)
		}
		dst = appendBytes16(dst, c.WillTopic)
		dst = appendBytes16(dst, c.WillPayload)
	}
	if c.HasUsername() {
		dst = appendBytes16(dst, c.Username)
	}
	if c.HasPassword() {
		dst = appendBytes16(dst, c.Password)
	}
	return dst
}

// remainingLength is the remaining length AppendEncode writes.
func (c *Connect) remainingLength() int {
	n := 2 + len(c.ProtocolName) + 4 + 2 + len(c.ClientID)
	if c.Level == Level5 {
		n += vbiLen(len(c.Properties)) + len(c.Properties)
	}
	if c.HasWill() {
		if c.Level == Level5 {
			n += vbiLen(len(c.WillProperties)) + len(c.WillProperties)
		}
		n += 2 + len(c.WillTopic) + 2 + len(c.WillPayload)
	}
	if c.HasUsername() {
		n += 2 + len(c.Username)
	}
	if c.HasPassword() {
		n += 2 + len(c.Password)
	}
	return n
}

func appendBytes16[T string | []byte](dst []byte, s T) []byte {
	dst = append(dst, byte(len(s)>>8), byte(len(s)))
	return append(dst, s...)
}
