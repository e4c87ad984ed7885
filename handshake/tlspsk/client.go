package tlspsk

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/pion/dtls/v3/pkg/crypto/prf"
)

// ClientConfig configures the client side, used by tests, the load tool and examples.
type ClientConfig struct {
	// Identity is the PSK identity sent to the server.
	Identity string
	// Key is the pre-shared key (1 to 1024 bytes).
	Key []byte
	// Suites is the list offered, in order; nil means DefaultSuites without the CBC
	// suites, or with them when OfferETM is set.
	Suites []uint16
	// ServerName is sent as SNI when not empty.
	ServerName string
	// OfferETM offers encrypt_then_mac (RFC 7366). A CBC suite is only accepted together
	// with it.
	OfferETM bool
	// Versions lists the protocol versions offered; nil means TLS 1.2 only, or TLS 1.3 when
	// Suites lists only TLS 1.3 suites. With
	// VersionTLS13 listed the client speaks TLS 1.3 (external PSK, SHA-256) and offers
	// TLS 1.2 as well only if listed too; it does not fall back.
	Versions []uint16

	// groups overrides the supported_groups offered (tests).
	groups []uint16
	// t13 holds the TLS 1.3 test knobs.
	t13 tls13ClientKnobs
}

// Validate reports a ClientConfig that cannot be used, naming the field.
func (cfg *ClientConfig) Validate() error {
	if cfg == nil {
		return errors.New("client config is nil")
	}
	if len(cfg.Identity) > maxIdentityLen {
		return fmt.Errorf("client config Identity is %d bytes; keep it under %d", len(cfg.Identity), maxIdentityLen)
	}
	if err := validKey(cfg.Key); err != nil {
		return fmt.Errorf("client config Key: %w", err)
	}
	_, err := resolveSuites(cfg.Suites)
	return err
}

func (cfg *ClientConfig) suites() []*suite {
	if cfg.Suites != nil {
		s, _ := resolveSuites(cfg.Suites)
		return s
	}
	var out []*suite
	for _, s := range defaultSuites {
		if s.aead() || cfg.OfferETM {
			out = append(out, s)
		}
	}
	return out
}

// Client returns a client-side Conn on c. The handshake runs on the first Read or Write,
// or explicitly with HandshakeContext.
func Client(c net.Conn, cfg *ClientConfig) *Conn {
	return &Conn{conn: c, isClient: true, ccfg: cfg}
}

// clientHandshake is the client half of serverHandshake's message flow. c.in.mu is held.
func (c *Conn) clientHandshake() error {
	cfg := c.ccfg
	if err := cfg.Validate(); err != nil {
		return &Error{Reason: ReasonConfig, Err: err}
	}
	if cfg.speaks13() {
		return c.clientHandshake13()
	}
	var suites []*suite
	for _, s := range cfg.suites() {
		if !s.tls13 {
			suites = append(suites, s)
		}
	}
	ch := &clientHello{
		version:         VersionTLS12,
		random:          make([]byte, clientRandomLen),
		compression:     []byte{0},
		serverName:      cfg.ServerName,
		ems:             true,
		etm:             cfg.OfferETM,
		hasRenegInfo:    true,
		hasPointFormats: true,
		pointFormats:    []byte{pointFormatUncompressd},
	}
	rand.Read(ch.random)
	for _, s := range suites {
		ch.suites = append(ch.suites, s.id)
		if s.ecdhe {
			ch.hasGroups = true
		}
	}
	if ch.hasGroups {
		ch.groups = []uint16{groupX25519, groupP256}
		if cfg.groups != nil {
			ch.groups = cfg.groups
		}
	}
	msg := marshalClientHello(ch)
	transcript := make([]byte, 0, 1024)
	transcript = append(transcript, msg...)
	c.out.mu.Lock()
	// The ClientHello record carries version 0x0301, as RFC 5246 §E.1 allows, for the
	// benefit of old servers.
	c.out.buf = c.appendRecordsVersion(c.out.buf[:0], recordTypeHandshake, 0x0301, msg)
	err := c.flushLocked()
	c.out.mu.Unlock()
	if err != nil {
		return err
	}

	msg, err = c.readHandshakeMessage()
	if err != nil {
		return err
	}
	if msg[0] != typeServerHello {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of ServerHello", msg[0]))
	}
	offered := func(ext uint16) bool {
		switch ext {
		case extExtendedMasterSecret, extRenegotiationInfo:
			return true
		case extEncryptThenMAC:
			return ch.etm
		case extServerName:
			return ch.serverName != ""
		case extECPointFormats:
			return ch.hasPointFormats
		}
		return false
	}
	sh, err := parseServerHello(msg[handshakeHeaderLen:], offered)
	if err != nil {
		var unsolicited errUnsolicitedExtension
		if errors.As(err, &unsolicited) {
			return c.fatal(ReasonIllegalParameter, alertUnsupportedExtension, err)
		}
		return c.fatal(ReasonMalformedHandshake, alertDecodeError, err)
	}
	if sh.version != VersionTLS12 {
		return c.fatal(ReasonProtocolVersion, alertProtocolVersion, fmt.Errorf("server chose version 0x%04X", sh.version))
	}
	var s *suite
	for _, o := range suites {
		if o.id == sh.suite {
			s = o
		}
	}
	switch {
	case s == nil:
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, fmt.Errorf("server chose suite 0x%04X, which was not offered", sh.suite))
	case sh.comp != 0:
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("server chose compression"))
	case sh.hasRenegInfo && len(sh.renegInfo) != 0:
		return c.fatal(ReasonIllegalParameter, alertHandshakeFailure, errors.New("renegotiation_info is not empty on an initial handshake"))
	case !s.aead() && !sh.etm:
		return c.fatal(ReasonCBCWithoutETM, alertHandshakeFailure, errors.New("server chose a CBC suite without encrypt_then_mac"))
	case s.aead() && sh.etm:
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("server sent encrypt_then_mac with an AEAD suite"))
	}
	c.state.Version = VersionTLS12
	c.state.CipherSuite = s.id
	c.state.ExtendedMasterSecret = sh.ems
	c.state.EncryptThenMAC = sh.etm
	c.state.ServerName = cfg.ServerName
	c.state.Identity = cfg.Identity
	c.in.strictVersion = true
	transcript = append(transcript, msg...)

	msg, err = c.readHandshakeMessage()
	if err != nil {
		return err
	}
	var ske *serverKeyExchange
	if msg[0] == typeServerKeyExchange {
		if ske, err = parseServerKeyExchange(msg[handshakeHeaderLen:], s.ecdhe); err != nil {
			return c.fatal(ReasonMalformedHandshake, alertDecodeError, err)
		}
		c.state.Hint = string(ske.hint)
		transcript = append(transcript, msg...)
		if msg, err = c.readHandshakeMessage(); err != nil {
			return err
		}
	} else if s.ecdhe {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of ServerKeyExchange", msg[0]))
	}
	if msg[0] != typeServerHelloDone {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of ServerHelloDone", msg[0]))
	}
	if len(msg) != handshakeHeaderLen {
		return c.fatal(ReasonMalformedHandshake, alertDecodeError, fmt.Errorf("%w ServerHelloDone", errMalformed))
	}
	transcript = append(transcript, msg...)

	cke := &clientKeyExchange{identity: []byte(cfg.Identity)}
	var premaster []byte
	if s.ecdhe {
		curve := curveFor(ske.group)
		if curve == nil || !slices.Contains(ch.groups, ske.group) {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, fmt.Errorf("server chose group %d, which was not offered", ske.group))
		}
		peer, err := curve.NewPublicKey(ske.public)
		if err != nil {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("the server's ECDH public key is invalid"))
		}
		priv, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			return c.fatal(ReasonInternal, alertInternalError, err)
		}
		z, err := priv.ECDH(peer)
		if err != nil {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("the server's ECDH public key is invalid"))
		}
		cke.public = publicBytes(priv)
		premaster = ecdhePSKPremaster(z, cfg.Key)
		clear(z)
	} else {
		premaster = pskPremaster(cfg.Key)
	}
	ckeMsg := cke.marshal(s.ecdhe)
	transcript = append(transcript, ckeMsg...)
	master, err := masterSecret(s, premaster, transcript, ch.random, sh.random, sh.ems)
	clear(premaster)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	defer clear(master)
	keys, err := deriveKeys(s, master, ch.random, sh.random)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	verify, err := prf.VerifyDataClient(master, transcript, s.prfHash)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	finished := appendHandshake(nil, typeFinished, verify)
	transcript = append(transcript, finished...)
	c.out.mu.Lock()
	c.out.buf = c.appendRecords(c.out.buf[:0], recordTypeHandshake, ckeMsg)
	c.out.buf = c.appendRecord(c.out.buf, recordTypeChangeCipherSpec, []byte{1})
	c.out.cipher, c.out.seq = keys.client, 0
	c.out.buf = c.appendRecords(c.out.buf, recordTypeHandshake, finished)
	err = c.flushLocked()
	c.out.mu.Unlock()
	if err != nil {
		return err
	}

	if err := c.readChangeCipherSpec(); err != nil {
		return err
	}
	c.in.cipher, c.in.seq, c.in.finishedNext = keys.server, 0, true
	msg, err = c.readHandshakeMessage()
	if err != nil {
		return err
	}
	if msg[0] != typeFinished {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of Finished", msg[0]))
	}
	got, err := parseFinished(msg[handshakeHeaderLen:])
	if err != nil {
		return c.fatal(ReasonMalformedHandshake, alertDecodeError, err)
	}
	want, err := prf.VerifyDataServer(master, transcript, s.prfHash)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return c.fatal(ReasonDecryptError, alertDecryptError, errors.New("the server's Finished does not verify (different keys)"))
	}
	return nil
}

func publicBytes(k *ecdh.PrivateKey) []byte { return k.PublicKey().Bytes() }
