package main

// `mqtls check` reports every problem in one run, each naming the flag of its file only,
// and catches what clients will reject although serve would start with it.

import (
	"crypto/x509"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

func TestCheckWhatClientsReject(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	openssl := peerBin(t, "openssl")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	issue := func(name string, tmpl handshaketest.Template) (string, string) {
		t.Helper()
		c, err := p.ca.Issue(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := c.Files(p.dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	f := func(name string) string { return filepath.Join(p.dir, name) }
	noServerAuth, noServerAuthKey := issue("clientonly", handshaketest.Template{CommonName: "localhost", DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	noSAN, noSANKey := issue("nosan", handshaketest.Template{CommonName: "localhost"})
	future, futureKey := issue("future", handshaketest.Template{CommonName: "localhost", DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})
	device, _ := issue("device", handshaketest.Template{CommonName: "dev-1"})
	run("x509", "-in", p.serverCertFile, "-outform", "der", "-out", f("server.der"))
	run("pkcs12", "-export", "-in", p.serverCertFile, "-inkey", p.serverKey, "-passout", "pass:", "-out", f("server.p12"))
	run("pkey", "-in", p.serverKey, "-aes256", "-passout", "pass:secret", "-out", f("encrypted.key"))
	run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", f("rsa.key"))
	key := hex.EncodeToString(randomKey(t))
	badPSK, err := handshaketest.WriteFile(p.dir, "bad-psk.txt", []byte("dev-1:"+key+"\nno colon here\n"))
	if err != nil {
		t.Fatal(err)
	}
	typo := f("sever.pem")

	for _, tc := range []struct {
		name string
		args []string
		want [][]string // each error line must hold all of one entry, in order
	}{
		{"every problem in one run, each naming its own flag",
			[]string{"--cert", typo, "--key", p.serverKey, "--client-ca", device, "--psk-file", badPSK, "--identity", "{cn}psk-{psk}"},
			[][]string{{"--cert: ", typo}, {"--client-ca: ", "not a CA"}, {"--psk-file", badPSK + ":2:"}}},
		{"server certificate without serverAuth", []string{"--cert", noServerAuth, "--key", noServerAuthKey},
			[][]string{{"--cert: ", noServerAuth, "without serverAuth"}}},
		{"server certificate without a SAN", []string{"--cert", noSAN, "--key", noSANKey},
			[][]string{{"--cert: ", noSAN, "no subjectAltName"}}},
		{"certificate not valid yet", []string{"--cert", future, "--key", futureKey},
			[][]string{{"--cert: ", future, "not valid before"}}},
		{"DER certificate", []string{"--cert", f("server.der"), "--key", p.serverKey},
			[][]string{{"--cert: ", "DER certificate", "openssl x509 -inform der -in " + f("server.der")}}},
		{"PKCS#12 bundle", []string{"--cert", f("server.p12"), "--key", f("server.p12")},
			[][]string{{"--cert: ", "PKCS#12", "openssl pkcs12 -in " + f("server.p12") + " -clcerts -nokeys"},
				{"--key: ", "PKCS#12", "-nocerts -nodes"}}},
		{"passphrase-protected key", []string{"--cert", p.serverCertFile, "--key", f("encrypted.key")},
			[][]string{{"--key: ", "passphrase", "openssl pkey -in " + f("encrypted.key")}}},
		{"key of another type", []string{"--cert", p.serverCertFile, "--key", f("rsa.key")},
			[][]string{{"--key: ", "an RSA key", "an ECDSA key"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := runCheck(t, append(tc.args, "--upstream", "127.0.0.1:1")...)
			if err == nil {
				t.Fatalf("check passed, want %d problems:\n%s", len(tc.want), out)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Errorf("check reported %d problems, want %d:\n%s", len(lines), len(tc.want), err)
			}
			for _, want := range tc.want {
				found := false
				for _, l := range lines {
					ok := true
					for _, w := range want {
						ok = ok && strings.Contains(l, w)
					}
					found = found || ok
				}
				if !found {
					t.Errorf("no problem mentions all of %q:\n%s", want, err)
				}
			}
			if strings.Contains(err.Error(), "--cert/") {
				t.Errorf("an error names several flags:\n%s", err)
			}
		})
	}

	t.Run("warnings do not fail the check", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		keyData, _ := os.ReadFile(p.serverKey)
		looseKey := filepath.Join(dir, "server.key")
		loosePSK := filepath.Join(dir, "psk.txt")
		if err := os.WriteFile(looseKey, keyData, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(loosePSK, []byte("dev-1:"+key+"\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		crl, err := p.ca.CRL()
		if err != nil {
			t.Fatal(err)
		}
		crlFile, err := handshaketest.WriteFile(p.dir, "warn.crl", append(crl, crl...))
		if err != nil {
			t.Fatal(err)
		}
		out, err := runCheck(t, "--cert", p.serverCertFile, "--key", looseKey, "--psk-file", loosePSK, "--client-ca", p.caFile,
			"--crl", crlFile, "--identity", "{cn}psk-{psk}", "--upstream", "127.0.0.1:1")
		if err != nil {
			t.Fatalf("check: %v\n%s", err, out)
		}
		for _, want := range []string{
			"warning: listener tcp: --key " + looseKey + " is readable or writable by others (mode 0644): chmod 600 " + looseKey,
			"warning: listener tcp: --psk-file " + loosePSK + " is readable or writable by others (mode 0640)",
			"warning: listener tcp: the broker at 127.0.0.1:1 (--upstream) cannot be reached now",
			crlFile + "  CN=mqtls e2e CA,O=mqtls test  next update ",
			"(CRL 1, issued ", "(CRL 2, issued ",
			"\nok\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("check output lacks %q:\n%s", want, out)
			}
		}
	})
}

// TestServeStartWarnings: serve warns at start about a key file others can read and a
// broker it cannot reach, rather than leaving the first sign to a refused device.
func TestServeStartWarnings(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	keyData, err := os.ReadFile(p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	looseKey := filepath.Join(t.TempDir(), "server.key")
	if err := os.WriteFile(looseKey, keyData, 0o644); err != nil {
		t.Fatal(err)
	}
	upstream := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nobody listens there
	s := startServer(t, "--cert", p.serverCertFile, "--key", looseKey, "--upstream", upstream)
	e := s.waitLine(t, "secret file readable by others: chmod 600 it", nil)
	wantAudit(t, e, map[string]string{"level": "warn", "key": "--key", "file": looseKey, "mode": "0644"})
	e = s.waitLine(t, "broker unreachable: devices get CONNACK server unavailable until it is up", nil)
	wantAudit(t, e, map[string]string{"level": "warn", "upstream": upstream, "listener": "tcp"})
}
