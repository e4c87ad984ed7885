package main

// End-to-end: DESIGN.md's bad-input table over DTLS, each row asserting what the device
// gets, the audit reason and the metric that counts it (badinput_e2e_test.go does the TCP
// transports).

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/proxy/datagram"
)

func TestDTLSBadInput(t *testing.T) {
	t.Parallel()
	b := startBroker(t, "")
	psk := newDTLSPSK(t)
	s, addr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file, "--client-id", "enforce",
		"--connect-timeout", "500ms", "--max-connect-size", "256", "--admin-listen", "127.0.0.1:0")
	admin := s.adminAddr(t)
	dev := dtlsPSKClient("dev-1", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8)

	// row checks that the audit line of the DTLS session from local has outcome and reason,
	// and that metric went up by exactly one.
	row := func(t *testing.T, local, outcome, reason, metric string, before metricSeries) {
		t.Helper()
		e := s.dtlsAudit(t, func(e logEntry) bool { return e.str("remote") == local })
		wantAudit(t, e, map[string]string{"outcome": outcome, "reason": reason})
		// The audit line is written after the hooks ran, so the scrape sees the count.
		if got := scrapeMetrics(t, admin)[metric] - before[metric]; got != 1 {
			t.Errorf("%s went up by %v, want 1", metric, got)
		}
	}
	closed := series("mqtls_connections_total", "listener", "dtls", "mode", "server", "outcome", "bad_first_packet")

	t.Run("unknown PSK identity", func(t *testing.T) {
		before := scrapeMetrics(t, admin)
		_, local, err := dtlsPSKClient("dev-404", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8).dial(t, addr)
		if err == nil {
			t.Fatal("handshake with an unknown identity succeeded")
		}
		row(t, local, "handshake_failed", "unknown_psk_identity",
			series("mqtls_handshake_failures_total", "listener", "dtls", "reason", "unknown_psk_identity"), before)
	})
	t.Run("PINGREQ instead of CONNECT", func(t *testing.T) {
		before := scrapeMetrics(t, admin)
		conn, local := dev.mustDial(t, addr)
		dc := datagram.New(conn, datagram.Options{})
		if _, err := dc.Write([]byte{0xc0, 0x00}); err != nil {
			t.Fatal(err)
		}
		wantNothing(t, dc)
		row(t, local, "bad_first_packet", "not_connect", closed, before)
	})
	t.Run("CONNECT over --max-connect-size", func(t *testing.T) {
		before := scrapeMetrics(t, admin)
		conn, local := dev.mustDial(t, addr)
		dc := datagram.New(conn, datagram.Options{})
		if _, err := dc.Write(connectPacket(4, strings.Repeat("x", 300))); err != nil {
			t.Fatal(err)
		}
		wantNothing(t, dc)
		row(t, local, "bad_first_packet", "packet_too_large", closed, before)
	})
	t.Run("nothing within --connect-timeout", func(t *testing.T) {
		before := scrapeMetrics(t, admin)
		conn, local := dev.mustDial(t, addr)
		start := time.Now()
		wantNothing(t, datagram.New(conn, datagram.Options{}))
		if elapsed := time.Since(start); elapsed < 250*time.Millisecond {
			t.Errorf("closed after %v, well before the 500ms connect timeout", elapsed)
		}
		row(t, local, "bad_first_packet", "first_packet_timeout", closed, before)
	})
	t.Run("client ID not the identity", func(t *testing.T) {
		before := scrapeMetrics(t, admin)
		conn, local := dev.mustDial(t, addr)
		dc, rc := dtlsRawConnect(t, conn, "spoof")
		if rc != 0x02 {
			t.Errorf("CONNACK %#x, want 0x02 (identifier rejected)", rc)
		}
		// mqtls leaves the close to the device (up to 2 s): a close_notify right behind
		// the CONNACK could cost a pion device the CONNACK.
		const wait = 300 * time.Millisecond
		time.Sleep(wait)
		dc.Close()
		row(t, local, "rejected", "client_id_mismatch",
			series("mqtls_connect_decisions_total", "listener", "dtls", "outcome", "rejected", "reason", "client_id_mismatch"), before)
		e := s.dtlsAudit(t, func(e logEntry) bool { return e.str("remote") == local })
		if ms, _ := e["duration_ms"].(float64); ms < float64(wait.Milliseconds()) || ms > 1500 {
			t.Errorf("the refused session lasted %v ms; want it to end when the device closed, %v after the CONNACK", ms, wait)
		}
	})
	t.Run("not DTLS at all", func(t *testing.T) {
		// A datagram that is no DTLS handshake record never becomes a connection.
		c, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := c.Read(make([]byte, 512)); err == nil {
			t.Errorf("mqtls answered %d bytes to a datagram that is not DTLS", n)
		}
		if n := s.logs.count(func(l string) bool { return strings.Contains(l, c.LocalAddr().String()) }); n != 0 {
			t.Errorf("mqtls logged %d line(s) about the non-DTLS datagram", n)
		}
	})
	// The /readyz probe connects to the broker, so count MQTT clients, not TCP connections.
	if b.hasLog("New client connected") {
		t.Errorf("a refused DTLS session reached the broker:\n%s", b.log)
	}

	t.Run("broker unreachable", func(t *testing.T) {
		down, downAddr := startDTLSServer(t, "--upstream", "127.0.0.1:"+strconv.Itoa(freePort(t)), "--psk-file", psk.file,
			"--dial-timeout", "2s", "--admin-listen", "127.0.0.1:0")
		downAdmin := down.adminAddr(t)
		before := scrapeMetrics(t, downAdmin)
		conn, local := dev.mustDial(t, downAddr)
		if _, rc := dtlsRawConnect(t, conn, "dev-1"); rc != 0x03 {
			t.Errorf("CONNACK %#x, want 0x03 (server unavailable)", rc)
		}
		e := down.dtlsAudit(t, func(e logEntry) bool { return e.str("remote") == local })
		wantAudit(t, e, map[string]string{"outcome": "upstream_unavailable", "reason": "upstream_unavailable"})
		metric := series("mqtls_upstream_dial_failures_total", "listener", "dtls")
		if got := scrapeMetrics(t, downAdmin)[metric] - before[metric]; got < 1 {
			t.Errorf("%s went up by %v, want at least 1", metric, got)
		}
	})
}

// wantNothing reads from a DTLS session until it ends, failing the test if anything (a
// CONNACK) arrives first.
func wantNothing(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, datagram.MaxRecord)
	if n, err := c.Read(buf); err == nil {
		t.Errorf("received % x, want nothing before the session ends", buf[:n])
	}
}
