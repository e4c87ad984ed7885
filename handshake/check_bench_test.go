package handshake

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// BenchmarkCheck measures the certificate decision a handshake makes (TLSServer.verify
// and, for DTLS, again in Handshake), without the handshake around it: a pinned key's hash
// lookup, and chain verification with and without CRLs over root → intermediate → leaf.
func BenchmarkCheck(b *testing.B) {
	dir := b.TempDir()
	write := func(name string, parts ...[]byte) string {
		var data []byte
		for _, p := range parts {
			data = append(data, p...)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			b.Fatal(err)
		}
		return path
	}
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	root, err := handshaketest.NewCA("root")
	must(err)
	inter, err := root.Intermediate("intermediate")
	must(err)
	srv, err := root.Issue(handshaketest.Template{CommonName: "localhost"})
	must(err)
	leaf, err := inter.Issue(handshaketest.Template{CommonName: "dev-1"})
	must(err)
	self, err := handshaketest.NewSelfSigned(handshaketest.Template{CommonName: "dev-2"})
	must(err)
	hash, err := SPKIHash(self.CertPEM)
	must(err)
	crlRoot, err := root.CRL()
	must(err)
	crlInter, err := inter.CRL()
	must(err)
	certFile, keyFile, err := srv.Files(dir, "server")
	must(err)
	base := TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientAuth: ClientAuthRequire,
		ClientCAFile: write("ca.crt", root.CertPEM, inter.CertPEM), ClientKeysFile: write("keys", []byte("dev-2:"+hash+"\n"))}
	withCRLs := base
	withCRLs.CRLFiles = []string{write("crl.pem", crlRoot, crlInter)}
	for _, bc := range []struct {
		name  string
		cfg   TLSConfig
		certs []*x509.Certificate
	}{
		{"pinned", base, []*x509.Certificate{self.Cert}},
		{"chain", base, []*x509.Certificate{leaf.Cert}},
		{"chain-crl", withCRLs, []*x509.Certificate{leaf.Cert}},
		{"chain-crl-sent-intermediate", withCRLs, []*x509.Certificate{leaf.Cert, inter.Cert}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := NewTLSServer(bc.cfg)
			must(err)
			m := s.material.Load()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.checkPeer(m, bc.certs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
