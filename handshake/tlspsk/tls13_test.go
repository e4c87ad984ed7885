package tlspsk

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

func groupName(g uint16) string {
	if g == groupX25519 {
		return "X25519"
	}
	return "P-256"
}

// client13 is a TLS 1.3 client config with knobs.
func client13(k tls13ClientKnobs) *ClientConfig {
	return &ClientConfig{Identity: testIdentity, Key: testKey, Versions: []uint16{VersionTLS13}, t13: k}
}

// TestTLS13Handshakes covers the TLS 1.3 key exchanges and the handshake refusals, each
// with the server's Reason and the alert the client receives (RFC 8446 §4.2.11, §4.1.4).
func TestTLS13Handshakes(t *testing.T) {
	tests := []struct {
		name   string
		server Config
		client *ClientConfig
		reason string // "" for success
		alert  uint8  // the alert the client receives
	}{
		{name: "psk_dhe_ke X25519", client: client13(tls13ClientKnobs{})},
		{name: "HelloRetryRequest for X25519 (empty key_share)", client: client13(tls13ClientKnobs{shareGroups: []uint16{}})},
		{name: "HelloRetryRequest for P-256", client: func() *ClientConfig {
			c := client13(tls13ClientKnobs{shareGroups: []uint16{}})
			c.groups = []uint16{groupP256}
			return c
		}()},
		{name: "HelloRetryRequest, then a share for the wrong group", client: client13(tls13ClientKnobs{shareGroups: []uint16{}, secondShare: groupP256}),
			reason: ReasonNoSharedGroup, alert: alertIllegalParameter},
		{name: "no common group", client: func() *ClientConfig {
			c := client13(tls13ClientKnobs{shareGroups: []uint16{}})
			c.groups = []uint16{24} // P-384 only
			return c
		}(), reason: ReasonNoSharedGroup, alert: alertHandshakeFailure},
		{name: "psk_ke refused by default", client: client13(tls13ClientKnobs{pskModes: []uint8{pskModeKE}}), reason: ReasonPSKKERefused, alert: alertHandshakeFailure},
		{name: "psk_ke allowed", server: Config{AllowPSKKE: true}, client: client13(tls13ClientKnobs{pskModes: []uint8{pskModeKE}})},
		{name: "psk_dhe_ke preferred over psk_ke", server: Config{AllowPSKKE: true}, client: client13(tls13ClientKnobs{pskModes: []uint8{pskModeKE, pskModeDHEKE}})},
		{name: "tampered binder", client: client13(tls13ClientKnobs{tamperBinder: true}), reason: ReasonDecryptError, alert: alertDecryptError},
		{name: "tampered Finished", client: client13(tls13ClientKnobs{tamperFinished: true}), reason: ReasonDecryptError, alert: alertDecryptError},
		{name: "unknown identity first, then a known one", client: client13(tls13ClientKnobs{extraIdentity: "device-404"})},
		{name: "middlebox compatibility mode", client: client13(tls13ClientKnobs{compat: true})},
		{name: "middlebox compatibility after HelloRetryRequest", client: client13(tls13ClientKnobs{compat: true, shareGroups: []uint16{}})},
		{name: "early data refused and skipped", client: client13(tls13ClientKnobs{earlyData: bytes.Repeat([]byte("0rtt"), 1000)})},
		{name: "early data over the limit", client: client13(tls13ClientKnobs{earlyData: make([]byte, maxEarlyData+1)}),
			reason: ReasonUnexpectedMessage, alert: alertUnexpectedMessage},
		{name: "early data skipped after HelloRetryRequest", client: client13(tls13ClientKnobs{earlyData: []byte("0rtt"), shareGroups: []uint16{}})},
		{name: "record_size_limit 64", client: client13(tls13ClientKnobs{recordSizeLimit: 64})},
		{name: "record_size_limit under 64", client: client13(tls13ClientKnobs{recordSizeLimit: 63}), reason: ReasonIllegalParameter, alert: alertIllegalParameter},
		{name: "TLS 1.3 client, listener capped at TLS 1.2", server: Config{MaxVersion: VersionTLS12}, client: client13(tls13ClientKnobs{}),
			reason: ReasonProtocolVersion, alert: alertProtocolVersion},
		{name: "TLS 1.2 client, listener TLS 1.3 only", server: Config{MinVersion: VersionTLS13}, client: &ClientConfig{Identity: testIdentity, Key: testKey},
			reason: ReasonProtocolVersion, alert: alertProtocolVersion},
		{name: "TLS 1.3 and 1.2 offered, TLS 1.3 chosen", client: &ClientConfig{Identity: testIdentity, Key: testKey, Versions: []uint16{VersionTLS13, VersionTLS12}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.server
			cfg.Lookup = testLookup
			srv := startServer(t, &cfg, echoHandler)
			nc, err := net.Dial("tcp", srv.addr())
			if err != nil {
				t.Fatal(err)
			}
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			tap := &tapConn{Conn: nc}
			c := Client(tap, tt.client)
			defer c.Close()
			err = c.Handshake()
			if tt.reason != "" {
				r := srv.result()
				if se := asError(t, r.err); se.Reason != tt.reason || se.Alert != tt.alert {
					t.Errorf("server: %+v, want %s with alert %s", se, tt.reason, AlertName(tt.alert))
				}
				if err == nil {
					// The client's flight ends the handshake on its side; the
					// server's verdict arrives with the next read.
					_, err = c.Read(make([]byte, 1))
				}
				if ce := asError(t, err); !ce.Remote || ce.Alert != tt.alert {
					t.Errorf("client: %+v, want alert %s", ce, AlertName(tt.alert))
				}
				return
			}
			if err != nil {
				t.Fatalf("client: %v (server: %v)", err, srv.result().err)
			}
			msg := bytes.Repeat([]byte("mqtt"), 100)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo %d bytes, %v", len(got), err)
			}
			r := srv.result()
			if r.err != nil || r.state.Version != VersionTLS13 || r.state.Identity != testIdentity {
				t.Fatalf("server: %v %+v", r.err, r.state)
			}
			if lim := tt.client.t13.recordSizeLimit; lim != 0 {
				// Every protected record from the server: at most lim inner bytes + tag.
				for b := tap.got.Bytes(); len(b) >= recordHeaderLen; {
					n := int(b[3])<<8 | int(b[4])
					if b[0] == recordTypeApplicationData && n > int(lim)+16 {
						t.Errorf("server sent a record of %d bytes past a record_size_limit of %d", n, lim)
					}
					b = b[recordHeaderLen+n:]
				}
			}
		})
	}
}

// TestTLS13KeyUpdate: a client's KeyUpdate with update_requested is answered, data flows on
// new keys both ways; a flood of KeyUpdates ends the connection.
func TestTLS13KeyUpdate(t *testing.T) {
	t.Run("requested, answered", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, echoHandler)
		c, err := dialClient(t, srv.addr(), client13(tls13ClientKnobs{}))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := c.sendKeyUpdate(true); err != nil {
				t.Fatal(err)
			}
			msg := []byte{'a' + byte(i)}
			c.Write(msg)
			got := make([]byte, 1)
			if _, err := io.ReadFull(c, got); err != nil || got[0] != msg[0] {
				t.Fatalf("after KeyUpdate %d: %q %v", i, got, err)
			}
		}
		c.CloseWrite()
		io.ReadAll(c)
		if r := srv.result(); r.err != nil {
			t.Fatal(r.err)
		}
	})
	t.Run("flood", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, echoHandler)
		c, err := dialClient(t, srv.addr(), client13(tls13ClientKnobs{}))
		if err != nil {
			t.Fatal(err)
		}
		for range maxIdleRecords + 1 {
			if err := c.sendKeyUpdate(false); err != nil {
				break
			}
		}
		r := srv.result()
		if se := asError(t, r.err); se.Reason != ReasonUnexpectedMessage {
			t.Errorf("server: %+v, want unexpected_message", se)
		}
	})
}

// TestTLS13ChangeCipherSpec: the compatibility ChangeCipherSpec is only dropped between the
// first ClientHello and the client's Finished (RFC 8446 §5).
func TestTLS13ChangeCipherSpec(t *testing.T) {
	t.Run("after the handshake", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, echoHandler)
		c, err := dialClient(t, srv.addr(), client13(tls13ClientKnobs{}))
		if err != nil {
			t.Fatal(err)
		}
		c.conn.Write(record(recordTypeChangeCipherSpec, VersionTLS12, []byte{1}))
		r := srv.result()
		if se := asError(t, r.err); se.Reason != ReasonUnexpectedMessage || se.Alert != alertUnexpectedMessage {
			t.Errorf("server: %+v, want unexpected_message", se)
		}
	})
	t.Run("before the ClientHello", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, nil)
		p := dialRaw(t, srv.addr())
		p.send(record(recordTypeChangeCipherSpec, VersionTLS12, []byte{1}))
		if r := srv.result(); ReasonOf(r.err) != ReasonNotTLS {
			t.Errorf("server: %v, want not_tls", r.err)
		}
	})
	t.Run("wrong body during the handshake", func(t *testing.T) {
		srv := startServer(t, &Config{Lookup: testLookup}, nil)
		nc, err := net.Dial("tcp", srv.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		// The server gets the ClientHello, then a ChangeCipherSpec of value 2.
		c := Client(&ccsAfterHello{Conn: nc}, client13(tls13ClientKnobs{}))
		c.Handshake()
		r := srv.result()
		if se := asError(t, r.err); se.Reason != ReasonUnexpectedMessage {
			t.Errorf("server: %+v, want unexpected_message", se)
		}
	})
}

// ccsAfterHello sends a malformed ChangeCipherSpec after the first write (the ClientHello).
type ccsAfterHello struct {
	net.Conn
	done bool
}

func (c *ccsAfterHello) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if !c.done {
		c.done = true
		c.Conn.Write(record(recordTypeChangeCipherSpec, VersionTLS12, []byte{2}))
	}
	return n, err
}

// TestTLS13AutomaticKeyUpdate: a writer near its key's record limit sends a KeyUpdate
// first (RFC 8446 §5.5), and the reader follows it.
func TestTLS13AutomaticKeyUpdate(t *testing.T) {
	s := tls13Suites[0]
	var wire bytes.Buffer
	w := fixedKeyConn13(s, nil)
	w.conn = &memConn{}
	w.out.cipher, _ = newCipher13(s, w.out.secret[:])
	w.out.seq = maxRecordsPerKey - 1
	data := bytes.Repeat([]byte("x"), 3*maxPlaintext)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	wire.Write(w.conn.(*memConn).w.Bytes())
	r := fixedKeyConn13(s, bytes.NewReader(wire.Bytes()))
	r.in.seq = maxRecordsPerKey - 1
	got, err := io.ReadAll(io.LimitReader(r, int64(len(data))))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if w.out.seq >= maxRecordsPerKey || r.in.seq != w.out.seq {
		t.Errorf("writer at record %d, reader at %d: no key change", w.out.seq, r.in.seq)
	}
}

// TestTLS13RecordLayer sends records a well-behaved client never would, after the
// handshake: padding is stripped, what is not allowed ends the session with its alert
// (RFC 8446 §5.2, §5.4).
func TestTLS13RecordLayer(t *testing.T) {
	// sealed builds one protected record with the given inner plaintext.
	sealed := func(c *Conn, inner []byte) []byte {
		c.out.mu.Lock()
		defer c.out.mu.Unlock()
		n := len(inner) + c.out.cipher.overhead() - 1
		rec := []byte{recordTypeApplicationData, 3, 3, byte(n >> 8), byte(n)}
		rec = c.out.cipher.seal(rec, c.out.seq, rec[:recordHeaderLen], inner)
		c.out.seq++
		return rec
	}
	tests := []struct {
		name   string
		build  func(c *Conn) []byte
		echo   string // what comes back when the record is accepted
		reason string
		alert  uint8
	}{
		{"padded application data", func(c *Conn) []byte {
			return sealed(c, append([]byte("padded"), append([]byte{recordTypeApplicationData}, make([]byte, 100)...)...))
		}, "padded", "", 0},
		{"all padding, no content type", func(c *Conn) []byte { return sealed(c, make([]byte, 20)) }, "", ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"protected ChangeCipherSpec", func(c *Conn) []byte { return sealed(c, []byte{1, recordTypeChangeCipherSpec}) }, "", ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"unknown inner content type", func(c *Conn) []byte { return sealed(c, []byte{1, 99}) }, "", ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"inner plaintext over 2^14+1", func(c *Conn) []byte {
			return sealed(c, append(make([]byte, maxPlaintext+1), recordTypeApplicationData))
		}, "", ReasonRecordOverflow, alertRecordOverflow},
		{"plaintext handshake record after the handshake", func(c *Conn) []byte {
			return record(recordTypeHandshake, VersionTLS12, appendHandshake(nil, typeKeyUpdate, []byte{0}))
		}, "", ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"ClientHello after the handshake", func(c *Conn) []byte {
			return sealed(c, append(marshalClientHello(baseHello()), recordTypeHandshake))
		}, "", ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"KeyUpdate with a bad value", func(c *Conn) []byte {
			return sealed(c, append(appendHandshake(nil, typeKeyUpdate, []byte{2}), recordTypeHandshake))
		}, "", ReasonMalformedHandshake, alertDecodeError},
		{"warning alert other than close_notify", func(c *Conn) []byte {
			return sealed(c, []byte{alertLevelWarning, alertUnsupportedExtension, recordTypeAlert})
		}, "", AlertName(alertUnsupportedExtension), alertUnsupportedExtension}, // fatal in TLS 1.3 (§6)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup}, echoHandler)
			c, err := dialClient(t, srv.addr(), client13(tls13ClientKnobs{}))
			if err != nil {
				t.Fatal(err)
			}
			c.conn.Write(tt.build(c))
			if tt.reason == "" {
				got := make([]byte, len(tt.echo))
				if _, err := io.ReadFull(c, got); err != nil || string(got) != tt.echo {
					t.Fatalf("echo %q, %v", got, err)
				}
				c.CloseWrite()
				io.ReadAll(c)
				if r := srv.result(); r.err != nil {
					t.Fatal(r.err)
				}
				return
			}
			r := srv.result()
			if se := asError(t, r.err); se.Reason != tt.reason || se.Alert != tt.alert {
				t.Errorf("server: %+v, want %s with alert %s", se, tt.reason, AlertName(tt.alert))
			}
		})
	}
}
