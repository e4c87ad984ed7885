package main

// End-to-end: the credential rows of DESIGN.md's bad-input table (untrusted, expired,
// revoked and wrong-usage certificates; unknown PSK identity and wrong key; a client ID
// that is not the identity) with the metric that counts each, on one mixed listener.

import (
	"crypto/x509"
	"encoding/hex"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/handshake/tlspsk"
)

func TestRefusalMetrics(t *testing.T) {
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
	psk := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	pskFile := writePSKFile(t, p.dir, "psk.txt", psk.identity+":"+psk.keyHex)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--crl", crlFile, "--psk-file", pskFile,
		"--client-id", "enforce", "--admin-listen", "127.0.0.1:0")...)
	admin := s.adminAddr(t)
	now := time.Now()
	failures := func(reason string) string {
		return series("mqtls_handshake_failures_total", "listener", "tcp", "reason", reason)
	}

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
		{"revoked certificate", revoked, "revoked_cert"},
		{"server-only certificate", p.deviceFrom(t, p.ca, handshaketest.Template{
			CommonName: "sensor-1", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}), "bad_cert_usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := scrapeMetrics(t, admin)
			conn, local, err := tc.dev.handshake(s.addr)
			if err == nil {
				// TLS 1.3: the refusal arrives as an alert on the first read.
				defer conn.Close()
				_, _ = conn.Write(connectPacket(4, "sensor-1"))
				wantClosed(t, conn, waitTimeout)
			}
			e := s.auditFrom(t, local)
			wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": tc.reason})
			if got := scrapeMetrics(t, admin)[failures(tc.reason)] - before[failures(tc.reason)]; got != 1 {
				t.Errorf("%s went up by %v, want 1", failures(tc.reason), got)
			}
		})
	}

	key, _ := hex.DecodeString(psk.keyHex)
	wrong := make([]byte, len(key))
	copy(wrong, key)
	wrong[0] ^= 0xff
	for _, tc := range []struct {
		name, identity string
		key            []byte
		reason         string
	}{
		{"unknown PSK identity", "dev-404", key, "unknown_psk_identity"},
		{"wrong PSK", "dev-1", wrong, "decrypt_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := scrapeMetrics(t, admin)
			_, local, err := dialPSK(t, s.addr, &tlspsk.ClientConfig{Identity: tc.identity, Key: tc.key})
			if err == nil {
				t.Fatal("the handshake succeeded")
			}
			e := s.auditFrom(t, local)
			wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": tc.reason})
			if got := scrapeMetrics(t, admin)[failures(tc.reason)] - before[failures(tc.reason)]; got != 1 {
				t.Errorf("%s went up by %v, want 1", failures(tc.reason), got)
			}
		})
	}

	t.Run("client ID not the identity", func(t *testing.T) {
		metric := series("mqtls_connect_decisions_total", "listener", "tcp", "outcome", "rejected", "reason", "client_id_mismatch")
		before := scrapeMetrics(t, admin)
		conn := p.device(t, "sensor-1").mustDialTLS(t, s.addr)
		if rc := rawConnect(t, conn, 4, "spoof"); rc != 0x02 {
			t.Errorf("CONNACK %#x, want 0x02", rc)
		}
		conn.Close()
		e := s.auditFrom(t, conn.LocalAddr().String())
		wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_mismatch"})
		if got := scrapeMetrics(t, admin)[metric] - before[metric]; got != 1 {
			t.Errorf("%s went up by %v, want 1", metric, got)
		}
	})
	// The /readyz probe connects to the broker, so count MQTT clients, not TCP connections.
	if b.hasLog("New client connected") {
		t.Errorf("a refused session reached the broker:\n%s", b.log)
	}
}
