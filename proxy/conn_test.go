package proxy_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// TestForwarding runs whole sessions: the CONNECT the broker receives is the device's own
// bytes when policy changes nothing, and a re-encoding with the identity as client ID under
// ClientIDRewrite; then traffic flows both ways and the audit line says what happened.
func TestForwarding(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name     string
		network  string // the broker's
		level    byte
		mode     policy.ClientIDMode
		clientID string // as the device sends it
		forward  string // as the broker must receive it
	}{
		{name: "3.1.1 as-is", network: "tcp", level: 4, clientID: "sensor-7", forward: "sensor-7"},
		{name: "5.0 as-is", network: "tcp", level: 5, clientID: "sensor-7", forward: "sensor-7"},
		{name: "3.1.1 enforce, matching", network: "tcp", level: 4, mode: policy.ClientIDEnforce, clientID: deviceCN, forward: deviceCN},
		{name: "3.1.1 rewrite", network: "tcp", level: 4, mode: policy.ClientIDRewrite, clientID: "spoofed", forward: deviceCN},
		{name: "5.0 rewrite empty", network: "tcp", level: 5, mode: policy.ClientIDRewrite, clientID: "", forward: deviceCN},
		{name: "3.1.1 as-is, unix upstream", network: "unix", level: 4, clientID: "sensor-7", forward: "sensor-7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, tc.network, "", nil)
			p := startProxy(t, b.upstream(), policy.Config{ClientID: tc.mode}, nil)
			dev := dialDevice(t, p.addr, deviceConfig())

			connect := connectPacket(tc.level, tc.clientID)
			up := openSession(t, dev, b, connect, connectPacket(tc.level, tc.forward))

			toBroker := publishPacket("sensors/dev-1", []byte("21.5"))
			mustWrite(t, dev, toBroker)
			if got := mustRead(t, up, len(toBroker)); !bytes.Equal(got, toBroker) {
				t.Errorf("the broker received % x, want % x", got, toBroker)
			}
			toDevice := publishPacket("commands/dev-1", []byte("reboot"))
			mustWrite(t, up, toDevice)
			if got := mustRead(t, dev, len(toDevice)); !bytes.Equal(got, toDevice) {
				t.Errorf("the device received % x, want % x", got, toDevice)
			}

			// The device hangs up; the broker sees the end of stream, and hangs up too.
			dev.Close()
			if rest := readEOF(t, up); len(rest) != 0 {
				t.Errorf("the broker received % x after the device closed", rest)
			}
			up.Close()

			p.log.waitAudit(t, auditLine{
				Outcome:           proxy.OutcomeForwarded,
				Identity:          deviceCN,
				MQTTLevel:         int(tc.level),
				ClientID:          tc.clientID,
				ClientIDForwarded: tc.forward,
				BytesIn:           int64(len(connect) + len(toBroker)),
				BytesOut:          int64(len(connackAccepted) + len(toDevice)),
				EndedBy:           "device",
			})
		})
	}
}

// TestRejections checks that a CONNECT the policy refuses is answered with a CONNACK in the
// client's protocol version, and that the broker is never connected to.
func TestRejections(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name     string
		level    byte
		pc       policy.Config
		clientID string
		code     byte   // in the CONNACK
		reason   string // in the audit line
	}{
		{name: "3.1.1 client ID mismatch", level: 4, pc: policy.Config{ClientID: policy.ClientIDEnforce},
			clientID: "intruder", code: 0x02, reason: policy.ReasonClientIDMismatch}, // identifier rejected
		{name: "5.0 client ID mismatch", level: 5, pc: policy.Config{ClientID: policy.ClientIDEnforce},
			clientID: "intruder", code: 0x85, reason: policy.ReasonClientIDMismatch}, // client identifier not valid
		{name: "3.1.1 prefix mismatch", level: 4, pc: policy.Config{ClientID: policy.ClientIDPrefix},
			clientID: deviceCN, code: 0x02, reason: policy.ReasonClientIDMismatch},
		{name: "5.0 identity denied", level: 5, pc: policy.Config{Deny: []string{"dev-.*"}},
			clientID: deviceCN, code: 0x87, reason: policy.ReasonIdentityDenied}, // not authorized
		{name: "3.1.1 identity not allowed", level: 4, pc: policy.Config{Allow: []string{"gateway-.*"}},
			clientID: deviceCN, code: 0x05, reason: policy.ReasonIdentityNotAllowed}, // not authorized
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, "tcp", "", nil)
			p := startProxy(t, b.upstream(), tc.pc, nil)
			dev := dialDevice(t, p.addr, deviceConfig())

			connect := connectPacket(tc.level, tc.clientID)
			mustWrite(t, dev, connect)
			ack := mustReadPacket(t, dev)
			if code, err := connackCode(ack); err != nil || code != tc.code {
				t.Errorf("the device received % x (code %#02x, %v), want a CONNACK with code %#02x", ack, code, err, tc.code)
			}
			if tc.level == 4 && len(ack) != 4 {
				t.Errorf("3.1.1 CONNACK is % x, want 4 bytes", ack)
			}
			if rest := readEOF(t, dev); len(rest) != 0 {
				t.Errorf("the device received % x after the CONNACK", rest)
			}
			dev.Close()

			p.log.waitAudit(t, auditLine{
				Outcome:   proxy.OutcomeRejected,
				Reason:    tc.reason,
				Identity:  deviceCN,
				MQTTLevel: int(tc.level),
				ClientID:  tc.clientID,
				BytesIn:   int64(len(connect)),
				BytesOut:  int64(len(ack)),
			})
			b.checkNoConns(t)
		})
	}
}

// TestFirstPacketRefused checks first packets that get no CONNACK at all: the connection is
// closed (cleanly, with close_notify), the broker never hears of it, and the audit line says
// why.
func TestFirstPacketRefused(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name    string
		send    []byte
		hangUp  bool // the device ends its side after sending
		reason  string
		bytesIn int64
	}{
		{name: "not CONNECT", send: publishPacket("a/b", []byte("x")), reason: proxy.ReasonNotConnect},
		{name: "over the size cap", send: appendFixedHeader(nil, 0x10, 1<<20), reason: proxy.ReasonPacketTooLarge},
		{name: "length not minimal", send: []byte{0x10, 0x80, 0x00}, reason: proxy.ReasonMalformedPacket},
		{name: "malformed CONNECT", send: append(appendFixedHeader(nil, 0x10, 4), "MQTT"...),
			reason: proxy.ReasonMalformedPacket, bytesIn: 6},
		{name: "hang-up inside CONNECT", send: connectPacket(4, deviceCN)[:8], hangUp: true,
			reason: proxy.ReasonClientClosed, bytesIn: 8},
		{name: "no first packet", reason: proxy.ReasonFirstPacketTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, "tcp", "", nil)
			p := startProxy(t, b.upstream(), policy.Config{}, func(c *proxy.Config) {
				c.ConnectTimeout = 200 * time.Millisecond
			})
			dev := dialDevice(t, p.addr, deviceConfig())
			if len(tc.send) > 0 {
				mustWrite(t, dev, tc.send)
			}
			if tc.hangUp {
				if err := dev.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			if got := readEOF(t, dev); len(got) != 0 {
				t.Errorf("the device received % x, want nothing before the end of stream", got)
			}
			dev.Close()
			p.log.waitAudit(t, auditLine{
				Outcome:  proxy.OutcomeBadFirstPacket,
				Reason:   tc.reason,
				Identity: deviceCN,
				BytesIn:  tc.bytesIn,
			})
			b.checkNoConns(t)
		})
	}
}

// TestUpstreamDown checks that a device whose broker cannot be reached hears "server
// unavailable" in its protocol version, and that the server keeps serving: once the broker
// is up, the next device gets through.
func TestUpstreamDown(t *testing.T) {
	checkGoroutines(t)
	// A port nothing listens on: taken, then released.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	p := startProxy(t, addr, policy.Config{}, func(c *proxy.Config) { c.DialTimeout = 2 * time.Second })
	for i, tc := range []struct {
		level byte
		code  byte
	}{
		{level: 4, code: 0x03}, // server unavailable
		{level: 5, code: 0x88}, // server unavailable
	} {
		dev := dialDevice(t, p.addr, deviceConfig())
		connect := connectPacket(tc.level, deviceCN)
		mustWrite(t, dev, connect)
		ack := mustReadPacket(t, dev)
		if code, err := connackCode(ack); err != nil || code != tc.code {
			t.Errorf("level %d: the device received % x, want a CONNACK with code %#02x", tc.level, ack, tc.code)
		}
		if rest := readEOF(t, dev); len(rest) != 0 {
			t.Errorf("level %d: the device received % x after the CONNACK", tc.level, rest)
		}
		dev.Close()
		if got, want := p.log.waitAudits(t, i+1)[i], (auditLine{
			Outcome:   proxy.OutcomeUpstreamUnavailable,
			Reason:    proxy.ReasonUpstreamUnavailable,
			Identity:  deviceCN,
			MQTTLevel: int(tc.level),
			ClientID:  deviceCN,
			BytesIn:   int64(len(connect)),
			BytesOut:  int64(len(ack)),
		}); got != want {
			t.Errorf("level %d: audit line\n got %+v\nwant %+v", tc.level, got, want)
		}
	}

	// The broker comes up on that port: the same server now forwards.
	b := startBroker(t, "tcp", addr, nil)
	dev := dialDevice(t, p.addr, deviceConfig())
	up := openSession(t, dev, b, connectPacket(4, deviceCN), nil)
	dev.Close()
	readEOF(t, up)
	up.Close()
	if got := p.log.waitAudits(t, 3)[2]; got.Outcome != proxy.OutcomeForwarded {
		t.Errorf("after the broker came up: outcome %q, want %q", got.Outcome, proxy.OutcomeForwarded)
	}
}
