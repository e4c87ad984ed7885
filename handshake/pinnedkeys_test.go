package handshake_test

// Pinned device keys (issue #14): a listener that trusts a list of public keys, over TCP
// with crypto/tls and OpenSSL clients, and over DTLS with pion.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// pinLine is the pinned-key file line for name and c's key.
func pinLine(t *testing.T, name string, c *handshaketest.Cert) []byte {
	t.Helper()
	h, err := handshake.SPKIHash(c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(name + ":" + h + "\n")
}

func wantPinned(t *testing.T, id handshake.Identity, err error, name string, c *handshaketest.Cert) {
	t.Helper()
	if err != nil {
		t.Fatalf("refused (%v), want accepted as pinned key %q", err, name)
	}
	want := handshake.FromCertificate(c.Cert)
	if id.Kind != handshake.KindPinnedKey || id.KeyName != name || id.CommonName != c.Cert.Subject.CommonName ||
		id.Fingerprint != want.Fingerprint || id.SerialNumber != want.SerialNumber || id.TLSVersion == 0 {
		t.Fatalf("identity %s %q (CN %q, fingerprint %s), want pinned_key %q with the certificate's fields",
			id.Kind, id.KeyName, id.CommonName, id.Fingerprint, name)
	}
}

// TestPinnedKeys: with client keys, the device whose key is listed is named by its line,
// and nothing is chained through a listed device (the attack of
// TestAttackDeviceListedAsCASignsForAnother is refused).
func TestPinnedKeys(t *testing.T) {
	e := newAttackEnv(t)
	devA, devB, stranger := mustSelfSigned(t, "dev-A"), mustSelfSigned(t, "dev-B"), mustSelfSigned(t, "dev-A")
	forged := mustIssue(t, devA.AsCA(), "dev-B")
	// A pinned certificate's dates are the device's own statement about its own key, which
	// it can re-sign at will: they are not checked.
	expired, err := handshaketest.NewSelfSigned(handshaketest.Template{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ca := mustCA(t, "device CA")
	caDev, caPinned := mustIssue(t, ca, "ca-dev"), mustIssue(t, ca, "ca-dev-2")
	keys := e.write(t, "keys", []byte("# fleet\n"), pinLine(t, "dev-A", devA), pinLine(t, "dev-B", devB),
		pinLine(t, "old-one", expired), pinLine(t, "pinned-2", caPinned))

	only := e.config()
	only.ClientKeysFile = keys
	onlyKeys := e.server(t, only)
	both := e.config()
	both.ClientKeysFile, both.ClientCAFile = keys, e.write(t, "ca.crt", ca.CertPEM)
	keysAndCA := e.server(t, both)

	for _, tc := range []struct {
		name   string
		srv    *handshake.TLSServer
		cert   *handshaketest.Cert
		pinned string // the name it gets, or "" for KindCertificate
		reason string // refused with
	}{
		{"listed device", onlyKeys, devA, "dev-A", ""},
		{"another listed device", onlyKeys, devB, "dev-B", ""},
		{"listed with an expired certificate", onlyKeys, expired, "old-one", ""},
		{"device A's certificate for dev-B", onlyKeys, forged, "", handshake.ReasonKeyNotPinned},
		{"same name, unlisted key", onlyKeys, stranger, "", handshake.ReasonKeyNotPinned},
		{"CA device, keys only", onlyKeys, caDev, "", handshake.ReasonKeyNotPinned},
		{"no certificate", onlyKeys, nil, "", handshake.ReasonNoClientCert},
		{"keys and CA: listed device", keysAndCA, devA, "dev-A", ""},
		{"keys and CA: CA device", keysAndCA, caDev, "", ""},
		{"keys and CA: a listed key wins over the CA", keysAndCA, caPinned, "pinned-2", ""},
		{"keys and CA: device A's certificate for dev-B", keysAndCA, forged, "", handshake.ReasonUntrustedCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := e.dial(t, tc.srv, tc.cert)
			switch {
			case tc.reason != "":
				wantRefused(t, id, err, tc.reason)
			case tc.pinned != "":
				wantPinned(t, id, err, tc.pinned, tc.cert)
			case err != nil || id.Kind != handshake.KindCertificate || id.CommonName != tc.cert.Cert.Subject.CommonName || id.KeyName != "":
				t.Fatalf("got %s %q %q (%v), want certificate %q", id.Kind, id.CommonName, id.KeyName, err, tc.cert.Cert.Subject.CommonName)
			}
		})
	}

	t.Run("request without a certificate", func(t *testing.T) {
		c := e.config()
		c.ClientKeysFile, c.ClientAuth = keys, handshake.ClientAuthRequest
		id, err := e.dial(t, e.server(t, c), nil)
		if err != nil || id.Kind != handshake.KindNone {
			t.Fatalf("got %s (%v), want none", id.Kind, err)
		}
	})
}

// TestPinnedKeysRevokedAfterReload: a session whose key was removed or renamed, or whose
// chain no longer verifies, is reported by Revoked after a reload; the others are not.
func TestPinnedKeysRevokedAfterReload(t *testing.T) {
	e := newAttackEnv(t)
	devA, devB := mustSelfSigned(t, "dev-A"), mustSelfSigned(t, "dev-B")
	root := mustCA(t, "root")
	inter, err := root.Intermediate("intermediate")
	if err != nil {
		t.Fatal(err)
	}
	other := mustCA(t, "other CA")
	leaf, otherDev, caDev := mustIssue(t, inter, "leaf"), mustIssue(t, other, "other-dev"), mustIssue(t, root, "ca-dev")

	c := e.config()
	c.ClientKeysFile = e.write(t, "keys", pinLine(t, "dev-A", devA), pinLine(t, "dev-B", devB))
	c.ClientCAFile = e.write(t, "ca.crt", root.CertPEM, inter.CertPEM, other.CertPEM)
	c.CRLFiles = []string{e.write(t, "crl.pem", mustCRL(t, root), mustCRL(t, inter), mustCRL(t, other))}
	s := e.server(t, c)
	ids := map[string]handshake.Identity{}
	for name, cert := range map[string]*handshaketest.Cert{"dev-A": devA, "dev-B": devB, "leaf": leaf, "other-dev": otherDev, "ca-dev": caDev} {
		id, err := e.dial(t, s, cert)
		if err != nil {
			t.Fatalf("%s refused before the reload: %v", name, err)
		}
		ids[name] = id
		if s.Revoked(id) {
			t.Fatalf("%s revoked before any reload", name)
		}
	}
	// The reload: dev-A removed, dev-B renamed, ca-dev's key pinned (so it would now be
	// named by its line), the intermediate revoked by the root, the other CA removed from
	// the client-CA file (with its CRL).
	e.write(t, "keys", pinLine(t, "dev-B2", devB), pinLine(t, "ca-dev-pinned", caDev))
	e.write(t, "ca.crt", root.CertPEM, inter.CertPEM)
	e.write(t, "crl.pem", mustCRL(t, root, inter.Cert), mustCRL(t, inter))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	for name, reason := range map[string]string{
		"dev-A":     handshake.ReasonKeyNotPinned,
		"dev-B":     handshake.ReasonIdentityChanged,
		"leaf":      handshake.ReasonRevokedCert,
		"other-dev": handshake.ReasonUntrustedCert,
		"ca-dev":    handshake.ReasonIdentityChanged,
	} {
		err := s.StillValid(ids[name])
		if got := handshake.Reason(err); err == nil || got != reason || !s.Revoked(ids[name]) {
			t.Errorf("%s after the reload: %v (%s), want revoked with %s", name, err, got, reason)
		}
	}
	// A PSK or certificateless session is none of this server's business.
	if s.Revoked(handshake.Identity{Kind: handshake.KindPSK, PSKIdentity: "dev-A"}) || s.Revoked(handshake.Identity{}) {
		t.Error("Revoked reports sessions without certificates")
	}
}

// TestStaleCRLKeepsSessions: a CRL that goes stale refuses new handshakes but does not end
// sessions: it says nothing new about any device.
func TestStaleCRLKeepsSessions(t *testing.T) {
	e := newAttackEnv(t)
	ca := mustCA(t, "CA")
	dev := mustIssue(t, ca, "dev-1")
	c := e.config()
	c.ClientCAFile = e.write(t, "ca.crt", ca.CertPEM)
	c.CRLFiles = []string{e.write(t, "crl.pem", mustCRL(t, ca))}
	s := e.server(t, c)
	id, err := e.dial(t, s, dev)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := ca.CRLWindow(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, "crl.pem", stale)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := s.StillValid(id); err != nil {
		t.Errorf("session ended by a stale CRL: %v", err)
	}
	id, err = e.dial(t, s, dev)
	wantRefused(t, id, err, handshake.ReasonCRLExpired)
}

// TestPinnedKeyOpenSSL: `openssl s_client -cert -key` with a certificate made by `openssl
// req -x509` (CA:TRUE, as fleets without a CA make them), pinned by the hash of its key.
func TestPinnedKeyOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is missing: apt-get install -y openssl")
	}
	e := newAttackEnv(t)
	certFile, keyFile := filepath.Join(e.dir, "dev.crt"), filepath.Join(e.dir, "dev.key")
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, openssl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", keyFile,
		"-out", certFile, "-subj", "/CN=sensor-9", "-days", "30")
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	// The hash the file format documents, computed by openssl itself.
	pub := run("x509", "-in", certFile, "-pubkey", "-noout")
	pubFile, err := handshaketest.WriteFile(e.dir, "dev.pub", pub)
	if err != nil {
		t.Fatal(err)
	}
	der := run("pkey", "-pubin", "-in", pubFile, "-outform", "DER")
	derFile, err := handshaketest.WriteFile(e.dir, "dev.pub.der", der)
	if err != nil {
		t.Fatal(err)
	}
	opensslHash := strings.Fields(string(run("dgst", "-sha256", "-r", derFile)))[0]
	for _, in := range [][]byte{certPEM, pub} {
		if h, err := handshake.SPKIHash(in); err != nil || h != opensslHash {
			t.Fatalf("SPKIHash = %s, %v; openssl says %s", h, err, opensslHash)
		}
	}

	c := e.config()
	c.ClientKeysFile = e.write(t, "keys", []byte("sensor-9:"+opensslHash+"\n"))
	s := e.server(t, c)
	ln, done := serveOne(t, s, []byte("pinned:sensor-9\n"))
	defer ln.Close()
	caFile := e.write(t, "server-ca.crt", e.serverCA.CertPEM)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-connect", ln.Addr().String(), "-cert", certFile, "-key", keyFile,
		"-CAfile", caFile, "-verify_return_error", "-quiet")
	cmd.Stdin = bytes.NewReader(nil)
	out, _ := cmd.CombinedOutput()
	r := <-done
	if r.err != nil {
		t.Fatalf("server: %v\nopenssl: %s", r.err, out)
	}
	if r.id.Kind != handshake.KindPinnedKey || r.id.KeyName != "sensor-9" || r.id.CommonName != "sensor-9" {
		t.Fatalf("identity %s %q, want pinned_key sensor-9", r.id.Kind, r.id.KeyName)
	}
	if !strings.Contains(string(out), "pinned:sensor-9") {
		t.Fatalf("openssl did not get the server's bytes:\n%s", out)
	}
}

// TestPinnedKeyDTLS: the same listener material over DTLS, with pion clients.
func TestPinnedKeyDTLS(t *testing.T) {
	e := newAttackEnv(t)
	devA, stranger := mustSelfSigned(t, "dev-A"), mustSelfSigned(t, "dev-A")
	forged := mustIssue(t, devA.AsCA(), "dev-B")
	c := e.config()
	c.ClientKeysFile = e.write(t, "keys", pinLine(t, "dev-A", devA))
	srv := e.server(t, c)
	s := listenDTLS(t, handshake.DTLSConfig{TLS: srv})
	var session handshake.Identity
	for _, tc := range []struct {
		name   string
		cert   *handshaketest.Cert
		reason string
	}{
		{"listed", devA, ""},
		{"unlisted key", stranger, handshake.ReasonKeyNotPinned},
		{"chained through a listed device", forged, handshake.ReasonKeyNotPinned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cerr := dialDTLS(t, s.addr,
				dtls.WithRootCAs(e.serverCA.Pool()),
				dtls.WithServerName("127.0.0.1"),
				dtls.WithCertificates(tc.cert.TLSCertificate()),
				dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
			r := s.result(t)
			if tc.reason != "" {
				if cerr == nil && r.err == nil {
					t.Fatal("accepted, want refused")
				}
				wantRefused(t, r.id, r.err, tc.reason)
				return
			}
			if cerr != nil {
				t.Fatalf("client: %v", cerr)
			}
			wantPinned(t, r.id, r.err, "dev-A", tc.cert)
			if !r.id.DTLS {
				t.Error("identity not marked DTLS")
			}
			session = r.id
		})
	}
	// Removing the key ends the DTLS session too (re-checked from the DER it kept).
	if srv.Revoked(session) {
		t.Fatal("revoked before the reload")
	}
	e.write(t, "keys", []byte("# nobody\n"))
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := srv.StillValid(session); handshake.Reason(err) != handshake.ReasonKeyNotPinned {
		t.Errorf("after the reload: %v, want %s", err, handshake.ReasonKeyNotPinned)
	}
}

// TestRevokedIntermediateDTLS: over DTLS too, an intermediate of the client-CA file that the
// root's CRL revokes refuses the devices under it, whether they send it or not.
func TestRevokedIntermediateDTLS(t *testing.T) {
	e := newAttackEnv(t)
	root := mustCA(t, "root")
	inter, err := root.Intermediate("intermediate")
	if err != nil {
		t.Fatal(err)
	}
	dev := mustIssue(t, inter, "dev-1")
	c := e.config()
	c.ClientCAFile = e.write(t, "ca.crt", root.CertPEM, inter.CertPEM)
	c.CRLFiles = []string{e.write(t, "crl.pem", mustCRL(t, root, inter.Cert), mustCRL(t, inter))}
	s := listenDTLS(t, handshake.DTLSConfig{TLS: e.server(t, c)})
	for _, sendInter := range []bool{false, true} {
		cert := dev.TLSCertificate()
		if sendInter {
			cert.Certificate = append(cert.Certificate, inter.Cert.Raw)
		}
		_, _ = dialDTLS(t, s.addr, dtls.WithRootCAs(e.serverCA.Pool()), dtls.WithServerName("127.0.0.1"),
			dtls.WithCertificates(cert), dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
		r := s.result(t)
		wantRefused(t, r.id, r.err, handshake.ReasonRevokedCert)
	}
}
