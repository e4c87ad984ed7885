package tlspsk

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// tapConn records every byte the server sends to the client.
type tapConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.got.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// wireShape describes what the server sent: each record's type and length, and the
// plaintext bytes of any plaintext alert. Random values and public keys differ between
// connections; their sizes do not.
func wireShape(b []byte) string {
	var s string
	for len(b) >= recordHeaderLen {
		n := int(b[3])<<8 | int(b[4])
		if len(b) < recordHeaderLen+n {
			return s + fmt.Sprintf(" truncated(%d)", len(b))
		}
		s += fmt.Sprintf(" %d/%d", b[0], n)
		if b[0] == recordTypeAlert && n == 2 {
			s += fmt.Sprintf("[%s]", AlertName(b[6]))
		}
		b = b[recordHeaderLen+n:]
	}
	return s
}

// TestUnknownIdentityLooksLikeWrongKey: RFC 4279 §2 (and RFC 8446 §6.2) let a server
// answer an unknown identity exactly as it answers a wrong key, so that identities cannot
// be enumerated. Both must send the same records, of the same sizes, and the same
// decrypt_error alert; only the server's Reason tells them apart. RevealUnknownIdentity
// brings back the explicit unknown_psk_identity alert for debugging.
func TestUnknownIdentityLooksLikeWrongKey(t *testing.T) {
	for _, v := range []struct {
		name     string
		versions []uint16
	}{
		{"TLS1.2", []uint16{VersionTLS12}},
		{"TLS1.3", []uint16{VersionTLS13}},
	} {
		t.Run(v.name, func(t *testing.T) {
			try := func(cfg *Config, identity string, key []byte) (string, *Error) {
				t.Helper()
				srv := startServer(t, cfg, nil)
				nc, err := net.Dial("tcp", srv.addr())
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(10 * time.Second))
				tap := &tapConn{Conn: nc}
				c := Client(tap, &ClientConfig{Identity: identity, Key: key, Suites: []uint16{TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256}, Versions: v.versions})
				if err := c.Handshake(); err == nil {
					t.Fatal("handshake succeeded")
				}
				r := srv.result()
				return wireShape(tap.got.Bytes()), asError(t, r.err)
			}
			cfg := &Config{Lookup: testLookup}
			wrongShape, wrongErr := try(cfg, testIdentity, otherKey)
			unknownShape, unknownErr := try(cfg, "device-2", testKey)
			if wrongErr.Reason != ReasonDecryptError || wrongErr.Alert != alertDecryptError {
				t.Errorf("wrong key: %+v, want decrypt_error", wrongErr)
			}
			if unknownErr.Reason != ReasonUnknownPSKIdentity || unknownErr.Alert != alertDecryptError {
				t.Errorf("unknown identity: reason %q alert %s, want unknown_psk_identity with alert decrypt_error", unknownErr.Reason, AlertName(unknownErr.Alert))
			}
			if wrongShape != unknownShape {
				t.Errorf("the wire tells them apart:\nwrong key:        %s\nunknown identity: %s", wrongShape, unknownShape)
			}
			revealShape, revealErr := try(&Config{Lookup: testLookup, RevealUnknownIdentity: true}, "device-2", testKey)
			if revealErr.Reason != ReasonUnknownPSKIdentity || revealErr.Alert != alertUnknownPSKIdentity {
				t.Errorf("RevealUnknownIdentity: %+v (wire %s), want the unknown_psk_identity alert", revealErr, revealShape)
			}
		})
	}
}
