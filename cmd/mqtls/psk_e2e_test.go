package main

// End-to-end: TLS-PSK listeners (--psk-file) in front of a real Mosquitto, driven by
// mosquitto_pub/sub --psk, openssl s_client -psk and the package's own TLS-PSK client;
// a listener that serves certificates and PSK at once; stunnel's file format; bad flags.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// The suite mosquitto_pub and openssl s_client (OpenSSL 3) negotiate with mqtls's TLS-PSK
// server when left to their defaults: TLS 1.3, psk_dhe_ke, the first suite of both lists.
const defaultPSKSuite = "TLS_AES_128_GCM_SHA256"

// writePSKFile writes lines to dir/name and returns the path.
func writePSKFile(t *testing.T, dir, name string, lines ...string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// randomHexKey returns a fresh 32-byte key in hex.
func randomHexKey(t *testing.T) string {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(k)
}

// wantPSKSession checks the audit fields of a TLS 1.3 session a PSK device opened, whose
// identity is its PSK identity.
func wantPSKSession(t *testing.T, e logEntry, identity, suite string) {
	t.Helper()
	wantAudit(t, e, map[string]string{
		"identity":      identity,
		"identity_kind": "psk",
		"psk_identity":  identity,
		"tls_version":   "TLS 1.3",
		"cipher_suite":  suite,
	})
}

// logLine waits for the JSON log line of s whose message is msg.
func (s *server) logLine(t *testing.T, msg string) logEntry {
	t.Helper()
	line, ok := s.logs.wait(waitTimeout, nil, func(line string) bool {
		e, ok := parseEntry(line)
		return ok && e.str("message") == msg
	})
	if !ok {
		t.Fatalf("mqtls did not log %q within %v", msg, waitTimeout)
	}
	e, _ := parseEntry(line)
	return e
}

// TestPSKRoundTrip: keys made by `mqtls psk add` work as printed. A mosquitto_pub --psk
// device publishes through a PSK-only listener (no certificate at all) to a mosquitto_sub
// --psk device, over MQTT 3.1.1 and 5.0.
func TestPSKRoundTrip(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "psk.txt")
	publisher, subscriber := addPSKDevice(t, file, "dev-1"), addPSKDevice(t, file, "dev-2")
	b := startBroker(t, "")
	s := startServer(t, "--upstream", b.addr, "--psk-file", file)
	started := s.logLine(t, "starting")
	wantAudit(t, started, map[string]string{"psk_file": file, "psk_identities": "2", "identity": "{psk}"})

	sub := subscriber.sub(t, s.addr, "dev-2", "mqttv311", "psk/#", 2)
	b.waitLog(t, "Sending SUBACK to dev-2")
	publisher.mustPub(t, s.addr, "dev-1", "mqttv311", "psk/dev-1/temp", "21.5")
	publisher.mustPub(t, s.addr, "dev-1-v5", "5", "psk/dev-1/hum", "40")
	want := []string{"psk/dev-1/temp 21.5", "psk/dev-1/hum 40"}
	if got := sub.lines(t); !equalLines(got, want) {
		t.Errorf("mosquitto_sub --psk got %q, want %q", got, want)
	}
	b.waitLog(t, " as dev-1 (p2,")
	b.waitLog(t, " as dev-1-v5 (p5,")

	for _, tc := range []struct{ clientID, identity string }{
		{"dev-1", "dev-1"},
		{"dev-1-v5", "dev-1"},
		{"dev-2", "dev-2"},
	} {
		e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == tc.clientID })
		wantAudit(t, e, map[string]string{"outcome": "forwarded", "reason": "", "client_id_forwarded": tc.clientID})
		wantPSKSession(t, e, tc.identity, defaultPSKSuite)
		wantSessionFields(t, e)
	}
}

// TestPSKClientIDEnforce: with --client-id enforce, a PSK device must use its PSK identity
// as client ID; any other is refused with "identifier rejected" before the broker sees it.
func TestPSKClientIDEnforce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	file := writePSKFile(t, dir, "psk.txt", dev.identity+":"+dev.keyHex)
	b := startBroker(t, aclClientID)
	s := startServer(t, "--upstream", b.addr, "--psk-file", file, "--client-id", "enforce")

	for _, tc := range []struct {
		version, clientID, says string
	}{
		{"mqttv311", "spoof", "identifier rejected"},
		{"mqttv311", "", "identifier rejected"}, // mosquitto_pub sends an empty client ID
		{"5", "spoof-5", "Client Identifier not valid"},
	} {
		t.Run(fmt.Sprintf("refuses -V %s -i %q", tc.version, tc.clientID), func(t *testing.T) {
			args := dev.mosquittoArgs(s.addr, tc.clientID, tc.version)
			if tc.clientID == "" {
				args = slicesWithout(args, "-i", "")
			}
			out, err := runPeerBin(t, "mosquitto_pub", append(args, "-t", "devices/dev-1/x", "-m", "x")...)
			if err == nil || !strings.Contains(out, tc.says) {
				t.Errorf("mosquitto_pub -i %q: err %v, output %q; want a refusal saying %q", tc.clientID, err, out, tc.says)
			}
		})
	}
	for _, clientID := range []string{"spoof", "", "spoof-5"} {
		e := s.audit(t, func(e logEntry) bool { return e.str("mqtt_level") != "" && e.str("client_id") == clientID })
		wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_mismatch", "identity": "dev-1", "identity_kind": "psk"})
	}
	b.wantNoConnections(t)

	dev.mustPub(t, s.addr, "dev-1", "mqttv311", "devices/dev-1/temp", "21.5")
	b.waitLog(t, "Received PUBLISH from dev-1 (d0, q0, r0, m0, 'devices/dev-1/temp'")
	if b.hasLog(" as spoof") {
		t.Errorf("the broker saw a spoofed client ID:\n%s", b.log)
	}
	e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "dev-1" })
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "client_id_forwarded": "dev-1"})
	wantPSKSession(t, e, "dev-1", defaultPSKSuite)
}

// slicesWithout returns args without the first occurrence of the pair flag, value.
func slicesWithout(args []string, flag, value string) []string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag && args[i+1] == value {
			return append(append([]string(nil), args[:i]...), args[i+2:]...)
		}
	}
	return args
}

// TestPSKRefusals: wrong keys, unknown identities and clients of the wrong kind fail the
// handshake with a reason that says why, and never reach the broker.
func TestPSKRefusals(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	dev := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	file := writePSKFile(t, p.dir, "psk.txt", dev.identity+":"+dev.keyHex)
	wrongKey := randomHexKey(t)
	pskOnly := []string{"--upstream", b.addr, "--psk-file", file}
	certOnly := p.serverArgs(b.addr, true)

	t.Run("cases", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			server   []string
			bin      string
			args     []string // the peer's arguments after the address
			peerSays string   // in the peer's output, lower-cased
			reason   string   // in the server's log
		}{
			{
				name: "openssl wrong key", server: pskOnly, bin: "openssl",
				args:     []string{"-tls1_2", "-psk", wrongKey, "-psk_identity", "dev-1"},
				peerSays: "alert decrypt error", reason: "decrypt_error",
			},
			{
				// Answered like a wrong key, so identities cannot be probed; the log knows.
				name: "openssl unknown identity", server: pskOnly, bin: "openssl",
				args:     []string{"-tls1_2", "-psk", dev.keyHex, "-psk_identity", "dev-9"},
				peerSays: "alert decrypt error", reason: "unknown_psk_identity",
			},
			{
				name: "openssl TLS 1.3 unknown identity", server: pskOnly, bin: "openssl",
				args:     []string{"-tls1_3", "-psk", dev.keyHex, "-psk_identity", "dev-9"},
				peerSays: "alert decrypt error", reason: "unknown_psk_identity",
			},
			{
				name: "openssl TLS 1.2 against --min-tls 1.3", server: append([]string{"--min-tls", "1.3"}, pskOnly...), bin: "openssl",
				args:     []string{"-tls1_2", "-psk", dev.keyHex, "-psk_identity", "dev-1"},
				peerSays: "alert protocol version", reason: "protocol_version",
			},
			{
				name: "openssl TLS 1.3 with no group mqtls has", server: pskOnly, bin: "openssl",
				args:     []string{"-tls1_3", "-groups", "P-384", "-psk", dev.keyHex, "-psk_identity", "dev-1"},
				peerSays: "alert handshake failure", reason: "no_shared_group",
			},
			{
				name: "mosquitto_pub wrong key", server: pskOnly, bin: "mosquitto_pub",
				args:     []string{"--psk", wrongKey, "--psk-identity", "dev-1", "-i", "dev-1", "-t", "x", "-m", "x"},
				peerSays: "a tls error occurred", reason: "decrypt_error",
			},
			{
				// Offered only PSK suites, crypto/tls finds no suite in common: named as a
				// PSK listener names it.
				name: "openssl PSK-only client against a certificate listener", server: certOnly, bin: "openssl",
				args:     []string{"-tls1_2", "-cipher", "PSK", "-psk", dev.keyHex, "-psk_identity", "dev-1"},
				peerSays: "alert handshake failure", reason: "no_shared_cipher",
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				s := startServer(t, tc.server...)
				host, port, _ := net.SplitHostPort(s.addr)
				var args []string
				if tc.bin == "openssl" {
					args = append([]string{"s_client", "-connect", s.addr}, tc.args...)
				} else {
					args = append([]string{"-h", host, "-p", port}, tc.args...)
				}
				out, err := runPeerBin(t, tc.bin, args...)
				if err == nil {
					t.Errorf("%s succeeded, want a refused handshake:\n%s", tc.bin, out)
				}
				if !strings.Contains(strings.ToLower(out), tc.peerSays) {
					t.Errorf("%s output lacks %q:\n%s", tc.bin, tc.peerSays, out)
				}
				e := s.audit(t, func(logEntry) bool { return true })
				wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": tc.reason, "identity": "", "identity_kind": "none", "psk_identity": ""})
				if strings.Contains(s.logs.String(), dev.keyHex) || strings.Contains(s.logs.String(), wrongKey) {
					t.Errorf("the log holds a key:\n%s", s.logs)
				}
			})
		}

		t.Run("certificate device against a PSK-only listener", func(t *testing.T) {
			t.Parallel()
			s := startServer(t, pskOnly...)
			conn, local, err := p.device(t, "sensor-1").handshake(s.addr)
			if err == nil {
				conn.Close()
				t.Fatalf("TLS handshake with a certificate succeeded against a PSK-only listener")
			}
			if !strings.Contains(err.Error(), "handshake failure") {
				t.Errorf("client error %v, want the server's handshake_failure alert", err)
			}
			e := s.auditFrom(t, local)
			wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": "no_shared_cipher", "identity": "", "identity_kind": "none"})
		})

		t.Run("in-process client: wrong key, unknown identity", func(t *testing.T) {
			t.Parallel()
			s := startServer(t, pskOnly...)
			for _, tc := range []struct {
				identity, key, reason string
			}{
				{"dev-1", wrongKey, "decrypt_error"},
				{"dev-9", dev.keyHex, "unknown_psk_identity"},
				{"DEV-1", dev.keyHex, "unknown_psk_identity"}, // identities are matched exactly
			} {
				_, local, err := dialPSK(t, s.addr, &tlspsk.ClientConfig{Identity: tc.identity, Key: mustDecodeHex(t, tc.key)})
				// The client sees a wrong key either way; only the log tells them apart.
				if tlspsk.ReasonOf(err) != "decrypt_error" {
					t.Errorf("%s: client error %v, want the server's decrypt_error alert", tc.identity, err)
				}
				e := s.auditFrom(t, local)
				wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": tc.reason})
			}
		})
	})
	b.wantNoConnections(t)
}

func mustDecodeHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPSKMixedListener: one listener with a certificate, a client CA and a PSK file serves
// both kinds of device at once, each bound to its own identity ({cn}psk-{psk} by default:
// PSK device dev-1 is psk-dev-1, and no certificate can be that).
func TestPSKMixedListener(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	psk := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	file := writePSKFile(t, p.dir, "psk.txt", "# gateway devices", psk.identity+":"+psk.keyHex)
	s := startServer(t, append(p.serverArgs(b.addr, true), "--psk-file", file, "--client-id", "enforce")...)
	wantAudit(t, s.logLine(t, "starting"), map[string]string{"identity": "{cn}psk-{psk}", "client_auth": "require", "psk_identities": "1"})
	cert := p.device(t, "sensor-1")

	// The certificate device stays subscribed while the PSK device publishes.
	sub := cert.sub(t, s.addr, "sensor-1", "mqttv311", "devices/#", 1)
	b.waitLog(t, "Sending SUBACK to sensor-1")

	t.Run("each kind refused under the other's identity", func(t *testing.T) {
		for _, id := range []string{"sensor-1", "dev-1"} {
			out, err := psk.pub(t, s.addr, id, "mqttv311", "devices/"+id+"/x", "x")
			if err == nil || !strings.Contains(out, "identifier rejected") {
				t.Errorf("PSK device as %s: err %v, output %q; want \"identifier rejected\"", id, err, out)
			}
			e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == id && e.str("outcome") == "rejected" })
			wantAudit(t, e, map[string]string{"reason": "client_id_mismatch", "identity": "psk-dev-1", "identity_kind": "psk"})
		}
		out, err := cert.pub(t, s.addr, "psk-dev-1", "mqttv311", "devices/psk-dev-1/x", "x")
		if err == nil || !strings.Contains(out, "identifier rejected") {
			t.Errorf("certificate device as psk-dev-1: err %v, output %q; want \"identifier rejected\"", err, out)
		}
		e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "psk-dev-1" && e.str("outcome") == "rejected" })
		wantAudit(t, e, map[string]string{"reason": "client_id_mismatch", "identity": "sensor-1", "identity_kind": "certificate"})
	})

	t.Run("a certificate for CN psk-dev-1 cannot pose as the PSK device", func(t *testing.T) {
		out, err := p.device(t, "psk-dev-1").pub(t, s.addr, "psk-dev-1", "mqttv311", "devices/psk-dev-1/x", "forged")
		if err == nil {
			t.Errorf("certificate for CN psk-dev-1 was accepted as psk-dev-1:\n%s", out)
		}
		e := s.audit(t, func(e logEntry) bool {
			return e.str("client_id") == "psk-dev-1" && e.str("identity_kind") == "certificate" && e.str("outcome") == "rejected" && e.str("reason") != "client_id_mismatch"
		})
		wantAudit(t, e, map[string]string{"reason": "identity_ambiguous"})
	})

	psk.mustPub(t, s.addr, "psk-dev-1", "mqttv311", "devices/psk-dev-1/temp", "21.5")
	if got, want := sub.lines(t), []string{"devices/psk-dev-1/temp 21.5"}; !equalLines(got, want) {
		t.Errorf("certificate subscriber got %q, want %q", got, want)
	}

	e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "psk-dev-1" && e.str("outcome") == "forwarded" })
	wantAudit(t, e, map[string]string{"identity": "psk-dev-1", "identity_kind": "psk", "psk_identity": "dev-1", "tls_version": "TLS 1.3", "cipher_suite": defaultPSKSuite})
	e = s.audit(t, func(e logEntry) bool { return e.str("client_id") == "sensor-1" && e.str("outcome") == "forwarded" })
	wantAudit(t, e, map[string]string{"identity": "sensor-1", "identity_kind": "certificate", "psk_identity": "", "tls_version": "TLS 1.3"})

	// MQTT 5.0 over the package's own TLS-PSK client (TLS 1.3), on the same listener.
	conn, _, err := dialPSK(t, s.addr, &tlspsk.ClientConfig{Identity: "dev-1", Key: mustDecodeHex(t, psk.keyHex),
		Versions: []uint16{tlspsk.VersionTLS13}})
	if err != nil {
		t.Fatalf("in-process TLS 1.3 PSK client: %v", err)
	}
	if v := conn.ConnectionState().Version; v != tlspsk.VersionTLS13 {
		t.Errorf("in-process client negotiated %#04x, want TLS 1.3", v)
	}
	if rc := rawConnect(t, conn, 5, "psk-dev-1"); rc != 0 {
		t.Errorf("MQTT 5.0 CONNECT over TLS-PSK: reason %#x, want 0", rc)
	}
	b.waitLog(t, " as psk-dev-1 (p5,")
}

// TestPSKListenerOptions: --psk-allow-no-dhe lets a TLS 1.3 client that offers only
// psk_ke (no forward secrecy) in, which the default refuses (psk_ke_refused), and
// --psk-reveal-unknown-identity answers an unknown identity with its own alert rather than
// like a wrong key.
func TestPSKListenerOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	file := writePSKFile(t, dir, "psk.txt", dev.identity+":"+dev.keyHex)
	b := startBroker(t, "")
	gnutlsPSKKE := func(addr string) (string, error) {
		host, port, _ := net.SplitHostPort(addr)
		return runPeerBin(t, "gnutls-cli", "--priority", "NORMAL:-KX-ALL:+PSK:-VERS-ALL:+VERS-TLS1.3",
			"--pskusername", dev.identity, "--pskkey", dev.keyHex, "-p", port, host)
	}

	t.Run("psk_ke only refused by default", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, "--upstream", b.addr, "--psk-file", file)
		if out, err := gnutlsPSKKE(s.addr); err == nil || !strings.Contains(out, "Handshake failed") {
			t.Errorf("gnutls-cli offering only psk_ke: err %v, want a refused handshake:\n%s", err, out)
		}
		wantAudit(t, s.audit(t, func(logEntry) bool { return true }), map[string]string{"outcome": "handshake_failed", "reason": "psk_ke_refused"})
	})
	t.Run("psk_ke only accepted with --psk-allow-no-dhe", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, "--upstream", b.addr, "--psk-file", file, "--psk-allow-no-dhe")
		if out, err := gnutlsPSKKE(s.addr); strings.Contains(out, "Handshake failed") {
			t.Errorf("gnutls-cli offering only psk_ke: err %v, want a handshake:\n%s", err, out)
		}
		e := s.audit(t, func(logEntry) bool { return true })
		wantAudit(t, e, map[string]string{"identity_kind": "psk", "psk_identity": "dev-1", "tls_version": "TLS 1.3"})
	})
	t.Run("unknown identity revealed with --psk-reveal-unknown-identity", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, "--upstream", b.addr, "--psk-file", file, "--psk-reveal-unknown-identity")
		out, err := runPeerBin(t, "openssl", "s_client", "-connect", s.addr, "-tls1_3", "-psk", dev.keyHex, "-psk_identity", "dev-9")
		if err == nil || !strings.Contains(strings.ToLower(out), "alert unknown psk identity") {
			t.Errorf("openssl with an unknown identity: err %v, want the unknown_psk_identity alert:\n%s", err, out)
		}
		wantAudit(t, s.audit(t, func(logEntry) bool { return true }), map[string]string{"outcome": "handshake_failed", "reason": "unknown_psk_identity"})
	})
	b.wantNoConnections(t)
}

// TestPSKStunnelFormat: with --psk-format stunnel, a key of hex digits of even length is
// decoded, any other key is its raw bytes; --psk-hint reaches the client.
func TestPSKStunnelFormat(t *testing.T) {
	t.Parallel()
	const (
		rawKey = "correct-horse-battery-staple" // 28 bytes of text
		oddKey = "0123456789abcdef0"            // hex digits, but 17 of them: raw bytes
	)
	hexKey := randomHexKey(t)
	dir := t.TempDir()
	file := writePSKFile(t, dir, "psk.secrets",
		"# stunnel PSKsecrets",
		"raw-1:"+rawKey,
		"hex-1:"+hexKey,
		"odd-1:"+oddKey,
	)
	b := startBroker(t, "")
	s := startServer(t, "--upstream", b.addr, "--psk-file", file, "--psk-format", "stunnel", "--psk-hint", "gateway-7")

	for _, dev := range []pskDevice{
		{identity: "raw-1", keyHex: hex.EncodeToString([]byte(rawKey))},
		{identity: "hex-1", keyHex: hexKey},
		{identity: "odd-1", keyHex: hex.EncodeToString([]byte(oddKey))},
	} {
		dev.mustPub(t, s.addr, dev.identity, "mqttv311", "gw/"+dev.identity, "on")
		b.waitLog(t, "Received PUBLISH from "+dev.identity+" (d0, q0, r0, m0, 'gw/"+dev.identity+"'")
		e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == dev.identity })
		wantAudit(t, e, map[string]string{"outcome": "forwarded"})
		wantPSKSession(t, e, dev.identity, defaultPSKSuite)
	}

	t.Run("in-process client with the raw key", func(t *testing.T) {
		conn, _, err := dialPSK(t, s.addr, &tlspsk.ClientConfig{Identity: "raw-1", Key: []byte(rawKey)})
		if err != nil {
			t.Fatalf("TLS-PSK handshake: %v", err)
		}
		if hint := conn.ConnectionState().Hint; hint != "gateway-7" {
			t.Errorf("client saw hint %q, want the --psk-hint \"gateway-7\"", hint)
		}
		if rc := rawConnect(t, conn, 4, "raw-1/go"); rc != 0 {
			t.Fatalf("CONNACK %#x, want 0", rc)
		}
		b.waitLog(t, " as raw-1/go (p2,")
	})
	t.Run("hex key taken as text is the wrong key", func(t *testing.T) {
		_, local, err := dialPSK(t, s.addr, &tlspsk.ClientConfig{Identity: "hex-1", Key: []byte(hexKey)})
		if err == nil {
			t.Fatal("handshake with the hex text of a hex key succeeded; stunnel's rule decodes it")
		}
		wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "handshake_failed", "reason": "decrypt_error"})
	})
	if strings.Contains(s.logs.String(), rawKey) || strings.Contains(s.logs.String(), hexKey) {
		t.Errorf("the log holds a key:\n%s", s.logs)
	}
}

// TestPSKBadFlags: PSK flags that cannot work are refused before serving, naming the flag,
// the file or the file:line to fix, and never quoting a key.
func TestPSKBadFlags(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	secret := randomHexKey(t)
	good := writePSKFile(t, p.dir, "good.psk", "dev-1:"+secret)
	noColon := writePSKFile(t, p.dir, "nocolon.psk", "# devices", "dev-1:"+randomHexKey(t), "dev-2 "+secret)
	oddHex := writePSKFile(t, p.dir, "odd.psk", "dev-1:"+secret+"f")
	short := writePSKFile(t, p.dir, "short.psk", "dev-1:"+randomHexKey(t), "", "dev-2:"+secret[:30])
	missing := filepath.Join(p.dir, "missing.psk")
	cert := []string{"--cert", p.serverCertFile, "--key", p.serverKey}

	for _, tc := range []struct {
		name string
		args []string
		want []string // each must appear in the error
	}{
		{"malformed line: no colon", []string{"--psk-file", noColon}, []string{"--psk-file", noColon + ":3: ", "colon"}},
		{"odd-length hex key", []string{"--psk-file", oddHex}, []string{"--psk-file", oddHex + ":1: ", "dev-1", "hex"}},
		{"short key", []string{"--psk-file", short}, []string{"--psk-file", short + ":3: ", "at least 16"}},
		{"raw key in mosquitto format", []string{"--psk-file", writePSKFile(t, p.dir, "raw.psk", "dev-1:"+secret+"-not-hex")},
			[]string{"--psk-file", "raw.psk:1: ", "hex"}},
		{"missing PSK file", []string{"--psk-file", missing}, []string{"--psk-file", missing}},
		{"--psk-hint without --psk-file", append([]string{"--psk-hint", "gw"}, cert...), []string{"--psk-hint", "--psk-file"}},
		{"--psk-format without --psk-file", append([]string{"--psk-format", "stunnel"}, cert...), []string{"--psk-format", "--psk-file"}},
		{"unknown --psk-format", []string{"--psk-file", good, "--psk-format", "openssl"}, []string{"--psk-format"}},
		{"--psk-hint too long", []string{"--psk-file", good, "--psk-hint", strings.Repeat("h", 2000)}, []string{"--psk-hint", "2000 bytes"}},
		{"--psk-allow-no-dhe without --psk-file", append([]string{"--psk-allow-no-dhe"}, cert...), []string{"--psk-allow-no-dhe", "--psk-file"}},
		{"--psk-reveal-unknown-identity without --psk-file", append([]string{"--psk-reveal-unknown-identity"}, cert...), []string{"--psk-reveal-unknown-identity", "--psk-file"}},
		{"--client-id enforce with {cn} on a PSK-only listener", []string{"--psk-file", good, "--client-id", "enforce", "--identity", "{cn}"},
			[]string{"--identity", "{psk}"}},
		{"--client-ca on a PSK-only listener", []string{"--psk-file", good, "--client-ca", p.caFile}, []string{"--client-ca", "--cert"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			argv := append([]string{"serve", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"}, tc.args...)
			start := time.Now()
			stdout, err := runApp(t, argv...)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("RunContext took %v to refuse the flags", elapsed)
			}
			if err == nil {
				t.Fatalf("mqtls %s: RunContext returned nil, want an error naming %q", strings.Join(argv, " "), tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret[:30]) {
				t.Errorf("error %q quotes a key", err)
			}
			if strings.Contains(stdout, `"listening"`) {
				t.Errorf("mqtls started listening before refusing the flags:\n%s", stdout)
			}
		})
	}
}
