package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// convertApp runs `mqtls convert stunnel args...` in-process and returns stdout, stderr and
// the error.
func convertApp(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := newApp(&stdout, &stderr).RunContext(ctx, append([]string{"mqtls", "convert", "stunnel"}, args...))
	return stdout.String(), stderr.String(), err
}

// TestConvertStunnelErrors: what makes convert fail, and its exact message.
func TestConvertStunnelErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	clientOnly := write("client.conf", "[up]\nclient = yes\naccept = 1884\nconnect = example.com:8883\n")
	garbage := write("garbage.conf", "; comment\n[ok]\naccept 8883\n")
	section := write("section.conf", "[broken\n")
	// A client service alone converts now, to a client-mode listener (it once had nothing
	// to convert).
	if stdout, _, err := convertApp(t, clientOnly); err != nil || !strings.Contains(stdout, "mode: client") {
		t.Errorf("convert stunnel %s: %v; want a client-mode listener, got:\n%s", clientOnly, err, stdout)
	}
	for _, tc := range []struct {
		args   []string
		err    string
		stderr string
	}{
		{args: []string{garbage}, err: "stunnel config " + garbage + `: line 3: "accept 8883": want key = value, [service name] or a comment`},
		{args: []string{section}, err: "stunnel config " + section + `: line 1: "[broken": want [service name]`},
		{args: []string{filepath.Join(dir, "missing.conf")}, err: "reading stunnel config: open " + filepath.Join(dir, "missing.conf") + ": no such file or directory"},
		{args: nil, err: "convert stunnel takes one argument: the stunnel.conf file (- for stdin)"},
	} {
		stdout, stderr, err := convertApp(t, tc.args...)
		if err == nil || err.Error() != tc.err {
			t.Errorf("convert stunnel %q: error %v, want %q", tc.args, err, tc.err)
		}
		if stdout != "" || stderr != tc.stderr {
			t.Errorf("convert stunnel %q: stdout %q, stderr %q; want no stdout, stderr %q", tc.args, stdout, stderr, tc.stderr)
		}
	}
}

// TestConvertedConfigServes takes converted stunnel configs all the way: the files they
// name are made (a PKI, a CRL, a stunnel PSKsecrets file), the addresses pointed at a
// real Mosquitto, and `mqtls check --config` must pass and `mqtls serve --config` carry a
// real device's CONNECT and PUBLISH to the broker.
func TestConvertedConfigServes(t *testing.T) {
	checkGoroutines(t)
	peerBin(t, "mosquitto_pub")
	b := startBroker(t, "")
	p := newPKI(t)
	dir := t.TempDir()

	// What the stunnel configs name in /etc/stunnel, made for real in dir.
	copyFile := func(from, to string) {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := handshaketest.WriteFile(dir, to, data); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(p.serverCertFile, "mqtt-server.crt")
	copyFile(p.serverKey, "mqtt-server.key")
	copyFile(p.caFile, "device-ca.pem")
	revoked := p.device(t, "sensor-9")
	crl, err := p.ca.CRL(revoked.cert.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshaketest.WriteFile(dir, "device-ca.crl", crl); err != nil {
		t.Fatal(err)
	}
	// stunnel's PSKsecrets: a key of hex digits is binary, any other is its raw bytes.
	const passphrase = "correct horse battery staple"
	const hexKey = "00112233445566778899aabbccddeeff"
	if _, err := handshaketest.WriteFile(dir, "psk.txt", []byte("sensor-7:"+passphrase+"\nsensor-8:"+hexKey+"\n")); err != nil {
		t.Fatal(err)
	}
	// mixed.conf's gateway.pem holds the certificate and its key, as stunnel allows.
	cert, _ := os.ReadFile(p.serverCertFile)
	key, _ := os.ReadFile(p.serverKey)
	if _, err := handshaketest.WriteFile(dir, "gateway.pem", append(cert, key...)); err != nil {
		t.Fatal(err)
	}
	copyFile(p.caFile, "ca.pem")

	// convert rewrites the stunnel config the way an operator would edit it for this host,
	// converts it, and checks the result.
	convert := func(t *testing.T, conf string, edits ...string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join("../../internal/stunnel/testdata/stunnel", conf))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "/etc/stunnel/", dir+"/")
		for i := 0; i < len(edits); i += 2 {
			if !strings.Contains(text, edits[i]) {
				t.Fatalf("%s has no %q to edit", conf, edits[i])
			}
			text = strings.ReplaceAll(text, edits[i], edits[i+1])
		}
		stunnelConf := writeConfig(t, dir, conf, text, nil)
		stdout, stderr, err := convertApp(t, stunnelConf)
		if err != nil {
			t.Fatalf("convert stunnel %s: %v\n%s", conf, err, stderr)
		}
		yamlFile := writeConfig(t, dir, strings.TrimSuffix(conf, ".conf")+".yaml", stdout, nil)
		out, err := runApp(t, "check", "--config", yamlFile)
		if err != nil {
			t.Fatalf("mqtls check --config %s: %v\n%s\n%s", yamlFile, err, out, stdout)
		}
		if !strings.HasSuffix(out, "\nok\n") {
			t.Errorf("mqtls check printed %q, want it to end with ok", out)
		}
		return yamlFile
	}
	_, brokerPort, _ := strings.Cut(b.addr, ":")

	t.Run("mosquitto-mtls", func(t *testing.T) {
		file := convert(t, "mosquitto-mtls.conf", "accept = 8883", "accept = 127.0.0.1:0", "connect = 127.0.0.1:1883", "connect = "+b.addr)
		s := startConfigServer(t, signals{}, file, "mosquitto-mtls")
		addr := s.addrOf(t, "mosquitto-mtls")
		p.device(t, "sensor-1").mustPub(t, addr, "sensor-1", "mqttv311", "devices/sensor-1/temp", "21.5")
		b.waitLog(t, " as sensor-1 ")
		wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == "sensor-1" }), map[string]string{
			"listener": "mosquitto-mtls", "outcome": "forwarded", "identity": "sensor-1", "tls_version": "TLS 1.3",
		})
		// The CRL came across: the revoked device is refused at the handshake.
		if out, err := revoked.pub(t, addr, "sensor-9", "mqttv311", "devices/sensor-9/temp", "1"); err == nil {
			t.Errorf("a revoked device published through mqtls:\n%s", out)
		}
		wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("outcome") == "handshake_failed" }), map[string]string{
			"reason": "revoked_cert",
		})
	})

	t.Run("psk", func(t *testing.T) {
		file := convert(t, "psk.conf", "accept = 0.0.0.0:8884", "accept = 127.0.0.1:0", "connect = 1883", "connect = "+brokerPort)
		s := startConfigServer(t, signals{}, file, "mqtt-psk")
		addr := s.addrOf(t, "mqtt-psk")
		for _, d := range []pskDevice{
			{identity: "sensor-7", keyHex: hex.EncodeToString([]byte(passphrase))},
			{identity: "sensor-8", keyHex: hexKey},
		} {
			d.mustPub(t, addr, d.identity, "mqttv311", "devices/"+d.identity+"/temp", "20")
			b.waitLog(t, " as "+d.identity+" ")
			wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == d.identity }), map[string]string{
				"listener": "mqtt-psk", "outcome": "forwarded", "identity": d.identity, "psk_identity": d.identity,
			})
		}
	})

	t.Run("mixed", func(t *testing.T) {
		// Two server services (mTLS, and certificates plus PSK toward a unix socket) and a
		// client service, which becomes a client-mode listener.
		file := convert(t, "mixed.conf", "accept = 8883", "accept = 127.0.0.1:0", "accept = 8884", "accept = 127.0.0.1:0")
		data, _ := os.ReadFile(file)
		if !bytes.Contains(data, []byte("name: mqtt-psk")) || !bytes.Contains(data, []byte("name: cloud-uplink")) ||
			!bytes.Contains(data, []byte("mode: client")) {
			t.Errorf("converted mixed.conf:\n%s", data)
		}
	})
}

// TestConvertStunnelStdin: "-" reads the stunnel config from standard input.
func TestConvertStunnelStdin(t *testing.T) {
	var stdout, stderr lockedBuffer
	app := newApp(&stdout, &stderr)
	app.Reader = strings.NewReader("[a]\naccept = 8883\nconnect = 1883\ncert = /c.pem\n")
	if err := app.Run([]string{"mqtls", "convert", "stunnel", "-"}); err != nil {
		t.Fatalf("convert stunnel -: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	if !strings.HasPrefix(out, "# mqtls config file converted from the stunnel config stdin ") || !strings.Contains(out, "name: a\n") {
		t.Errorf("convert stunnel - printed:\n%s", out)
	}
}
