package main

// Client mode (#18): local plain MQTT clients → mqtls --mode client → a remote broker over
// TLS, mutual TLS or TLS-PSK. Real peers: mosquitto_pub, Mosquitto's own TLS listener with
// require_certificate, a Mosquitto bridge, and mqtls's server mode.

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// tlsBroker is a Mosquitto with its plain listener (for the harness and subscribers) and a
// TLS listener requiring client certificates of p's CA.
type tlsBroker struct {
	*broker
	tlsAddr string
}

func startTLSBroker(t *testing.T, p *pki, plainPort, tlsPort int) (*tlsBroker, error) {
	t.Helper()
	extra := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\n",
		tlsPort, p.caFile, p.serverCertFile, p.serverKey)
	b, err := startBrokerConf(t, plainPort, "", extra)
	if err != nil {
		return nil, err
	}
	return &tlsBroker{broker: b, tlsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))}, nil
}

func mustTLSBroker(t *testing.T, p *pki) *tlsBroker {
	t.Helper()
	var lastErr error
	for range 3 {
		b, err := startTLSBroker(t, p, freePort(t), freePort(t))
		if err == nil {
			return b
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return nil
}

// plainArgs are mosquitto_pub/sub's options for a plain connection to addr.
func plainArgs(addr, clientID string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"-h", host, "-p", port, "-i", clientID, "-V", "mqttv311"}
}

// plainPub publishes one message in plain MQTT to addr.
func plainPub(t *testing.T, addr, clientID, topic, msg string) (string, error) {
	t.Helper()
	return runPeerBin(t, "mosquitto_pub", append(plainArgs(addr, clientID), "-t", topic, "-m", msg)...)
}

// subscribe starts mosquitto_sub on b's plain listener and waits for its SUBACK.
func subscribe(t *testing.T, b *broker, id, topic string, count int) *subscriber {
	t.Helper()
	s := startSub(t, append(plainArgs(b.addr, id), "-t", topic, "-v", "-C", strconv.Itoa(count), "-W", "20")...)
	b.waitLog(t, "Sending SUBACK to "+id)
	return s
}

func TestClientModeToMosquittoTLS(t *testing.T) {
	checkGoroutines(t)
	p := newPKI(t)
	b := mustTLSBroker(t, p)
	gw := p.device(t, "gw-1")

	t.Run("check", func(t *testing.T) {
		out, err := runApp(t, "check", "--mode", "client", "--upstream", b.tlsAddr, "--remote-ca", p.caFile,
			"--remote-cert", gw.certFile, "--remote-key", gw.keyFile, "--remote-server-name", "localhost")
		if err != nil || !strings.Contains(out, `remote    `+b.tlsAddr+` as certificate "gw-1"`) {
			t.Errorf("mqtls check: %v\n%s", err, out)
		}
		// A template naming what the gateway's credential lacks is refused at load.
		_, err = runApp(t, "check", "--mode", "client", "--upstream", b.tlsAddr, "--remote-ca", p.caFile,
			"--remote-cert", gw.certFile, "--remote-key", gw.keyFile, "--remote-server-name", "localhost", "--remote-client-id", "{psk}/{client_id}")
		if err == nil || !strings.Contains(err.Error(), "has no {psk}") {
			t.Errorf("check with {psk} over a certificate: %v, want the template refused", err)
		}
	})

	t.Run("mutual TLS, client ID rewritten into the gateway's namespace", func(t *testing.T) {
		s := startServer(t, "--mode", "client", "--upstream", b.tlsAddr, "--remote-ca", p.caFile,
			"--remote-cert", gw.certFile, "--remote-key", gw.keyFile, "--remote-server-name", "localhost",
			"--remote-client-id", "{cn}/{client_id}")
		sub := subscribe(t, b.broker, "sub-mtls", "up/#", 1)
		if out, err := plainPub(t, s.addr, "dev7", "up/dev7", "hello"); err != nil {
			t.Fatalf("mosquitto_pub through client mode: %v\n%s", err, out)
		}
		if got := sub.lines(t); len(got) != 1 || got[0] != "up/dev7 hello" {
			t.Errorf("subscriber at the remote broker got %q, want [\"up/dev7 hello\"]", got)
		}
		// The remote broker saw the gateway's certificate and the rewritten client ID.
		b.waitLog(t, "as gw-1/dev7")
		e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "dev7" })
		wantAudit(t, e, map[string]string{"mode": "client", "outcome": "forwarded", "client_id_forwarded": "gw-1/dev7"})
	})

	t.Run("local clients on a unix socket", func(t *testing.T) {
		dir, err := os.MkdirTemp("", "mq") // a socket path must stay short
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		sock := filepath.Join(dir, "uplink.sock")
		s := startServer(t, "--mode", "client", "--listen", "unix:"+sock, "--upstream", b.tlsAddr, "--remote-ca", p.caFile,
			"--remote-cert", gw.certFile, "--remote-key", gw.keyFile, "--remote-server-name", "localhost")
		if s.addr != sock {
			t.Fatalf("listening on %q, want %q", s.addr, sock)
		}
		sub := subscribe(t, b.broker, "sub-unix", "unix/#", 1)
		out, err := runPeerBin(t, "mosquitto_pub", "--unix", sock, "-i", "via-unix", "-t", "unix/x", "-m", "u")
		if err != nil {
			t.Fatalf("mosquitto_pub --unix: %v\n%s", err, out)
		}
		if got := sub.lines(t); len(got) != 1 || got[0] != "unix/x u" {
			t.Errorf("subscriber got %q", got)
		}
	})

	other, err := handshaketest.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	otherCAFile, err := handshaketest.WriteFile(t.TempDir(), "other-ca.crt", other.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	// A pin of some other key than the broker's.
	pinFile := filepath.Join(t.TempDir(), "pins")
	hash, err := handshake.SPKIHash(other.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake.AddKey(pinFile, "not-the-broker", hash); err != nil {
		t.Fatal(err)
	}
	// The broker's real pin.
	srvPEM, err := os.ReadFile(p.serverCertFile)
	if err != nil {
		t.Fatal(err)
	}
	goodPin := filepath.Join(t.TempDir(), "good-pins")
	goodHash, err := handshake.SPKIHash(srvPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake.AddKey(goodPin, "broker", goodHash); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		args   []string
		reason string // "" for forwarded
	}{
		{"wrong server certificate", []string{"--remote-ca", otherCAFile, "--remote-server-name", "localhost"}, "upstream_untrusted_cert"},
		{"wrong name", []string{"--remote-ca", p.caFile, "--remote-server-name", "broker.example.com"}, "upstream_name_mismatch"},
		{"wrong pin", []string{"--remote-ca", p.caFile, "--remote-server-name", "localhost", "--remote-pinned-keys", pinFile}, "upstream_key_not_pinned"},
		{"right pin", []string{"--remote-ca", p.caFile, "--remote-server-name", "localhost", "--remote-pinned-keys", goodPin}, ""},
		{"no client certificate", []string{"--remote-ca", p.caFile, "--remote-server-name", "localhost"}, "upstream_server_refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--mode", "client", "--upstream", b.tlsAddr}, tc.args...)
			if tc.name != "no client certificate" {
				args = append(args, "--remote-cert", gw.certFile, "--remote-key", gw.keyFile)
			}
			s := startServer(t, args...)
			id := "dev-" + strings.ReplaceAll(tc.name, " ", "-")
			out, err := plainPub(t, s.addr, id, "up/x", "m")
			e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == id })
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("mosquitto_pub: %v\n%s", err, out)
				}
				wantAudit(t, e, map[string]string{"mode": "client", "outcome": "forwarded"})
				return
			}
			if err == nil {
				t.Errorf("mosquitto_pub succeeded through a remote that should be refused:\n%s", out)
			}
			// mosquitto_pub hears CONNACK "server unavailable" (3.1.1 return code 3).
			if !strings.Contains(strings.ToLower(out), "unavailable") {
				t.Errorf("mosquitto_pub output %q, want the CONNACK's server unavailable", out)
			}
			wantAudit(t, e, map[string]string{"mode": "client", "outcome": "upstream_unavailable", "reason": tc.reason})
		})
	}
}

// TestClientModeToServerModePSK chains the two halves: mosquitto_pub → mqtls client mode →
// TLS-PSK → mqtls server mode → Mosquitto.
func TestClientModeToServerModePSK(t *testing.T) {
	checkGoroutines(t)
	b := startBroker(t, "")
	dir := t.TempDir()
	const keyHex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	pskFile, err := handshaketest.WriteFile(dir, "psk", []byte("gw-psk:"+keyHex+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	front := startServer(t, "--upstream", b.addr, "--psk-file", pskFile, "--client-id", "prefix")
	gw := startServer(t, "--mode", "client", "--upstream", front.addr, "--remote-psk-file", pskFile,
		"--remote-psk-identity", "gw-psk", "--remote-client-id", "{psk}/{client_id}")
	sub := subscribe(t, b, "sub-psk", "up/#", 1)
	if out, err := plainPub(t, gw.addr, "sensor", "up/sensor", "via-psk"); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	if got := sub.lines(t); len(got) != 1 || got[0] != "up/sensor via-psk" {
		t.Errorf("subscriber got %q, want [\"up/sensor via-psk\"]", got)
	}
	e := gw.audit(t, func(e logEntry) bool { return e.str("client_id") == "sensor" })
	wantAudit(t, e, map[string]string{"mode": "client", "outcome": "forwarded", "client_id_forwarded": "gw-psk/sensor"})
	e = front.audit(t, func(e logEntry) bool { return e.str("client_id") == "gw-psk/sensor" })
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "identity": "gw-psk", "psk_identity": "gw-psk", "tls_version": "TLS 1.3"})

	// A key the front does not have is refused, and the local client hears so.
	badFile, err := handshaketest.WriteFile(dir, "bad-psk", []byte("gw-psk:"+strings.Repeat("ab", 32)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	bad := startServer(t, "--mode", "client", "--upstream", front.addr, "--remote-psk-file", badFile, "--remote-psk-identity", "gw-psk")
	if out, err := plainPub(t, bad.addr, "sensor2", "up/x", "m"); err == nil {
		t.Errorf("mosquitto_pub with a wrong PSK succeeded:\n%s", out)
	}
	e = bad.audit(t, func(e logEntry) bool { return e.str("client_id") == "sensor2" })
	wantAudit(t, e, map[string]string{"mode": "client", "outcome": "upstream_unavailable", "reason": "upstream_server_refused"})
}

// TestClientModeBridge: a local Mosquitto bridges out through mqtls client mode to a
// remote Mosquitto's TLS listener; the remote is restarted and the bridge comes back.
func TestClientModeBridge(t *testing.T) {
	checkGoroutines(t)
	p := newPKI(t)
	plainPort, tlsPort := freePort(t), freePort(t)
	remote, err := startTLSBroker(t, p, plainPort, tlsPort)
	if err != nil {
		t.Fatal(err)
	}
	gw := p.device(t, "gw-bridge")
	s := startServer(t, "--mode", "client", "--upstream", remote.tlsAddr, "--remote-ca", p.caFile,
		"--remote-cert", gw.certFile, "--remote-key", gw.keyFile, "--remote-server-name", "localhost")
	bridge := fmt.Sprintf("connection up\naddress %s\ntopic up/# out 0\nclientid local-bridge\nbridge_protocol_version mqttv311\ncleansession true\nrestart_timeout 1 2\nkeepalive_interval 5\n", s.addr)
	var local *broker
	for range 3 {
		if local, err = startBrokerConf(t, freePort(t), "", bridge); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	remote.waitLog(t, "as local-bridge")

	sub := subscribe(t, remote.broker, "sub-bridge-1", "up/#", 1)
	if out, err := plainPub(t, local.addr, "local-dev", "up/a", "first"); err != nil {
		t.Fatalf("mosquitto_pub to the local broker: %v\n%s", err, out)
	}
	if got := sub.lines(t); len(got) != 1 || got[0] != "up/a first" {
		t.Fatalf("remote subscriber got %q, want [\"up/a first\"]", got)
	}

	// The remote broker goes away and comes back on the same ports.
	remote.stop()
	s.audit(t, func(e logEntry) bool { return e.str("client_id") == "local-bridge" && e.str("outcome") == "forwarded" })
	var again *tlsBroker
	for range 20 { // the ports were just released; another process may hold them briefly
		if again, err = startTLSBroker(t, p, plainPort, tlsPort); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	again.waitLog(t, "as local-bridge")
	sub = subscribe(t, again.broker, "sub-bridge-2", "up/#", 1)
	if out, err := plainPub(t, local.addr, "local-dev", "up/b", "second"); err != nil {
		t.Fatalf("mosquitto_pub to the local broker: %v\n%s", err, out)
	}
	if got := sub.lines(t); len(got) != 1 || got[0] != "up/b second" {
		t.Errorf("remote subscriber after the restart got %q, want [\"up/b second\"]", got)
	}
}

// TestClientModeReload: the gateway's certificate is replaced on disk; new sessions go out
// with the new one, and a session opened before keeps working.
func TestClientModeReload(t *testing.T) {
	checkGoroutines(t)
	p := newPKI(t)
	b := mustTLSBroker(t, p)
	dir := t.TempDir()
	issue := func(cn string) {
		c, err := p.ca.Issue(handshaketest.Template{CommonName: cn})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Files(dir, "gateway"); err != nil {
			t.Fatal(err)
		}
	}
	issue("gw-old")
	s := startServer(t, "--mode", "client", "--upstream", b.tlsAddr, "--remote-ca", p.caFile, "--remote-server-name", "localhost",
		"--remote-cert", filepath.Join(dir, "gateway.crt"), "--remote-key", filepath.Join(dir, "gateway.key"), "--reload-interval", "100ms")

	old, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if code := rawConnect(t, old, 4, "before"); code != 0 {
		t.Fatalf("CONNACK %d, want 0", code)
	}
	b.waitLog(t, "as before (p2, c1, k60, u'gw-old')")

	issue("gw-new")
	s.waitLine(t, "reloaded", nil)
	if out, err := plainPub(t, s.addr, "after", "up/x", "m"); err != nil {
		t.Fatalf("mosquitto_pub after the reload: %v\n%s", err, out)
	}
	b.waitLog(t, "as after (p2, c1, k60, u'gw-new')")

	// The old session is still up: PINGREQ, PINGRESP.
	if _, err := old.Write([]byte{0xc0, 0}); err != nil {
		t.Fatalf("the session opened before the reload: %v", err)
	}
	if typ, _, err := readPacket(old); err != nil || typ != 0xd0 {
		t.Fatalf("the session opened before the reload: got packet %#x, %v; want PINGRESP", typ, err)
	}
}

// TestClientModeToMosquittoPSK: the uplink's TLS-PSK client against Mosquitto's own PSK
// listener (OpenSSL), TLS 1.3 and TLS 1.2.
func TestClientModeToMosquittoPSK(t *testing.T) {
	checkGoroutines(t)
	dir := t.TempDir()
	const keyHex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	pskFile, err := handshaketest.WriteFile(dir, "psk", []byte("gw-psk:"+keyHex+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	var b *broker
	var pskPort int
	for range 3 {
		pskPort = freePort(t)
		extra := fmt.Sprintf("listener %d 127.0.0.1\npsk_hint mqtls\npsk_file %s\nuse_identity_as_username true\n", pskPort, pskFile)
		if b, err = startBrokerConf(t, freePort(t), "", extra); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	remote := net.JoinHostPort("127.0.0.1", strconv.Itoa(pskPort))
	for _, minTLS := range []string{"1.2", "1.3"} {
		t.Run("min "+minTLS, func(t *testing.T) {
			s := startServer(t, "--mode", "client", "--upstream", remote, "--remote-psk-file", pskFile,
				"--remote-psk-identity", "gw-psk", "--remote-min-tls", minTLS, "--remote-client-id", "{psk}/{client_id}")
			id := "sensor-" + minTLS
			sub := subscribe(t, b, "sub-psk-"+minTLS, "psk/#", 1)
			if out, err := plainPub(t, s.addr, id, "psk/x", "m"); err != nil {
				t.Fatalf("mosquitto_pub: %v\n%s", err, out)
			}
			if got := sub.lines(t); len(got) != 1 || got[0] != "psk/x m" {
				t.Errorf("subscriber got %q", got)
			}
			b.waitLog(t, "as gw-psk/"+id)
			e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == id })
			wantAudit(t, e, map[string]string{"mode": "client", "outcome": "forwarded"})
		})
	}
}
