package main

// `mqtls check`: it validates serve's flags and every file they name without serving; the
// exit status says whether serve would start.

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// runCheck runs `mqtls check` with args in-process and returns its output and error.
func runCheck(t *testing.T, args ...string) (string, error) {
	t.Helper()
	stdout, stderr := newLineLog(), newLineLog()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := newApp(stdout, stderr).RunContext(ctx, append([]string{"mqtls", "check"}, args...))
	return stdout.String() + stderr.String(), err
}

// TestCheck: a good configuration passes and is described; each broken file fails the
// check with an error naming it.
func TestCheck(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	write := func(name, content string) string {
		t.Helper()
		f, err := handshaketest.WriteFile(p.dir, name, []byte(content))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	key := hex.EncodeToString(randomKey(t))
	goodPSK := write("psk.txt", "# devices\ndev-1:"+key+"\ndev-2:"+key[:40]+"\n")
	badPSK := write("bad-psk.txt", "dev-1:"+key+"\ndev-2 has no colon\n")
	missing := filepath.Join(p.dir, "missing.pem")
	crl, err := p.ca.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crlFile := write("ca.crl", string(crl))
	staleCRL, err := p.ca.CRLWindow(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	staleCRLFile := write("stale.crl", string(staleCRL))
	other, err := p.ca.Issue(handshaketest.Template{CommonName: "other"})
	if err != nil {
		t.Fatal(err)
	}
	otherKey := write("other.key", string(other.KeyPEM))
	now := time.Now()
	expired, err := p.ca.Issue(handshaketest.Template{
		CommonName: "expired.example", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	expiredCert, expiredKey, err := expired.Files(p.dir, "expired")
	if err != nil {
		t.Fatal(err)
	}
	certs := func(cert, key string, extra ...string) []string {
		return append([]string{"--cert", cert, "--key", key}, extra...)
	}

	t.Run("good configuration", func(t *testing.T) {
		t.Parallel()
		out, err := runCheck(t, certs(p.serverCertFile, p.serverKey, "--client-ca", p.caFile, "--crl", crlFile, "--psk-file", goodPSK,
			"--expiry-warning", "1h")...) // the test PKI is valid for a day
		if err != nil {
			t.Fatalf("check of a good configuration: %v\n%s", err, out)
		}
		for _, want := range []string{
			p.serverCertFile + "  CN=localhost  valid until ",
			p.caFile + "  CN=mqtls e2e CA,O=mqtls test  valid until ",
			crlFile + "  CN=mqtls e2e CA,O=mqtls test  next update ",
			goodPSK + "  2 identities",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("check output lacks %q:\n%s", want, out)
			}
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); lines[len(lines)-1] != "ok" {
			t.Errorf("check output ends %q, want \"ok\":\n%s", lines[len(lines)-1], out)
		}
	})

	// Tests run as root in CI, where chmod 000 does not stop a read: an unreadable PSK file
	// is a directory or a missing file here.
	for _, tc := range []struct {
		name string
		args []string
		want []string // each must appear in the error
	}{
		{"missing certificate", certs(missing, p.serverKey), []string{missing}},
		{"missing key", certs(p.serverCertFile, missing), []string{missing}},
		{"missing client CA", certs(p.serverCertFile, p.serverKey, "--client-ca", missing), []string{missing}},
		{"missing CRL", certs(p.serverCertFile, p.serverKey, "--client-ca", p.caFile, "--crl", missing), []string{missing}},
		{"key not matching the certificate", certs(p.serverCertFile, otherKey), []string{otherKey, "does not match"}},
		{"expired server certificate", certs(expiredCert, expiredKey), []string{expiredCert, "expired"}},
		{"PSK file that is a directory", []string{"--psk-file", p.dir}, []string{"--psk-file", p.dir}},
		{"missing PSK file", []string{"--psk-file", missing}, []string{"--psk-file", missing}},
		{"malformed PSK line", []string{"--psk-file", badPSK}, []string{badPSK + ":2:"}},
		// Past its nextUpdate a CA's CRL refuses every device it covers (crl_expired).
		{"CRL past its next update", certs(p.serverCertFile, p.serverKey, "--client-ca", p.caFile, "--crl", staleCRLFile), []string{staleCRLFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := runCheck(t, tc.args...)
			if err == nil {
				t.Fatalf("mqtls check %s passed, want an error naming %q:\n%s", strings.Join(tc.args, " "), tc.want, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(out, "\nok\n") || strings.HasPrefix(out, "ok\n") {
				t.Errorf("check printed \"ok\" and failed:\n%s", out)
			}
		})
	}

	t.Run("expired server certificate is listed as EXPIRED", func(t *testing.T) {
		t.Parallel()
		out, _ := runCheck(t, certs(expiredCert, expiredKey)...)
		if !strings.Contains(out, expiredCert+"  CN=expired.example  EXPIRED ") {
			t.Errorf("check output does not list %s as EXPIRED:\n%s", expiredCert, out)
		}
	})
}
