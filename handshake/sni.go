package handshake

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"crypto/tls"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// ReasonUnrecognizedName: the ClientHello named a server the listener has no tenant for
// (or none), and the listener refuses unknown names (RFC 6066 §3 unrecognized_name).
const ReasonUnrecognizedName = "unrecognized_name"

// ReadClientHello reads the first TLS record of c, which must be a handshake record, and
// returns it with the server name (SNI) its ClientHello asks for, lower case ("" for
// none). Hand the record to HandshakeHello of the handshaker chosen for the name.
func ReadClientHello(c net.Conn) (hello []byte, serverName string, err error) {
	rec, err := readFirstRecord(c)
	if err != nil {
		return nil, "", err
	}
	// Go's own ClientHello parser, run on the record alone: GetConfigForClient sees the
	// parsed hello and stops the handshake there, so nothing is written anywhere.
	errSeen := errors.New("client hello seen")
	name := ""
	srv := tls.Server(&helloConn{rec: rec}, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		name = h.ServerName
		return nil, errSeen
	}})
	if err := srv.Handshake(); !errors.Is(err, errSeen) {
		return nil, "", &Error{Reason: ReasonNotTLS, Err: err}
	}
	return rec, strings.ToLower(name), nil
}

// RefuseUnrecognizedName answers a ClientHello with a fatal unrecognized_name alert
// (RFC 6066 §3) in a plaintext record, as a server that knows no such name does.
func RefuseUnrecognizedName(c net.Conn) {
	_, _ = c.Write([]byte{21, 3, 3, 0, 2, 2, 112}) // alert, TLS 1.2 record, fatal, unrecognized_name
}

// HandshakeHello is Handshake on a connection whose first record, hello, was already read
// by ReadClientHello.
func (s *TLSServer) HandshakeHello(ctx context.Context, c net.Conn, hello []byte) (net.Conn, Identity, error) {
	return s.handshake(ctx, c, hello)
}

// HandshakeHello is Handshake on a connection whose first record, hello, was already read.
func (s *PSKServer) HandshakeHello(ctx context.Context, c net.Conn, hello []byte) (net.Conn, Identity, error) {
	return s.handshake(ctx, c, hello)
}

// HandshakeHello is Handshake on a connection whose first record, hello, was already read.
func (m *Mixed) HandshakeHello(ctx context.Context, c net.Conn, hello []byte) (net.Conn, Identity, error) {
	if tlspsk.OffersPSK(hello) {
		return m.PSK.handshake(ctx, c, hello)
	}
	return m.TLS.handshake(ctx, c, hello)
}

// helloConn is a net.Conn that reads one record and writes nowhere.
type helloConn struct {
	rec []byte
	net.Conn
}

func (h *helloConn) Read(p []byte) (int, error) {
	if len(h.rec) == 0 {
		return 0, net.ErrClosed
	}
	n := copy(p, h.rec)
	h.rec = h.rec[n:]
	return n, nil
}
func (h *helloConn) Write(p []byte) (int, error)      { return 0, net.ErrClosed }
func (h *helloConn) Close() error                     { return nil }
func (h *helloConn) SetDeadline(time.Time) error      { return nil }
func (h *helloConn) SetReadDeadline(time.Time) error  { return nil }
func (h *helloConn) SetWriteDeadline(time.Time) error { return nil }
