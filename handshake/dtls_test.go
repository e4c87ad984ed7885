package handshake_test

// Tests and benchmarks of the DTLS listener against pion/dtls v3 clients over loopback UDP.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/proxy/datagram"
)

const dtlsTimeout = 5 * time.Second

// dtlsResult is what the server side of one DTLS connection ended with.
type dtlsResult struct {
	conn net.Conn // the secure conn; nil on failure
	id   handshake.Identity
	err  error
}

// dtlsServer is a DTLS listener whose accept loop runs every handshake and reports it.
type dtlsServer struct {
	ln      net.Listener
	srv     *handshake.DTLSServer
	addr    *net.UDPAddr
	results chan dtlsResult
	done    chan struct{}
}

// listenDTLS starts a DTLS listener on loopback for cfg; it is closed, with every
// connection it yielded, when t ends.
func listenDTLS(tb testing.TB, cfg handshake.DTLSConfig) *dtlsServer {
	tb.Helper()
	return listenDTLSTimeout(tb, cfg, dtlsTimeout)
}

// listenDTLSTimeout is listenDTLS with each handshake bounded by timeout.
func listenDTLSTimeout(tb testing.TB, cfg handshake.DTLSConfig, timeout time.Duration) *dtlsServer {
	tb.Helper()
	ln, srv, err := handshake.ListenDTLS("127.0.0.1:0", cfg)
	if err != nil {
		tb.Fatal(err)
	}
	s := &dtlsServer{ln: ln, srv: srv, addr: ln.Addr().(*net.UDPAddr), results: make(chan dtlsResult, 64), done: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				sc, id, err := srv.Handshake(ctx, c)
				if err != nil {
					c.Close()
				}
				s.results <- dtlsResult{sc, id, err}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-s.done
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return s
}

// result waits for the server side of the next connection.
func (s *dtlsServer) result(tb testing.TB) dtlsResult {
	tb.Helper()
	select {
	case r := <-s.results:
		if r.conn != nil {
			tb.Cleanup(func() { r.conn.Close() })
		}
		return r
	case <-time.After(2 * dtlsTimeout):
		tb.Fatal("the server finished no handshake")
		return dtlsResult{}
	}
}

// dialDTLS runs a pion client handshake against addr. The conn is closed when tb ends.
func dialDTLS(tb testing.TB, addr net.Addr, opts ...dtls.ClientOption) (*dtls.Conn, error) {
	tb.Helper()
	return dialDTLSTimeout(tb, addr, dtlsTimeout, opts...)
}

// dialDTLSTimeout is dialDTLS with the handshake bounded by timeout.
func dialDTLSTimeout(tb testing.TB, addr net.Addr, timeout time.Duration, opts ...dtls.ClientOption) (*dtls.Conn, error) {
	tb.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	c, err := dtls.ClientWithOptions(pc, addr, opts...)
	if err != nil {
		pc.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c, c.HandshakeContext(ctx)
}

// testPSK is a random 32-byte key for identity "dev-1", and a store holding it.
type testPSK struct {
	key   []byte
	store *handshake.PSKStore
}

func newTestPSK(tb testing.TB) testPSK {
	tb.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		tb.Fatal(err)
	}
	file := filepath.Join(tb.TempDir(), "psk")
	if err := os.WriteFile(file, []byte("dev-1:"+hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	store, err := handshake.LoadPSKFile(file, handshake.PSKFormatMosquitto)
	if err != nil {
		tb.Fatal(err)
	}
	return testPSK{key: key, store: store}
}

func (p testPSK) server(tb testing.TB) *handshake.PSKServer {
	tb.Helper()
	s, err := handshake.NewPSKServer(p.store, "")
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// pskClient are pion client options for identity with key, offering suite.
func pskClient(identity string, key []byte, suite dtls.CipherSuiteID) []dtls.ClientOption {
	return []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)), // pion's client sends this as its identity
		dtls.WithCipherSuites(suite),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
	}
}

// testPKI is a CA with a server certificate, and what the server loads from disk.
type testPKI struct {
	ca       *handshaketest.CA
	dir      string
	certFile string
	keyFile  string
	caFile   string
}

func newTestPKI(tb testing.TB) *testPKI {
	tb.Helper()
	p := &testPKI{dir: tb.TempDir()}
	var err error
	if p.ca, err = handshaketest.NewCA("dtls test CA"); err != nil {
		tb.Fatal(err)
	}
	srv, err := p.ca.Issue(handshaketest.Template{CommonName: "localhost", DNSNames: []string{"localhost"}})
	if err != nil {
		tb.Fatal(err)
	}
	if p.certFile, p.keyFile, err = srv.Files(p.dir, "server"); err != nil {
		tb.Fatal(err)
	}
	if p.caFile, err = handshaketest.WriteFile(p.dir, "ca.crt", p.ca.CertPEM); err != nil {
		tb.Fatal(err)
	}
	return p
}

// server returns a certificate server; auth none means one-way DTLS.
func (p *testPKI) server(tb testing.TB, auth handshake.ClientAuth) *handshake.TLSServer {
	tb.Helper()
	cfg := handshake.TLSConfig{CertFile: p.certFile, KeyFile: p.keyFile, ClientAuth: auth}
	if auth != handshake.ClientAuthNone {
		cfg.ClientCAFile = p.caFile
	}
	s, err := handshake.NewTLSServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// client returns pion client options that trust p's CA and present cert (if not nil).
func (p *testPKI) client(cert *handshaketest.Cert) []dtls.ClientOption {
	opts := []dtls.ClientOption{
		dtls.WithRootCAs(p.ca.Pool()),
		dtls.WithServerName("localhost"),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
	}
	if cert != nil {
		opts = append(opts, dtls.WithCertificates(cert.TLSCertificate()))
	}
	return opts
}

func issue(tb testing.TB, ca *handshaketest.CA, cn string) *handshaketest.Cert {
	tb.Helper()
	c, err := ca.Issue(handshaketest.Template{CommonName: cn})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// roundTrip sends an MQTT PINGREQ from the client and checks it arrives whole at the
// server, then a PINGRESP back: records flow both ways on the secured conns.
func roundTrip(t *testing.T, client net.Conn, server net.Conn) {
	t.Helper()
	_ = client.SetDeadline(time.Now().Add(dtlsTimeout))
	_ = server.SetDeadline(time.Now().Add(dtlsTimeout))
	if _, err := client.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatalf("client write: %v", err)
	}
	buf := make([]byte, datagram.MaxRecord)
	n, err := server.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte{0xc0, 0x00}) {
		t.Fatalf("server read % x, %v; want PINGREQ", buf[:n], err)
	}
	if _, err := server.Write([]byte{0xd0, 0x00}); err != nil {
		t.Fatalf("server write: %v", err)
	}
	n, err = client.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], []byte{0xd0, 0x00}) {
		t.Fatalf("client read % x, %v; want PINGRESP", buf[:n], err)
	}
}

func TestDTLSIdentityPSK(t *testing.T) {
	psk := newTestPSK(t)
	for _, suite := range []dtls.CipherSuiteID{
		dtls.TLS_PSK_WITH_AES_128_CCM_8,
		dtls.TLS_PSK_WITH_AES_128_CCM,
		dtls.TLS_PSK_WITH_AES_256_CCM_8,
		dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
		dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
	} {
		t.Run(suite.String(), func(t *testing.T) {
			s := listenDTLS(t, handshake.DTLSConfig{PSK: psk.server(t)})
			c, err := dialDTLS(t, s.addr, pskClient("dev-1", psk.key, suite)...)
			if err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			r := s.result(t)
			if r.err != nil {
				t.Fatalf("server handshake: %v", r.err)
			}
			want := handshake.Identity{Kind: handshake.KindPSK, PSKIdentity: "dev-1", TLSVersion: 0xfefd, CipherSuite: uint16(suite), DTLS: true}
			if r.id.Kind != want.Kind || r.id.PSKIdentity != want.PSKIdentity || r.id.TLSVersion != want.TLSVersion ||
				r.id.CipherSuite != want.CipherSuite || !r.id.DTLS {
				t.Errorf("identity %+v, want %+v", r.id, want)
			}
			if v := r.id.VersionName(); v != "DTLS 1.2" {
				t.Errorf("VersionName() = %q, want DTLS 1.2", v)
			}
			if n := r.id.CipherSuiteName(); n != suite.String() {
				t.Errorf("CipherSuiteName() = %q, want %q", n, suite.String())
			}
			roundTrip(t, c, r.conn)
		})
	}
}

func TestDTLSIdentityCertificate(t *testing.T) {
	p := newTestPKI(t)
	dev := issue(t, p.ca, "sensor-7")
	for _, tc := range []struct {
		name string
		auth handshake.ClientAuth
		cert *handshaketest.Cert
		kind handshake.Kind
		cn   string
	}{
		{"mutual", handshake.ClientAuthRequire, dev, handshake.KindCertificate, "sensor-7"},
		{"request with a certificate", handshake.ClientAuthRequest, dev, handshake.KindCertificate, "sensor-7"},
		{"request without one", handshake.ClientAuthRequest, nil, handshake.KindNone, ""},
		{"one-way", handshake.ClientAuthNone, nil, handshake.KindNone, ""},
		// A certificate sent to a one-way listener proves nothing: it is not checked.
		{"one-way with a certificate", handshake.ClientAuthNone, dev, handshake.KindNone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listenDTLS(t, handshake.DTLSConfig{TLS: p.server(t, tc.auth)})
			c, err := dialDTLS(t, s.addr, p.client(tc.cert)...)
			if err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			r := s.result(t)
			if r.err != nil {
				t.Fatalf("server handshake: %v", r.err)
			}
			if r.id.Kind != tc.kind || r.id.CommonName != tc.cn || !r.id.DTLS || r.id.PSKIdentity != "" {
				t.Errorf("identity kind %v CN %q DTLS %v, want %v %q true", r.id.Kind, r.id.CommonName, r.id.DTLS, tc.kind, tc.cn)
			}
			if tc.kind == handshake.KindCertificate && r.id.Fingerprint == "" {
				t.Error("certificate identity without a fingerprint")
			}
			if v := r.id.VersionName(); v != "DTLS 1.2" {
				t.Errorf("VersionName() = %q, want DTLS 1.2", v)
			}
			if n := r.id.CipherSuiteName(); !strings.HasPrefix(n, "TLS_ECDHE_ECDSA_WITH_") {
				t.Errorf("CipherSuiteName() = %q, want an ECDHE-ECDSA suite", n)
			}
			roundTrip(t, c, r.conn)
		})
	}
}

// TestDTLSBoth checks that one listener with certificates and PSKs serves both kinds.
// TestDTLSCertificateSuites checks every certificate suite an ECDSA server negotiates,
// and that logs name each one.
func TestDTLSCertificateSuites(t *testing.T) {
	p := newTestPKI(t)
	dev := issue(t, p.ca, "sensor-8")
	for _, suite := range []dtls.CipherSuiteID{
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
	} {
		t.Run(suite.String(), func(t *testing.T) {
			s := listenDTLS(t, handshake.DTLSConfig{TLS: p.server(t, handshake.ClientAuthRequire)})
			c, err := dialDTLS(t, s.addr, append(p.client(dev), dtls.WithCipherSuites(suite))...)
			if err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			r := s.result(t)
			if r.err != nil {
				t.Fatalf("server handshake: %v", r.err)
			}
			if r.id.CipherSuite != uint16(suite) || r.id.CipherSuiteName() != suite.String() {
				t.Errorf("suite %#04x %q, want %#04x %q", r.id.CipherSuite, r.id.CipherSuiteName(), uint16(suite), suite.String())
			}
			roundTrip(t, c, r.conn)
		})
	}
	// A suite the listener leaves out (CBC, MAC-then-encrypt) is refused.
	s := listenDTLSTimeout(t, handshake.DTLSConfig{TLS: p.server(t, handshake.ClientAuthRequire)}, time.Second)
	if _, err := dialDTLSTimeout(t, s.addr, time.Second, append(p.client(dev), dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA))...); err == nil {
		t.Error("a CBC suite was negotiated")
	}
	if r := s.result(t); r.err == nil {
		t.Error("the server accepted a CBC suite")
	}
}

func TestDTLSBoth(t *testing.T) {
	p, psk := newTestPKI(t), newTestPSK(t)
	s := listenDTLS(t, handshake.DTLSConfig{TLS: p.server(t, handshake.ClientAuthRequire), PSK: psk.server(t)})
	if _, err := dialDTLS(t, s.addr, pskClient("dev-1", psk.key, dtls.TLS_PSK_WITH_AES_128_CCM_8)...); err != nil {
		t.Fatalf("PSK client: %v", err)
	}
	if r := s.result(t); r.err != nil || r.id.Kind != handshake.KindPSK || r.id.PSKIdentity != "dev-1" {
		t.Errorf("PSK client: %+v, %v", r.id, r.err)
	}
	if _, err := dialDTLS(t, s.addr, p.client(issue(t, p.ca, "cam-2"))...); err != nil {
		t.Fatalf("certificate client: %v", err)
	}
	if r := s.result(t); r.err != nil || r.id.Kind != handshake.KindCertificate || r.id.CommonName != "cam-2" {
		t.Errorf("certificate client: %+v, %v", r.id, r.err)
	}
}

func TestDTLSRefusals(t *testing.T) {
	p, psk := newTestPKI(t), newTestPSK(t)
	other, err := handshaketest.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	expired, err := p.ca.Issue(handshaketest.Template{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cfg    func() handshake.DTLSConfig
		client []dtls.ClientOption
		reason string
	}{
		{
			name:   "unknown PSK identity",
			cfg:    func() handshake.DTLSConfig { return handshake.DTLSConfig{PSK: psk.server(t)} },
			client: pskClient("dev-9", psk.key, dtls.TLS_PSK_WITH_AES_128_CCM_8),
			reason: "unknown_psk_identity",
		},
		{
			// The client's Finished does not decrypt under the server's key, and DTLS
			// discards records that do not decrypt (RFC 6347 §4.1.2.7) rather than
			// answering with an alert: the handshake runs into its deadline.
			name:   "wrong PSK",
			cfg:    func() handshake.DTLSConfig { return handshake.DTLSConfig{PSK: psk.server(t)} },
			client: pskClient("dev-1", bytes.Repeat([]byte{1}, 32), dtls.TLS_PSK_WITH_AES_128_CCM_8),
			reason: handshake.ReasonTimeout,
		},
		{
			name: "no client certificate",
			cfg: func() handshake.DTLSConfig {
				return handshake.DTLSConfig{TLS: p.server(t, handshake.ClientAuthRequire)}
			},
			client: p.client(nil),
			reason: handshake.ReasonNoClientCert,
		},
		{
			name: "certificate from another CA",
			cfg: func() handshake.DTLSConfig {
				return handshake.DTLSConfig{TLS: p.server(t, handshake.ClientAuthRequire)}
			},
			client: p.client(issue(t, other, "intruder")),
			reason: handshake.ReasonUntrustedCert,
		},
		{
			name: "expired certificate",
			cfg: func() handshake.DTLSConfig {
				return handshake.DTLSConfig{TLS: p.server(t, handshake.ClientAuthRequest)}
			},
			client: p.client(expired),
			reason: handshake.ReasonExpiredCert,
		},
		{
			name: "PSK client on a certificate listener",
			cfg: func() handshake.DTLSConfig {
				return handshake.DTLSConfig{TLS: p.server(t, handshake.ClientAuthRequire)}
			},
			client: pskClient("dev-1", psk.key, dtls.TLS_PSK_WITH_AES_128_CCM_8),
			reason: "no_shared_cipher",
		},
		{
			// pion's error for this is unexported: the front names it from the hello.
			name:   "certificate client with a suite mqtls leaves out, on a PSK listener",
			cfg:    func() handshake.DTLSConfig { return handshake.DTLSConfig{PSK: psk.server(t)} },
			client: append(p.client(nil), dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA)),
			reason: "no_shared_cipher",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := listenDTLSTimeout(t, tc.cfg(), time.Second)
			if _, err := dialDTLSTimeout(t, s.addr, time.Second, tc.client...); err == nil {
				t.Error("client handshake succeeded, want it refused")
			}
			r := s.result(t)
			if r.err == nil {
				t.Fatalf("server handshake succeeded (identity %+v), want %s", r.id, tc.reason)
			}
			if got := handshake.Reason(r.err); got != tc.reason {
				t.Errorf("reason %q (%v), want %q", got, r.err, tc.reason)
			}
			var herr *handshake.Error
			if !errors.As(r.err, &herr) {
				t.Errorf("error %T is not a *handshake.Error", r.err)
			}
			if strings.Contains(r.err.Error(), hex.EncodeToString(psk.key)) || bytes.Contains([]byte(r.err.Error()), psk.key) {
				t.Errorf("error %q contains the key", r.err)
			}
		})
	}
}

// TestDTLSHandshakeDeadline checks that a client that stops mid-handshake, after it has
// returned its cookie, ends with handshake_timeout when the context passes, and no
// goroutine is left behind.
func TestDTLSHandshakeDeadline(t *testing.T) {
	before := runtime.NumGoroutine()
	psk := newTestPSK(t)
	ln, srv, err := handshake.ListenDTLS("127.0.0.1:0", handshake.DTLSConfig{PSK: psk.server(t)})
	if err != nil {
		t.Fatal(err)
	}
	// The ClientHello, the HelloVerifyRequest and the ClientHello with the cookie pass;
	// then silence.
	relay := newStallRelay(t, ln.Addr().(*net.UDPAddr), 2, 1)
	go func() {
		pc, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		c, err := dtls.ClientWithOptions(pc, relay.addr(), pskClient("dev-1", psk.key, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = c.HandshakeContext(ctx)
			cancel()
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = srv.Handshake(ctx, c)
	if got := handshake.Reason(err); got != handshake.ReasonTimeout {
		t.Errorf("reason %q (%v), want %q", got, err, handshake.ReasonTimeout)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("handshake returned after %v, want about 300ms", d)
	}
	c.Close()
	ln.Close()
	relay.close()
	waitGoroutines(t, before)
}

// stallRelay relays between one client and dst: the client's first up datagrams and the
// server's first down datagrams, then nothing.
type stallRelay struct {
	pc   *net.UDPConn
	done chan struct{}
}

func newStallRelay(t *testing.T, dst *net.UDPAddr, up, down int) *stallRelay {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	o := &stallRelay{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		buf := make([]byte, 2048)
		var client *net.UDPAddr
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			switch {
			case from.Port == dst.Port && down > 0 && client != nil:
				down--
				_, _ = pc.WriteToUDP(buf[:n], client)
			case from.Port != dst.Port && up > 0:
				up--
				client = from
				_, _ = pc.WriteToUDP(buf[:n], dst)
			}
		}
	}()
	return o
}

func (o *stallRelay) addr() *net.UDPAddr { return o.pc.LocalAddr().(*net.UDPAddr) }
func (o *stallRelay) close()             { o.pc.Close(); <-o.done }

func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestListenDTLSErrors(t *testing.T) {
	if _, _, err := handshake.ListenDTLS("127.0.0.1:0", handshake.DTLSConfig{}); err == nil {
		t.Error("ListenDTLS without certificates or PSKs succeeded")
	}
	psk := newTestPSK(t)
	if _, _, err := handshake.ListenDTLS("nonsense", handshake.DTLSConfig{PSK: psk.server(t)}); err == nil {
		t.Error("ListenDTLS on a bad address succeeded")
	}
	ln, srv, err := handshake.ListenDTLS("127.0.0.1:0", handshake.DTLSConfig{PSK: psk.server(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := srv.Handshake(context.Background(), a); handshake.Reason(err) != handshake.ReasonFailed {
		t.Errorf("Handshake on a net.Pipe conn: %v, want %s", err, handshake.ReasonFailed)
	}
}

// benchHandshakes runs b.N pion client handshakes, one at a time, against a listener.
func benchHandshakes(b *testing.B, cfg handshake.DTLSConfig, client []dtls.ClientOption) {
	s := listenDTLS(b, cfg)
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		c, err := dtls.ClientWithOptions(pc, s.addr, client...)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), dtlsTimeout)
		err = c.HandshakeContext(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		r := <-s.results
		if r.err != nil {
			b.Fatal(r.err)
		}
		c.Close()
		r.conn.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
}

func BenchmarkDTLSHandshakePSK(b *testing.B) {
	psk := newTestPSK(b)
	benchHandshakes(b, handshake.DTLSConfig{PSK: psk.server(b)}, pskClient("dev-1", psk.key, dtls.TLS_PSK_WITH_AES_128_CCM_8))
}

func BenchmarkDTLSHandshakeECDHEPSK(b *testing.B) {
	psk := newTestPSK(b)
	benchHandshakes(b, handshake.DTLSConfig{PSK: psk.server(b)}, pskClient("dev-1", psk.key, dtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256))
}

func BenchmarkDTLSHandshakeECDSA(b *testing.B) {
	p := newTestPKI(b)
	benchHandshakes(b, handshake.DTLSConfig{TLS: p.server(b, handshake.ClientAuthRequire)}, p.client(issue(b, p.ca, "bench")))
}

// BenchmarkDTLSDatagramThroughput measures MQTT PUBLISH packets of 64 bytes written
// through datagram.Conn over a pion DTLS session on loopback UDP and read back, framed, on
// the server side: the device-to-broker half of a DTLS session.
func BenchmarkDTLSDatagramThroughput(b *testing.B) {
	psk := newTestPSK(b)
	s := listenDTLS(b, handshake.DTLSConfig{PSK: psk.server(b)})
	c, err := dialDTLS(b, s.addr, pskClient("dev-1", psk.key, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256)...)
	if err != nil {
		b.Fatal(err)
	}
	r := s.result(b)
	if r.err != nil {
		b.Fatal(r.err)
	}
	// 16 packets per Write: a burst of small publishes, packed into one datagram.
	pkt := make([]byte, 64)
	pkt[0], pkt[1], pkt[2], pkt[3], pkt[4] = 0x30, 62, 0x00, 0x01, 't'
	burst := bytes.Repeat(pkt, 16)
	dev := datagram.New(c, datagram.Options{})
	srv := datagram.New(r.conn, datagram.Options{})
	buf := make([]byte, datagram.MaxRecord)
	b.ReportAllocs()
	b.SetBytes(int64(len(burst)))
	for b.Loop() {
		if _, err := dev.Write(burst); err != nil {
			b.Fatal(err)
		}
		// Wait for the burst before sending the next: UDP on loopback drops what the
		// receiver's socket buffer cannot hold, and a lost datagram would stall the loop.
		for got := 0; got < len(burst); {
			_ = r.conn.SetReadDeadline(time.Now().Add(dtlsTimeout))
			n, err := srv.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
	if srv.Dropped() != 0 {
		b.Errorf("%d datagrams dropped", srv.Dropped())
	}
}

// Compile-time check that the pion conn is what datagram.New expects.
var _ net.Conn = (*dtls.Conn)(nil)
