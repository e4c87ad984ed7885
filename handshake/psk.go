package handshake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// PSKServer performs TLS-PSK handshakes (TLS 1.2 and TLS 1.3 external PSKs, see package
// tlspsk) against a PSKStore.
type PSKServer struct {
	store *PSKStore
	cfg   tlspsk.Config
}

// PSKOptions are a PSK listener's settings beyond its store. The zero value is the
// default: no hint, TLS 1.2 and 1.3, psk_dhe_ke only, unknown identities answered like a
// wrong key.
type PSKOptions struct {
	// Hint is the TLS 1.2 PSK identity hint ("" for none).
	Hint string
	// MinVersion and MaxVersion bound the versions (tlspsk.VersionTLS12 or VersionTLS13);
	// 0 means TLS 1.2 and TLS 1.3 respectively.
	MinVersion, MaxVersion uint16
	// AllowPSKKE accepts TLS 1.3 clients that offer only psk_ke (no forward secrecy).
	AllowPSKKE bool
	// RevealUnknownIdentity sends the explicit unknown_psk_identity alert instead of the
	// wrong key's decrypt_error; for debugging only (it lets clients enumerate identities).
	RevealUnknownIdentity bool
}

// NewPSKServer returns a server that looks identities up in store and sends hint as the
// PSK identity hint ("" for none), with the default PSKOptions otherwise.
func NewPSKServer(store *PSKStore, hint string) (*PSKServer, error) {
	return NewPSKServerWithOptions(store, PSKOptions{Hint: hint})
}

// NewPSKServerWithOptions returns a server that looks identities up in store.
func NewPSKServerWithOptions(store *PSKStore, o PSKOptions) (*PSKServer, error) {
	if store == nil {
		return nil, errors.New("a PSK store is required")
	}
	s := &PSKServer{store: store, cfg: tlspsk.Config{
		Lookup: store.Lookup, Hint: o.Hint, MinVersion: o.MinVersion, MaxVersion: o.MaxVersion,
		AllowPSKKE: o.AllowPSKKE, RevealUnknownIdentity: o.RevealUnknownIdentity,
	}}
	if err := s.cfg.Validate(); err != nil {
		return nil, fmt.Errorf("PSK listener settings (identity hint, versions): %w", err)
	}
	return s, nil
}

// Store returns the store the server looks keys up in.
func (s *PSKServer) Store() *PSKStore { return s.store }

// Handshake runs the server side of a TLS-PSK handshake on c. The caller sets c's
// deadline. On success the Identity has KindPSK and the identity the client proved.
func (s *PSKServer) Handshake(ctx context.Context, c net.Conn) (net.Conn, Identity, error) {
	return s.handshake(ctx, c, nil)
}

func (s *PSKServer) handshake(ctx context.Context, c net.Conn, peeked []byte) (net.Conn, Identity, error) {
	if len(peeked) > 0 {
		c = &replayConn{Conn: c, peeked: peeked}
	}
	tc := tlspsk.Server(c, &s.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, Identity{}, classifyPSK(err)
	}
	st := tc.ConnectionState()
	return tc, Identity{
		Kind:        KindPSK,
		PSKIdentity: st.Identity,
		TLSVersion:  st.Version,
		CipherSuite: st.CipherSuite,
	}, nil
}

// classifyPSK maps a tlspsk failure to this package's reasons where they mean the same
// thing, and keeps tlspsk's own (unknown_psk_identity, decrypt_error, ...) otherwise.
func classifyPSK(err error) error {
	reason := tlspsk.ReasonOf(err)
	switch reason {
	case tlspsk.ReasonIO, tlspsk.ReasonCanceled, "":
		return classify(err)
	case tlspsk.ReasonEOF:
		reason = ReasonClientClosed
	case tlspsk.ReasonNotTLS:
		reason = ReasonNotTLS
	}
	return &Error{Reason: reason, Err: err}
}

// Mixed serves certificates and PSK on one listener. It reads the first TLS record (the
// ClientHello) itself and routes on it with tlspsk.OffersPSK: a TLS 1.3 hello whose
// pre_shared_key holds external identities (obfuscated_ticket_age 0) goes to the PSK
// server, one holding a crypto/tls session ticket (a certificate client resuming: its age
// is never 0 in practice) goes to crypto/tls, and without a pre_shared_key a hello that
// offers a TLS 1.2 PSK suite the PSK server accepts goes there, any other to crypto/tls.
// Either way the bytes it read are replayed, so the chosen server sees the connection
// from its first byte.
type Mixed struct {
	TLS *TLSServer
	PSK *PSKServer
}

// Handshake routes c by its ClientHello and runs the chosen handshake.
func (m *Mixed) Handshake(ctx context.Context, c net.Conn) (net.Conn, Identity, error) {
	hello, err := readFirstRecord(c)
	if err != nil {
		return nil, Identity{}, err
	}
	return m.HandshakeHello(ctx, c, hello)
}

// maxHelloRecord is the largest first record accepted: a full plaintext record and its
// header (RFC 5246 §6.2.1).
const maxHelloRecord = 5 + 1<<14

// readFirstRecord reads exactly one TLS record from c, refusing at its header anything
// that is not a TLS handshake record.
func readFirstRecord(c net.Conn) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, classify(err)
	}
	n := int(hdr[3])<<8 | int(hdr[4])
	if hdr[0] != 0x16 || hdr[1] != 3 || n == 0 || 5+n > maxHelloRecord {
		return nil, &Error{Reason: ReasonNotTLS, Err: fmt.Errorf("first bytes % x are not a TLS handshake record", hdr)}
	}
	rec := make([]byte, 5+n)
	copy(rec, hdr[:])
	if _, err := io.ReadFull(c, rec[5:]); err != nil {
		return nil, classify(err)
	}
	return rec, nil
}

// replayConn returns peeked bytes before reading from the connection.
type replayConn struct {
	net.Conn
	peeked []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.peeked) > 0 {
		n := copy(p, c.peeked)
		c.peeked = c.peeked[n:]
		if len(c.peeked) == 0 {
			c.peeked = nil
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// SyscallConn exposes the socket, so that the pipe can wait for it to become readable
// without a buffer. The peeked bytes are the ClientHello, consumed by the handshake before
// anyone waits.
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok && len(c.peeked) == 0 {
		return sc.SyscallConn()
	}
	return nil, errors.New("no socket to wait on")
}

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
