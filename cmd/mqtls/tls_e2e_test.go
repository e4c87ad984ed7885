package main

// End-to-end: TLS and mutual TLS in front of a real Mosquitto, and what happens to peers
// that fail the handshake.

import (
	"bytes"
	"context"
	"crypto/x509"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// TestRoundTrip publishes and subscribes through mqtls with one-way and mutual TLS, over
// MQTT 3.1.1 (mosquitto_pub/sub), 5.0 (paho) and 3.1 (a hand-built CONNECT).
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name   string
		mutual bool
	}{
		{"one-way TLS", false},
		{"mutual TLS", true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			p := newPKI(t)
			b := startBroker(t, "")
			s := startServer(t, p.serverArgs(b.addr, mode.mutual)...)
			publisher, subscriber := p.anonymous(), p.anonymous()
			identity := func(string) string { return "" }
			if mode.mutual {
				publisher, subscriber = p.device(t, "sensor-1"), p.device(t, "monitor")
				identity = func(cn string) string { return cn }
			}

			t.Run("MQTT 3.1.1 mosquitto_pub and mosquitto_sub", func(t *testing.T) {
				sub := subscriber.sub(t, s.addr, "sub-311", "mqttv311", "e2e/311/#", 1)
				b.waitLog(t, "Sending SUBACK to sub-311")
				publisher.mustPub(t, s.addr, "pub-311", "mqttv311", "e2e/311/temp", "21.5")
				if got, want := sub.lines(t), []string{"e2e/311/temp 21.5"}; !equalLines(got, want) {
					t.Errorf("mosquitto_sub got %q, want %q", got, want)
				}
				e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "pub-311" })
				wantAudit(t, e, map[string]string{
					"outcome":             "forwarded",
					"reason":              "",
					"listener":            s.listener,
					"identity":            identity("sensor-1"),
					"client_id_forwarded": "pub-311",
				})
				wantSessionFields(t, e)
			})

			t.Run("MQTT 5.0 paho", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
				defer cancel()
				msgs := make(chan *paho.Publish, 1)
				sub, ack, err := subscriber.paho(t, s.addr, &paho.Connect{ClientID: "sub-5", CleanStart: true, KeepAlive: 30}, msgs)
				if err != nil {
					t.Fatalf("subscriber: CONNECT: %v (CONNACK %+v)", err, ack)
				}
				if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "e2e/5/#", QoS: 1}}}); err != nil {
					t.Fatalf("SUBSCRIBE: %v", err)
				}
				pub, ack, err := publisher.paho(t, s.addr, &paho.Connect{ClientID: "pub-5", CleanStart: true, KeepAlive: 30}, nil)
				if err != nil {
					t.Fatalf("publisher: CONNECT: %v (CONNACK %+v)", err, ack)
				}
				if ack.ReasonCode != 0 {
					t.Fatalf("publisher CONNACK reason %#x, want 0", ack.ReasonCode)
				}
				_, err = pub.Publish(ctx, &paho.Publish{
					Topic: "e2e/5/temp", QoS: 1, Payload: []byte("22.5"),
					Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "unit", Value: "C"}}},
				})
				if err != nil {
					t.Fatalf("PUBLISH: %v", err)
				}
				select {
				case m := <-msgs:
					if m.Topic != "e2e/5/temp" || string(m.Payload) != "22.5" {
						t.Errorf("received %q %q, want \"e2e/5/temp\" \"22.5\"", m.Topic, m.Payload)
					}
					if m.Properties == nil || m.Properties.User.Get("unit") != "C" {
						t.Errorf("received properties %+v, want the user property unit=C carried through", m.Properties)
					}
				case <-ctx.Done():
					t.Fatal("the subscriber received nothing")
				}
			})

			t.Run("MQTT 3.1 raw CONNECT", func(t *testing.T) {
				conn := publisher.mustDialTLS(t, s.addr)
				if rc := rawConnect(t, conn, 3, "raw-31"); rc != 0 {
					t.Fatalf("CONNACK return code %#x, want 0 (accepted)", rc)
				}
				b.waitLog(t, "as raw-31 (p1,")                            // p1: Mosquitto's name for MQTT 3.1
				if _, err := conn.Write([]byte{0xe0, 0x00}); err != nil { // DISCONNECT
					t.Fatal(err)
				}
				wantClosed(t, conn, waitTimeout)
				e := s.auditFrom(t, conn.LocalAddr().String())
				wantAudit(t, e, map[string]string{
					"outcome":   "forwarded",
					"identity":  identity("sensor-1"),
					"client_id": "raw-31",
				})
			})
		})
	}
}

// wantSessionFields checks the TLS and traffic fields of a forwarded connection's audit line.
func wantSessionFields(t *testing.T, e logEntry) {
	t.Helper()
	if v := e.str("tls_version"); !strings.HasPrefix(v, "TLS 1.") {
		t.Errorf("audit tls_version = %q, want \"TLS 1.x\"", v)
	}
	if e.str("cipher_suite") == "" {
		t.Errorf("audit cipher_suite is empty")
	}
	for _, k := range []string{"bytes_in", "bytes_out"} {
		if n, ok := e.num(k); !ok || n <= 0 {
			t.Errorf("audit %s = %v, want a positive number", k, e[k])
		}
	}
	if e.str("conn_id") == "" || e.str("remote") == "" || e.str("duration_ms") == "" {
		t.Errorf("audit line lacks conn_id, remote or duration_ms: %v", map[string]any(e))
	}
}

func equalLines(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// TestMutualTLSRefusals checks that devices without a valid client certificate are refused
// at the handshake, with a reason that says why, and never reach the broker.
func TestMutualTLSRefusals(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	otherCA, err := handshaketest.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	revoked := p.device(t, "revoked-1")
	crl, err := p.ca.CRL(revoked.cert.Cert)
	if err != nil {
		t.Fatal(err)
	}
	crlFile, err := handshaketest.WriteFile(p.dir, "ca.crl", crl)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, append(p.serverArgs(b.addr, true), "--crl", crlFile)...)
	now := time.Now()

	for _, tc := range []struct {
		name   string
		dev    device
		reason string
	}{
		{"no client certificate", p.anonymous(), "no_client_cert"},
		{"certificate from another CA", p.deviceFrom(t, otherCA, handshaketest.Template{CommonName: "sensor-1"}), "untrusted_cert"},
		{"expired certificate", p.deviceFrom(t, p.ca, handshaketest.Template{
			CommonName: "sensor-1", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour),
		}), "expired_cert"},
		{"certificate not yet valid", p.deviceFrom(t, p.ca, handshaketest.Template{
			CommonName: "sensor-1", NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour),
		}), "not_yet_valid_cert"},
		{"certificate revoked by --crl", revoked, "revoked_cert"},
		{"server-only certificate", p.deviceFrom(t, p.ca, handshaketest.Template{
			CommonName: "sensor-1", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}), "bad_cert_usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, local, err := tc.dev.handshake(s.addr)
			if err == nil {
				// TLS 1.3: the client finishes first; the refusal arrives as an alert on read.
				defer conn.Close()
				_, _ = conn.Write(connectPacket(4, "sensor-1"))
				wantClosed(t, conn, waitTimeout)
			}
			e := s.auditFrom(t, local)
			wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": tc.reason, "identity": ""})
		})
	}
	b.wantNoConnections(t)

	// The CRL revokes one certificate, not the CA.
	conn := p.device(t, "good-1").mustDialTLS(t, s.addr)
	if rc := rawConnect(t, conn, 4, "good-1"); rc != 0 {
		t.Fatalf("a valid, unrevoked device got CONNACK %#x, want 0", rc)
	}
}

// TestHandshakeTimeout checks that a peer that never completes the handshake is closed at
// --handshake-timeout.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, true), "--handshake-timeout", timeout.String())...)

	// The first 43 bytes of a ClientHello that announces 256 bytes.
	halfHello := []byte{
		0x16, 0x03, 0x01, 0x01, 0x04, // record: handshake, TLS 1.0, length 260
		0x01, 0x00, 0x01, 0x00, // handshake: ClientHello, length 256
		0x03, 0x03, // client_version: TLS 1.2
	}
	halfHello = append(halfHello, bytes.Repeat([]byte{0x42}, 32)...) // random

	t.Run("cases", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			send []byte
		}{
			{"nothing sent", nil},
			{"half a ClientHello", halfHello},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				conn, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				start := time.Now()
				if _, err := conn.Write(tc.send); err != nil {
					t.Fatal(err)
				}
				wantClosedRaw(t, conn, timeout+5*time.Second)
				if elapsed := time.Since(start); elapsed < timeout*8/10 {
					t.Errorf("closed after %v, before the %v handshake timeout", elapsed, timeout)
				}
				e := s.auditFrom(t, conn.LocalAddr().String())
				wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": "handshake_timeout"})
			})
		}
	})
	b.wantNoConnections(t)
}

// TestNotTLS checks that plain HTTP or MQTT bytes on the TLS port are refused at once.
func TestNotTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, true), "--handshake-timeout", "10s")...)
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")},
		{"plain MQTT CONNECT", connectPacket(4, "sensor-1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			// Well before the handshake timeout: the first record header gives it away.
			wantClosedRaw(t, conn, 3*time.Second)
			e := s.auditFrom(t, conn.LocalAddr().String())
			wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": "not_tls"})
		})
	}
	b.wantNoConnections(t)
}

// TestExternalTLSClients runs openssl s_client and gnutls-cli against mqtls: TLS 1.3 and
// 1.2 with AEAD suites work, CBC suites and versions below --min-tls are refused.
func TestExternalTLSClients(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	dev := p.device(t, "sensor-1")
	openssl := peerBin(t, "openssl")
	gnutls := peerBin(t, "gnutls-cli")

	for _, tc := range []struct {
		name      string
		extra     []string // mqtls flags
		bin       string
		args      func(host, port string) []string
		ok        bool
		output    string            // expected in the client's output when ok
		audit     map[string]string // expected audit fields
		aeadSuite bool              // the audit's cipher_suite must be an AEAD suite
	}{
		{
			name: "openssl TLS 1.3",
			bin:  openssl,
			args: func(host, port string) []string {
				return []string{"s_client", "-connect", net.JoinHostPort(host, port), "-tls1_3", "-brief",
					"-CAfile", dev.caFile, "-cert", dev.certFile, "-key", dev.keyFile, "-verify_return_error"}
			},
			ok:     true,
			output: "TLSv1.3",
			// The client hangs up without sending CONNECT.
			audit: map[string]string{"outcome": "bad_first_packet", "reason": "client_closed", "identity": "sensor-1", "tls_version": "TLS 1.3"},
		},
		{
			name: "openssl TLS 1.2 default suites",
			bin:  openssl,
			args: func(host, port string) []string {
				return []string{"s_client", "-connect", net.JoinHostPort(host, port), "-tls1_2", "-brief",
					"-CAfile", dev.caFile, "-cert", dev.certFile, "-key", dev.keyFile, "-verify_return_error"}
			},
			ok:        true,
			output:    "TLSv1.2",
			audit:     map[string]string{"outcome": "bad_first_packet", "reason": "client_closed", "identity": "sensor-1", "tls_version": "TLS 1.2"},
			aeadSuite: true,
		},
		{
			name: "openssl TLS 1.2 CBC suite only",
			bin:  openssl,
			args: func(host, port string) []string {
				return []string{"s_client", "-connect", net.JoinHostPort(host, port), "-tls1_2", "-brief",
					"-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256",
					"-CAfile", dev.caFile, "-cert", dev.certFile, "-key", dev.keyFile}
			},
			ok:    false,
			audit: map[string]string{"outcome": "handshake_failed", "reason": "no_shared_cipher"},
		},
		{
			name:  "openssl TLS 1.2 against --min-tls 1.3",
			extra: []string{"--min-tls", "1.3"},
			bin:   openssl,
			args: func(host, port string) []string {
				return []string{"s_client", "-connect", net.JoinHostPort(host, port), "-tls1_2", "-brief",
					"-CAfile", dev.caFile, "-cert", dev.certFile, "-key", dev.keyFile}
			},
			ok:    false,
			audit: map[string]string{"outcome": "handshake_failed", "reason": "protocol_version"},
		},
		{
			name: "gnutls-cli",
			bin:  gnutls,
			args: func(host, port string) []string {
				return []string{"--x509cafile", dev.caFile, "--x509certfile", dev.certFile, "--x509keyfile", dev.keyFile,
					"-p", port, host}
			},
			ok:     true,
			output: "Handshake was completed",
			audit:  map[string]string{"outcome": "bad_first_packet", "reason": "client_closed", "identity": "sensor-1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, append(p.serverArgs(b.addr, true), tc.extra...)...)
			host, port, _ := net.SplitHostPort(s.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, tc.bin, tc.args(host, port)...)
			cmd.Stdin = strings.NewReader("") // EOF on stdin: hang up after the handshake
			out, err := cmd.CombinedOutput()
			switch {
			case tc.ok && err != nil:
				t.Fatalf("%s failed: %v\n%s", tc.name, err, out)
			case tc.ok && !strings.Contains(string(out), tc.output):
				t.Errorf("output lacks %q:\n%s", tc.output, out)
			case !tc.ok && err == nil:
				t.Errorf("%s succeeded, want a refused handshake:\n%s", tc.name, out)
			}
			e := s.audit(t, func(logEntry) bool { return true })
			wantAudit(t, e, tc.audit)
			if tc.aeadSuite {
				if cs := e.str("cipher_suite"); !strings.Contains(cs, "GCM") && !strings.Contains(cs, "CHACHA20") {
					t.Errorf("audit cipher_suite = %q, want an AEAD suite (AES-GCM or ChaCha20-Poly1305)", cs)
				}
			}
		})
	}
	t.Cleanup(func() {
		if !t.Failed() {
			b.wantNoConnections(t)
		}
	})
}
