package policy

import (
	"bytes"
	"testing"

	"github.com/mqtls/mqtls/handshake"
)

// Packet fixtures, one field per line with the clause that governs it. Tests copy them
// before changing a byte (see with).

// connect31 is MQTT 3.1: protocol name MQIsdp, clean session, nothing optional.
var connect31 = []byte{
	0x10, 0x12, // fixed header: CONNECT, flags 0 [MQTT-2.2.2-2]; remaining length 18
	0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name "MQIsdp" (3.1 §3.1)
	0x03,       // protocol level 3
	0x02,       // connect flags: clean session
	0x00, 0x3c, // keep alive 60 s
	0x00, 0x04, 'd', 'e', 'v', '1', // client ID "dev1": 1 to 23 bytes in 3.1
}

// connect311 is MQTT 3.1.1 with every optional field.
var connect311 = []byte{
	0x10, 0x34, // fixed header: CONNECT, flags 0 [MQTT-2.2.2-2]; remaining length 52
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT" [MQTT-3.1.2-1]
	0x04,       // protocol level 4 = 3.1.1 [MQTT-3.1.2-2]
	0xee,       // flags: user name, password, will retain, will QoS 1, will, clean session; reserved 0 [MQTT-3.1.2-3]
	0x00, 0x1e, // keep alive 30 s
	0x00, 0x04, 'd', 'e', 'v', '1', // client ID "dev1", first in the payload [MQTT-3.1.3-3]
	0x00, 0x0d, 'd', '/', 'd', 'e', 'v', '1', '/', 's', 't', 'a', 't', 'u', 's', // will topic [MQTT-3.1.2-9]
	0x00, 0x04, 'g', 'o', 'n', 'e', // will message (binary data)
	0x00, 0x05, 'a', 'l', 'i', 'c', 'e', // user name [MQTT-3.1.2-19]
	0x00, 0x06, 's', '3', 'c', 'r', 'e', 't', // password [MQTT-3.1.2-21]
}

// Offsets into connect311 that tests change.
const (
	off311Level = 8
	off311Flags = 9
	off311ID    = 12 // client ID length
)

// connect311Min is MQTT 3.1.1 with nothing optional.
var connect311Min = []byte{
	0x10, 0x10, // fixed header: CONNECT; remaining length 16
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
	0x04,       // protocol level 4 = 3.1.1
	0x02,       // connect flags: clean session
	0x00, 0x3c, // keep alive 60 s
	0x00, 0x04, 'd', 'e', 'v', '1', // client ID "dev1"
}

// connect5 is MQTT 5.0 with properties, a will with will properties, user name and password.
var connect5 = []byte{
	0x10, 0x59, // fixed header: CONNECT, flags 0 [MQTT-2.1.3-1]; remaining length 89
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT" [MQTT-3.1.2-1]
	0x05,       // protocol level 5 = 5.0 [MQTT-3.1.2-2]
	0xd6,       // flags: user name, password, will QoS 2, will, clean start; reserved 0 [MQTT-3.1.2-3]
	0x00, 0x3c, // keep alive 60 s
	0x0f,                         // property length 15 (§3.1.2.11.1)
	0x11, 0x00, 0x00, 0x0e, 0x10, //   session expiry interval 3600 s
	0x21, 0x00, 0x0a, //   receive maximum 10
	0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', //   user property k=v
	0x00, 0x04, 'd', 'e', 'v', '1', // client ID "dev1" [MQTT-3.1.3-3]
	0x14,                         // will property length 20 (§3.1.3.2)
	0x18, 0x00, 0x00, 0x00, 0x05, //   will delay interval 5 s
	0x01, 0x01, //   payload format indicator: UTF-8
	0x03, 0x00, 0x0a, 't', 'e', 'x', 't', '/', 'p', 'l', 'a', 'i', 'n', //   content type
	0x00, 0x0d, 'd', '/', 'd', 'e', 'v', '1', '/', 's', 't', 'a', 't', 'u', 's', // will topic [MQTT-3.1.3-11]
	0x00, 0x04, 'g', 'o', 'n', 'e', // will payload
	0x00, 0x05, 'a', 'l', 'i', 'c', 'e', // user name [MQTT-3.1.2-17]
	0x00, 0x06, 's', '3', 'c', 'r', 'e', 't', // password [MQTT-3.1.2-19]
}

// Offsets into connect5 that tests change.
const (
	off5Flags = 9
	off5Props = 12 // property length
)

// connect5PasswordOnly is MQTT 5.0 with a password and no user name, which 5.0 allows, and
// an empty client ID, which asks the server to assign one [MQTT-3.1.3-6].
var connect5PasswordOnly = []byte{
	0x10, 0x14, // fixed header: CONNECT; remaining length 20
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
	0x05,       // protocol level 5
	0x40,       // flags: password only; clean start 0
	0x00, 0x00, // keep alive off
	0x00,       // property length 0
	0x00, 0x00, // client ID "" [MQTT-3.1.3-6]
	0x00, 0x05, 't', 'o', 'k', 'e', 'n', // password
}

// connect311EmptyID is MQTT 3.1.1 with an empty client ID and clean session 0, which the
// spec refuses with return code 0x02 [MQTT-3.1.3-8] unless a rewrite fills the ID in.
var connect311EmptyID = []byte{
	0x10, 0x0c, // fixed header: CONNECT; remaining length 12
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
	0x04,       // protocol level 4
	0x00,       // flags: none, clean session 0
	0x00, 0x3c, // keep alive 60 s
	0x00, 0x00, // client ID ""
}

// fixtures are the valid packets above, by name.
var fixtures = []struct {
	name string
	pkt  []byte
}{
	{"3.1", connect31},
	{"3.1.1", connect311},
	{"3.1.1 minimal", connect311Min},
	{"3.1.1 empty ID", connect311EmptyID},
	{"5.0", connect5},
	{"5.0 password only", connect5PasswordOnly},
}

// with returns a copy of pkt with the byte at i set to v.
func with(pkt []byte, i int, v byte) []byte {
	c := bytes.Clone(pkt)
	c[i] = v
	return c
}

// Builders for packets the tables would make tedious (long fields, flag matrices). They are
// written independently of AppendEncode so the encoder is checked against something else.

// s16 is a two-byte length and s: a UTF-8 encoded string or binary data (§1.5.4, §1.5.6).
func s16(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// vbi encodes n as a variable byte integer (§1.5.5).
func vbi(n int) []byte {
	var b []byte
	for {
		if n < 128 {
			return append(b, byte(n))
		}
		b = append(b, byte(n%128)|0x80)
		n /= 128
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// packet prefixes body with a CONNECT fixed header.
func packet(body ...[]byte) []byte {
	b := cat(body...)
	return cat([]byte{0x10}, vbi(len(b)), b)
}

// props is a property length followed by the properties.
func props(p ...[]byte) []byte {
	b := cat(p...)
	return cat(vbi(len(b)), b)
}

// header returns the variable header up to and including keep alive 60 s.
func header(level, flags byte) []byte {
	name := "MQTT"
	if level == Level31 {
		name = "MQIsdp"
	}
	return cat(s16(name), []byte{level, flags, 0x00, 0x3c})
}

// userProp is a user property (0x26) key=value.
func userProp(k, v string) []byte { return cat([]byte{0x26}, s16(k), s16(v)) }

func certID(cn string) handshake.Identity {
	return handshake.Identity{Kind: handshake.KindCertificate, CommonName: cn}
}

func pskID(id string) handshake.Identity {
	return handshake.Identity{Kind: handshake.KindPSK, PSKIdentity: id}
}

// bind compiles cfg, parses pkt and binds it for id, failing tb on a bad config or packet.
func bind(tb testing.TB, cfg Config, id handshake.Identity, pkt []byte) (*Policy, Connect, Decision, error) {
	tb.Helper()
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := ParseConnect(pkt)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := p.Bind(id, &c)
	return p, c, d, err
}
