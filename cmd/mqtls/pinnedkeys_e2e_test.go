package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// opensslDevice is a device whose key pair and certificate openssl made.
type opensslDevice struct {
	name, certFile, keyFile string
}

// opensslSelfSigned makes a device the way fleets without a CA do: `openssl req -x509`.
// OpenSSL marks such a certificate CA:TRUE, so listed as a client CA it could sign for
// other devices.
func opensslSelfSigned(t *testing.T, dir, cn string) opensslDevice {
	t.Helper()
	d := opensslDevice{name: cn, certFile: filepath.Join(dir, cn+".crt"), keyFile: filepath.Join(dir, cn+".key")}
	if out, err := runPeerBin(t, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", d.keyFile, "-out", d.certFile, "-subj", "/CN="+cn, "-days", "2"); err != nil {
		t.Fatalf("openssl req -x509 for %s: %v\n%s", cn, err, out)
	}
	return d
}

// opensslIssuedBy makes a certificate for cn with a fresh key, signed by issuer's key: what
// device issuer can forge for another device's name.
func opensslIssuedBy(t *testing.T, dir, cn string, issuer opensslDevice) opensslDevice {
	t.Helper()
	d := opensslDevice{name: cn, certFile: filepath.Join(dir, cn+"-forged.crt"), keyFile: filepath.Join(dir, cn+"-forged.key")}
	csr := filepath.Join(dir, cn+".csr")
	if out, err := runPeerBin(t, "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", d.keyFile, "-out", csr, "-subj", "/CN="+cn); err != nil {
		t.Fatalf("openssl req for %s: %v\n%s", cn, err, out)
	}
	if out, err := runPeerBin(t, "openssl", "x509", "-req", "-in", csr, "-CA", issuer.certFile, "-CAkey", issuer.keyFile,
		"-out", d.certFile, "-days", "2"); err != nil {
		t.Fatalf("openssl x509 -req for %s signed by %s: %v\n%s", cn, issuer.name, err, out)
	}
	return d
}

// pub runs mosquitto_pub as d, trusting the server's CA file caFile.
func (d opensslDevice) pub(t *testing.T, addr, caFile, clientID, topic string) (string, error) {
	t.Helper()
	dev := device{caFile: caFile}
	args := append(dev.mosquittoArgs(addr, clientID, "mqttv311"), "--cert", d.certFile, "--key", d.keyFile, "-t", topic, "-m", "x")
	return runPeerBin(t, "mosquitto_pub", args...)
}

// TestPinnedKeys: devices made with `openssl req -x509`, pinned with `mqtls keys add`, are
// named by their line ({name}) whatever their certificate says. Device A's certificate for
// CN=dev-B, signed by A's key, and a key nobody listed are refused (key_not_pinned) before
// the broker hears of them. The same certificates listed as --client-ca (the hazard pinned
// keys replace) let A's forgery through as dev-B: that is what this test catches on a
// build without --client-keys.
func TestPinnedKeys(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	dir := t.TempDir()
	devA := opensslSelfSigned(t, dir, "dev-A")
	devC := opensslSelfSigned(t, dir, "dev-C") // never listed
	forgedB := opensslIssuedBy(t, dir, "dev-B", devA)
	keys := filepath.Join(dir, "devices.keys")

	t.Run("keys add and list", func(t *testing.T) {
		out, err := runApp(t, "keys", "add", "--file", keys, "dev-A", devA.certFile)
		if err != nil || !strings.Contains(out, "added dev-A to "+keys) {
			t.Fatalf("mqtls keys add dev-A: %v\n%s", err, out)
		}
		if fi, err := os.Stat(keys); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("keys file mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
		for _, tc := range []struct{ name, pem, want string }{
			{"dev-A", devC.certFile, "already pins a key for \"dev-A\""}, // a name twice
			{"dev-A2", devA.certFile, "already pins this key, as \"dev-A\""},
		} {
			if _, err := runApp(t, "keys", "add", "--file", keys, tc.name, tc.pem); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("keys add %s %s: error %v, want one saying %q", tc.name, tc.pem, err, tc.want)
			}
		}
		out, err = runApp(t, "keys", "list", "--file", keys)
		if err != nil || !strings.HasPrefix(out, "dev-A ") || strings.Count(out, "\n") != 1 {
			t.Errorf("mqtls keys list: %v, output %q; want one line for dev-A", err, out)
		}
	})

	t.Run("pinned keys", func(t *testing.T) {
		b := startBroker(t, aclClientID)
		s := startServer(t, "--upstream", b.addr, "--cert", p.serverCertFile, "--key", p.serverKey,
			"--client-keys", keys, "--client-id", "rewrite", "--identity", "{name}")
		for _, d := range []opensslDevice{forgedB, devC} {
			out, err := d.pub(t, s.addr, p.caFile, d.name, "devices/"+d.name+"/x")
			if err == nil {
				t.Errorf("%s (%s) got in:\n%s", d.name, d.certFile, out)
			}
			e := s.audit(t, func(e logEntry) bool {
				return e.str("outcome") == "handshake_failed" && strings.Contains(e.str("error"), d.name)
			})
			wantAudit(t, e, map[string]string{"reason": "key_not_pinned", "identity": ""})
		}
		b.wantNoConnections(t)

		if out, err := devA.pub(t, s.addr, p.caFile, "anything", "devices/dev-A/temp"); err != nil {
			t.Fatalf("dev-A: %v\n%s", err, out)
		}
		b.waitLog(t, "Received PUBLISH from dev-A (d0, q0, r0, m0, 'devices/dev-A/temp'")
		e := s.audit(t, func(e logEntry) bool { return e.str("outcome") == "forwarded" })
		wantAudit(t, e, map[string]string{"identity": "dev-A", "identity_kind": "pinned_key", "client_id_forwarded": "dev-A"})
	})

	t.Run("converted from stunnel verifyPeer", func(t *testing.T) {
		// stunnel trusts exactly the listed certificates; convert must pin their keys, not
		// make each listed device a CA.
		b := startBroker(t, aclClientID)
		peers := filepath.Join(dir, "stunnel-peers.pem")
		data, err := os.ReadFile(devA.certFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(peers, data, 0o644); err != nil {
			t.Fatal(err)
		}
		conf := writeConfig(t, dir, "stunnel.conf", "[devices]\naccept = 127.0.0.1:0\nconnect = "+b.addr+
			"\ncert = "+p.serverCertFile+"\nkey = "+p.serverKey+"\nCAfile = "+peers+"\nverifyPeer = yes\n", nil)
		stdout, stderr, err := convertApp(t, conf)
		if err != nil {
			t.Fatalf("convert stunnel: %v\n%s", err, stderr)
		}
		keysFile := filepath.Join(dir, "stunnel-peers.keys")
		if !strings.Contains(stdout, "client_keys: "+keysFile) || strings.Contains(stdout, "client_ca") {
			t.Fatalf("converted config does not pin keys with %s:\n%s", keysFile, stdout)
		}
		if fi, err := os.Stat(keysFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("convert wrote no 0600 %s (%v)", keysFile, err)
		}
		if _, _, err := convertApp(t, conf); err != nil {
			t.Errorf("convert stunnel again, the keys file unchanged: %v", err)
		}
		s := startConfigServer(t, signals{}, writeConfig(t, dir, "converted.yaml", stdout, nil), "devices")
		addr := s.addrOf(t, "devices")
		if out, err := forgedB.pub(t, addr, p.caFile, "dev-B", "devices/dev-B/x"); err == nil {
			t.Errorf("forged dev-B got in through the converted config:\n%s", out)
		}
		wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("outcome") == "handshake_failed" }),
			map[string]string{"reason": "key_not_pinned"})
		b.wantNoConnections(t)
		if out, err := devA.pub(t, addr, p.caFile, "dev-A", "devices/dev-A/temp"); err != nil {
			t.Fatalf("dev-A through the converted config: %v\n%s", err, out)
		}
		wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("outcome") == "forwarded" }),
			map[string]string{"identity": "dev-A", "identity_kind": "pinned_key"})

		// An operator's edits to the keys file are never overwritten.
		if err := os.WriteFile(keysFile, []byte("# edited\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := convertApp(t, conf); err == nil || !strings.Contains(err.Error(), keysFile+" exists with other contents") {
			t.Errorf("convert stunnel over an edited keys file: %v, want a refusal naming it", err)
		}
	})

	t.Run("hazard: the same certificates as --client-ca", func(t *testing.T) {
		b := startBroker(t, aclClientID)
		s := startServer(t, "--upstream", b.addr, "--cert", p.serverCertFile, "--key", p.serverKey,
			"--client-ca", devA.certFile, "--client-id", "rewrite")
		if out, err := forgedB.pub(t, s.addr, p.caFile, "x", "devices/dev-B/x"); err != nil {
			t.Fatalf("forged dev-B against --client-ca: %v\n%s", err, out)
		}
		e := s.audit(t, func(e logEntry) bool { return e.str("outcome") == "forwarded" })
		wantAudit(t, e, map[string]string{"identity": "dev-B", "client_id_forwarded": "dev-B"})
	})
}

// TestDTLSPinnedKeys: the DTLS listener takes the same --client-keys: a pion device with a
// pinned self-signed certificate is named by its line, an unlisted one is refused.
func TestDTLSPinnedKeys(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	devA, lineA := selfSignedDevice(t, p, "dev-A")
	devC, _ := selfSignedDevice(t, p, "dev-C")
	keys := writeConfig(t, p.dir, "devices.keys", lineA, nil)
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--cert", p.serverCertFile, "--key", p.serverKey,
		"--client-keys", keys, "--client-id", "rewrite")

	if _, local, err := dtlsCertClient(p, devC).dial(t, dtlsAddr); err == nil {
		t.Error("an unlisted key completed a DTLS handshake")
	} else {
		wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "handshake_failed", "reason": "key_not_pinned", "listener": "dtls"})
	}
	b.wantNoConnections(t)

	conn, local := dtlsCertClient(p, devA).mustDial(t, dtlsAddr)
	dc, rc := dtlsRawConnect(t, conn, "anything")
	if rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	dtlsDisconnect(t, dc)
	wantAudit(t, s.auditFrom(t, local), map[string]string{
		"outcome": "forwarded", "listener": "dtls", "identity": "dev-A", "identity_kind": "pinned_key", "client_id_forwarded": "dev-A",
	})
}
