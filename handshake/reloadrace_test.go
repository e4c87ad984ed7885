package handshake

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/internal/leakcheck"
)

// TestReloadDuringHandshake: a reload that lands between the certificate check and the end
// of the handshake must not let the old files name the device. The key is unpinned right
// after VerifyConnection accepted it; the handshake then fails closed instead of yielding
// a pinned identity the files no longer back.
func TestReloadDuringHandshake(t *testing.T) {
	defer leakcheck.Check(t, leakcheck.Count())
	dir := t.TempDir()
	ca, certFile, keyFile, err := handshaketest.ServerFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := handshaketest.NewSelfSigned(handshaketest.Template{CommonName: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	hash, err := SPKIHash(dev.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte("dev-1:"+hash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := NewTLSServer(TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientKeysFile: keys, ClientAuth: ClientAuthRequire})
	if err != nil {
		t.Fatal(err)
	}
	verify := s.config.VerifyConnection
	s.config.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err == nil { // accepted: now the operator removes the key
			if werr := os.WriteFile(keys, []byte("# emptied\n"), 0o600); werr != nil {
				t.Error(werr)
			} else if rerr := s.Reload(); rerr != nil {
				t.Error(rerr)
			}
		}
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, id, err := s.Handshake(context.Background(), c)
		if err == nil {
			t.Errorf("accepted as %s %q after its key was removed", id.Kind, id.KeyName)
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{dev.TLSCertificate()}})
	if err == nil {
		c.Close()
	}
	if err := <-done; Reason(err) != ReasonKeyNotPinned {
		t.Fatalf("server: %v, want %s", err, ReasonKeyNotPinned)
	}
}
