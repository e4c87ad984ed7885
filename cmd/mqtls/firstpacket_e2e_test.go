package main

// End-to-end: what a device that completed the mutual-TLS handshake gets when its first
// packet is not an acceptable CONNECT.

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestBadFirstPacket(t *testing.T) {
	t.Parallel()
	const connectTimeout = 500 * time.Millisecond
	const maxConnect = 256
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, true),
		"--connect-timeout", connectTimeout.String(), "--max-connect-size", "256")...)
	dev := p.device(t, "sensor-1")

	big := connectPacket(4, strings.Repeat("x", 4*maxConnect))
	t.Run("cases", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			send      []byte
			closeSend bool // half-close after sending (TLS close_notify)
			reason    string
		}{
			{name: "PINGREQ instead of CONNECT", send: []byte{0xc0, 0x00}, reason: "not_connect"},
			{name: "PUBLISH instead of CONNECT", send: appendPacket(nil, 0x30, appendString(nil, "a/b")), reason: "not_connect"},
			{
				name: "remaining length with five continuation bytes",
				// [MQTT-2.2.3]: at most four bytes; 0x80 adds nothing, so no size cap applies first.
				send:   append([]byte{0x10}, append(bytes.Repeat([]byte{0x80}, 5), 0x01)...),
				reason: "malformed_packet",
			},
			{name: "CONNECT over --max-connect-size", send: big, reason: "packet_too_large"},
			{
				name: "CONNECT header claiming 1 MiB, body never sent",
				// Refused on the header alone: mqtls must not wait for (or allocate) the body.
				send:   []byte{0x10, 0x80, 0x80, 0x40},
				reason: "packet_too_large",
			},
			{name: "nothing within --connect-timeout", reason: "first_packet_timeout"},
			{name: "client closes before CONNECT", closeSend: true, reason: "client_closed"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				conn := dev.mustDialTLS(t, s.addr)
				start := time.Now()
				if len(tc.send) > 0 {
					// mqtls may close before reading everything; a failed write is fine.
					_ = conn.SetWriteDeadline(time.Now().Add(waitTimeout))
					_, _ = conn.Write(tc.send)
				}
				if tc.closeSend {
					if err := conn.CloseWrite(); err != nil {
						t.Fatal(err)
					}
				}
				wantClosed(t, conn, waitTimeout)
				if tc.reason == "first_packet_timeout" {
					if elapsed := time.Since(start); elapsed < connectTimeout/2 {
						t.Errorf("closed after %v, well before the %v connect timeout", elapsed, connectTimeout)
					}
				}
				e := s.auditFrom(t, conn.LocalAddr().String())
				wantAudit(t, e, map[string]string{"outcome": "bad_first_packet", "reason": tc.reason, "identity": "sensor-1"})
			})
		}
	})
	b.wantNoConnections(t)

	// A CONNECT under the cap is forwarded.
	id := strings.Repeat("y", 200)
	if n := len(connectPacket(4, id)); n > maxConnect {
		t.Fatalf("test bug: the CONNECT is %d bytes", n)
	}
	conn := dev.mustDialTLS(t, s.addr)
	if rc := rawConnect(t, conn, 4, id); rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	b.waitLog(t, " as "+id+" (p2,")
}
