package policy

import (
	"bytes"
	"strings"
	"testing"
)

func TestCodeV3(t *testing.T) {
	tests := []struct {
		code Code
		want byte
	}{
		{0x00, 0x00},
		{CodeUnsupportedVersion, 0x01},  // unacceptable protocol version
		{CodeClientIDNotValid, 0x02},    // identifier rejected
		{CodeServerUnavailable, 0x03},   // server unavailable
		{CodeServerBusy, 0x03},          // server unavailable
		{CodeBadUsernamePassword, 0x04}, // bad user name or password
		{CodeNotAuthorized, 0x05},       // not authorized
		{CodeUnspecified, 0x03},         // no 3.x equivalent: server unavailable
		{CodeMalformed, 0x03},
		{CodeProtocolError, 0x03},
		{CodePacketTooLarge, 0x03},
	}
	for _, tt := range tests {
		if got := tt.code.V3(); got != tt.want {
			t.Errorf("Code(%#x).V3() = %#x, want %#x", byte(tt.code), got, tt.want)
		}
	}
	if got := CodeNotAuthorized.String(); got != "not authorized" {
		t.Errorf("String() = %q", got)
	}
	if got := Code(0x9f).String(); got != "reason code 0x9f" {
		t.Errorf("String() = %q", got)
	}
}

func TestAppendConnack(t *testing.T) {
	tests := []struct {
		name   string
		level  byte
		code   Code
		reason string
		want   []byte
	}{
		{"3.1.1 not authorized", Level311, CodeNotAuthorized, "no_identity", []byte{
			0x20, 0x02, // CONNACK, remaining length 2 (3.1.1 §3.2.1)
			0x00, // acknowledge flags: session present 0 [MQTT-3.2.2-4]
			0x05, // return code 5: not authorized (§3.2.2.3)
		}},
		{"3.1.1 identifier rejected", Level311, CodeClientIDNotValid, "client_id_mismatch", []byte{0x20, 0x02, 0x00, 0x02}},
		{"3.1.1 unsupported version", Level311, CodeUnsupportedVersion, "", []byte{0x20, 0x02, 0x00, 0x01}},
		{"3.1.1 server unavailable", Level311, CodeServerUnavailable, "", []byte{0x20, 0x02, 0x00, 0x03}},
		{"3.1.1 bad credentials", Level311, CodeBadUsernamePassword, "", []byte{0x20, 0x02, 0x00, 0x04}},
		{"3.1 identifier rejected", Level31, CodeClientIDNotValid, "x", []byte{
			0x20, 0x02, // CONNACK, remaining length 2
			0x00, // reserved (3.1: topic name compression response, unused)
			0x02, // return code 2: identifier rejected
		}},
		{"unknown level 6", 6, CodeUnsupportedVersion, "unsupported_protocol_version", []byte{0x20, 0x02, 0x00, 0x01}},
		{"5.0 with reason string", Level5, CodeClientIDNotValid, "client_id_mismatch", cat([]byte{
			0x20, 0x18, // CONNACK, remaining length 24 (5.0 §3.2.1)
			0x00,       // acknowledge flags: session present 0
			0x85,       // reason code: client identifier not valid (§3.2.2.2)
			0x15,       // property length 21
			0x1f,       // reason string (§3.2.2.3.9)
			0x00, 0x12, // string length 18
		}, []byte("client_id_mismatch"))},
		{"5.0 without reason", Level5, CodeNotAuthorized, "", []byte{
			0x20, 0x03, // CONNACK, remaining length 3
			0x00, // acknowledge flags
			0x87, // not authorized
			0x00, // property length 0
		}},
		{"5.0 invalid reason dropped", Level5, CodeServerBusy, "bad\xff", []byte{0x20, 0x03, 0x00, 0x89, 0x00}},
		{"5.0 reason with U+0000 dropped", Level5, CodeServerUnavailable, "a\x00", []byte{0x20, 0x03, 0x00, 0x88, 0x00}},
		{"5.0 packet too large", Level5, CodePacketTooLarge, "", []byte{0x20, 0x03, 0x00, 0x95, 0x00}},
		{"5.0 malformed", Level5, CodeMalformed, "", []byte{0x20, 0x03, 0x00, 0x81, 0x00}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendConnack([]byte{0xaa}, tt.level, tt.code, tt.reason)
			if !bytes.Equal(got, cat([]byte{0xaa}, tt.want)) {
				t.Errorf("got  % x\nwant % x", got[1:], tt.want)
			}
		})
	}
}

func TestAppendConnackLongReason(t *testing.T) {
	reason := strings.Repeat("r", 200)
	got := AppendConnack(nil, Level5, CodeNotAuthorized, reason)
	// remaining = flags 1 + code 1 + property length 2 (203) + 1 + 2 + 200 = 207.
	want := cat([]byte{0x20, 0xcf, 0x01, 0x00, 0x87, 0xcb, 0x01, 0x1f, 0x00, 0xc8}, []byte(reason))
	if !bytes.Equal(got, want) {
		t.Errorf("got % x", got[:12])
	}
	first, rem, hl, err := ParseFixedHeader(got)
	if err != nil || first != 0x20 || hl+rem != len(got) {
		t.Errorf("fixed header (%#x, %d, %d, %v) does not frame the %d bytes", first, rem, hl, err, len(got))
	}
}

// TestConnectAppendConnack checks that the Reason String is left out when it would break the
// client's Maximum Packet Size [MQTT-3.2.2-19].
func TestConnectAppendConnack(t *testing.T) {
	const reason = "no_identity" // CONNACK with it: 2 + 2 + 1 + 3 + 11 = 19 bytes
	withReason := AppendConnack(nil, Level5, CodeNotAuthorized, reason)
	without := AppendConnack(nil, Level5, CodeNotAuthorized, "")
	if len(withReason) != 19 {
		t.Fatalf("CONNACK with reason is %d bytes, test assumes 19", len(withReason))
	}
	for _, tt := range []struct {
		max  byte // 0: no Maximum Packet Size property
		want []byte
	}{{0, withReason}, {19, withReason}, {18, without}, {5, without}} {
		var p []byte
		if tt.max != 0 {
			p = []byte{0x27, 0, 0, 0, tt.max}
		}
		c, err := ParseConnect(packet(header(Level5, 0x02), props(p), s16("a")))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.AppendConnack([]byte{0xaa}, CodeNotAuthorized, reason); !bytes.Equal(got, cat([]byte{0xaa}, tt.want)) {
			t.Errorf("max %d: got % x, want % x", tt.max, got[1:], tt.want)
		}
	}
	c, _ := ParseConnect(connect311)
	if got := c.AppendConnack(nil, CodeNotAuthorized, reason); !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x05}) {
		t.Errorf("3.1.1: got % x", got)
	}
}
