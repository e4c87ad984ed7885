package policy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func contains(err error, s string) bool { return err != nil && strings.Contains(err.Error(), s) }

func TestParseConnectFields(t *testing.T) {
	tests := []struct {
		name string
		pkt  []byte
		want Connect
	}{
		{"3.1", connect31, Connect{
			ProtocolName: []byte("MQIsdp"), Level: Level31, Flags: 0x02, KeepAlive: 60,
			ClientID: []byte("dev1"),
		}},
		{"3.1.1", connect311, Connect{
			ProtocolName: []byte("MQTT"), Level: Level311, Flags: 0xee, KeepAlive: 30,
			ClientID: []byte("dev1"), WillTopic: []byte("d/dev1/status"), WillPayload: []byte("gone"),
			Username: []byte("alice"), Password: []byte("s3cret"),
		}},
		{"3.1.1 empty ID", connect311EmptyID, Connect{
			ProtocolName: []byte("MQTT"), Level: Level311, Flags: 0x00, KeepAlive: 60, ClientID: []byte{},
		}},
		{"5.0", connect5, Connect{
			ProtocolName: []byte("MQTT"), Level: Level5, Flags: 0xd6, KeepAlive: 60,
			Properties:     connect5[13:28],
			ClientID:       []byte("dev1"),
			WillProperties: connect5[35:55],
			WillTopic:      []byte("d/dev1/status"), WillPayload: []byte("gone"),
			Username: []byte("alice"), Password: []byte("s3cret"),
		}},
		{"5.0 password only", connect5PasswordOnly, Connect{
			ProtocolName: []byte("MQTT"), Level: Level5, Flags: 0x40, KeepAlive: 0,
			Properties: []byte{}, ClientID: []byte{}, Password: []byte("token"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConnect(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Raw = tt.pkt
			if diff := diffConnect(c, tt.want); diff != "" {
				t.Error(diff)
			}
			if got := c.AppendEncode(nil); !bytes.Equal(got, tt.pkt) {
				t.Errorf("AppendEncode:\n got % x\nwant % x", got, tt.pkt)
			}
		})
	}
}

func TestConnectFlagAccessors(t *testing.T) {
	c, err := ParseConnect(connect311) // flags 0xee
	if err != nil {
		t.Fatal(err)
	}
	if !c.CleanStart() || !c.HasWill() || c.WillQoS() != 1 || !c.WillRetain() || !c.HasUsername() || !c.HasPassword() {
		t.Errorf("flags 0xee read as clean=%v will=%v qos=%d retain=%v user=%v pass=%v",
			c.CleanStart(), c.HasWill(), c.WillQoS(), c.WillRetain(), c.HasUsername(), c.HasPassword())
	}
	c, err = ParseConnect(connect5PasswordOnly) // flags 0x40
	if err != nil {
		t.Fatal(err)
	}
	if c.CleanStart() || c.HasWill() || c.WillQoS() != 0 || c.WillRetain() || c.HasUsername() || !c.HasPassword() {
		t.Errorf("flags 0x40 misread")
	}
}

// diffConnect compares every field but ignores nil versus empty where the packet has no such
// field, since callers only look at fields the flags announce.
func diffConnect(got, want Connect) string {
	var b strings.Builder
	eq := func(name string, g, w []byte) {
		if !bytes.Equal(g, w) {
			fmt.Fprintf(&b, "%s = %q, want %q\n", name, g, w)
		}
	}
	eq("Raw", got.Raw, want.Raw)
	eq("ProtocolName", got.ProtocolName, want.ProtocolName)
	eq("Properties", got.Properties, want.Properties)
	eq("ClientID", got.ClientID, want.ClientID)
	eq("WillProperties", got.WillProperties, want.WillProperties)
	eq("WillTopic", got.WillTopic, want.WillTopic)
	eq("WillPayload", got.WillPayload, want.WillPayload)
	eq("Username", got.Username, want.Username)
	eq("Password", got.Password, want.Password)
	if got.Level != want.Level || got.Flags != want.Flags || got.KeepAlive != want.KeepAlive {
		fmt.Fprintf(&b, "level/flags/keepalive = %d/%#x/%d, want %d/%#x/%d\n",
			got.Level, got.Flags, got.KeepAlive, want.Level, want.Flags, want.KeepAlive)
	}
	return b.String()
}

// TestParseConnectAliases checks that fields are views of Raw capped at their own length,
// so appending to one cannot overwrite the packet.
func TestParseConnectAliases(t *testing.T) {
	pkt := bytes.Clone(connect5)
	c, err := ParseConnect(pkt)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string][]byte{
		"ProtocolName": c.ProtocolName, "Properties": c.Properties, "ClientID": c.ClientID,
		"WillProperties": c.WillProperties, "WillTopic": c.WillTopic, "WillPayload": c.WillPayload,
		"Username": c.Username, "Password": c.Password,
	} {
		if cap(f) != len(f) {
			t.Errorf("%s: cap %d, len %d: an append would write into Raw", name, cap(f), len(f))
		}
		if len(f) > 0 && !inside(f, pkt) {
			t.Errorf("%s does not alias the packet", name)
		}
	}
	_ = append(c.ClientID, 'X')
	if !bytes.Equal(pkt, connect5) {
		t.Error("appending to ClientID changed the packet")
	}
}

func inside(f, pkt []byte) bool {
	for i := range pkt {
		if &pkt[i] == &f[0] {
			return true
		}
	}
	return false
}

func TestParseConnectAllocs(t *testing.T) {
	for _, f := range fixtures {
		if n := testing.AllocsPerRun(100, func() { ParseConnect(f.pkt) }); n != 0 {
			t.Errorf("%s: ParseConnect allocates %v times", f.name, n)
		}
		c, _ := ParseConnect(f.pkt)
		buf := make([]byte, 0, 256)
		if n := testing.AllocsPerRun(100, func() { c.AppendEncode(buf[:0]) }); n != 0 {
			t.Errorf("%s: AppendEncode into a big enough buffer allocates %v times", f.name, n)
		}
	}
}

// TestParseConnectFlagMatrix runs every connect flags byte at every level, with the payload
// fields that byte announces, against an oracle written from the spec's flag rules.
func TestParseConnectFlagMatrix(t *testing.T) {
	for _, level := range []byte{Level31, Level311, Level5} {
		for f := 0; f < 256; f++ {
			flags := byte(f)
			pkt := matrixPacket(level, flags)
			will, qos, retain := flags&0x04 != 0, flags>>3&3, flags&0x20 != 0
			user, pass := flags&0x80 != 0, flags&0x40 != 0
			var clause string
			switch {
			case flags&0x01 != 0:
				clause = "[MQTT-3.1.2-3]"
			case !will && qos != 0:
				clause = clause3or5(level, "[MQTT-3.1.2-13]", "[MQTT-3.1.2-11]")
			case !will && retain:
				clause = clause3or5(level, "[MQTT-3.1.2-15]", "[MQTT-3.1.2-13]")
			case qos == 3:
				clause = clause3or5(level, "[MQTT-3.1.2-14]", "[MQTT-3.1.2-12]")
			case level != Level5 && pass && !user:
				clause = "[MQTT-3.1.2-22]"
			}
			c, err := ParseConnect(pkt)
			if clause != "" {
				if !errors.Is(err, ErrMalformed) || !contains(err, clause) {
					t.Errorf("level %d flags %#02x: err = %v, want ErrMalformed with %s", level, flags, err, clause)
				}
				continue
			}
			if err != nil {
				t.Errorf("level %d flags %#02x: %v", level, flags, err)
				continue
			}
			if c.HasWill() != will || c.WillQoS() != qos || c.WillRetain() != retain ||
				c.HasUsername() != user || c.HasPassword() != pass || c.CleanStart() != (flags&2 != 0) {
				t.Errorf("level %d flags %#02x: accessors disagree with the flags", level, flags)
			}
			if will && string(c.WillTopic) != "w/t" || user && string(c.Username) != "u" || pass && string(c.Password) != "p" {
				t.Errorf("level %d flags %#02x: payload fields misread: %+v", level, flags, c)
			}
			if got := c.AppendEncode(nil); !bytes.Equal(got, pkt) {
				t.Errorf("level %d flags %#02x: AppendEncode = % x, want % x", level, flags, got, pkt)
			}
		}
	}
}

func clause3or5(level byte, v3, v5 string) string {
	if level == Level5 {
		return v5
	}
	return v3
}

// matrixPacket is a CONNECT at level with flags and every payload field they announce.
func matrixPacket(level, flags byte) []byte {
	body := [][]byte{header(level, flags)}
	if level == Level5 {
		body = append(body, props(userProp("k", "v")))
	}
	body = append(body, s16("dev1"))
	if flags&0x04 != 0 {
		if level == Level5 {
			body = append(body, props([]byte{0x18, 0, 0, 0, 9}))
		}
		body = append(body, s16("w/t"), s16("bye"))
	}
	if flags&0x80 != 0 {
		body = append(body, s16("u"))
	}
	if flags&0x40 != 0 {
		body = append(body, s16("p"))
	}
	return packet(body...)
}

func TestParseConnectErrors(t *testing.T) {
	long := strings.Repeat("x", 200) // pushes the remaining length to two bytes
	tests := []struct {
		name   string
		pkt    []byte
		err    error
		clause string // must appear in the message
	}{
		// Framing.
		{"empty", nil, ErrIncomplete, ""},
		{"type only", []byte{0x10}, ErrIncomplete, ""},
		{"truncated body", connect311[:20], ErrIncomplete, "have 20 of 54 bytes"},
		{"PUBLISH first", []byte{0x30, 0x00}, ErrNotConnect, "packet type 3"},
		{"PINGREQ first", []byte{0xc0}, ErrNotConnect, "packet type 12"},
		{"type 0", []byte{0x00, 0x00}, ErrNotConnect, "packet type 0"},
		{"fixed header flags", with(connect311, 0, 0x12), ErrMalformed, "[MQTT-2.2.2-2]"},
		{"fixed header flags 0xf", with(connect311, 0, 0x1f), ErrMalformed, "[MQTT-2.2.2-2]"},
		{"remaining length not shortest", cat([]byte{0x10, 0x90, 0x00}, connect311Min[2:]), ErrMalformed, "[MQTT-1.5.5-1]"},
		{"remaining length 5 bytes", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrMalformed, "longer than 4 bytes"},
		{"bytes after the packet", cat(connect311Min, []byte{0x00}), ErrMalformed, "1 bytes after the 18-byte packet"},
		{"remaining length 0", []byte{0x10, 0x00}, ErrMalformed, "protocol name runs past"},

		// Variable header.
		{"protocol name cut", packet([]byte{0x00, 0x04, 'M', 'Q'}), ErrMalformed, "protocol name runs past"},
		{"level missing", packet(s16("MQTT")), ErrMalformed, "protocol level missing"},
		{"flags missing", packet(s16("MQTT"), []byte{4}), ErrMalformed, "connect flags missing"},
		{"keep alive cut", packet(s16("MQTT"), []byte{4, 2, 0}), ErrMalformed, "keep alive missing"},
		{"protocol name MQTX", packet(s16("MQTX"), []byte{4, 2, 0, 60}, s16("a")), ErrMalformed, "[MQTT-3.1.2-1]"},
		{"protocol name lower case", packet(s16("mqtt"), []byte{4, 2, 0, 60}, s16("a")), ErrMalformed, "[MQTT-3.1.2-1]"},
		{"protocol name empty", packet(s16(""), []byte{4, 2, 0, 60}, s16("a")), ErrMalformed, "[MQTT-3.1.2-1]"},
		{"HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), ErrNotConnect, "packet type 4"},
		{"MQIsdp level 4", packet(s16("MQIsdp"), []byte{4, 2, 0, 60}, s16("a")), ErrMalformed, "protocol name MQIsdp with level 4 [MQTT-3.1.2-1]"},
		{"MQIsdp level 5", packet(s16("MQIsdp"), []byte{5, 2, 0, 60, 0}, s16("a")), ErrMalformed, "[MQTT-3.1.2-1]"},
		{"MQTT level 3", packet(s16("MQTT"), []byte{3, 2, 0, 60}, s16("a")), ErrMalformed, "protocol name MQTT with level 3 [MQTT-3.1.2-1]"},

		// Connect flags (§3.1.2.3), one per level numbering.
		{"3.1.1 reserved flag", with(connect311, off311Flags, 0xef), ErrMalformed, "[MQTT-3.1.2-3]"},
		{"5.0 reserved flag", with(connect5, off5Flags, 0xd7), ErrMalformed, "[MQTT-3.1.2-3]"},
		{"3.1 reserved flag", with(connect31, 11, 0x03), ErrMalformed, "[MQTT-3.1.2-3]"},
		{"3.1.1 will QoS without will", with(connect311Min, off311Flags, 0x0a), ErrMalformed, "[MQTT-3.1.2-13]"},
		{"3.1.1 will retain without will", with(connect311Min, off311Flags, 0x22), ErrMalformed, "[MQTT-3.1.2-15]"},
		{"3.1.1 will QoS 3", with(connect311, off311Flags, 0xfe), ErrMalformed, "[MQTT-3.1.2-14]"},
		{"5.0 will QoS without will", with(connect5, off5Flags, 0xd2), ErrMalformed, "[MQTT-3.1.2-11]"},
		{"5.0 will retain without will", with(connect5, off5Flags, 0xe2), ErrMalformed, "[MQTT-3.1.2-13]"},
		{"5.0 will QoS 3", with(connect5, off5Flags, 0xde), ErrMalformed, "[MQTT-3.1.2-12]"},
		{"3.1.1 password without user name", packet(header(Level311, 0x42), s16("a"), s16("p")), ErrMalformed, "[MQTT-3.1.2-22]"},
		{"3.1 password without user name", packet(header(Level31, 0x42), s16("a"), s16("p")), ErrMalformed, "[MQTT-3.1.2-22]"},

		// Payload fields missing, cut, or not announced.
		{"client ID missing", packet(header(Level311, 0x02)), ErrMalformed, "client ID runs past the end of the packet [MQTT-3.1.3-3]"},
		{"client ID cut", packet(header(Level311, 0x02), []byte{0x00, 0xff, 'a'}), ErrMalformed, "[MQTT-3.1.3-3]"},
		{"3.1.1 will missing", packet(header(Level311, 0x06), s16("a")), ErrMalformed, "will topic runs past the end of the packet [MQTT-3.1.2-9]"},
		{"3.1.1 will payload missing", packet(header(Level311, 0x06), s16("a"), s16("t")), ErrMalformed, "will payload runs past the end of the packet [MQTT-3.1.2-9]"},
		{"5.0 will properties missing", packet(header(Level5, 0x06), props(), s16("a")), ErrMalformed, "will properties length runs past"},
		{"3.1.1 user name missing", packet(header(Level311, 0x82), s16("a")), ErrMalformed, "[MQTT-3.1.2-19]"},
		{"5.0 user name missing", packet(header(Level5, 0x82), props(), s16("a")), ErrMalformed, "[MQTT-3.1.2-17]"},
		{"3.1.1 password missing", packet(header(Level311, 0xc2), s16("a"), s16("u")), ErrMalformed, "[MQTT-3.1.2-21]"},
		{"5.0 password missing", packet(header(Level5, 0x42), props(), s16("a")), ErrMalformed, "[MQTT-3.1.2-19]"},
		{"3.1.1 user name without flag", packet(header(Level311, 0x02), s16("a"), s16("u")), ErrMalformed, "[MQTT-3.1.2-18]"},
		{"5.0 user name without flag", packet(header(Level5, 0x02), props(), s16("a"), s16("u")), ErrMalformed, "[MQTT-3.1.2-16]"},
		{"3.1.1 stray byte", packet(header(Level311, 0x02), s16("a"), []byte{0}), ErrMalformed, "1 bytes after the last field"},
		{"long packet cut", packet(header(Level311, 0x02), []byte{0x00, 0xff}, []byte(long)), ErrMalformed, "[MQTT-3.1.3-3]"},

		// UTF-8 encoded strings (3.1.1 §1.5.3, 5.0 §1.5.4).
		{"3.1.1 client ID invalid UTF-8", packet(header(Level311, 0x02), s16("a\xffb")), ErrMalformed, "client ID is not well-formed UTF-8 [MQTT-1.5.3-1]"},
		{"3.1.1 client ID surrogate", packet(header(Level311, 0x02), s16("\xed\xa0\x80")), ErrMalformed, "[MQTT-1.5.3-1]"},
		{"3.1.1 client ID overlong", packet(header(Level311, 0x02), s16("\xc0\xaf")), ErrMalformed, "[MQTT-1.5.3-1]"},
		{"3.1.1 client ID U+0000", packet(header(Level311, 0x02), s16("a\x00")), ErrMalformed, "client ID contains U+0000 [MQTT-1.5.3-2]"},
		{"3.1 client ID U+0000", packet(header(Level31, 0x02), s16("a\x00")), ErrMalformed, "[MQTT-1.5.3-2]"},
		{"5.0 client ID invalid UTF-8", packet(header(Level5, 0x02), props(), s16("\xff")), ErrMalformed, "[MQTT-1.5.4-1]"},
		{"5.0 client ID U+0000", packet(header(Level5, 0x02), props(), s16("\x00")), ErrMalformed, "[MQTT-1.5.4-2]"},
		{"3.1.1 will topic invalid", packet(header(Level311, 0x06), s16("a"), s16("\xfe"), s16("")), ErrMalformed, "will topic is not well-formed UTF-8"},
		{"3.1.1 user name U+0000", packet(header(Level311, 0x82), s16("a"), s16("u\x00")), ErrMalformed, "user name contains U+0000"},
		{"5.0 user name surrogate", packet(header(Level5, 0x82), props(), s16("a"), s16("\xed\xbf\xbf")), ErrMalformed, "[MQTT-1.5.4-1]"},

		// MQTT 5 properties (§2.2.2, §3.1.2.11, §3.1.3.2).
		{"property length not shortest", packet(header(Level5, 0x02), []byte{0x80, 0x00}, s16("a")), ErrMalformed, "CONNECT properties length not in its shortest form [MQTT-1.5.5-1]"},
		{"property length 5 bytes", packet(header(Level5, 0x02), []byte{0x80, 0x80, 0x80, 0x80, 0x01}), ErrMalformed, "longer than 4 bytes"},
		{"property length cut", packet(header(Level5, 0x02), []byte{0x80}), ErrMalformed, "CONNECT properties length runs past"},
		{"property length past packet", packet(header(Level5, 0x02), []byte{0x10}, s16("a")), ErrMalformed, "CONNECT properties length 16 runs past"},
		{"property length missing", packet(header(Level5, 0x02)), ErrMalformed, "CONNECT properties length runs past"},
		{"unknown property", packet(header(Level5, 0x02), props([]byte{0x7f, 0}), s16("a")), ErrMalformed, "property 0x7f not allowed here (§2.2.2.2)"},
		{"two-byte identifier", packet(header(Level5, 0x02), props([]byte{0x80, 0x01, 0}), s16("a")), ErrMalformed, "property 0x80 not allowed"},
		{"reason string in CONNECT", packet(header(Level5, 0x02), props(cat([]byte{0x1f}, s16("x"))), s16("a")), ErrMalformed, "property 0x1f not allowed"},
		{"will property in CONNECT", packet(header(Level5, 0x02), props([]byte{0x18, 0, 0, 0, 1}), s16("a")), ErrMalformed, "CONNECT properties: property 0x18 not allowed"},
		{"CONNECT property in will", packet(header(Level5, 0x06), props(), s16("a"), props([]byte{0x11, 0, 0, 0, 1}), s16("t"), s16("")), ErrMalformed, "will properties: property 0x11 not allowed"},
		{"session expiry twice", packet(header(Level5, 0x02), props([]byte{0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1}), s16("a")), ErrMalformed, "session expiry interval more than once"},
		{"will delay twice", packet(header(Level5, 0x06), props(), s16("a"), props([]byte{0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 2}), s16("t"), s16("")), ErrMalformed, "will properties: will delay interval more than once"},
		{"auth method twice", packet(header(Level5, 0x02), props(cat([]byte{0x15}, s16("a"), []byte{0x15}, s16("b"))), s16("a")), ErrMalformed, "authentication method more than once"},
		{"receive maximum 0", packet(header(Level5, 0x02), props([]byte{0x21, 0, 0}), s16("a")), ErrMalformed, "receive maximum is 0"},
		{"maximum packet size 0", packet(header(Level5, 0x02), props([]byte{0x27, 0, 0, 0, 0}), s16("a")), ErrMalformed, "maximum packet size is 0"},
		{"request problem information 2", packet(header(Level5, 0x02), props([]byte{0x17, 2}), s16("a")), ErrMalformed, "request problem information is 2, want 0 or 1"},
		{"request response information 2", packet(header(Level5, 0x02), props([]byte{0x19, 2}), s16("a")), ErrMalformed, "request response information is 2"},
		{"auth data without method", packet(header(Level5, 0x02), props(cat([]byte{0x16}, s16("x"))), s16("a")), ErrMalformed, "authentication data without authentication method"},
		{"uint32 property cut", packet(header(Level5, 0x02), props([]byte{0x11, 0, 0}), s16("a")), ErrMalformed, "session expiry interval runs past the property length"},
		{"uint16 property cut", packet(header(Level5, 0x02), props([]byte{0x21, 0}), s16("a")), ErrMalformed, "receive maximum runs past"},
		{"byte property cut", packet(header(Level5, 0x02), props([]byte{0x17}), s16("a")), ErrMalformed, "request problem information runs past"},
		{"binary property cut", packet(header(Level5, 0x02), props(cat([]byte{0x15}, s16("m"), []byte{0x16, 0, 5, 1})), s16("a")), ErrMalformed, "authentication data runs past"},
		{"string property cut", packet(header(Level5, 0x02), props([]byte{0x15, 0, 9, 'a'}), s16("a")), ErrMalformed, "authentication method runs past"},
		{"string property invalid", packet(header(Level5, 0x02), props(cat([]byte{0x15}, s16("\xff"))), s16("a")), ErrMalformed, "authentication method is not well-formed UTF-8 [MQTT-1.5.4-1]"},
		{"user property name U+0000", packet(header(Level5, 0x02), props(userProp("a\x00", "v")), s16("a")), ErrMalformed, "user property name contains U+0000 [MQTT-1.5.4-2]"},
		{"user property value invalid", packet(header(Level5, 0x02), props(userProp("k", "\xed\xa0\x80")), s16("a")), ErrMalformed, "user property value is not well-formed UTF-8"},
		{"user property value cut", packet(header(Level5, 0x02), props(cat([]byte{0x26}, s16("k"), []byte{0, 4})), s16("a")), ErrMalformed, "user property value runs past"},
		{"content type invalid", packet(header(Level5, 0x06), props(), s16("a"), props(cat([]byte{0x03}, s16("\xff"))), s16("t"), s16("")), ErrMalformed, "will properties: content type is not well-formed"},
		{"will property length past packet", packet(header(Level5, 0x06), props(), s16("a"), []byte{0x7f}), ErrMalformed, "will properties length 127 runs past"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConnect(tt.pkt)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if !contains(err, tt.clause) {
				t.Errorf("err = %v, want it to contain %q", err, tt.clause)
			}
			var r *Reject
			if errors.As(err, &r) {
				t.Errorf("a malformed packet got a *Reject: %v", r)
			}
		})
	}
}

// TestParseConnectReject covers well-formed CONNECTs that get a CONNACK refusal.
func TestParseConnectReject(t *testing.T) {
	tests := []struct {
		name  string
		pkt   []byte
		level byte
	}{
		{"MQTT level 6", packet(header(6, 0x02), s16("a")), 6},
		{"MQTT level 0", packet(header(0, 0x02), s16("a")), 0},
		{"MQTT level 0x84 (bridge bit)", packet(header(0x84, 0x02), s16("a")), 0x84},
		{"MQIsdp level 2", packet(s16("MQIsdp"), []byte{2, 2, 0, 60}, s16("a")), 2},
		{"level only", packet(s16("MQTT"), []byte{9}), 9}, // refused before the rest is read
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConnect(tt.pkt)
			var r *Reject
			if !errors.As(err, &r) {
				t.Fatalf("err = %v, want *Reject", err)
			}
			if r.Code != CodeUnsupportedVersion || r.Reason != ReasonUnsupportedVersion {
				t.Errorf("reject = %#x %s, want 0x84 %s", byte(r.Code), r.Reason, ReasonUnsupportedVersion)
			}
			if !contains(err, "[MQTT-3.1.2-2]") {
				t.Errorf("err = %v, want the clause", err)
			}
			if c.Level != tt.level {
				t.Errorf("Level = %d, want %d so the CONNACK can use it", c.Level, tt.level)
			}
			// Unknown levels are answered in the 3.x form with return code 0x01.
			if got := c.AppendConnack(nil, r.Code, r.Reason); !bytes.Equal(got, []byte{0x20, 0x02, 0x00, 0x01}) {
				t.Errorf("CONNACK = % x", got)
			}
		})
	}
}

// TestPropertiesKeptByteExact checks that property bytes reach the encoder untouched,
// including every property type, repeated user properties, and order.
func TestPropertiesKeptByteExact(t *testing.T) {
	connectProps := cat(
		[]byte{0x11, 0xff, 0xff, 0xff, 0xff},                       // session expiry interval: never
		[]byte{0x21, 0xff, 0xff},                                   // receive maximum 65535
		[]byte{0x27, 0x00, 0x00, 0x10, 0x00},                       // maximum packet size 4096
		[]byte{0x22, 0x00, 0x00},                                   // topic alias maximum 0 (allowed)
		[]byte{0x19, 0x01},                                         // request response information
		[]byte{0x17, 0x00},                                         // request problem information
		userProp("z", "1"), userProp("a", "2"), userProp("z", "3"), // repeats keep their order
		[]byte{0x15}, s16("SCRAM-SHA-1"), // authentication method
		[]byte{0x16}, s16("\x00\x01\xff"), // authentication data: binary, zero bytes allowed
	)
	willProps := cat(
		[]byte{0x01, 0x00},                   // payload format indicator: bytes
		[]byte{0x02, 0x00, 0x00, 0x00, 0x3c}, // message expiry interval
		[]byte{0x08}, s16("r/t"),             // response topic
		[]byte{0x09}, s16("\xff\x00"), // correlation data
		userProp("", ""), // empty strings are valid
	)
	pkt := packet(header(Level5, 0x0e), props(connectProps), s16("dev1"), props(willProps), s16("w"), s16(strings.Repeat("p", 300)))
	c, err := ParseConnect(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Properties, connectProps) || !bytes.Equal(c.WillProperties, willProps) {
		t.Errorf("properties changed:\n got % x\nwant % x\n got % x\nwant % x", c.Properties, connectProps, c.WillProperties, willProps)
	}
	if got := c.AppendEncode(nil); !bytes.Equal(got, pkt) {
		t.Errorf("AppendEncode differs")
	}
	if got := maxPacketSize(c.Properties); got != 4096 {
		t.Errorf("maxPacketSize = %d, want 4096", got)
	}
}

// TestAppendEncodeFromFields builds a CONNECT from fields (no Raw) and checks the bytes.
func TestAppendEncodeFromFields(t *testing.T) {
	c := Connect{
		ProtocolName: []byte("MQTT"), Level: Level311, Flags: 0x02, KeepAlive: 60,
		ClientID: []byte("dev1"),
	}
	if got := c.AppendEncode([]byte{0xaa}); !bytes.Equal(got, cat([]byte{0xaa}, connect311Min)) {
		t.Errorf("got % x", got)
	}
	// Fields the flags do not announce are not written.
	c.Username = []byte("ignored")
	if got := c.AppendEncode(nil); !bytes.Equal(got, connect311Min) {
		t.Errorf("unannounced user name written: % x", got)
	}
	// A long field takes the remaining length to two bytes.
	c.ClientID = []byte(strings.Repeat("d", 200))
	want := packet(header(Level311, 0x02), s16(string(c.ClientID)))
	if got := c.AppendEncode(nil); !bytes.Equal(got, want) || !bytes.Equal(got[:3], []byte{0x10, 0xd4, 0x01}) {
		t.Errorf("got % x, want % x (remaining length 212 = d4 01)", got, want)
	}
}
