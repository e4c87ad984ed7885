package handshake_test

// Attacks on the identity a broker ACL rests on (issue #14), tried with real crypto/tls
// handshakes over loopback: certificates chained through a pinned device, CRLs that did not
// count, revoked intermediates the client leaves out.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/internal/leakcheck"
)

// attackEnv is a server certificate (from its own CA) and a directory for the files a
// TLSConfig names.
type attackEnv struct {
	dir       string
	serverCA  *handshaketest.CA
	certFile  string
	keyFile   string
	goroutine int
}

func newAttackEnv(t *testing.T) *attackEnv {
	t.Helper()
	e := &attackEnv{dir: t.TempDir(), goroutine: leakcheck.Count()}
	var err error
	if e.serverCA, e.certFile, e.keyFile, err = handshaketest.ServerFiles(e.dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { leakcheck.Check(t, e.goroutine) })
	return e
}

// write writes the concatenation of parts to a file called name and returns its path.
func (e *attackEnv) write(t *testing.T, name string, parts ...[]byte) string {
	t.Helper()
	var data []byte
	for _, p := range parts {
		data = append(data, p...)
	}
	path, err := handshaketest.WriteFile(e.dir, name, data)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// config is a TLSConfig requiring client certificates, with e's server certificate.
func (e *attackEnv) config() handshake.TLSConfig {
	return handshake.TLSConfig{CertFile: e.certFile, KeyFile: e.keyFile, ClientAuth: handshake.ClientAuthRequire}
}

func (e *attackEnv) server(t *testing.T, c handshake.TLSConfig) *handshake.TLSServer {
	t.Helper()
	s, err := handshake.NewTLSServer(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshakeResult is what the server side of one handshake yielded.
type handshakeResult struct {
	id  handshake.Identity
	err error
}

// serveOne accepts one connection on loopback and runs s's handshake on it. After a
// successful handshake it writes reply to the device and closes, or with no reply waits
// for the device's first bytes (so the device reads the server's last flight first).
func serveOne(t *testing.T, s *handshake.TLSServer, reply []byte) (net.Listener, <-chan handshakeResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan handshakeResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- handshakeResult{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		sc, id, err := s.Handshake(context.Background(), c)
		if err == nil && reply != nil {
			_, _ = sc.Write(reply)
		} else if err == nil {
			_, _ = sc.Read(make([]byte, 1))
		}
		done <- handshakeResult{id, err}
	}()
	return ln, done
}

// dial runs one handshake between a crypto/tls client presenting leaf (and extra, the
// certificates it sends after the leaf) and s, over loopback TCP, and returns what the
// server side yielded.
func (e *attackEnv) dial(t *testing.T, s *handshake.TLSServer, leaf *handshaketest.Cert, extra ...*x509.Certificate) (handshake.Identity, error) {
	t.Helper()
	ln, done := serveOne(t, s, nil)
	defer ln.Close()
	var cert tls.Certificate
	if leaf != nil {
		cert = leaf.TLSCertificate()
		for _, c := range extra {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
		RootCAs:      e.serverCA.Pool(),
		ServerName:   "127.0.0.1",
		Certificates: []tls.Certificate{cert},
	})
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write([]byte{0xc0, 0x00})
		c.Close()
	}
	r := <-done
	return r.id, r.err
}

func mustCA(t *testing.T, cn string) *handshaketest.CA {
	t.Helper()
	ca, err := handshaketest.NewCA(cn)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *handshaketest.CA, cn string) *handshaketest.Cert {
	t.Helper()
	c, err := ca.Issue(handshaketest.Template{CommonName: cn})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCRL(t *testing.T, ca *handshaketest.CA, revoked ...*x509.Certificate) []byte {
	t.Helper()
	crl, err := ca.CRL(revoked...)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func mustSelfSigned(t *testing.T, cn string) *handshaketest.Cert {
	t.Helper()
	c, err := handshaketest.NewSelfSigned(handshaketest.Template{CommonName: cn})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantRefused checks that a handshake was refused with reason.
func wantRefused(t *testing.T, id handshake.Identity, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted as %s %q (key %q), want refused with %s", id.Kind, id.CommonName, id.KeyName, reason)
	}
	if got := handshake.Reason(err); got != reason {
		t.Fatalf("refused with %s (%v), want %s", got, err, reason)
	}
}

// TestAttackDeviceListedAsCASignsForAnother: a fleet without a CA lists each device's
// self-signed certificate as a client CA. Such a certificate carries CA:TRUE (openssl
// req -x509's default), so device A signs a certificate for CN=dev-B with its own key and
// is forwarded as dev-B. Listing the devices' certificates as client CAs is what this
// attack rests on; the pinned-key tests show the mode that does not have it.
func TestAttackDeviceListedAsCASignsForAnother(t *testing.T) {
	e := newAttackEnv(t)
	devA, devB := mustSelfSigned(t, "dev-A"), mustSelfSigned(t, "dev-B")
	forged := mustIssue(t, devA.AsCA(), "dev-B")
	c := e.config()
	c.ClientCAFile = e.write(t, "devices.crt", devA.CertPEM, devB.CertPEM)
	id, err := e.dial(t, e.server(t, c), forged)
	if err == nil && id.CommonName == "dev-B" {
		t.Logf("as documented: a device listed as a client CA signs for another and is accepted as %q", id.CommonName)
	}
	if err != nil {
		t.Fatalf("the CA-listing hazard no longer reproduces (%v): update SECURITY.md", err)
	}
}

// TestAttackSecondCRLInFile: a CRL file holding two CRLs, the device revoked in the second.
func TestAttackSecondCRLInFile(t *testing.T) {
	e := newAttackEnv(t)
	ca1, ca2 := mustCA(t, "CA one"), mustCA(t, "CA two")
	dev := mustIssue(t, ca2, "dev-2")
	c := e.config()
	c.ClientCAFile = e.write(t, "ca.crt", ca1.CertPEM, ca2.CertPEM)
	c.CRLFiles = []string{e.write(t, "crl.pem", mustCRL(t, ca1), mustCRL(t, ca2, dev.Cert))}
	id, err := e.dial(t, e.server(t, c), dev)
	wantRefused(t, id, err, handshake.ReasonRevokedCert)
}

// TestAttackExpiredCRL: a CRL past its nextUpdate no longer says who is revoked; OpenSSL
// refuses, and so must mqtls unless the operator grants a grace period.
func TestAttackExpiredCRL(t *testing.T) {
	e := newAttackEnv(t)
	ca := mustCA(t, "CA")
	dev := mustIssue(t, ca, "dev-1")
	crl, err := ca.CRLWindow(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c := e.config()
	c.ClientCAFile = e.write(t, "ca.crt", ca.CertPEM)
	c.CRLFiles = []string{e.write(t, "crl.pem", crl)}
	id, err := e.dial(t, e.server(t, c), dev)
	wantRefused(t, id, err, handshake.ReasonCRLExpired)
}

// TestAttackCRLNotTheCAs: a CRL counts only for the CA whose name it carries and whose key
// signed it; one that matches no CA fails the load, naming the file and the block.
func TestAttackCRLNotTheCAs(t *testing.T) {
	e := newAttackEnv(t)
	ca := mustCA(t, "CA")
	impostor := mustCA(t, "CA") // same name, another key
	renamed, err := ca.Rename("Other CA")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		crls [][]byte
		want string
	}{
		{"same name, another key", [][]byte{mustCRL(t, impostor)}, "block 1"},
		{"the CA's key, another name", [][]byte{mustCRL(t, renamed)}, "block 1"},
		{"a good CRL, then a forged one", [][]byte{mustCRL(t, ca), mustCRL(t, impostor)}, "block 2"},
		{"a good CRL, then garbage", [][]byte{mustCRL(t, ca), []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")}, "block 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.config()
			c.ClientCAFile = e.write(t, "ca.crt", ca.CertPEM)
			c.CRLFiles = []string{e.write(t, "crl.pem", tc.crls...)}
			_, err := handshake.NewTLSServer(c)
			if err == nil {
				t.Fatal("loaded; want the CRL file refused")
			}
			if want := filepath.Base(c.CRLFiles[0]); !containsAll(err.Error(), want, tc.want) {
				t.Errorf("error %q does not name %q and %q", err, want, tc.want)
			}
		})
	}
}

// TestAttackRevokedIntermediateLeftOut: the client-CA file holds the root and an
// intermediate; the root's CRL revokes the intermediate. Whether the device sends the
// intermediate or not, it is refused.
func TestAttackRevokedIntermediateLeftOut(t *testing.T) {
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
	s := e.server(t, c)
	for _, tc := range []struct {
		name  string
		extra []*x509.Certificate
	}{
		{"leaf only", nil},
		{"leaf and intermediate", []*x509.Certificate{inter.Cert}},
		{"leaf, intermediate and root", []*x509.Certificate{inter.Cert, root.Cert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := e.dial(t, s, dev, tc.extra...)
			wantRefused(t, id, err, handshake.ReasonRevokedCert)
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
