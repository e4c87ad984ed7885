package main

import (
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// closedForLine is the message --revoke-terminates logs, with a reason, per reason.
const closedForLine = "closed sessions whose credentials the reloaded files no longer accept"

// session opens an MQTT session as d, through the TLS handshake and CONNECT.
func (d device) session(t *testing.T, addr, clientID string) net.Conn {
	t.Helper()
	conn := d.mustDialTLS(t, addr)
	t.Cleanup(func() { conn.Close() })
	if rc := rawConnect(t, conn, 4, clientID); rc != 0 {
		t.Fatalf("%s: CONNACK %#x, want 0", clientID, rc)
	}
	return conn
}

// wantAlive checks that conn's session still answers a PINGREQ.
func wantAlive(t *testing.T, conn net.Conn, who string) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(waitTimeout))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatalf("%s: PINGREQ: %v", who, err)
	}
	resp := make([]byte, 2)
	if _, err := io.ReadFull(conn, resp); err != nil || resp[0] != 0xd0 {
		t.Fatalf("%s: no PINGRESP (% x, %v): its session was closed", who, resp, err)
	}
}

// watching waits until s's reloader has taken its first look at the files (it logs
// "starting" after): a file replaced before that would look unchanged to it.
func (s *server) watching(t *testing.T) {
	t.Helper()
	s.waitLine(t, "starting", nil)
}

// selfSignedDevice is a device with a self-signed certificate, as pinned keys take, and
// the line pinning its key under name.
func selfSignedDevice(t *testing.T, p *pki, name string) (device, string) {
	t.Helper()
	c, err := handshaketest.NewSelfSigned(handshaketest.Template{CommonName: name})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := c.Files(p.dir, "pinned-"+name)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := handshake.SPKIHash(c.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return device{cert: c, certFile: certFile, keyFile: keyFile, caFile: p.caFile, p: p}, name + ":" + hash + "\n"
}

func mustCRL(t *testing.T, ca *handshaketest.CA, revoked ...*handshaketest.Cert) []byte {
	t.Helper()
	var certs []*x509.Certificate
	for _, c := range revoked {
		certs = append(certs, c.Cert)
	}
	crl, err := ca.CRL(certs...)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestRevokeTerminates: with --revoke-terminates a reload closes each session whose
// credentials the new files no longer accept, logging why, and leaves the others alone:
// a pinned key removed, a PSK changed (its identity still listed), a CA removed from
// --client-ca, and an intermediate the root's CRL now revokes while its device sent only
// its leaf (refused at the next handshake with revoked_cert too).
func TestRevokeTerminates(t *testing.T) {
	t.Parallel()
	b := startBroker(t, "")
	base := func(p *pki) []string {
		return []string{"--upstream", b.addr, "--cert", p.serverCertFile, "--key", p.serverKey,
			"--revoke-terminates", "--reload-interval", reloadInterval}
	}

	t.Run("pinned key removed", func(t *testing.T) {
		t.Parallel()
		p := newPKI(t)
		devA, lineA := selfSignedDevice(t, p, "dev-A")
		devB, lineB := selfSignedDevice(t, p, "dev-B")
		keys, err := handshaketest.WriteFile(p.dir, "devices.keys", []byte(lineA+lineB))
		if err != nil {
			t.Fatal(err)
		}
		s := startServer(t, append(base(p), "--client-keys", keys)...)
		a, kept := devA.session(t, s.addr, "dev-A"), devB.session(t, s.addr, "dev-B")
		s.watching(t)
		replaceFile(t, keys, []byte(lineB))
		s.waitLine(t, closedForLine, func(e logEntry) bool { return e.str("reason") == "key_not_pinned" })
		wantClosed(t, a, waitTimeout)
		wantAlive(t, kept, "dev-B")
	})

	t.Run("PSK changed", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		k1, k2, k3 := randomKey(t), randomKey(t), randomKey(t)
		line := func(id string, k []byte) string { return id + ":" + hex.EncodeToString(k) + "\n" }
		file, err := handshaketest.WriteFile(dir, "psk.txt", []byte(line("dev-1", k1)+line("dev-2", k2)))
		if err != nil {
			t.Fatal(err)
		}
		s := startServer(t, "--upstream", b.addr, "--psk-file", file, "--revoke-terminates", "--reload-interval", reloadInterval)
		open := func(id string, key []byte) net.Conn {
			conn, _, err := dialPSKOnce(s.addr, &tlspsk.ClientConfig{Identity: id, Key: key, Versions: []uint16{tlspsk.VersionTLS13}})
			if err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			t.Cleanup(func() { conn.Close() })
			if rc := rawConnect(t, conn, 4, id); rc != 0 {
				t.Fatalf("%s: CONNACK %#x, want 0", id, rc)
			}
			return conn
		}
		changed, kept := open("dev-1", k1), open("dev-2", k2)
		s.watching(t)
		replaceFile(t, file, []byte(line("dev-1", k3)+line("dev-2", k2)))
		s.waitLine(t, closedForLine, func(e logEntry) bool { return e.str("reason") == "psk_changed" })
		wantClosed(t, changed, waitTimeout)
		wantAlive(t, kept, "dev-2")
		if strings.Contains(s.logs.String(), hex.EncodeToString(k1)) || strings.Contains(s.logs.String(), hex.EncodeToString(k3)) {
			t.Errorf("the log holds a key:\n%s", s.logs)
		}
	})

	t.Run("CA removed from --client-ca", func(t *testing.T) {
		t.Parallel()
		p := newPKI(t)
		newCA, err := handshaketest.NewCA("mqtls e2e CA 2")
		if err != nil {
			t.Fatal(err)
		}
		cas, err := handshaketest.WriteFile(p.dir, "cas.crt", cat(p.ca.CertPEM, newCA.CertPEM))
		if err != nil {
			t.Fatal(err)
		}
		s := startServer(t, append(base(p), "--client-ca", cas)...)
		gone := p.deviceFrom(t, newCA, handshaketest.Template{CommonName: "from-ca-2"}).session(t, s.addr, "from-ca-2")
		kept := p.device(t, "from-ca-1").session(t, s.addr, "from-ca-1")
		s.watching(t)
		replaceFile(t, cas, p.ca.CertPEM)
		s.waitLine(t, closedForLine, func(e logEntry) bool { return e.str("reason") == "untrusted_cert" })
		wantClosed(t, gone, waitTimeout)
		wantAlive(t, kept, "from-ca-1")
	})

	t.Run("intermediate revoked by the root's CRL", func(t *testing.T) {
		t.Parallel()
		p := newPKI(t)
		inter, err := p.ca.Intermediate("mqtls e2e intermediate")
		if err != nil {
			t.Fatal(err)
		}
		cas, err := handshaketest.WriteFile(p.dir, "cas.crt", cat(p.ca.CertPEM, inter.CertPEM))
		if err != nil {
			t.Fatal(err)
		}
		crl, err := handshaketest.WriteFile(p.dir, "crl.pem", cat(mustCRL(t, p.ca), mustCRL(t, inter)))
		if err != nil {
			t.Fatal(err)
		}
		s := startServer(t, append(base(p), "--client-ca", cas, "--crl", crl)...)
		leaf := p.deviceFrom(t, inter, handshaketest.Template{CommonName: "under-inter"}) // sends its leaf only
		gone := leaf.session(t, s.addr, "under-inter")
		kept := p.device(t, "under-root").session(t, s.addr, "under-root")
		s.watching(t)
		replaceFile(t, crl, cat(mustCRL(t, p.ca, &handshaketest.Cert{Cert: inter.Cert}), mustCRL(t, inter)))
		s.waitLine(t, closedForLine, func(e logEntry) bool { return e.str("reason") == "revoked_cert" })
		wantClosed(t, gone, waitTimeout)
		wantAlive(t, kept, "under-root")
		wantHandshakeRefused(t, s, leaf, "revoked_cert")
	})
}

// TestCRLFiles: every CRL of a file counts, a stale one refuses its CA's devices unless
// --crl-grace covers it, and a file with a bad or forged block is refused at start (naming
// the block) and at reload (keeping the CRLs in force).
func TestCRLFiles(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	victim, other := p.device(t, "victim"), p.device(t, "other")
	args := func(crl string, extra ...string) []string {
		return append(append(p.serverArgs(b.addr, true), "--crl", crl), extra...)
	}
	write := func(name string, data []byte) string {
		f, err := handshaketest.WriteFile(p.dir, name, data)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	stale, err := p.ca.CRLWindow(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := handshaketest.NewCA("mqtls e2e CA") // the CA's name, another key
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte("-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n")

	refused := func(t *testing.T, s *server, d device, reason string) {
		t.Helper()
		wantHandshakeRefused(t, s, d, reason)
	}
	accepted := func(t *testing.T, s *server, d device) {
		t.Helper()
		d.session(t, s.addr, d.cert.Cert.Subject.CommonName).Close()
	}

	t.Run("revoked in the second CRL of the file", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, args(write("two.crl", cat(mustCRL(t, p.ca), mustCRL(t, p.ca, victim.cert))))...)
		refused(t, s, victim, "revoked_cert")
		accepted(t, s, other)
	})
	t.Run("stale CRL", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, args(write("stale.crl", stale))...)
		refused(t, s, other, "crl_expired")
	})
	t.Run("stale CRL within --crl-grace", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, args(write("grace.crl", stale), "--crl-grace", "2h")...)
		accepted(t, s, other)
	})
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"garbage block", cat(mustCRL(t, p.ca), garbage), "block 2"},
		{"forged block", cat(mustCRL(t, p.ca), mustCRL(t, impostor, victim.cert)), "block 2: CRL of"},
	} {
		t.Run(tc.name+" refused at start", func(t *testing.T) {
			t.Parallel()
			crl := write(strings.ReplaceAll(tc.name, " ", "-")+".crl", tc.data)
			_, err := runApp(t, append([]string{"serve", "--listen", "127.0.0.1:0"}, args(crl)...)...)
			if err == nil || !strings.Contains(err.Error(), filepath.Base(crl)+": "+tc.want) {
				t.Errorf("serve with %s: error %v, want one naming %q", tc.name, err, filepath.Base(crl)+": "+tc.want)
			}
		})
	}
	t.Run("garbage block on reload keeps the CRLs in force", func(t *testing.T) {
		t.Parallel()
		crl := write("reload.crl", mustCRL(t, p.ca, victim.cert))
		s := startServer(t, args(crl, "--reload-interval", reloadInterval)...)
		s.watching(t)
		replaceFile(t, crl, cat(mustCRL(t, p.ca), garbage))
		s.waitLine(t, "reload failed: keeping the previous certificates and keys", func(e logEntry) bool {
			return strings.Contains(e.str("error"), "reload.crl: block 2")
		})
		refused(t, s, victim, "revoked_cert")
		accepted(t, s, other)
	})
}

// TestStartWarnings: at start, a private key, PSK file or pinned-key file others may read
// is warned about (naming the file and its setting), and a CRL whose next update falls
// within --crl-expiry-warning (24h by default) is warned about whatever --expiry-warning
// says, since CRLs are reissued far more often than certificates.
func TestStartWarnings(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	_, line := selfSignedDevice(t, p, "dev-A")
	keys := writeConfig(t, p.dir, "devices.keys", line, nil)
	psk := writePSKFile(t, p.dir, "psk.txt", "dev-1:"+randomHexKey(t))
	crlPEM, err := p.ca.CRLWindow(time.Now().Add(-time.Hour), time.Now().Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := handshaketest.WriteFile(p.dir, "soon.crl", crlPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p.serverKey, keys, psk} {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, append(p.serverArgs("127.0.0.1:1", true), "--client-keys", keys, "--psk-file", psk, "--crl", crl,
		"--expiry-warning", "1h")...)
	for _, f := range []struct{ file, flag string }{{p.serverKey, "--key"}, {keys, "--client-keys"}, {psk, "--psk-file"}} {
		e := s.waitLine(t, "secret file readable by others: chmod 600 it", func(e logEntry) bool { return e.str("file") == f.file })
		wantAudit(t, e, map[string]string{"level": "warn", "key": f.flag, "mode": "0644"})
	}
	e := s.waitLine(t, "CRL next update due soon: publish a new CRL", nil)
	wantAudit(t, e, map[string]string{"file": crl, "role": "crl"})
}
