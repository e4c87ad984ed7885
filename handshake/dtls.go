package handshake

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

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

	// MaxUnproven caps the source addresses that have sent a ClientHello but not yet
	// returned the cookie of the HelloVerifyRequest; when full, the oldest is dropped.
	// 0 means DefaultMaxUnproven. See ListenDTLS.
	MaxUnproven int
	// UnprovenTimeout is how long such an address is kept; 0 means
	// DefaultUnprovenTimeout.
	UnprovenTimeout time.Duration
	// OnDrop, if set, is called with a stable reason (the Drop constants) for every
	// datagram the listener drops before a handshake, every unproven address it frees,
	// and every record that arrives behind a later one. It must not block.
	OnDrop func(reason string)

	// RefuseUnknownPSKIdentity makes an unknown PSK identity end the handshake at once
	// with an alert, for debugging. By default the handshake goes on with a random key and
	// fails at Finished exactly as a wrong key does, so that identities cannot be
	// enumerated (RFC 4279 §2); the log reason is unknown_psk_identity either way.
	RefuseUnknownPSKIdentity bool
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

// dtlsReadBuffer is the UDP socket's receive buffer: about 16,000 small datagrams, most
// of a second of a 20,000/s flood while the CPU is saturated.
const dtlsReadBuffer = 16 << 20

// DTLSServer performs DTLS 1.2 handshakes on the connections its listener accepts.
type DTLSServer struct {
	cfg   DTLSConfig
	front *front
	// suites are the cipher suites given to pion, for the front's no_shared_cipher verdict.
	suites []dtls.CipherSuiteID
}

// ListenDTLS opens a DTLS listener on the UDP address addr. Accept returns a connection
// (a *DTLSSession) once its source address has returned the cookie of a
// HelloVerifyRequest, with its handshake already running; DTLSServer.Handshake waits for
// it. Connection IDs are on (RFC 9146), so a session survives a NAT rebinding.
//
// Spoofed sources. mqtls owns the UDP socket in front of pion (front.go). A datagram from
// an unknown address gets state only if it is a whole cookieless ClientHello, which is
// larger than the HelloVerifyRequest that answers it (no amplification; one answer per
// hello). That state, a pion conn waiting for the cookie (about 34 KiB of heap and
// stacks, 4 goroutines), lives in a table of at most MaxUnproven entries (default 4,096)
// for at most UnprovenTimeout (default 3 s), takes no handshake slot and no per-address
// budget of the caller, and is displaced, oldest first, only once it is 250 ms old. An
// address that has returned its cookie is never displaced. When pion falls behind
// answering (256 hellos pending) or the table is full of younger entries, a new hello is
// shed for the cost of a parse, and its address is remembered for a few seconds so that
// its retransmission gets in. Stateless cookies are not possible with pion (its cookie is
// a random value in its conn, and its message sequence cannot start after a
// HelloVerifyRequest it did not send).
//
// So a flood of spoofed hellos can hold at most (MaxUnproven + 256) × 34 KiB of state
// (150 MiB with the defaults) and costs 40 to 60 µs of CPU per hello answered (pion makes
// a conn and a HelloVerifyRequest). Measured with mqtls-bench dtls-flood on a shared
// 2-core machine, 20,000 hellos/s for 30 s from 200,000 addresses: RSS 15 MiB → at most
// 219 MiB, back to 51–73 MiB 10 s after; 300 of 300 real DTLS-PSK devices got their
// CONNACK in each of two runs (36% and 1.4 GiB before the front existed), 300 of 300 at
// 30,000 hellos/s, and 42–99% at 40,000 (the CPU is the limit, hellos are then shed
// faster than devices retransmit). What a flood still does: take CPU, shed hellos above
// what the CPU can answer, a device's first one among them (so devices retransmit), and
// displace a device whose round trip exceeds 250 ms; an on-path attacker who receives at the addresses it spoofs is a real
// client and is limited by MaxHandshakes and the per-address rate like one.
//
// MQTT ordering: a record that arrives after a later one of the same session is
// discarded once pion has authenticated it (a replay window one record wide), never
// delivered out of order; OnDrop counts it (before authentication) as DropLateRecord.
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
		// A window of one record: a record older than the newest authenticated one is
		// discarded, so MQTT packets reach the broker in the device's order.
		dtls.WithReplayProtectionWindow(1),
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
				if cfg.RefuseUnknownPSKIdentity {
					return nil, &Error{Reason: reasonUnknownPSKIdentity, Err: fmt.Errorf("unknown PSK identity %q", quoteLimit(identity))}
				}
				// Same work and same failure as a wrong key: Handshake names the reason.
				key = make([]byte, 32)
				_, _ = rand.Read(key)
			}
			return key, nil
		}))
		if p.cfg.Hint != "" {
			opts = append(opts, dtls.WithPSKIdentityHint([]byte(p.cfg.Hint)))
		}
	}
	opts = append(opts, dtls.WithCipherSuites(suites...))
	s.suites = suites
	if _, err := dtls.ServerWithOptions(nopPacketConn{}, udpAddr, opts...); err != nil {
		return nil, nil, fmt.Errorf("DTLS options for %s: %w", addr, err)
	}
	pc, err := net.ListenUDP(network, udpAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("opening DTLS listener on %s: %w", addr, err)
	}
	// Room for a burst while the read loop catches up: a datagram the kernel drops may be
	// a real device's. The kernel caps SetReadBuffer at net.core.rmem_max; with
	// CAP_NET_ADMIN the cap does not apply.
	setReadBuffer(pc, dtlsReadBuffer)
	s.front = newFront(pc, s, opts, cfg)
	return s.front, s, nil
}

// Stats returns a snapshot of the listener's front socket.
func (s *DTLSServer) Stats() FrontStats {
	if s.front == nil {
		return FrontStats{}
	}
	return s.front.snapshot()
}

// nopPacketConn lets ListenDTLS check its options once, up front, by building a pion conn
// that is never used.
type nopPacketConn struct{ net.PacketConn }

func (nopPacketConn) Close() error { return nil }

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
	var dc *dtls.Conn
	switch c := c.(type) {
	case *DTLSSession:
		select {
		case <-c.done:
		case <-ctx.Done():
			c.Close() // ends the handshake and waits for it
			return nil, Identity{}, s.classifyDTLS(c.conn, ctx.Err())
		}
		if c.err != nil {
			if c.verdict != "" {
				return nil, Identity{}, &Error{Reason: c.verdict, Err: c.err}
			}
			return nil, Identity{}, s.classifyDTLS(c.conn, c.err)
		}
		dc = c.conn
	case *dtls.Conn:
		if err := c.HandshakeContext(ctx); err != nil {
			return nil, Identity{}, s.classifyDTLS(c, err)
		}
		dc = c
	default:
		return nil, Identity{}, &Error{Reason: ReasonFailed, Err: fmt.Errorf("DTLS handshake on a %T", c)}
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
// certificate check, when pion kept it in the chain; unknown_psk_identity when the client
// named an identity the store does not hold (the handshake went on with a random key and
// failed like a wrong key); otherwise by the error's kind.
func (s *DTLSServer) classifyDTLS(dc *dtls.Conn, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if p := s.cfg.PSK; p != nil && dc != nil {
		if st, ok := dc.ConnectionState(); ok && len(st.IdentityHint) > 0 {
			if _, known := p.store.Lookup(string(st.IdentityHint)); !known {
				return &Error{Reason: reasonUnknownPSKIdentity, Err: fmt.Errorf("unknown PSK identity %q: %w", quoteLimit(st.IdentityHint), err)}
			}
		}
	}
	return classify(err)
}
