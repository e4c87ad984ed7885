package tlspsk

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// rawPeer is a client that speaks record by record, to send what a well-behaved client
// never would. It borrows a client-side Conn for reading records.
type rawPeer struct {
	t  *testing.T
	nc net.Conn
	c  *Conn
}

func dialRaw(t *testing.T, addr string) *rawPeer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &rawPeer{t: t, nc: nc, c: &Conn{conn: nc, isClient: true}}
}

// send writes raw bytes.
func (p *rawPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

// message reads the next handshake message from the server.
func (p *rawPeer) message() ([]byte, error) {
	p.c.in.mu.Lock()
	defer p.c.in.mu.Unlock()
	return p.c.readHandshakeMessage()
}

// alert reads records until an alert and returns its level and description.
func (p *rawPeer) alert() (uint8, uint8) {
	p.t.Helper()
	for {
		p.c.in.mu.Lock()
		typ, data, err := p.c.readRecord()
		p.c.in.mu.Unlock()
		if err != nil {
			p.t.Fatalf("reading the server's alert: %v", err)
		}
		if typ == recordTypeAlert && len(data) == 2 {
			return data[0], data[1]
		}
	}
}

// baseHello is a plausible TLS 1.2 PSK ClientHello.
func baseHello() *clientHello {
	r := make([]byte, 32)
	rand.Read(r)
	return &clientHello{
		version: VersionTLS12, random: r, compression: []byte{0},
		suites:    []uint16{TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256, TLS_PSK_WITH_AES_128_GCM_SHA256},
		hasGroups: true, groups: []uint16{groupX25519},
		ems: true, hasRenegInfo: true,
	}
}

// TestClientHelloRefusals sends ClientHellos the server must refuse, each with its alert.
func TestClientHelloRefusals(t *testing.T) {
	withExt := func(typ uint16, data []byte) []byte { // baseHello plus one raw extension
		return appendRawExtension(marshalClientHello(baseHello()), typ, data)
	}
	tests := []struct {
		name   string
		input  []byte
		reason string
		alert  uint8 // 0: no alert expected at all (not TLS)
	}{
		{"TLS 1.0 client", record(22, 0x0301, func() []byte { h := baseHello(); h.version = 0x0301; return marshalClientHello(h) }()), ReasonProtocolVersion, alertProtocolVersion},
		{"TLS 1.3 only, without a PSK", record(22, 0x0301, withExt(extSupportedVersions, []byte{2, 0x03, 0x04})), ReasonNoSharedCipher, alertHandshakeFailure},
		{"no null compression", record(22, 0x0301, func() []byte { h := baseHello(); h.compression = []byte{1}; return marshalClientHello(h) }()), ReasonIllegalParameter, alertIllegalParameter},
		{"renegotiation_info not empty", record(22, 0x0301, func() []byte { h := baseHello(); h.renegInfo = []byte{1, 2, 3}; return marshalClientHello(h) }()), ReasonIllegalParameter, alertHandshakeFailure},
		{"duplicate extension", record(22, 0x0301, withExt(extExtendedMasterSecret, nil)), ReasonMalformedHandshake, alertDecodeError},
		{"bad extension body", record(22, 0x0301, withExt(extEncryptThenMAC, []byte{1})), ReasonMalformedHandshake, alertDecodeError},
		{"truncated hello", record(22, 0x0301, func() []byte {
			m := marshalClientHello(baseHello())
			m = m[:len(m)-3]
			n := len(m) - 4
			m[1], m[2], m[3] = byte(n>>16), byte(n>>8), byte(n)
			return m
		}()), ReasonMalformedHandshake, alertDecodeError},
		{"no PSK suite", record(22, 0x0301, func() []byte { h := baseHello(); h.suites = []uint16{0xC02F, 0x1301}; return marshalClientHello(h) }()), ReasonNoSharedCipher, alertHandshakeFailure},
		{"Finished first", record(22, 0x0303, appendHandshake(nil, typeFinished, make([]byte, 12))), ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"application data inside the hello", append(record(22, 0x0301, marshalClientHello(baseHello())[:10]), record(23, 0x0303, []byte("x"))...), ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"record over 2^14", append([]byte{22, 3, 1, 0x40, 0x01}, make([]byte, 1<<14+1)...), ReasonRecordOverflow, alertRecordOverflow},
		{"message over 64 KiB", record(22, 0x0301, []byte{1, 0x01, 0x00, 0x01}), ReasonMalformedHandshake, alertDecodeError},
		{"empty handshake record", append(record(22, 0x0301, nil), record(22, 0x0301, marshalClientHello(baseHello()))...), ReasonUnexpectedMessage, alertUnexpectedMessage},
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ReasonNotTLS, 0},
		{"MQTT CONNECT", []byte{0x10, 0x10, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 4, 't', 'e', 's', 't'}, ReasonNotTLS, 0},
		{"SSLv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0, 0, 0, 0x10}, ReasonNotTLS, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup}, nil)
			p := dialRaw(t, srv.addr())
			p.send(tt.input)
			r := srv.result()
			if got := ReasonOf(r.err); got != tt.reason {
				t.Fatalf("server reason %q (%v), want %q", got, r.err, tt.reason)
			}
			if tt.alert == 0 {
				rest, _ := io.ReadAll(p.nc)
				if len(rest) != 0 {
					t.Errorf("server sent %x to a non-TLS peer, want nothing", rest)
				}
				return
			}
			level, desc := p.alert()
			if level != alertLevelFatal || desc != tt.alert {
				t.Errorf("server sent alert %d/%s, want fatal %s", level, AlertName(desc), AlertName(tt.alert))
			}
		})
	}
}

// appendRawExtension appends one extension to a marshalled ClientHello (which must already
// carry an extensions block), fixing up the lengths.
func appendRawExtension(msg []byte, typ uint16, data []byte) []byte {
	out := slices.Clone(msg)
	out = appendExtension(out, typ, data)
	add := 4 + len(data)
	body := len(out) - 4
	out[1], out[2], out[3] = byte(body>>16), byte(body>>8), byte(body)
	// The extensions block length sits right after compression_methods.
	off := 4 + 2 + 32
	off += 1 + int(out[off])
	off += 2 + (int(out[off])<<8 | int(out[off+1]))
	off += 1 + int(out[off])
	n := (int(out[off])<<8 | int(out[off+1])) + add
	out[off], out[off+1] = byte(n>>8), byte(n)
	return out
}

// TestTLS13ClientGetsTLS12 sends a ClientHello shaped like OpenSSL's with TLS 1.3 on: the
// answer is a plain TLS 1.2 ServerHello, with no supported_versions and no TLS 1.3 bits.
func TestTLS13ClientGetsTLS12(t *testing.T) {
	srv := startServer(t, &Config{Lookup: testLookup}, nil)
	p := dialRaw(t, srv.addr())
	h := baseHello()
	h.sessionID = bytes.Repeat([]byte{7}, 32) // middlebox compatibility mode
	h.suites = append([]uint16{0x1302, 0x1303, 0x1301}, h.suites...)
	h.suites = append(h.suites, scsvRenegotiation)
	h.hasRenegInfo = false
	h.serverName = "broker.example"
	msg := marshalClientHello(h)
	msg = appendRawExtension(msg, extSupportedVersions, []byte{4, 0x03, 0x04, 0x03, 0x03})
	msg = appendRawExtension(msg, 51, append([]byte{0, 36, 0, 29, 0, 32}, make([]byte, 32)...)) // key_share
	msg = appendRawExtension(msg, 45, []byte{1, 1})                                             // psk_key_exchange_modes
	msg = appendRawExtension(msg, 0xfafa, nil)                                                  // GREASE
	p.send(record(22, 0x0301, msg))
	sh, err := p.message()
	if err != nil {
		t.Fatal(err)
	}
	if sh[0] != typeServerHello {
		t.Fatalf("got message %d, want ServerHello", sh[0])
	}
	var exts []uint16
	hello, err := parseServerHello(sh[4:], func(typ uint16) bool { exts = append(exts, typ); return true })
	if err != nil {
		t.Fatal(err)
	}
	if hello.version != VersionTLS12 || len(hello.sessionID) != 0 || hello.suite != TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256 {
		t.Errorf("ServerHello version %04x, session ID %x, suite %04x", hello.version, hello.sessionID, hello.suite)
	}
	if slices.Contains(exts, extSupportedVersions) {
		t.Error("ServerHello carries supported_versions")
	}
	if !hello.hasRenegInfo || len(hello.renegInfo) != 0 || !hello.ems || hello.etm {
		t.Errorf("ServerHello extensions %v: want empty renegotiation_info (SCSV) and EMS, no EtM", exts)
	}
	if bytes.Equal(hello.random[24:], []byte("DOWNGRD\x01")) || bytes.Equal(hello.random[24:], []byte("DOWNGRD\x00")) {
		t.Error("a TLS 1.2-only server must not send the TLS 1.3 downgrade sentinel")
	}
	p.nc.Close()
	if r := srv.result(); r.err == nil {
		t.Error("handshake completed without a ClientKeyExchange")
	}
}

// TestBadClientKeyExchange sends ECDH public values that are not on the curve or are
// low-order, and a CKE with trailing bytes.
func TestBadClientKeyExchange(t *testing.T) {
	p256bad := append([]byte{4}, bytes.Repeat([]byte{1}, 64)...)
	tests := []struct {
		name   string
		group  uint16
		body   []byte
		reason string
		alert  uint8
	}{
		{"X25519 all zero (low order)", groupX25519, append([]byte{0, 1, 'x', 32}, make([]byte, 32)...), ReasonIllegalParameter, alertIllegalParameter},
		{"X25519 short", groupX25519, []byte{0, 1, 'x', 3, 1, 2, 3}, ReasonIllegalParameter, alertIllegalParameter},
		{"P-256 not on curve", groupP256, append([]byte{0, 1, 'x', 65}, p256bad...), ReasonIllegalParameter, alertIllegalParameter},
		{"trailing bytes", groupX25519, append([]byte{0, 1, 'x', 32}, make([]byte, 33)...), ReasonMalformedHandshake, alertDecodeError},
		{"no public value", groupX25519, []byte{0, 1, 'x'}, ReasonMalformedHandshake, alertDecodeError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup}, nil)
			p := dialRaw(t, srv.addr())
			h := baseHello()
			h.suites = []uint16{TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256}
			h.groups = []uint16{tt.group}
			p.send(record(22, 0x0301, marshalClientHello(h)))
			for {
				m, err := p.message()
				if err != nil {
					t.Fatal(err)
				}
				if m[0] == typeServerHelloDone {
					break
				}
			}
			p.send(record(22, 0x0303, appendHandshake(nil, typeClientKeyExchange, tt.body)))
			r := srv.result()
			if ReasonOf(r.err) != tt.reason {
				t.Fatalf("server: %v, want %s", r.err, tt.reason)
			}
			if _, desc := p.alert(); desc != tt.alert {
				t.Errorf("alert %s, want %s", AlertName(desc), AlertName(tt.alert))
			}
		})
	}
}

// TestCertificateClient: crypto/tls, which offers only certificate suites, gets a clean
// handshake_failure and the server says no_shared_cipher.
func TestCertificateClient(t *testing.T) {
	srv := startServer(t, &Config{Lookup: testLookup}, nil)
	nc, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	err = tls.Client(nc, &tls.Config{ServerName: "broker.example", MinVersion: tls.VersionTLS12}).Handshake()
	if err == nil || !strings.Contains(err.Error(), "handshake failure") {
		t.Errorf("crypto/tls: %v, want a handshake failure alert", err)
	}
	r := srv.result()
	if e := asError(t, r.err); e.Reason != ReasonNoSharedCipher || e.Alert != alertHandshakeFailure {
		t.Errorf("server: %+v, want no_shared_cipher with handshake_failure", e)
	}
}

// TestRenegotiationRefused: a ClientHello inside the protected session gets the
// no_renegotiation warning, and the server's Read reports renegotiation_refused.
func TestRenegotiationRefused(t *testing.T) {
	srv := startServer(t, &Config{Lookup: testLookup}, func(c *Conn) ([]byte, error) {
		_, err := io.ReadAll(c)
		return nil, err
	})
	c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("before"))
	c.out.mu.Lock()
	c.out.buf = c.appendRecord(c.out.buf[:0], recordTypeHandshake, marshalClientHello(baseHello()))
	c.flushLocked()
	c.out.mu.Unlock()
	r := srv.result()
	if e := asError(t, r.err); e.Reason != ReasonRenegotiationRefused || e.Alert != alertNoRenegotiation {
		t.Fatalf("server: %+v, want renegotiation_refused", e)
	}
	// The client sees the warning (and ignores it), then the server's close_notify.
	c.in.mu.Lock()
	typ, data, err := c.readRecord()
	c.in.mu.Unlock()
	if err != nil || typ != recordTypeAlert || !bytes.Equal(data, []byte{alertLevelWarning, alertNoRenegotiation}) {
		t.Fatalf("client read %d %x %v, want the no_renegotiation warning", typ, data, err)
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("after the warning: %v, want the server's close_notify", err)
	}
}

// TestHelloRequestIgnored: the client answers a server's HelloRequest with the
// no_renegotiation warning and keeps the session.
func TestHelloRequestIgnored(t *testing.T) {
	srv := startServer(t, &Config{Lookup: testLookup}, func(c *Conn) ([]byte, error) {
		c.out.mu.Lock()
		c.out.buf = c.appendRecord(c.out.buf[:0], recordTypeHandshake, appendHandshake(nil, typeHelloRequest, nil))
		c.flushLocked()
		c.out.mu.Unlock()
		c.Write([]byte("still here"))
		c.CloseWrite()
		// The warning arrives, is ignored, then the client's close_notify.
		_, err := io.ReadAll(c)
		return nil, err
	})
	c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "still here" {
		t.Fatalf("client read %q, %v", got, err)
	}
	c.Close()
	if r := srv.result(); r.err != nil {
		t.Error(r.err)
	}
}

// TestTamperedRecord flips one bit of a protected record: bad_record_mac on both sides.
func TestTamperedRecord(t *testing.T) {
	for _, id := range DefaultSuites() {
		t.Run(CipherSuiteName(id), func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup}, func(c *Conn) ([]byte, error) {
				_, err := io.ReadAll(c)
				return nil, err
			})
			c, err := dialClient(t, srv.addr(), &ClientConfig{Identity: testIdentity, Key: testKey, Suites: []uint16{id}, OfferETM: true})
			if err != nil {
				t.Fatal(err)
			}
			c.out.mu.Lock()
			rec := c.appendRecord(nil, recordTypeApplicationData, []byte("hello world, this is 32 bytes.."))
			c.out.mu.Unlock()
			rec[len(rec)-20] ^= 1
			c.conn.Write(rec)
			r := srv.result()
			if e := asError(t, r.err); e.Reason != ReasonBadRecordMAC || e.Alert != alertBadRecordMAC {
				t.Fatalf("server: %+v, want bad_record_mac", e)
			}
			if _, err := c.Read(make([]byte, 1)); asError(t, err).Alert != alertBadRecordMAC {
				t.Errorf("client: %v, want bad_record_mac from the server", err)
			}
		})
	}
}

// TestEphemeralKeysDiffer makes sure two handshakes use different server ECDH keys.
func TestEphemeralKeysDiffer(t *testing.T) {
	srv := startServer(t, &Config{Lookup: testLookup}, nil)
	var pubs [][]byte
	for range 2 {
		p := dialRaw(t, srv.addr())
		h := baseHello()
		p.send(record(22, 0x0301, marshalClientHello(h)))
		for {
			m, err := p.message()
			if err != nil {
				t.Fatal(err)
			}
			if m[0] == typeServerKeyExchange {
				ske, err := parseServerKeyExchange(m[4:], true)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ecdh.X25519().NewPublicKey(ske.public); err != nil || ske.group != groupX25519 {
					t.Fatalf("ServerKeyExchange group %d public %x: %v", ske.group, ske.public, err)
				}
				pubs = append(pubs, ske.public)
				break
			}
		}
		p.nc.Close()
		srv.result()
	}
	if bytes.Equal(pubs[0], pubs[1]) {
		t.Error("two handshakes used the same ephemeral key")
	}
}
