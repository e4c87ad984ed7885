package handshake

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// clientHello returns the first record a crypto/tls client sends for serverName.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.HandshakeContext(ctx)
	}()
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	rec, err := readFirstRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestReadClientHello(t *testing.T) {
	for _, tc := range []struct {
		name, sni, want string
	}{
		{"name", "tenant-a.example", "tenant-a.example"},
		{"upper case", "Tenant-B.Example", "tenant-b.example"},
		{"no name", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := clientHello(t, tc.sni)
			got, name, err := ReadClientHello(&helloConn{rec: rec})
			if err != nil || name != tc.want || string(got) != string(rec) {
				t.Fatalf("ReadClientHello = %q, %v; want %q and the record itself", name, err, tc.want)
			}
		})
	}
	for _, bad := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T'}, // a plain MQTT CONNECT
		{22, 3, 3, 0, 4, 1, 0, 0, 0},                 // a handshake record with an empty ClientHello
	} {
		if _, _, err := ReadClientHello(&helloConn{rec: bad}); Reason(err) != ReasonNotTLS && Reason(err) != ReasonClientClosed {
			t.Errorf("ReadClientHello(% x) = %v, want not_tls", bad, err)
		}
	}
}

// FuzzReadClientHello: whatever a peer sends first, ReadClientHello returns a name or an
// error, and never writes or panics.
func FuzzReadClientHello(f *testing.F) {
	f.Add(clientHello(f, "tenant-a.example"))
	f.Add(clientHello(f, ""))
	f.Add([]byte{22, 3, 1, 0, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = ReadClientHello(&helloConn{rec: data})
	})
}

// TestClientVerify: the uplink refuses a remote whose certificate chains to another CA,
// carries another name, or whose key is not pinned, each with its reason.
func TestClientVerify(t *testing.T) {
	dir := t.TempDir()
	ca, err := handshaketest.NewCA("remote CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := handshaketest.WriteFile(dir, "ca.crt", ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	other, err := handshaketest.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	otherFile, err := handshaketest.WriteFile(dir, "other.crt", other.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(handshaketest.Template{CommonName: "broker", DNSNames: []string{"broker.example"}})
	if err != nil {
		t.Fatal(err)
	}
	pins := dir + "/pins"
	h, err := SPKIHash(other.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := AddKey(pins, "someone-else", h); err != nil {
		t.Fatal(err)
	}
	cert := srv.TLSCertificate()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	for _, tc := range []struct {
		name   string
		cfg    ClientConfig
		reason string
	}{
		{"trusted", ClientConfig{CAFile: caFile, ServerName: "broker.example"}, ""},
		{"other CA", ClientConfig{CAFile: otherFile, ServerName: "broker.example"}, ReasonUntrustedCert},
		{"other name", ClientConfig{CAFile: caFile, ServerName: "evil.example"}, ReasonNameMismatch},
		{"not pinned", ClientConfig{CAFile: caFile, ServerName: "broker.example", ServerKeysFile: pins}, ReasonKeyNotPinned},
		{"insecure still pins", ClientConfig{InsecureSkipVerify: true, ServerKeysFile: pins}, ReasonKeyNotPinned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := NewClient(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := cl.Dial(ctx, "tcp", ln.Addr().String())
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("Dial succeeded, want %s", tc.reason)
			}
			if Reason(err) != tc.reason {
				t.Errorf("Dial: %v (reason %s), want reason %s", err, Reason(err), tc.reason)
			}
		})
	}
}
