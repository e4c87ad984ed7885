package handshake_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// TestCRLRules: what each CRL configuration does to a handshake, beyond the attacks.
func TestCRLRules(t *testing.T) {
	e := newAttackEnv(t)
	ca := mustCA(t, "CA")
	dev, revoked := mustIssue(t, ca, "dev-1"), mustIssue(t, ca, "dev-2")
	stale, err := ca.CRLWindow(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	staleRevoking, err := ca.CRLWindow(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour), revoked.Cert)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := ca.Intermediate("intermediate, not in the file")
	if err != nil {
		t.Fatal(err)
	}
	underInter := mustIssue(t, inter, "dev-3")
	der, _ := pem.Decode(mustCRL(t, ca, revoked.Cert))

	for _, tc := range []struct {
		name   string
		crls   [][]byte
		grace  time.Duration
		cert   *handshaketest.Cert
		extra  []*x509.Certificate
		reason string // "" accepted
	}{
		{"fresh CRL, good device", [][]byte{mustCRL(t, ca, revoked.Cert)}, 0, dev, nil, ""},
		{"fresh CRL, revoked device", [][]byte{mustCRL(t, ca, revoked.Cert)}, 0, revoked, nil, handshake.ReasonRevokedCert},
		{"DER CRL file", [][]byte{der.Bytes}, 0, revoked, nil, handshake.ReasonRevokedCert},
		{"stale CRL", [][]byte{stale}, 0, dev, nil, handshake.ReasonCRLExpired},
		{"stale CRL within the grace", [][]byte{stale}, 2 * time.Hour, dev, nil, ""},
		{"stale CRL still revokes", [][]byte{staleRevoking}, 0, revoked, nil, handshake.ReasonRevokedCert},
		{"a stale and a fresh CRL of one CA: the fresh one counts", [][]byte{stale, mustCRL(t, ca)}, 0, dev, nil, ""},
		{"an old CRL's revocations still count", [][]byte{staleRevoking, mustCRL(t, ca)}, 0, revoked, nil, handshake.ReasonRevokedCert},
		{"intermediate the client sends has no CRL", [][]byte{mustCRL(t, ca)}, 0, underInter, []*x509.Certificate{inter.Cert}, handshake.ReasonCRLMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.config()
			c.ClientCAFile = e.write(t, "ca.crt", ca.CertPEM)
			c.CRLFiles = []string{e.write(t, "crl", tc.crls...)}
			c.CRLGrace = tc.grace
			id, err := e.dial(t, e.server(t, c), tc.cert, tc.extra...)
			if tc.reason != "" {
				wantRefused(t, id, err, tc.reason)
			} else if err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}

func TestCRLLoad(t *testing.T) {
	e := newAttackEnv(t)
	ca1, ca2 := mustCA(t, "CA one"), mustCA(t, "CA two")
	critical := crlWithExtension(t, ca1, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{2, 1, 1}})
	for _, tc := range []struct {
		name string
		cas  [][]byte
		crls [][][]byte // files, each of blocks
		err  []string   // "" accepted
	}{
		{"every CA needs a CRL", [][]byte{ca1.CertPEM, ca2.CertPEM}, [][][]byte{{mustCRL(t, ca1)}}, []string{"CA two", "has no CRL"}},
		{"two files", [][]byte{ca1.CertPEM, ca2.CertPEM}, [][][]byte{{mustCRL(t, ca1)}, {mustCRL(t, ca2)}}, nil},
		{"not a CRL block", [][]byte{ca1.CertPEM}, [][][]byte{{mustCRL(t, ca1), ca1.CertPEM}}, []string{"block 2", `"CERTIFICATE"`}},
		{"a delta CRL", [][]byte{ca1.CertPEM}, [][][]byte{{critical}}, []string{"block 1", "critical extension 2.5.29.27"}},
		{"a broken PEM header", [][]byte{ca1.CertPEM}, [][][]byte{{mustCRL(t, ca1), []byte("-----BEGIN X509 CRL-----\nAAAA\n")}}, []string{"block 2", "well-formed"}},
		{"empty file", [][]byte{ca1.CertPEM}, [][][]byte{{}}, []string{"empty"}},
		{"DER garbage", [][]byte{ca1.CertPEM}, [][][]byte{{[]byte("garbage")}}, []string{"block 1 (DER)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.config()
			c.ClientCAFile = e.write(t, "ca.crt", tc.cas...)
			c.CRLFiles = nil
			for i, blocks := range tc.crls {
				c.CRLFiles = append(c.CRLFiles, e.write(t, "crl"+string(rune('a'+i)), blocks...))
			}
			s, err := handshake.NewTLSServer(c)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("loaded; want an error")
			}
			if !containsAll(err.Error(), tc.err...) {
				t.Errorf("error %q does not contain %q", err, tc.err)
			}
			_ = s
		})
	}
}

// TestCRLFiles: each CRL is described on its own, with its file and block.
func TestCRLFiles(t *testing.T) {
	e := newAttackEnv(t)
	ca1, ca2 := mustCA(t, "CA one"), mustCA(t, "CA two")
	c := e.config()
	c.ClientCAFile = e.write(t, "ca.crt", ca1.CertPEM, ca2.CertPEM)
	c.CRLFiles = []string{e.write(t, "crl.pem", mustCRL(t, ca1), mustCRL(t, ca2))}
	var crls []handshake.FileInfo
	for _, f := range e.server(t, c).Files() {
		if f.Role == "crl" {
			crls = append(crls, f)
		}
	}
	if len(crls) != 2 {
		t.Fatalf("%d CRLs described, want 2: %+v", len(crls), crls)
	}
	for i, f := range crls {
		if f.File != c.CRLFiles[0] || f.Block != i+1 || f.ThisUpdate.IsZero() || !f.NotAfter.After(f.ThisUpdate) ||
			!strings.Contains(f.Subject, []string{"CA one", "CA two"}[i]) {
			t.Errorf("CRL %d: %+v", i+1, f)
		}
	}
}

func TestTLSConfigValidate(t *testing.T) {
	base := handshake.TLSConfig{CertFile: "c", KeyFile: "k"}
	for _, tc := range []struct {
		name string
		edit func(*handshake.TLSConfig)
		err  string
	}{
		{"keys only, require", func(c *handshake.TLSConfig) { c.ClientKeysFile, c.ClientAuth = "keys", handshake.ClientAuthRequire }, ""},
		{"keys only, request", func(c *handshake.TLSConfig) { c.ClientKeysFile, c.ClientAuth = "keys", handshake.ClientAuthRequest }, ""},
		{"keys, auth none", func(c *handshake.TLSConfig) { c.ClientKeysFile = "keys" }, "client auth is none"},
		{"CRLs with keys only", func(c *handshake.TLSConfig) {
			c.ClientKeysFile, c.ClientAuth, c.CRLFiles = "keys", handshake.ClientAuthRequire, []string{"crl"}
		}, "client CA file"},
		{"negative grace", func(c *handshake.TLSConfig) {
			c.ClientCAFile, c.ClientAuth, c.CRLGrace = "ca", handshake.ClientAuthRequire, -time.Second
		}, "negative"},
		{"require without CA or keys", func(c *handshake.TLSConfig) { c.ClientAuth = handshake.ClientAuthRequire }, "client keys file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.edit(&c)
			err := c.Validate()
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
}

// crlWithExtension is a fresh CRL of ca carrying ext.
func crlWithExtension(t *testing.T, ca *handshaketest.CA, ext pkix.Extension) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big1, ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour), ExtraExtensions: []pkix.Extension{ext},
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

func FuzzParseCRLFile(f *testing.F) {
	ca, err := handshaketest.NewCA("fuzz CA")
	if err != nil {
		f.Fatal(err)
	}
	crl, err := ca.CRL(ca.Cert)
	if err != nil {
		f.Fatal(err)
	}
	block, _ := pem.Decode(crl)
	for _, seed := range [][]byte{crl, append(append([]byte{}, crl...), crl...), block.Bytes, []byte("-----BEGIN X509 CRL-----\n"), {}, []byte("text\n" + string(crl))} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		crls, err := handshake.ParseCRLFile("fuzz", data)
		if err == nil && len(crls) == 0 {
			t.Fatal("no CRL and no error")
		}
		for _, c := range crls {
			if c.NextUpdate.IsZero() {
				t.Fatal("accepted a CRL without nextUpdate")
			}
		}
	})
}

var big1 = big.NewInt(1)
