package handshake

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// handshaker is what PSKServer, TLSServer and Mixed have in common.
type handshaker interface {
	Handshake(ctx context.Context, c net.Conn) (net.Conn, Identity, error)
}

// serverResult is what the server side of one connection saw.
type serverResult struct {
	id   Identity
	err  error
	echo error // the echo after a successful handshake
}

// testListener accepts connections on loopback and runs h on each, one at a time, echoing
// four bytes back after a successful handshake so the client can tell that the returned
// conn carries the session.
type testListener struct {
	ln      net.Listener
	results chan serverResult
	done    chan struct{}
}

func listen(t *testing.T, h handshaker) *testListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &testListener{ln: ln, results: make(chan serverResult, 1), done: make(chan struct{})}
	go l.serve(h)
	t.Cleanup(func() {
		ln.Close()
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			t.Error("the test listener's accept loop did not end")
		}
	})
	return l
}

func (l *testListener) serve(h handshaker) {
	defer close(l.done)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		sc, id, err := h.Handshake(context.Background(), c)
		r := serverResult{id: id, err: err}
		if err == nil {
			buf := make([]byte, 4)
			if _, r.echo = io.ReadFull(sc, buf); r.echo == nil {
				_, r.echo = sc.Write(buf)
			}
			sc.Close()
		}
		c.Close()
		l.results <- r
	}
}

func (l *testListener) result(t *testing.T) serverResult {
	t.Helper()
	select {
	case r := <-l.results:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not finish the handshake")
		return serverResult{}
	}
}

func (l *testListener) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", l.ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// ping writes four bytes on a client conn and checks that they come back.
func ping(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("writing on the session: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v; want \"ping\"", buf, err)
	}
}

// testServers builds a mutual-TLS server, a PSK server and the two behind a Mixed router,
// with one device certificate (CN sensor-1) and one PSK identity (dev-1).
type testServers struct {
	tls    *TLSServer
	psk    *PSKServer
	mixed  *Mixed
	ca     *handshaketest.CA
	device *handshaketest.Cert
	key    []byte // dev-1's key
}

const testHint = "mqtls test"

func newTestServers(t *testing.T) *testServers {
	t.Helper()
	dir := t.TempDir()
	ca, err := handshaketest.NewCA("handshake test CA")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(handshaketest.Template{CommonName: "localhost", IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := srv.Files(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := handshaketest.WriteFile(dir, "ca.crt", ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := NewTLSServer(TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, ClientAuth: ClientAuthRequire})
	if err != nil {
		t.Fatal(err)
	}
	pskFile, err := handshaketest.WriteFile(dir, "psk.txt", []byte("dev-1:"+hexKey32+"\ndev-2:"+hexKey16+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := LoadPSKFile(pskFile, PSKFormatMosquitto)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := NewPSKServer(store, testHint)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Store() != store {
		t.Error("PSKServer.Store() is not the store it was built with")
	}
	dev, err := ca.Issue(handshaketest.Template{CommonName: "sensor-1"})
	if err != nil {
		t.Fatal(err)
	}
	return &testServers{tls: ts, psk: ps, mixed: &Mixed{TLS: ts, PSK: ps}, ca: ca, device: dev, key: mustHex(t, hexKey32)}
}

func (s *testServers) certClient(c net.Conn, maxVersion uint16) *tls.Conn {
	cert := s.device.TLSCertificate()
	return tls.Client(c, &tls.Config{
		RootCAs:      s.ca.Pool(),
		ServerName:   "127.0.0.1",
		Certificates: []tls.Certificate{cert},
		MaxVersion:   maxVersion,
	})
}

func handshakeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantReason checks that err is a *handshake.Error with reason.
func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	var he *Error
	if !errors.As(err, &he) {
		t.Fatalf("server error %v (%T), want a *handshake.Error with reason %s", err, err, reason)
	}
	if he.Reason != reason || Reason(err) != reason {
		t.Errorf("server reason %q (%v), want %q", he.Reason, err, reason)
	}
}

// TestMixedRouting: one listener serves certificates and PSK; each client lands on the
// right handshake, and refusals carry stable reasons.
func TestMixedRouting(t *testing.T) {
	s := newTestServers(t)
	l := listen(t, s.mixed)

	t.Run("TLS-PSK client", func(t *testing.T) {
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-1", Key: s.key})
		if err := c.HandshakeContext(handshakeCtx(t)); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		if h := c.ConnectionState().Hint; h != testHint {
			t.Errorf("client saw hint %q, want %q", h, testHint)
		}
		ping(t, c)
		r := l.result(t)
		if r.err != nil || r.echo != nil {
			t.Fatalf("server: %v, echo: %v", r.err, r.echo)
		}
		id := r.id
		if id.Kind != KindPSK || id.PSKIdentity != "dev-1" || id.CommonName != "" {
			t.Errorf("identity %+v, want KindPSK dev-1", id)
		}
		if id.VersionName() != "TLS 1.2" {
			t.Errorf("version %q, want TLS 1.2", id.VersionName())
		}
		if got, want := id.CipherSuiteName(), "TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256"; got != want {
			t.Errorf("suite %q, want %q", got, want)
		}
	})

	t.Run("TLS-PSK client, PSK key exchange with CCM-8", func(t *testing.T) {
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-2", Key: mustHex(t, hexKey16),
			Suites: []uint16{tlspsk.TLS_PSK_WITH_AES_128_CCM_8}})
		if err := c.HandshakeContext(handshakeCtx(t)); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		ping(t, c)
		r := l.result(t)
		if r.err != nil || r.id.Kind != KindPSK || r.id.PSKIdentity != "dev-2" || r.id.CipherSuiteName() != "TLS_PSK_WITH_AES_128_CCM_8" {
			t.Errorf("server: %v, identity %+v; want dev-2 over TLS_PSK_WITH_AES_128_CCM_8", r.err, r.id)
		}
	})

	t.Run("TLS 1.3 external PSK client", func(t *testing.T) {
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-1", Key: s.key, Versions: []uint16{tlspsk.VersionTLS13}})
		if err := c.HandshakeContext(handshakeCtx(t)); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		ping(t, c)
		r := l.result(t)
		if r.err != nil || r.id.Kind != KindPSK || r.id.PSKIdentity != "dev-1" || r.id.VersionName() != "TLS 1.3" ||
			r.id.CipherSuiteName() != "TLS_AES_128_GCM_SHA256" {
			t.Errorf("server: %v, identity %+v; want dev-1 over TLS 1.3", r.err, r.id)
		}
	})

	// A certificate client resuming with a crypto/tls session ticket also sends a
	// pre_shared_key; its ticket age is not 0, so it must still reach crypto/tls.
	t.Run("certificate client resuming a TLS 1.3 session", func(t *testing.T) {
		cert := s.device.TLSCertificate()
		cfg := &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert},
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		for i, wantResume := range []bool{false, true} {
			c := tls.Client(l.dial(t), cfg)
			if err := c.HandshakeContext(handshakeCtx(t)); err != nil {
				t.Fatalf("handshake %d: %v", i, err)
			}
			ping(t, c) // reads, so the client takes in the session ticket
			r := l.result(t)
			if r.err != nil || r.id.Kind != KindCertificate || r.id.CommonName != "sensor-1" {
				t.Fatalf("handshake %d: server %v, identity %+v", i, r.err, r.id)
			}
			if got := c.ConnectionState().DidResume; got != wantResume {
				t.Errorf("handshake %d: DidResume %v, want %v", i, got, wantResume)
			}
		}
	})

	for _, v := range []struct {
		name string
		max  uint16
		want string
	}{
		{"TLS 1.3", tls.VersionTLS13, "TLS 1.3"},
		{"TLS 1.2", tls.VersionTLS12, "TLS 1.2"},
	} {
		t.Run("certificate client "+v.name, func(t *testing.T) {
			c := s.certClient(l.dial(t), v.max)
			if err := c.HandshakeContext(handshakeCtx(t)); err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			ping(t, c)
			r := l.result(t)
			if r.err != nil || r.echo != nil {
				t.Fatalf("server: %v, echo: %v", r.err, r.echo)
			}
			if r.id.Kind != KindCertificate || r.id.CommonName != "sensor-1" || r.id.PSKIdentity != "" {
				t.Errorf("identity %+v, want KindCertificate sensor-1", r.id)
			}
			if r.id.VersionName() != v.want {
				t.Errorf("version %q, want %q", r.id.VersionName(), v.want)
			}
		})
	}

	t.Run("plain HTTP", func(t *testing.T) {
		c := l.dial(t)
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		wantReason(t, l.result(t).err, ReasonNotTLS)
	})

	t.Run("TLS record that is not a handshake", func(t *testing.T) {
		c := l.dial(t)
		if _, err := c.Write([]byte{0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5}); err != nil {
			t.Fatal(err)
		}
		wantReason(t, l.result(t).err, ReasonNotTLS)
	})

	t.Run("client hangs up inside the first record", func(t *testing.T) {
		c := l.dial(t)
		if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		wantReason(t, l.result(t).err, ReasonClientClosed)
	})

	t.Run("wrong PSK key", func(t *testing.T) {
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-1", Key: mustHex(t, hexKey16)})
		err := c.HandshakeContext(handshakeCtx(t))
		if tlspsk.ReasonOf(err) != tlspsk.ReasonDecryptError {
			t.Errorf("client: %v, want the server's decrypt_error alert", err)
		}
		wantReason(t, l.result(t).err, tlspsk.ReasonDecryptError)
	})

	t.Run("unknown PSK identity", func(t *testing.T) {
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-9", Key: s.key})
		err := c.HandshakeContext(handshakeCtx(t))
		// The client sees a wrong key's decrypt_error (no enumeration); the server's
		// reason still names the cause.
		if tlspsk.ReasonOf(err) != tlspsk.ReasonDecryptError {
			t.Errorf("client: %v, want the server's decrypt_error alert", err)
		}
		r := l.result(t)
		wantReason(t, r.err, tlspsk.ReasonUnknownPSKIdentity)
		if strings.Contains(r.err.Error(), hexKey32) {
			t.Errorf("server error %q contains the key", r.err)
		}
	})

	t.Run("certificate client from another CA", func(t *testing.T) {
		other, err := handshaketest.NewCA("other CA")
		if err != nil {
			t.Fatal(err)
		}
		dev, err := other.Issue(handshaketest.Template{CommonName: "sensor-1"})
		if err != nil {
			t.Fatal(err)
		}
		cert := dev.TLSCertificate()
		c := tls.Client(l.dial(t), &tls.Config{RootCAs: s.ca.Pool(), ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
		if err := c.HandshakeContext(handshakeCtx(t)); err == nil {
			t.Errorf("client handshake succeeded, want a refusal")
		}
		wantReason(t, l.result(t).err, ReasonUntrustedCert)
	})
}

// TestPSKServerAlone: a PSK-only listener, with no router in front.
func TestPSKServerAlone(t *testing.T) {
	s := newTestServers(t)
	l := listen(t, s.psk)

	t.Run("TLS-PSK client", func(t *testing.T) {
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-1", Key: s.key})
		if err := c.HandshakeContext(handshakeCtx(t)); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		ping(t, c)
		r := l.result(t)
		if r.err != nil || r.id.Kind != KindPSK || r.id.PSKIdentity != "dev-1" {
			t.Errorf("server: %v, identity %+v; want KindPSK dev-1", r.err, r.id)
		}
	})

	t.Run("certificate client", func(t *testing.T) {
		c := s.certClient(l.dial(t), 0)
		if err := c.HandshakeContext(handshakeCtx(t)); err == nil {
			t.Errorf("client handshake succeeded against a PSK-only server")
		}
		wantReason(t, l.result(t).err, tlspsk.ReasonNoSharedCipher)
	})

	t.Run("plain HTTP", func(t *testing.T) {
		c := l.dial(t)
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		wantReason(t, l.result(t).err, ReasonNotTLS)
	})

	t.Run("client hangs up", func(t *testing.T) {
		c := l.dial(t)
		c.Close()
		wantReason(t, l.result(t).err, ReasonClientClosed)
	})

	t.Run("wrong key", func(t *testing.T) {
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-2", Key: s.key})
		_ = c.HandshakeContext(handshakeCtx(t))
		wantReason(t, l.result(t).err, tlspsk.ReasonDecryptError)
	})

	t.Run("reloaded store", func(t *testing.T) {
		// The server reads the store on every handshake: a reload takes effect at once.
		file, err := handshaketest.WriteFile(t.TempDir(), "psk.txt", []byte("dev-3:"+hexKey16+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.psk.Store().Load(file, PSKFormatMosquitto); err != nil {
			t.Fatal(err)
		}
		c := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-3", Key: mustHex(t, hexKey16)})
		if err := c.HandshakeContext(handshakeCtx(t)); err != nil {
			t.Fatalf("client handshake after reload: %v", err)
		}
		ping(t, c)
		if r := l.result(t); r.err != nil || r.id.PSKIdentity != "dev-3" {
			t.Errorf("server: %v, identity %+v; want dev-3", r.err, r.id)
		}
		c2 := tlspsk.Client(l.dial(t), &tlspsk.ClientConfig{Identity: "dev-1", Key: s.key})
		_ = c2.HandshakeContext(handshakeCtx(t))
		wantReason(t, l.result(t).err, tlspsk.ReasonUnknownPSKIdentity)
	})
}

// TestNewPSKServer: the constructor refuses what cannot serve.
func TestNewPSKServer(t *testing.T) {
	if _, err := NewPSKServer(nil, ""); err == nil {
		t.Error("NewPSKServer(nil) succeeded")
	}
	if _, err := NewPSKServer(&PSKStore{}, strings.Repeat("h", 2000)); err == nil || !strings.Contains(err.Error(), "hint") {
		t.Errorf("NewPSKServer with a 2000-byte hint: %v, want an error naming the hint", err)
	}
	if _, err := NewPSKServer(&PSKStore{}, ""); err != nil {
		t.Errorf("NewPSKServer with no hint: %v", err)
	}
	if _, err := NewPSKServerWithOptions(&PSKStore{}, PSKOptions{MinVersion: tlspsk.VersionTLS13, MaxVersion: tlspsk.VersionTLS12}); err == nil || !strings.Contains(err.Error(), "MinVersion") {
		t.Errorf("MinVersion above MaxVersion: %v, want an error naming MinVersion", err)
	}
	if _, err := NewPSKServerWithOptions(&PSKStore{}, PSKOptions{MinVersion: 0x0302}); err == nil {
		t.Error("MinVersion TLS 1.1 accepted")
	}
}
