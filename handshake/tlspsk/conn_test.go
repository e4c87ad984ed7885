package tlspsk

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// dialClient connects an in-process PSK client to addr and runs its handshake.
func dialClient(t testing.TB, addr string, cfg *ClientConfig) (*Conn, error) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := Client(nc, cfg)
	t.Cleanup(func() { c.Close() })
	return c, c.Handshake()
}

// echoHandler copies everything back until the client's close_notify, then sends its own.
func echoHandler(c *Conn) ([]byte, error) {
	n, err := io.Copy(c, c)
	if err != nil {
		return nil, err
	}
	return []byte(fmt.Sprint(n)), c.CloseWrite()
}

// TestSuitesInProcess runs the package's own client against its server for every suite:
// data both ways, a write bigger than several records, close_notify both ways.
func TestSuitesInProcess(t *testing.T) {
	big := make([]byte, 3*maxPlaintext+1234) // four records
	rand.Read(big)
	for _, id := range DefaultSuites() {
		s := suiteByID(id)
		for _, group := range []uint16{groupX25519, groupP256} {
			if !s.ecdhe && !s.tls13 && group == groupP256 {
				continue
			}
			name := s.name
			if s.ecdhe || s.tls13 {
				name += map[uint16]string{groupX25519: "/X25519", groupP256: "/P-256"}[group]
			}
			t.Run(name, func(t *testing.T) {
				srv := startServer(t, &Config{Lookup: testLookup, Hint: "mqtls"}, echoHandler)
				c, err := dialClient(t, srv.addr(), &ClientConfig{
					Identity: testIdentity, Key: testKey, Suites: []uint16{id},
					ServerName: "broker.example", OfferETM: true, groups: []uint16{group},
				})
				if err != nil {
					t.Fatalf("client handshake: %v", err)
				}
				done := make(chan error, 1)
				var got bytes.Buffer
				go func() { // readEcho
					_, err := io.Copy(&got, c)
					done <- err
				}()
				if _, err := c.Write([]byte("hello")); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write(big); err != nil {
					t.Fatal(err)
				}
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != nil {
					t.Fatalf("reading the echo: %v (want the server's close_notify)", err)
				}
				if want := append([]byte("hello"), big...); !bytes.Equal(got.Bytes(), want) {
					t.Fatalf("echo differs: got %d bytes, want %d", got.Len(), len(want))
				}
				r := srv.result()
				if r.err != nil {
					t.Fatalf("server: %v", r.err)
				}
				if string(r.data) != fmt.Sprint(len(big)+5) {
					t.Errorf("server echoed %s bytes, want %d", r.data, len(big)+5)
				}
				want := State{HandshakeComplete: true, Version: VersionTLS12, CipherSuite: id, Identity: testIdentity,
					ServerName: "broker.example", ExtendedMasterSecret: true, EncryptThenMAC: !s.aead()}
				if s.tls13 { // no EMS (the key schedule binds the transcript anyway), no hint
					want.Version, want.ExtendedMasterSecret = VersionTLS13, false
				}
				if r.state != want {
					t.Errorf("server state %+v, want %+v", r.state, want)
				}
				cs := c.ConnectionState()
				if !s.tls13 {
					want.Hint = "mqtls"
				}
				if cs != want {
					t.Errorf("client state %+v, want %+v", cs, want)
				}
			})
		}
	}
}

// TestPreference checks the server's choice among what a client offers.
func TestPreference(t *testing.T) {
	tests := []struct {
		name    string
		offer   []uint16
		etm     bool
		groups  []uint16
		server  []uint16
		want    uint16
		wantErr string
	}{
		{name: "forward secrecy first", offer: []uint16{TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_GCM_SHA256, TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256}, want: TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256},
		{name: "mbedTLS-like: CCM-8 first, ECDHE only with CBC, ETM", offer: []uint16{TLS_PSK_WITH_AES_128_CCM_8, TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, TLS_PSK_WITH_AES_128_CBC_SHA256}, etm: true, want: TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256},
		{name: "mbedTLS-like without ETM falls back to AEAD", offer: []uint16{TLS_PSK_WITH_AES_128_CCM_8, TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256}, want: TLS_PSK_WITH_AES_128_CCM_8},
		{name: "AEAD before CBC", offer: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA256, TLS_PSK_WITH_AES_128_CCM}, etm: true, want: TLS_PSK_WITH_AES_128_CCM},
		{name: "no shared group skips ECDHE", offer: []uint16{TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, TLS_PSK_WITH_AES_256_GCM_SHA384}, groups: []uint16{24}, want: TLS_PSK_WITH_AES_256_GCM_SHA384},
		{name: "server list restricts", offer: DefaultSuites(), etm: true, server: []uint16{TLS_PSK_WITH_AES_128_CCM}, want: TLS_PSK_WITH_AES_128_CCM},
		{name: "CBC only without ETM", offer: []uint16{TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, TLS_PSK_WITH_AES_128_CBC_SHA256}, wantErr: ReasonCBCWithoutETM},
		{name: "nothing shared", offer: []uint16{TLS_PSK_WITH_AES_128_GCM_SHA256}, server: []uint16{TLS_PSK_WITH_AES_128_CCM}, wantErr: ReasonNoSharedCipher},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup, Suites: tt.server}, nil)
			c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey, Suites: tt.offer, OfferETM: tt.etm, groups: tt.groups})
			r := srv.result()
			if tt.wantErr != "" {
				if err == nil || ReasonOf(r.err) != tt.wantErr {
					t.Fatalf("client err %v, server err %v; want server reason %s", err, r.err, tt.wantErr)
				}
				if ce := asError(t, err); !ce.Remote || ce.Alert != alertHandshakeFailure {
					t.Errorf("client saw %+v, want a handshake_failure alert", ce)
				}
				return
			}
			if err != nil || r.err != nil {
				t.Fatalf("client %v, server %v", err, r.err)
			}
			if got := c.ConnectionState().CipherSuite; got != tt.want {
				t.Errorf("negotiated %s, want %s", CipherSuiteName(got), CipherSuiteName(tt.want))
			}
		})
	}
}

// TestHandshakeFailures covers the refusals a device meets in the field.
func TestHandshakeFailures(t *testing.T) {
	tests := []struct {
		name         string
		client       ClientConfig
		serverReason string
		clientAlert  uint8
	}{
		{"wrong key", ClientConfig{Identity: testIdentity, Key: otherKey}, ReasonDecryptError, alertDecryptError},
		{"wrong key ECDHE", ClientConfig{Identity: testIdentity, Key: otherKey, Suites: []uint16{TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256}}, ReasonDecryptError, alertDecryptError},
		{"wrong key CBC", ClientConfig{Identity: testIdentity, Key: otherKey, Suites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA256}, OfferETM: true}, ReasonDecryptError, alertDecryptError},
		// An unknown identity gets the wrong key's alert (RFC 4279 §2): no enumeration.
		{"unknown identity", ClientConfig{Identity: "device-2", Key: testKey}, ReasonUnknownPSKIdentity, alertDecryptError},
		{"empty identity", ClientConfig{Identity: "", Key: testKey}, ReasonUnknownPSKIdentity, alertDecryptError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup}, nil)
			_, err := dialClient(t, srv.addr(), &tt.client)
			r := srv.result()
			se := asError(t, r.err)
			if se.Reason != tt.serverReason || se.Alert != tt.clientAlert || se.Remote {
				t.Errorf("server error %+v, want reason %s with alert %s sent", se, tt.serverReason, AlertName(tt.clientAlert))
			}
			ce := asError(t, err)
			if !ce.Remote || ce.Alert != tt.clientAlert || ce.Reason != AlertName(tt.clientAlert) {
				t.Errorf("client error %+v, want alert %s received", ce, AlertName(tt.clientAlert))
			}
			for _, secret := range [][]byte{testKey, otherKey} {
				for _, msg := range []string{r.err.Error(), err.Error()} {
					if bytes.Contains([]byte(msg), secret) || bytes.Contains([]byte(msg), []byte(fmt.Sprintf("%x", secret))) {
						t.Errorf("error message %q contains a key", msg)
					}
				}
			}
		})
	}
}

// TestHandshakeFragmented sends every handshake message in 1..7-byte records, and the
// bytes in separate TCP segments, so both sides reassemble across records and reads.
func TestHandshakeFragmented(t *testing.T) {
	for _, frag := range []int{1, 3, 7} {
		t.Run(fmt.Sprint(frag), func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup, Hint: "h"}, echoHandler)
			nc, err := net.Dial("tcp", srv.addr())
			if err != nil {
				t.Fatal(err)
			}
			nc.SetDeadline(time.Now().Add(20 * time.Second))
			c := Client(&trickleConn{Conn: nc, n: 5}, &ClientConfig{Identity: testIdentity, Key: testKey})
			c.hsFragment = frag
			defer c.Close()
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "x" {
				t.Fatalf("got %q, %v", got, err)
			}
			if r := srv.result(); r.err != nil {
				t.Fatal(r.err)
			}
		})
	}
}

// trickleConn writes at most n bytes per Write call to the network.
type trickleConn struct {
	net.Conn
	n int
}

func (c *trickleConn) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		k := min(len(b), c.n)
		m, err := c.Conn.Write(b[:k])
		total += m
		if err != nil {
			return total, err
		}
		b = b[k:]
	}
	return total, nil
}

func (c *trickleConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

// TestConcurrentReadWriteClose runs Read and Write at once under -race, then Close while a
// Read blocks.
func TestConcurrentReadWriteClose(t *testing.T) {
	srv := startServer(t, &Config{Lookup: testLookup}, echoHandler)
	c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000 * 1000
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // writer
		defer wg.Done()
		chunk := make([]byte, 1000)
		for sent := 0; sent < n; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // reader
		defer wg.Done()
		if _, err := io.CopyN(io.Discard, c, n); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	readErr := make(chan error, 1)
	go func() { // blockedReader
		_, err := c.Read(make([]byte, 10))
		readErr <- err
	}()
	time.AfterFunc(50*time.Millisecond, func() { c.Close() })
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("Read after Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	srv.result()
}

// TestCloseNotify checks both ends of close_notify: Close sends it (the peer reads io.EOF),
// a TCP close without it is not io.EOF, and Write after CloseWrite fails.
func TestCloseNotify(t *testing.T) {
	t.Run("Close sends close_notify", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, func(c *Conn) ([]byte, error) {
			c.Write([]byte("bye"))
			return nil, c.Close()
		})
		c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "bye" {
			t.Fatalf("ReadAll = %q, %v; want bye and io.EOF", got, err)
		}
		srv.result()
	})
	t.Run("TCP close without close_notify", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, func(c *Conn) ([]byte, error) {
			c.Write([]byte("bye"))
			return nil, c.NetConn().Close()
		})
		c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey})
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		if string(got) != "bye" || ReasonOf(err) != ReasonEOF || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadAll = %q, %v; want bye and an eof *Error", got, err)
		}
		srv.result()
	})
	t.Run("Write after CloseWrite", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, echoHandler)
		c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey})
		if err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		if _, err := c.Write([]byte("x")); err == nil {
			t.Error("Write after CloseWrite succeeded")
		}
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("reading after CloseWrite: %v", err)
		}
		srv.result()
	})
}

// TestHandshakeContext: a client that never speaks is cut off by the context (slowloris),
// and by a deadline on the connection.
func TestHandshakeContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := Server(nc, &Config{Lookup: testLookup})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.HandshakeContext(ctx)
	if ReasonOf(err) != ReasonCanceled || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("HandshakeContext = %v, want canceled wrapping context.DeadlineExceeded", err)
	}
	if _, err := c.Read(make([]byte, 1)); ReasonOf(err) != ReasonCanceled {
		t.Errorf("Read after a failed handshake = %v, want the handshake's error", err)
	}

	silent2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent2.Close()
	nc2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c2 := Server(nc2, &Config{Lookup: testLookup})
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if err := c2.Handshake(); ReasonOf(err) != ReasonIO || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Handshake = %v, want an io *Error that is a timeout", err)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  *Config
	}{
		{"nil config", nil},
		{"no lookup", &Config{}},
		{"unknown suite", &Config{Lookup: testLookup, Suites: []uint16{0xC02F}}},
		{"repeated suite", &Config{Lookup: testLookup, Suites: []uint16{0x00A8, 0x00A8}}},
		{"empty suites", &Config{Lookup: testLookup, Suites: []uint16{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cfg.Validate() == nil {
				t.Fatal("Validate accepted it")
			}
			a, b := net.Pipe() // never read: the error comes before any I/O
			defer a.Close()
			defer b.Close()
			if err := Server(a, tt.cfg).Handshake(); ReasonOf(err) != ReasonConfig {
				t.Fatalf("Handshake = %v, want reason config", err)
			}
		})
	}
	for _, cc := range []*ClientConfig{nil, {Identity: "x"}, {Identity: "x", Key: make([]byte, 2000)}} {
		if cc.Validate() == nil {
			t.Errorf("ClientConfig.Validate accepted %+v", cc)
		}
	}
}

func TestLookupBadKey(t *testing.T) {
	srv := startServer(t, &Config{Lookup: func(string) ([]byte, bool) { return nil, true }}, nil)
	_, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey})
	if ce := asError(t, err); ce.Alert != alertInternalError {
		t.Errorf("client saw %v, want internal_error", err)
	}
	if r := srv.result(); ReasonOf(r.err) != ReasonInternal {
		t.Errorf("server: %v, want internal_error", r.err)
	}
}

func TestErrorShape(t *testing.T) {
	local := &Error{Reason: ReasonDecryptError, Alert: alertDecryptError, Err: errors.New("the client's Finished does not verify")}
	if got, want := local.Error(), "tlspsk: decrypt_error: the client's Finished does not verify (sent alert decrypt_error)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	remote := &Error{Reason: "unknown_psk_identity", Alert: alertUnknownPSKIdentity, Remote: true}
	if got, want := remote.Error(), "tlspsk: unknown_psk_identity: peer sent alert unknown_psk_identity"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := fmt.Errorf("handshaking with 10.0.0.1: %w", local)
	if ReasonOf(wrapped) != ReasonDecryptError || !errors.Is(wrapped, &Error{Reason: ReasonDecryptError}) || errors.Is(wrapped, &Error{Reason: ReasonIO}) {
		t.Error("ReasonOf / errors.Is do not see through wrapping")
	}
	if ReasonOf(io.EOF) != "" || AlertName(200) != "alert_200" {
		t.Error("ReasonOf or AlertName wrong for unknown input")
	}
}
