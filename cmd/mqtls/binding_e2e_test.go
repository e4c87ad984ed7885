package main

// End-to-end: the certificate identity bound to the MQTT client ID and username, held
// against Mosquitto ACLs the way a user deploys them; allow/deny lists; a broker that is down.

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// Return codes (MQTT 3.x) and reason codes (MQTT 5.0) of the CONNACKs the tests expect.
const (
	rcIdentifierRejected = 0x02 // 3.x [MQTT-3.2.2.3]
	rcServerUnavailable  = 0x03
	rcNotAuthorized      = 0x05
	rc5IdentifierInvalid = 0x85 // 5.0 Client Identifier not valid
	rc5NotAuthorized     = 0x87
	rc5ServerUnavailable = 0x88
)

// TestRewriteHoldsClientIDACL: with --client-id rewrite, a device that claims another
// client ID publishes only under devices/<its CN>/ (ACL "pattern write devices/%c/#").
func TestRewriteHoldsClientIDACL(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "rewrite")...)
	dev, monitor := p.device(t, "sensor-1"), p.device(t, "monitor")

	sub := monitor.sub(t, s.addr, "whatever", "mqttv311", "devices/#", 1)
	b.waitLog(t, "Sending SUBACK to monitor") // rewritten to the monitor's CN too

	// The broker handles one connection's packets in order: once it logged the denial,
	// nothing of that publish can still reach the subscriber.
	for _, topic := range []string{"devices/spoof/x", "devices/other/x"} {
		dev.mustPub(t, s.addr, "spoof", "mqttv311", topic, "must not arrive")
		b.waitLog(t, "Denied PUBLISH from sensor-1 (d0, q0, r0, m0, '"+topic+"'")
	}
	dev.mustPub(t, s.addr, "spoof", "mqttv311", "devices/sensor-1/temp", "21.5")
	if got, want := sub.lines(t), []string{"devices/sensor-1/temp 21.5"}; !equalLines(got, want) {
		t.Errorf("subscriber got %q, want only %q", got, want)
	}
	if b.hasLog(" as spoof ") {
		t.Errorf("the broker saw client ID \"spoof\"; mqtls should have rewritten it")
	}
	e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "spoof" })
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "identity": "sensor-1", "client_id_forwarded": "sensor-1"})

	t.Run("empty client ID gets the identity", func(t *testing.T) {
		conn := dev.mustDialTLS(t, s.addr)
		if rc := rawConnect(t, conn, 4, ""); rc != 0 {
			t.Fatalf("CONNACK %#x, want 0", rc)
		}
		b.waitLog(t, " as sensor-1 (p2,")
	})
	t.Run("MQTT 5.0", func(t *testing.T) {
		c, ack, err := dev.paho(t, s.addr, &paho.Connect{ClientID: "spoof-5", CleanStart: true, KeepAlive: 30}, nil)
		if err != nil {
			t.Fatalf("CONNECT: %v (CONNACK %+v)", err, ack)
		}
		if got := ack.Properties; got != nil && got.AssignedClientID != "" && got.AssignedClientID != "sensor-1" {
			t.Errorf("CONNACK assigned client ID %q", got.AssignedClientID)
		}
		_ = c
		b.waitLog(t, " as sensor-1 (p5,")
	})
}

// TestEnforceRefusesOtherClientIDs: with --client-id enforce, a device that claims another
// client ID is refused with "identifier rejected" and never reaches the broker.
func TestEnforceRefusesOtherClientIDs(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "enforce")...)
	dev := p.device(t, "sensor-1")

	for _, tc := range []struct {
		name  string
		level byte
	}{
		{"MQTT 3.1.1", 4},
		{"MQTT 3.1", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dev.mustDialTLS(t, s.addr)
			if rc := rawConnect(t, conn, tc.level, "spoof"); rc != rcIdentifierRejected {
				t.Errorf("CONNACK return code %#x, want %#x (identifier rejected)", rc, rcIdentifierRejected)
			}
			wantClosed(t, conn, waitTimeout)
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_mismatch", "identity": "sensor-1", "client_id": "spoof"})
		})
	}
	t.Run("MQTT 5.0 paho", func(t *testing.T) {
		_, ack, err := dev.paho(t, s.addr, &paho.Connect{ClientID: "spoof", CleanStart: true, KeepAlive: 30}, nil)
		if err == nil || ack == nil {
			t.Fatalf("CONNECT as spoof: err %v, CONNACK %+v; want a refusal", err, ack)
		}
		if ack.ReasonCode != rc5IdentifierInvalid {
			t.Errorf("CONNACK reason %#x, want %#x (client identifier not valid)", ack.ReasonCode, rc5IdentifierInvalid)
		}
		if ack.Properties == nil || ack.Properties.ReasonString == "" {
			t.Errorf("CONNACK has no Reason String")
		}
	})
	t.Run("mosquitto_pub", func(t *testing.T) {
		out, err := dev.pub(t, s.addr, "spoof", "mqttv311", "devices/sensor-1/x", "x")
		if err == nil || !strings.Contains(out, "identifier rejected") {
			t.Errorf("mosquitto_pub -i spoof: err %v, output %q; want \"identifier rejected\"", err, out)
		}
	})
	b.wantNoConnections(t)

	// The device under its own name is welcome.
	dev.mustPub(t, s.addr, "sensor-1", "mqttv311", "devices/sensor-1/temp", "21.5")
	b.waitLog(t, "Received PUBLISH from sensor-1 (d0, q0, r0, m0, 'devices/sensor-1/temp'")
}

// TestPrefixClientIDs: with --client-id prefix, a device may use <cn>/<anything>.
func TestPrefixClientIDs(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "prefix")...)
	dev := p.device(t, "sensor-1")

	// sensor-1/a/b: a suffix may not hold the separator, or sensor-1 could take the
	// sessions of a device named sensor-1/a (with --allow-slash).
	for _, id := range []string{"sensor-2/x", "sensor-1", "sensor-10/x", "sensor-1x", "/sensor-1/x", "sensor-1/a/b"} {
		t.Run("refuses "+id, func(t *testing.T) {
			conn := dev.mustDialTLS(t, s.addr)
			if rc := rawConnect(t, conn, 4, id); rc != rcIdentifierRejected {
				t.Errorf("CONNACK %#x, want %#x (identifier rejected)", rc, rcIdentifierRejected)
			}
			wantClosed(t, conn, waitTimeout)
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_mismatch", "client_id": id})
		})
	}
	t.Run("refuses sensor-2/x over MQTT 5.0", func(t *testing.T) {
		_, ack, err := dev.paho(t, s.addr, &paho.Connect{ClientID: "sensor-2/x", CleanStart: true, KeepAlive: 30}, nil)
		if err == nil || ack == nil || ack.ReasonCode != rc5IdentifierInvalid {
			t.Errorf("CONNECT: err %v, CONNACK %+v; want reason %#x", err, ack, rc5IdentifierInvalid)
		}
	})
	b.wantNoConnections(t)

	for _, id := range []string{"sensor-1/anything", "sensor-1/a-b"} {
		t.Run("accepts "+id, func(t *testing.T) {
			conn := dev.mustDialTLS(t, s.addr)
			if rc := rawConnect(t, conn, 4, id); rc != 0 {
				t.Fatalf("CONNACK %#x, want 0", rc)
			}
			b.waitLog(t, " as "+id+" (p2,")
		})
	}
}

// TestUsernameIdentityHoldsUsernameACL: with --username identity, whatever username a
// device sends, the broker sees its CN, so "pattern write devices/%u/#" holds.
func TestUsernameIdentityHoldsUsernameACL(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclUsername)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--username", "identity")...)
	dev, monitor := p.device(t, "sensor-1"), p.device(t, "monitor")

	sub := monitor.sub(t, s.addr, "mon", "mqttv311", "devices/#", 2)
	b.waitLog(t, "Sending SUBACK to mon")

	dev.mustPub(t, s.addr, "dev-1", "mqttv311", "devices/spoof/x", "must not arrive", "-u", "spoof", "-P", "secret")
	b.waitLog(t, "Denied PUBLISH from dev-1 (d0, q0, r0, m0, 'devices/spoof/x'")
	dev.mustPub(t, s.addr, "dev-2", "mqttv311", "devices/sensor-1/a", "claimed spoof", "-u", "spoof", "-P", "secret")
	dev.mustPub(t, s.addr, "dev-3", "mqttv311", "devices/sensor-1/b", "no username")
	want := []string{"devices/sensor-1/a claimed spoof", "devices/sensor-1/b no username"}
	if got := sub.lines(t); !equalLines(got, want) {
		t.Errorf("subscriber got %q, want %q", got, want)
	}
}

// TestAllowDenyAndNoIdentity: identities outside --allow or inside --deny are refused with
// "not authorized", and so is a device without a certificate when binding needs one.
func TestAllowDenyAndNoIdentity(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, true),
		"--allow", "sensor-[0-9]+", "--deny", "sensor-9", "--client-id", "rewrite", "--client-auth", "request")...)

	for _, tc := range []struct {
		name   string
		dev    device
		reason string
	}{
		{"identity not in --allow", p.device(t, "monitor"), "identity_not_allowed"},
		{"--allow matches the whole identity", p.device(t, "xsensor-1"), "identity_not_allowed"},
		{"identity in --deny", p.device(t, "sensor-9"), "identity_denied"},
		{"no certificate", p.anonymous(), "no_identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := tc.dev.mustDialTLS(t, s.addr)
			rc := rawConnect(t, conn, 4, "x")
			if tc.reason == "no_identity" {
				if rc == 0 {
					t.Errorf("CONNACK 0, want a refusal")
				}
			} else if rc != rcNotAuthorized {
				t.Errorf("CONNACK %#x, want %#x (not authorized)", rc, rcNotAuthorized)
			}
			wantClosed(t, conn, waitTimeout)
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": tc.reason})
		})
	}
	t.Run("MQTT 5.0 not authorized", func(t *testing.T) {
		_, ack, err := p.device(t, "monitor").paho(t, s.addr, &paho.Connect{ClientID: "x", CleanStart: true, KeepAlive: 30}, nil)
		if err == nil || ack == nil || ack.ReasonCode != rc5NotAuthorized {
			t.Errorf("CONNECT: err %v, CONNACK %+v; want reason %#x", err, ack, rc5NotAuthorized)
		}
	})
	b.wantNoConnections(t)

	conn := p.device(t, "sensor-1").mustDialTLS(t, s.addr)
	if rc := rawConnect(t, conn, 4, "x"); rc != 0 {
		t.Fatalf("allowed device: CONNACK %#x, want 0", rc)
	}
}

// TestUpstreamDown: while the broker is down, devices get "server unavailable" in their
// protocol version, and mqtls keeps serving until the broker is back.
func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	port := freePort(t) // nothing listens there
	upstream := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := startServer(t, append(p.serverArgs(upstream, true), "--dial-timeout", "2s")...)
	dev := p.device(t, "sensor-1")

	for _, tc := range []struct {
		name  string
		level byte
	}{
		{"MQTT 3.1.1", 4},
		{"MQTT 3.1.1 again", 4},
		{"MQTT 3.1", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dev.mustDialTLS(t, s.addr)
			if rc := rawConnect(t, conn, tc.level, "sensor-1"); rc != rcServerUnavailable {
				t.Errorf("CONNACK %#x, want %#x (server unavailable)", rc, rcServerUnavailable)
			}
			wantClosed(t, conn, waitTimeout)
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "upstream_unavailable", "reason": "upstream_unavailable", "identity": "sensor-1"})
		})
	}
	t.Run("MQTT 5.0 paho", func(t *testing.T) {
		_, ack, err := dev.paho(t, s.addr, &paho.Connect{ClientID: "sensor-1", CleanStart: true, KeepAlive: 30}, nil)
		if err == nil || ack == nil || ack.ReasonCode != rc5ServerUnavailable {
			t.Errorf("CONNECT: err %v, CONNACK %+v; want reason %#x (server unavailable)", err, ack, rc5ServerUnavailable)
		}
	})

	// The broker comes up on that port; the same mqtls forwards the next device.
	b, err := startBrokerOn(t, port, "")
	if err != nil {
		t.Fatal(err)
	}
	conn := dev.mustDialTLS(t, s.addr)
	if rc := rawConnect(t, conn, 4, "sensor-1"); rc != 0 {
		t.Fatalf("with the broker up: CONNACK %#x, want 0", rc)
	}
	b.waitLog(t, " as sensor-1 (p2,")
}
