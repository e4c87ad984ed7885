package handshake

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/pion/dtls/v3"
)

// DTLSConfig is what a DTLS listener is built from: certificates (TLS), pre-shared keys
// (PSK), or both. The servers are shared with the TCP listener, so a reload of their files
// reaches both at once.
type DTLSConfig struct {
	TLS *TLSServer // nil: no certificate handshakes
	PSK *PSKServer // nil: no PSK handshakes
	// MTU bounds the handshake flights; 0 means pion's default (1200).
	MTU int
}

// DTLS 1.2 suites: AEAD only, forward-secret ones first. pion also implements CBC suites
// (MAC-then-encrypt, the Lucky13 construction, first shown against DTLS); they are left out.
var (
	dtlsCertSuites = []dtls.CipherSuiteID{
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
		dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	}
	dtlsPSKSuites = []dtls.CipherSuiteID{
		dtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
		dtls.TLS_PSK_WITH_AES_128_CCM,
		dtls.TLS_PSK_WITH_AES_128_CCM_8,
		dtls.TLS_PSK_WITH_AES_256_CCM_8,
	}
)

// dtlsCIDLen is the length of the connection IDs the server hands out (RFC 9146): enough
// to tell sessions apart when a NAT rebinding changes the client's address.
const dtlsCIDLen = 8

// DTLSServer performs DTLS 1.2 handshakes on the connections its listener accepts.
type DTLSServer struct {
	cfg DTLSConfig
}

// ListenDTLS opens a DTLS listener on the UDP address addr. Accept returns connections
// before their handshake; DTLSServer.Handshake runs it. Cookie exchange (HelloVerifyRequest)
// is always on, so a spoofed ClientHello is answered with no more bytes than it carried
// (no amplification) and never gets past the cookie; connection IDs are on, so a session
// survives a NAT rebinding.
//
// pion does keep a little state per new source address until the handshake deadline (its
// listener hands over a connection before the cookie round trip, and checks the cookie
// against a value kept in that connection). A stateless cookie layer in front of it would
// need pion to start its message sequence after an HelloVerifyRequest it did not send,
// which it cannot. The listener's MaxHandshakes and per-address rate bound what spoofed
// hellos can hold.
func ListenDTLS(addr string, cfg DTLSConfig) (net.Listener, *DTLSServer, error) {
	if cfg.TLS == nil && cfg.PSK == nil {
		return nil, nil, errors.New("a DTLS listener needs a certificate or a PSK store")
	}
	network := ListenNetwork("udp", addr)
	udpAddr, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, nil, fmt.Errorf("DTLS listen address %q: %w", addr, err)
	}
	s := &DTLSServer{cfg: cfg}
	opts := []dtls.ServerOption{
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(dtlsCIDLen)),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	}
	if cfg.MTU > 0 {
		opts = append(opts, dtls.WithMTU(cfg.MTU))
	}
	var suites []dtls.CipherSuiteID
	if t := cfg.TLS; t != nil {
		suites = append(suites, dtlsCertSuites...)
		opts = append(opts, dtls.WithGetCertificate(func(*dtls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.material.Load().cert, nil
		}))
		if t.auth != ClientAuthNone {
			// As with TLS, the chain is verified here so that refusals carry a reason and
			// CRLs are checked.
			opts = append(opts, dtls.WithClientAuth(dtls.RequestClientCert), dtls.WithVerifyConnection(s.verify))
		}
	}
	if p := cfg.PSK; p != nil {
		suites = append(suites, dtlsPSKSuites...)
		opts = append(opts, dtls.WithPSK(func(identity []byte) ([]byte, error) {
			key, ok := p.store.Lookup(string(identity))
			if !ok {
				return nil, &Error{Reason: reasonUnknownPSKIdentity, Err: fmt.Errorf("unknown PSK identity %q", quoteLimit(identity))}
			}
			return key, nil
		}))
		if p.cfg.Hint != "" {
			opts = append(opts, dtls.WithPSKIdentityHint([]byte(p.cfg.Hint)))
		}
	}
	opts = append(opts, dtls.WithCipherSuites(suites...))
	ln, err := dtls.ListenWithOptions(network, udpAddr, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("opening DTLS listener on %s: %w", addr, err)
	}
	return ln, s, nil
}

// reasonUnknownPSKIdentity matches tlspsk's reason, so TCP and DTLS log alike.
const reasonUnknownPSKIdentity = "unknown_psk_identity"

func quoteLimit(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// verify checks a client's certificates; PSK sessions carry none and need none.
func (s *DTLSServer) verify(st *dtls.State) error {
	if len(st.IdentityHint) > 0 {
		return nil
	}
	_, _, err := s.cfg.TLS.checkDER(st.PeerCertificates)
	return err
}

// Handshake runs the DTLS handshake on c, a connection from the listener ListenDTLS made.
// ctx bounds it (pion's handshake does not follow the connection's deadline).
func (s *DTLSServer) Handshake(ctx context.Context, c net.Conn) (net.Conn, Identity, error) {
	dc, ok := c.(*dtls.Conn)
	if !ok {
		return nil, Identity{}, &Error{Reason: ReasonFailed, Err: fmt.Errorf("DTLS handshake on a %T", c)}
	}
	if err := dc.HandshakeContext(ctx); err != nil {
		return nil, Identity{}, classifyDTLS(err)
	}
	st, ok := dc.ConnectionState()
	if !ok {
		return nil, Identity{}, &Error{Reason: ReasonFailed, Err: errors.New("DTLS handshake finished without a state")}
	}
	var id Identity
	switch {
	case len(st.IdentityHint) > 0:
		id = Identity{Kind: KindPSK, PSKIdentity: string(st.IdentityHint)}
	case len(st.PeerCertificates) > 0 && s.cfg.TLS != nil && s.cfg.TLS.auth != ClientAuthNone:
		// Checked again, not only in verify: pion keeps no result of it, and a reload in
		// between must not name a device by files that no longer accept it.
		var err error
		if id, err = s.cfg.TLS.identifyDER(st.PeerCertificates); err != nil {
			return nil, Identity{}, err
		}
	}
	id.TLSVersion, id.CipherSuite, id.DTLS = 0xfefd, uint16(st.CipherSuiteID), true
	return dc, id, nil
}

// classifyDTLS finds the reason in what pion returned: ours, from the PSK callback or the
// certificate check, when pion kept it in the chain; otherwise by the error's kind.
func classifyDTLS(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return classify(err)
}
