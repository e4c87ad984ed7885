package main

// End-to-end: attacks on the identity binding, each against a real Mosquitto whose ACLs
// use %c or %u the way a deployment does (SECURITY.md describes what each one shows):
// a second CONNECT on a bound session, a CONNECT cut into one-byte TLS records, client IDs
// that are not MQTT strings or are as long as a string can be, another device's identity
// sent as user name, MQTT 5 enhanced authentication, a will aimed at another device's
// topics, and MQTT 3.1's 23-byte client ID limit.

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// handConnect is a CONNECT built by hand, so that it can carry what no client library
// sends: NUL bytes, invalid UTF-8, a will on any topic, MQTT 5 properties of any kind.
// Strings are written as raw bytes with their two-byte length.
type handConnect struct {
	level    byte   // 3 (MQTT 3.1), 4 (3.1.1) or 5 (5.0)
	clientID string // raw bytes
	props    []byte // MQTT 5 CONNECT properties, without their length
	will     *handWill
	username *string
	password *string
}

// handWill is the will of a handConnect: published by the broker when the connection ends
// without a DISCONNECT.
type handWill struct {
	topic, payload string
}

// bytes encodes the CONNECT (3.1.1 §3.1, 5.0 §3.1).
func (c handConnect) bytes() []byte {
	name := "MQTT"
	if c.level == 3 {
		name = "MQIsdp"
	}
	flags := byte(0x02) // clean session
	if c.will != nil {
		flags |= 0x04 // will flag, QoS 0, not retained
	}
	if c.password != nil {
		flags |= 0x40
	}
	if c.username != nil {
		flags |= 0x80
	}
	var body []byte
	body = appendString(body, name)
	body = append(body, c.level, flags, 0x00, 0x3c) // level, flags, keep alive 60 s
	if c.level == 5 {
		body = appendHandVBI(body, len(c.props))
		body = append(body, c.props...)
	}
	body = appendString(body, c.clientID)
	if c.will != nil {
		if c.level == 5 {
			body = append(body, 0x00) // will properties: none
		}
		body = appendString(body, c.will.topic)
		body = appendString(body, c.will.payload)
	}
	if c.username != nil {
		body = appendString(body, *c.username)
	}
	if c.password != nil {
		body = appendString(body, *c.password)
	}
	return appendPacket(nil, 0x10, body)
}

// appendHandVBI appends a variable byte integer (5.0 §1.5.5).
func appendHandVBI(b []byte, n int) []byte {
	for {
		digit := byte(n % 128)
		n /= 128
		if n > 0 {
			digit |= 0x80
		}
		b = append(b, digit)
		if n == 0 {
			return b
		}
	}
}

// mosquittoProto is how Mosquitto's connection log names a protocol level: "p1" for
// MQTT 3.1, "p2" for 3.1.1, "p5" for 5.0.
func mosquittoProto(level byte) string {
	switch level {
	case 3:
		return "p1"
	case 4:
		return "p2"
	}
	return "p5"
}

// strPtr returns a pointer to s, for handConnect's optional fields.
func strPtr(s string) *string { return &s }

// handPublish is a QoS 0 PUBLISH of payload to topic for protocol level 4 (3.1.1) or 5
// (5.0, with an empty property length) [MQTT-3.3].
func handPublish(level byte, topic, payload string) []byte {
	body := appendString(nil, topic)
	if level == 5 {
		body = append(body, 0x00) // properties: none
	}
	return appendPacket(nil, 0x30, append(body, payload...))
}

// writeBytewise writes p with one Write call per byte. crypto/tls and tlspsk seal every
// Write into its own record, so the peer receives len(p) records of one byte each.
func writeBytewise(t *testing.T, conn net.Conn, p []byte) {
	t.Helper()
	if err := conn.SetWriteDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	for i := range p {
		if _, err := conn.Write(p[i : i+1]); err != nil {
			t.Fatalf("writing byte %d of %d: %v", i, len(p), err)
		}
	}
}

// sendConnect writes pkt (a CONNECT) and returns the first packet that comes back, which
// must be a CONNACK: its return code (3.x) or reason code (5.0).
func sendConnect(t *testing.T, conn net.Conn, pkt []byte) byte {
	t.Helper()
	if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(pkt); err != nil {
		t.Fatalf("writing CONNECT: %v", err)
	}
	return readConnack(t, conn)
}

// readConnack reads one packet, which must be a CONNACK, and returns its code.
func readConnack(t *testing.T, conn net.Conn) byte {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	typ, body, err := readPacket(conn)
	if err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	if typ != 0x20 || len(body) < 2 {
		t.Fatalf("got packet %#x % x, want a CONNACK", typ, body)
	}
	return body[1]
}

// hangUpAfterClose is wantClosed followed by the device closing its side too. After a
// refusal mqtls drains what the device still sends for a moment, so that the CONNACK is not
// lost to a reset; hanging up ends that drain, and the audit line follows at once.
func hangUpAfterClose(t *testing.T, conn net.Conn) {
	t.Helper()
	wantClosed(t, conn, waitTimeout)
	conn.Close()
}

// sendRaw writes pkt, tolerating a failure: mqtls may close before it read everything.
func sendRaw(conn net.Conn, pkt []byte) {
	_ = conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	_, _ = conn.Write(pkt)
}

// TestAttackSecondConnect: mqtls binds the first CONNECT and then pipes bytes untouched, so
// a second CONNECT on the same connection reaches the broker as sent. A second CONNECT is
// a protocol violation the broker must answer by closing the connection [MQTT-3.1.0-2];
// Mosquitto does, and the session never takes the second client ID.
func TestAttackSecondConnect(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "rewrite")...)
	dev := p.device(t, "sensor-1")

	for _, tc := range []struct {
		name      string
		level     byte
		pipelined bool // both CONNECTs in one write, so in one TLS record
	}{
		{"MQTT 3.1.1 after the CONNACK", 4, false},
		{"MQTT 3.1.1 pipelined in the same record", 4, true},
		{"MQTT 5.0 after the CONNACK", 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dev.mustDialTLS(t, s.addr)
			first := handConnect{level: tc.level, clientID: "spoof"}.bytes()
			second := handConnect{level: tc.level, clientID: "sensor-2"}.bytes()
			if tc.pipelined {
				if rc := sendConnect(t, conn, append(first, second...)); rc != 0 {
					t.Fatalf("first CONNACK %#x, want 0", rc)
				}
			} else {
				if rc := sendConnect(t, conn, first); rc != 0 {
					t.Fatalf("first CONNACK %#x, want 0", rc)
				}
				sendRaw(conn, second)
			}
			// The broker closes the connection. A v5 broker may say why in a DISCONNECT
			// first; nothing else may come back, least of all a second CONNACK.
			got := readUntilClosed(t, conn, waitTimeout)
			if len(got) > 0 && !(tc.level == 5 && got[0] == 0xe0) {
				t.Errorf("after the second CONNECT the device received % x, want nothing but the close", got)
			}
			conn.Close()
			b.waitLog(t, "Client sensor-1 disconnected due to protocol error")
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "forwarded", "client_id": "spoof", "client_id_forwarded": "sensor-1", "ended_by": "upstream"})
		})
	}
	if b.hasLog(" as sensor-2") || b.hasLog(" as spoof") {
		t.Errorf("the broker took a client ID other than the bound one:\n%s", b.log)
	}
}

// TestAttackSplitConnect: a CONNECT cut into one-byte TLS records is reassembled, parsed and
// bound exactly like one sent whole, over certificates and over TLS-PSK.
func TestAttackSplitConnect(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	rewrite := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "rewrite")...)
	enforce := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "enforce")...)
	psk := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	pskFile := writePSKFile(t, p.dir, "psk.txt", psk.identity+":"+psk.keyHex)
	pskServer := startServer(t, "--upstream", b.addr, "--psk-file", pskFile, "--client-id", "rewrite")
	dev := p.device(t, "sensor-1")

	t.Run("enforce refuses a split spoof", func(t *testing.T) {
		conn := dev.mustDialTLS(t, enforce.addr)
		writeBytewise(t, conn, handConnect{level: 4, clientID: "spoof"}.bytes())
		if rc := readConnack(t, conn); rc != rcIdentifierRejected {
			t.Errorf("CONNACK %#x, want %#x (identifier rejected)", rc, rcIdentifierRejected)
		}
		hangUpAfterClose(t, conn)
		e := enforce.auditFrom(t, conn.LocalAddr().String())
		wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_mismatch", "client_id": "spoof"})
	})
	t.Run("enforce accepts a split CONNECT with the identity", func(t *testing.T) {
		conn := dev.mustDialTLS(t, enforce.addr)
		writeBytewise(t, conn, handConnect{level: 5, clientID: "sensor-1"}.bytes())
		if rc := readConnack(t, conn); rc != 0 {
			t.Fatalf("CONNACK %#x, want 0", rc)
		}
		b.waitLog(t, " as sensor-1 (p5,")
	})

	for _, tc := range []struct {
		name  string
		level byte
		dial  func(t *testing.T) net.Conn
		ident string
	}{
		{"certificate MQTT 3.1.1", 4, func(t *testing.T) net.Conn { return dev.mustDialTLS(t, rewrite.addr) }, "sensor-1"},
		{"certificate MQTT 5.0", 5, func(t *testing.T) net.Conn { return dev.mustDialTLS(t, rewrite.addr) }, "sensor-1"},
		{"TLS-PSK MQTT 3.1.1", 4, func(t *testing.T) net.Conn {
			conn, _, err := dialPSK(t, pskServer.addr, &tlspsk.ClientConfig{Identity: psk.identity, Key: mustDecodeHex(t, psk.keyHex)})
			if err != nil {
				t.Fatalf("TLS-PSK handshake: %v", err)
			}
			return conn
		}, "dev-1"},
	} {
		t.Run("rewrite "+tc.name, func(t *testing.T) {
			conn := tc.dial(t)
			writeBytewise(t, conn, handConnect{level: tc.level, clientID: "spoof-split"}.bytes())
			if rc := readConnack(t, conn); rc != 0 {
				t.Fatalf("CONNACK %#x, want 0", rc)
			}
			b.waitLog(t, " as "+tc.ident+" ("+mosquittoProto(tc.level)+",")
			// The PUBLISHes after it are piped one record per byte too; the broker sees them
			// from the bound identity, so the ACL decides on it.
			writeBytewise(t, conn, handPublish(tc.level, "devices/spoof-split/x", "must not arrive"))
			b.waitLog(t, "Denied PUBLISH from "+tc.ident+" (d0, q0, r0, m0, 'devices/spoof-split/x'")
			writeBytewise(t, conn, handPublish(tc.level, "devices/"+tc.ident+"/split", "21.5"))
			b.waitLog(t, "Received PUBLISH from "+tc.ident+" (d0, q0, r0, m0, 'devices/"+tc.ident+"/split'")
		})
	}
	if b.hasLog(" as spoof") {
		t.Errorf("the broker saw a spoofed client ID:\n%s", b.log)
	}
}

// TestAttackMalformedStrings: a client ID (or any string of the CONNECT) that is not an
// MQTT UTF-8 string — U+0000, ill-formed UTF-8, an overlong or surrogate encoding, a length
// that lies — is a malformed packet: closed without a CONNACK [MQTT-1.5.3-1/2]
// [MQTT-3.1.4-1], whatever the binding mode would have done with it. A client ID as long
// as a string can be (65,535 bytes) is a valid one, and is refused or rewritten by the
// binding like any other; with the default --max-connect-size it does not even fit.
func TestAttackMalformedStrings(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	const bigCap = "140000" // room for two 65,535-byte strings and the rest of the CONNECT
	rewrite := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "rewrite", "--username", "identity", "--max-connect-size", bigCap)...)
	enforce := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "enforce", "--max-connect-size", bigCap)...)
	defaultCap := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "rewrite")...)
	dev := p.device(t, "sensor-1")
	maxString := strings.Repeat("s", 65535)

	// A client ID whose length prefix claims more bytes than the packet holds, and one whose
	// prefix claims fewer than follow.
	lyingLong := appendPacket(nil, 0x10, append(append(appendString(nil, "MQTT"), 4, 0x02, 0x00, 0x3c),
		0xff, 0xff, 's', 'e', 'n', 's', 'o', 'r', '-', '1'))
	lyingShort := appendPacket(nil, 0x10, append(append(appendString(nil, "MQTT"), 4, 0x02, 0x00, 0x3c),
		append([]byte{0x00, 0x03}, "sensor-1"...)...))

	t.Run("malformed", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			pkt  []byte
		}{
			{"NUL inside the client ID", handConnect{level: 4, clientID: "sensor-1\x00evil"}.bytes()},
			{"NUL after the identity", handConnect{level: 4, clientID: "sensor-1\x00"}.bytes()},
			{"NUL alone", handConnect{level: 4, clientID: "\x00"}.bytes()},
			{"NUL in a 3.1 client ID", handConnect{level: 3, clientID: "sensor-1\x00"}.bytes()},
			{"NUL in a 5.0 client ID", handConnect{level: 5, clientID: "sensor-1\x00"}.bytes()},
			{"invalid UTF-8", handConnect{level: 4, clientID: "\xff\xfe"}.bytes()},
			{"overlong NUL (C0 80)", handConnect{level: 4, clientID: "sensor-1\xc0\x80"}.bytes()},
			{"overlong slash (C0 AF)", handConnect{level: 4, clientID: "sensor-1\xc0\xafx"}.bytes()},
			{"UTF-16 surrogate", handConnect{level: 4, clientID: "\xed\xa0\x80"}.bytes()},
			{"truncated multi-byte sequence", handConnect{level: 5, clientID: "caf\xc3"}.bytes()},
			{"NUL in the user name", handConnect{level: 4, clientID: "x", username: strPtr("sensor-1\x00")}.bytes()},
			{"invalid UTF-8 in the will topic", handConnect{level: 4, clientID: "x", will: &handWill{"devices/\xff", "x"}}.bytes()},
			{"65,535-byte client ID with a NUL at its end", handConnect{level: 4, clientID: maxString[1:] + "\x00"}.bytes()},
			{"length prefix longer than the packet", lyingLong},
			{"length prefix shorter than the string", lyingShort},
		} {
			t.Run(tc.name, func(t *testing.T) {
				conn := dev.mustDialTLS(t, rewrite.addr)
				sendRaw(conn, tc.pkt)
				hangUpAfterClose(t, conn)
				e := rewrite.auditFrom(t, conn.LocalAddr().String())
				wantAudit(t, e, map[string]string{"outcome": "bad_first_packet", "reason": "malformed_packet", "identity": "sensor-1"})
			})
		}
	})
	t.Run("65,535-byte client ID refused by enforce", func(t *testing.T) {
		conn := dev.mustDialTLS(t, enforce.addr)
		if rc := sendConnect(t, conn, handConnect{level: 4, clientID: maxString}.bytes()); rc != rcIdentifierRejected {
			t.Errorf("CONNACK %#x, want %#x (identifier rejected)", rc, rcIdentifierRejected)
		}
		hangUpAfterClose(t, conn)
		e := enforce.auditFrom(t, conn.LocalAddr().String())
		// The audit line cuts a peer-chosen string at 256 bytes, so a device cannot write
		// 64 KiB log lines.
		wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_mismatch", "client_id": maxString[:256] + "…"})
	})
	t.Run("65,535-byte CONNECT over the default --max-connect-size", func(t *testing.T) {
		conn := dev.mustDialTLS(t, defaultCap.addr)
		sendRaw(conn, handConnect{level: 4, clientID: maxString}.bytes())
		hangUpAfterClose(t, conn)
		e := defaultCap.auditFrom(t, conn.LocalAddr().String())
		wantAudit(t, e, map[string]string{"outcome": "bad_first_packet", "reason": "packet_too_large"})
	})
	b.wantNoConnections(t)

	// Rewritten: the broker gets the identity, never the 65,535 bytes.
	t.Run("65,535-byte client ID and user name rewritten", func(t *testing.T) {
		conn := dev.mustDialTLS(t, rewrite.addr)
		if rc := sendConnect(t, conn, handConnect{level: 4, clientID: maxString, username: strPtr(maxString)}.bytes()); rc != 0 {
			t.Fatalf("CONNACK %#x, want 0", rc)
		}
		b.waitLog(t, " as sensor-1 (p2,")
		conn.Close()
		e := rewrite.auditFrom(t, conn.LocalAddr().String())
		wantAudit(t, e, map[string]string{"outcome": "forwarded", "client_id_forwarded": "sensor-1"})
	})
	if b.hasLog(maxString[:100]) {
		t.Errorf("the broker saw the 65,535-byte string")
	}
}

// TestAttackOtherDevicesUsername: with --username identity, a device that sends another
// device's identity as its user name is forwarded with its own, so Mosquitto's
// "pattern write devices/%u/#" keeps it out of the other device's tree.
func TestAttackOtherDevicesUsername(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclUsername)
	pskDev, pskVictim := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}, pskDevice{identity: "dev-2", keyHex: randomHexKey(t)}
	pskFile := writePSKFile(t, p.dir, "psk.txt", pskDev.identity+":"+pskDev.keyHex, pskVictim.identity+":"+pskVictim.keyHex)
	certServer := startServer(t, append(p.serverArgs(b.addr, true), "--username", "identity")...)
	pskServer := startServer(t, "--upstream", b.addr, "--psk-file", pskFile, "--username", "identity")
	dev := p.device(t, "sensor-1")

	t.Run("certificate, mosquitto_pub MQTT 3.1.1", func(t *testing.T) {
		dev.mustPub(t, certServer.addr, "cid-1", "mqttv311", "devices/sensor-2/cmd", "spoofed", "-u", "sensor-2", "-P", "sensor-2-password")
		b.waitLog(t, "Denied PUBLISH from cid-1 (d0, q0, r0, m0, 'devices/sensor-2/cmd'")
		b.waitLog(t, " as cid-1 (p2, c1, k60, u'sensor-1')")
		e := certServer.audit(t, func(e logEntry) bool { return e.str("client_id") == "cid-1" })
		wantAudit(t, e, map[string]string{"outcome": "forwarded", "identity": "sensor-1"})
	})
	t.Run("certificate, paho MQTT 5.0", func(t *testing.T) {
		c, ack, err := dev.paho(t, certServer.addr, &paho.Connect{ClientID: "cid-5", CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: "sensor-2", PasswordFlag: true, Password: []byte("x")}, nil)
		if err != nil {
			t.Fatalf("CONNECT: %v (CONNACK %+v)", err, ack)
		}
		b.waitLog(t, " as cid-5 (p5, c1, k30, u'sensor-1')")
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		// QoS 1, so the broker answers; Mosquitto acknowledges a denied publish with
		// "not authorized" on MQTT 5.
		resp, err := c.Publish(ctx, &paho.Publish{Topic: "devices/sensor-2/cmd", QoS: 1, Payload: []byte("spoofed")})
		if err == nil && (resp == nil || resp.ReasonCode < 0x80) {
			t.Errorf("publish to devices/sensor-2/cmd: PUBACK %+v, want a refusal", resp)
		}
		b.waitLog(t, "Denied PUBLISH from cid-5 (d0, q1, r0, m1, 'devices/sensor-2/cmd'")
	})
	t.Run("TLS-PSK, mosquitto_pub", func(t *testing.T) {
		out, err := runPeerBin(t, "mosquitto_pub", append(pskDev.mosquittoArgs(pskServer.addr, "cid-psk", "mqttv311"),
			"-u", "dev-2", "-P", "x", "-t", "devices/dev-2/cmd", "-m", "spoofed")...)
		if err != nil {
			t.Fatalf("mosquitto_pub: %v\n%s", err, out)
		}
		b.waitLog(t, "Denied PUBLISH from cid-psk (d0, q0, r0, m0, 'devices/dev-2/cmd'")
		b.waitLog(t, " as cid-psk (p2, c1, k60, u'dev-1')")
	})
	if b.hasLog("u'sensor-2'") || b.hasLog("u'dev-2'") {
		t.Errorf("the broker saw another device's identity as user name:\n%s", b.log)
	}
	if b.hasLog("Received PUBLISH from") {
		t.Errorf("the broker accepted a publish into another device's tree:\n%s", b.log)
	}
}

// TestAttackAuthenticationMethod: mqtls forwards MQTT 5 CONNECT properties byte-exact, an
// Authentication Method (enhanced authentication, 5.0 §4.12) included; the binding still
// applies. Mosquitto without an authentication plugin answers "bad authentication method"
// (0x8C), and mqtls passes that CONNACK through: enhanced authentication is the broker's.
func TestAttackAuthenticationMethod(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	dev := p.device(t, "sensor-1")
	// Authentication Method (0x15) "SCRAM-SHA-1", Authentication Data (0x16) "n,,n=sensor-2".
	var props []byte
	props = append(props, 0x15)
	props = appendString(props, "SCRAM-SHA-1")
	props = append(props, 0x16)
	props = appendString(props, "n,,n=sensor-2,r=abc")
	const rcBadAuthMethod = 0x8c

	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"properties forwarded as sent", nil},
		{"properties re-encoded with --identity-property", []string{"--identity-property", "mqtls-identity"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, append(append(p.serverArgs(b.addr, true), "--client-id", "rewrite"), tc.extra...)...)
			conn := dev.mustDialTLS(t, s.addr)
			if rc := sendConnect(t, conn, handConnect{level: 5, clientID: "sensor-2", props: props}.bytes()); rc != rcBadAuthMethod {
				t.Errorf("CONNACK reason %#x, want %#x (bad authentication method) from the broker", rc, rcBadAuthMethod)
			}
			readUntilClosed(t, conn, waitTimeout)
			conn.Close()
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "forwarded", "client_id": "sensor-2", "client_id_forwarded": "sensor-1"})
		})
	}
	if b.hasLog(" as sensor-2") {
		t.Errorf("the broker saw client ID sensor-2:\n%s", b.log)
	}
}

// TestAttackWillOnAnotherDevicesTopic: mqtls does not look at will topics; the broker's ACL
// decides. Mosquitto 2.0 accepts the CONNECT whatever the will topic, and checks the will
// against "pattern write devices/%c/#" when it publishes it: a device that set its will on
// another device's topic gets CONNACK 0, but its will is dropped (silently) when it goes;
// its own will is delivered.
func TestAttackWillOnAnotherDevicesTopic(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "rewrite")...)
	dev, monitor := p.device(t, "sensor-1"), p.device(t, "monitor")

	sub := monitor.sub(t, s.addr, "monitor", "mqttv311", "devices/#", 1)
	b.waitLog(t, "Sending SUBACK to monitor")

	// In order: a will that got through would reach the monitor before the last one does.
	for _, tc := range []struct {
		name  string
		level byte
		topic string
	}{
		{"MQTT 3.1.1 will on devices/sensor-2", 4, "devices/sensor-2/status"},
		{"MQTT 5.0 will on devices/sensor-2", 5, "devices/sensor-2/status"},
		{"MQTT 3.1.1 will on a topic outside devices/", 4, "alerts/all"},
		{"own will", 4, "devices/sensor-1/status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dev.mustDialTLS(t, s.addr)
			rc := sendConnect(t, conn, handConnect{level: tc.level, clientID: "spoof", will: &handWill{tc.topic, "offline"}}.bytes())
			if rc != 0 {
				t.Fatalf("CONNACK %#x, want 0: Mosquitto checks the will when it publishes it", rc)
			}
			// Gone without a DISCONNECT: the broker publishes the will, if its ACL lets it,
			// before it closes its side, so before mqtls writes the audit line.
			conn.NetConn().Close()
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "forwarded", "client_id_forwarded": "sensor-1", "ended_by": "device"})
		})
	}
	if got, want := sub.lines(t), []string{"devices/sensor-1/status offline"}; !equalLines(got, want) {
		t.Errorf("monitor got %q, want only %q: a will escaped the ACL", got, want)
	}
	if b.hasLog("'devices/sensor-2/status'") || b.hasLog("'alerts/all'") {
		t.Errorf("the broker published a will the ACL forbids:\n%s", b.log)
	}
}

// TestAttackMQTT31LongClientID: MQTT 3.1 limits client IDs to 1–23 bytes (3.1 §3.1). The
// policy checks the ID as it would be forwarded, in every binding mode, --client-id off
// included: a longer one is refused with "identifier rejected" (0x02) and never reaches the
// broker.
func TestAttackMQTT31LongClientID(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	off := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "off")...)
	rewrite := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "rewrite")...)
	prefix := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "prefix")...)
	longName := "sensor-with-a-long-name-0001" // 28 bytes: fine as 3.1.1 client ID, not as 3.1
	dev, longDev := p.device(t, "sensor-1"), p.deviceFrom(t, p.ca, handshaketest.Template{CommonName: longName})

	for _, tc := range []struct {
		name     string
		srv      *server
		dev      device
		clientID string
	}{
		{"off: 24 bytes", off, dev, strings.Repeat("a", 24)},
		{"off: 60,000 bytes", off, dev, strings.Repeat("a", 60000)},
		{"off: empty", off, dev, ""},
		{"rewrite: identity of 28 bytes", rewrite, longDev, "short"},
		{"prefix: identity + / + 15 bytes", prefix, dev, "sensor-1/" + strings.Repeat("b", 15)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := tc.dev.mustDialTLS(t, tc.srv.addr)
			if rc := sendConnect(t, conn, handConnect{level: 3, clientID: tc.clientID}.bytes()); rc != rcIdentifierRejected {
				t.Errorf("CONNACK %#x, want %#x (identifier rejected)", rc, rcIdentifierRejected)
			}
			hangUpAfterClose(t, conn)
			e := tc.srv.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_invalid", "mqtt_level": "3"})
		})
	}
	b.wantNoConnections(t)

	// 23 bytes is the limit, not over it; and 3.1.1 has no such limit.
	for _, tc := range []struct {
		level    byte
		clientID string
		logged   string
	}{
		{3, strings.Repeat("c", 23), " as " + strings.Repeat("c", 23) + " (p1,"},
		{4, strings.Repeat("d", 24), " as " + strings.Repeat("d", 24) + " (p2,"},
	} {
		conn := dev.mustDialTLS(t, off.addr)
		if rc := sendConnect(t, conn, handConnect{level: tc.level, clientID: tc.clientID}.bytes()); rc != 0 {
			t.Errorf("level %d, %d-byte client ID: CONNACK %#x, want 0", tc.level, len(tc.clientID), rc)
		}
		b.waitLog(t, tc.logged)
	}
}
