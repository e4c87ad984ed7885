package tlspsk

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"slices"
	"unicode/utf8"

	"github.com/pion/dtls/v3/pkg/crypto/prf"
)

// Lookup returns the key for a PSK identity; ok=false for unknown identities. It is called
// once per handshake, after the client named its identity. The returned slice is only read.
type Lookup func(identity string) (key []byte, ok bool)

// Config configures the server side. Its zero value is not usable: Lookup is required.
type Config struct {
	// Lookup finds the key of an identity.
	Lookup Lookup
	// Hint is the PSK identity hint (RFC 4279 §5.2). With the PSK key exchange an empty
	// hint means no ServerKeyExchange at all, as RFC 4279 §2 prescribes; with ECDHE_PSK the
	// ServerKeyExchange always goes out and carries an empty hint.
	Hint string
	// Suites is the server's order of preference; nil means DefaultSuites. The CBC suites
	// are only ever chosen when the client also offers encrypt_then_mac.
	Suites []uint16
	// RevealUnknownIdentity sends the explicit unknown_psk_identity alert for an identity
	// Lookup does not know. By default (false) an unknown identity is answered exactly like
	// a wrong key — the handshake carries on with a random key and ends with decrypt_error —
	// so that a client cannot enumerate identities (RFC 4279 §2, RFC 8446 §6.2). Either way
	// the Error's Reason is unknown_psk_identity. Turn it on only to debug a device.
	RevealUnknownIdentity bool
	// MinVersion and MaxVersion bound the protocol versions accepted: VersionTLS12 or
	// VersionTLS13. Zero means TLS 1.2 and TLS 1.3 respectively. A ClientHello that offers
	// TLS 1.3 with a pre_shared_key gets TLS 1.3; one without (or offering only TLS 1.2)
	// gets TLS 1.2.
	MinVersion, MaxVersion uint16
	// AllowPSKKE lets a TLS 1.3 client that offers only psk_ke (the PSK alone, without an
	// ECDHE exchange, so without forward secrecy) connect. Off by default: psk_dhe_ke only.
	AllowPSKKE bool
}

func (cfg *Config) minVersion() uint16 {
	if cfg.MinVersion == 0 {
		return VersionTLS12
	}
	return cfg.MinVersion
}

func (cfg *Config) maxVersion() uint16 {
	if cfg.MaxVersion == 0 {
		return VersionTLS13
	}
	return cfg.MaxVersion
}

// Validate reports a Config that cannot serve, naming the field.
func (cfg *Config) Validate() error {
	if cfg == nil {
		return errors.New("config is nil")
	}
	if cfg.Lookup == nil {
		return errors.New("config Lookup is nil; set it to the function that finds an identity's key")
	}
	if len(cfg.Hint) > maxHintLen {
		return fmt.Errorf("config Hint is %d bytes; keep it under %d", len(cfg.Hint), maxHintLen)
	}
	for _, v := range []struct {
		name string
		v    uint16
	}{{"MinVersion", cfg.MinVersion}, {"MaxVersion", cfg.MaxVersion}} {
		if v.v != 0 && v.v != VersionTLS12 && v.v != VersionTLS13 {
			return fmt.Errorf("config %s is 0x%04X; use VersionTLS12 (0x0303) or VersionTLS13 (0x0304)", v.name, v.v)
		}
	}
	if cfg.minVersion() > cfg.maxVersion() {
		return errors.New("config MinVersion is above MaxVersion")
	}
	suites, err := resolveSuites(cfg.Suites)
	if err != nil {
		return err
	}
	has := func(tls13 bool) bool {
		return slices.ContainsFunc(suites, func(s *suite) bool { return s.tls13 == tls13 })
	}
	if cfg.minVersion() == VersionTLS13 && !has(true) {
		return errors.New("config MinVersion is TLS 1.3 but Suites lists no TLS 1.3 suite")
	}
	if cfg.maxVersion() == VersionTLS12 && !has(false) {
		return errors.New("config MaxVersion is TLS 1.2 but Suites lists no TLS 1.2 suite")
	}
	return nil
}

// Server returns a server-side Conn on c. The handshake runs on the first Read or Write,
// or explicitly with HandshakeContext (the caller sets deadlines on c).
func Server(c net.Conn, cfg *Config) *Conn {
	return &Conn{conn: c, cfg: cfg}
}

// serverHandshake runs RFC 5246 §7.3's full handshake with a PSK or ECDHE_PSK key exchange:
//
//	ClientHello          -->
//	                     <--  ServerHello, [ServerKeyExchange], ServerHelloDone
//	ClientKeyExchange,
//	ChangeCipherSpec,
//	Finished             -->
//	                     <--  ChangeCipherSpec, Finished
//
// c.in.mu is held.
func (c *Conn) serverHandshake() (err error) {
	if err := c.cfg.Validate(); err != nil {
		return &Error{Reason: ReasonConfig, Err: err}
	}
	suites, _ := resolveSuites(c.cfg.Suites)

	msg, err := c.readHandshakeMessage()
	if err != nil {
		return err
	}
	if msg[0] != typeClientHello {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d before ClientHello", msg[0]))
	}
	ch, err := parseClientHello(msg[handshakeHeaderLen:])
	if err != nil {
		return c.fatal(ReasonMalformedHandshake, alertDecodeError, err)
	}
	// Version (RFC 5246 §E.1, RFC 8446 §4.2.1): a TLS 1.3 client keeps legacy_version at
	// 0x0303 and lists the versions it takes in supported_versions. TLS 1.3 needs a
	// pre_shared_key (this server has no certificate); without one, TLS 1.2 is the answer.
	// No downgrade sentinel goes into the TLS 1.2 ServerRandom (RFC 8446 §4.1.3): the
	// fallback happens only when the hello cannot be answered in TLS 1.3 at all, and the
	// TLS 1.2 Finished, keyed by the PSK, already authenticates the whole ClientHello.
	tls13Suite := slices.ContainsFunc(suites, func(s *suite) bool { return s.tls13 })
	if c.cfg.maxVersion() >= VersionTLS13 && tls13Suite && ch.offersVersion(VersionTLS13) && ch.hasPSK {
		return c.serverHandshake13(ch, msg, suites)
	}
	if ch.version < VersionTLS12 {
		return c.fatal(ReasonProtocolVersion, alertProtocolVersion, fmt.Errorf("client offers at most version 0x%04X", ch.version))
	}
	if ch.hasVersions && !slices.Contains(ch.versions, VersionTLS12) {
		if ch.offersVersion(VersionTLS13) && c.cfg.maxVersion() >= VersionTLS13 {
			return c.fatal(ReasonNoSharedCipher, alertHandshakeFailure, errors.New("the client offers TLS 1.3 without a pre_shared_key this server could take"))
		}
		return c.fatal(ReasonProtocolVersion, alertProtocolVersion, errors.New("supported_versions does not include TLS 1.2"))
	}
	if c.cfg.minVersion() > VersionTLS12 {
		return c.fatal(ReasonProtocolVersion, alertProtocolVersion, errors.New("the client offers TLS 1.2 (or TLS 1.3 without a PSK) and this listener takes TLS 1.3 only"))
	}
	if !slices.Contains(ch.compression, 0) {
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("compression_methods lacks null"))
	}
	// Secure renegotiation indication (RFC 5746 §3.6): on a first handshake the extension
	// must be empty; either it or the SCSV asks us to answer with an empty extension.
	if ch.hasRenegInfo && len(ch.renegInfo) != 0 {
		return c.fatal(ReasonIllegalParameter, alertHandshakeFailure, errors.New("renegotiation_info is not empty on an initial handshake"))
	}
	secureReneg := ch.hasRenegInfo || ch.offersSuite(scsvRenegotiation)

	s, group, reason := selectSuite(ch, suites)
	if s == nil {
		err := errors.New("the client offers no suite this server accepts")
		if reason == ReasonCBCWithoutETM {
			err = errors.New("the client offers PSK only with CBC and without encrypt_then_mac (RFC 7366)")
		}
		return c.fatal(reason, alertHandshakeFailure, err)
	}
	c.state.ServerName = ch.serverName
	c.state.CipherSuite = s.id
	c.state.Version = VersionTLS12
	c.state.ExtendedMasterSecret = ch.ems
	c.state.EncryptThenMAC = !s.aead()

	transcript := make([]byte, 0, 1024)
	transcript = append(transcript, msg...)

	sh := &serverHello{
		version:         VersionTLS12,
		random:          make([]byte, clientRandomLen),
		suite:           s.id,
		hasRenegInfo:    secureReneg,
		ems:             ch.ems,
		etm:             !s.aead(),
		hasPointFormats: s.ecdhe && ch.hasPointFormats,
		pointFormats:    []byte{pointFormatUncompressd},
	}
	rand.Read(sh.random)
	flight := sh.marshal()
	var priv *ecdh.PrivateKey
	if s.ecdhe {
		priv, err = curveFor(group).GenerateKey(rand.Reader)
		if err != nil {
			return c.fatal(ReasonInternal, alertInternalError, err)
		}
		ske := &serverKeyExchange{hint: []byte(c.cfg.Hint), group: group, public: priv.PublicKey().Bytes()}
		flight = append(flight, ske.marshal(true)...)
	} else if c.cfg.Hint != "" {
		ske := &serverKeyExchange{hint: []byte(c.cfg.Hint)}
		flight = append(flight, ske.marshal(false)...)
	}
	flight = appendHandshake(flight, typeServerHelloDone, nil)
	transcript = append(transcript, flight...)
	if err := c.writeFlight(flight); err != nil {
		return err
	}
	c.in.strictVersion = true

	msg, err = c.readHandshakeMessage()
	if err != nil {
		return err
	}
	if msg[0] != typeClientKeyExchange {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of ClientKeyExchange", msg[0]))
	}
	cke, err := parseClientKeyExchange(msg[handshakeHeaderLen:], s.ecdhe)
	if err != nil {
		return c.fatal(ReasonMalformedHandshake, alertDecodeError, err)
	}
	if len(cke.identity) > maxIdentityLen {
		return c.fatal(ReasonMalformedHandshake, alertDecodeError, fmt.Errorf("psk_identity of %d bytes", len(cke.identity)))
	}
	var z []byte
	if s.ecdhe {
		peer, err := priv.Curve().NewPublicKey(cke.public)
		if err != nil {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("the client's ECDH public key is invalid"))
		}
		if z, err = priv.ECDH(peer); err != nil {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("the client's ECDH public key is invalid"))
		}
	}
	identity := string(cke.identity)
	key, known, err := c.lookupKey(identity)
	if err != nil {
		return err
	}
	if !known {
		// Carry on with the random key: the client's Finished cannot verify, and the
		// answer is the decrypt_error a wrong key gets, after the same work.
		defer func() { err = unknownIdentityError(err, identity) }()
	}
	c.state.Identity = identity
	var premaster []byte
	if s.ecdhe {
		premaster = ecdhePSKPremaster(z, key)
		clear(z)
	} else {
		premaster = pskPremaster(key)
	}
	transcript = append(transcript, msg...)
	master, err := masterSecret(s, premaster, transcript, ch.random, sh.random, ch.ems)
	clear(premaster)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	defer clear(master)
	keys, err := deriveKeys(s, master, ch.random, sh.random)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}

	if err := c.readChangeCipherSpec(); err != nil {
		return err
	}
	c.in.cipher, c.in.seq, c.in.finishedNext = keys.client, 0, true
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
	want, err := prf.VerifyDataClient(master, transcript, s.prfHash)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return c.fatal(ReasonDecryptError, alertDecryptError, errors.New("the client's Finished does not verify (different keys)"))
	}
	transcript = append(transcript, msg...)
	verify, err := prf.VerifyDataServer(master, transcript, s.prfHash)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	return c.writeFinished(keys.server, appendHandshake(nil, typeFinished, verify))
}

// lookupKey finds the key of identity. An unknown identity gets a random key and
// known=false, unless the Config reveals unknown identities, in which case it is refused
// here with unknown_psk_identity.
func (c *Conn) lookupKey(identity string) (key []byte, known bool, err error) {
	key, ok := c.cfg.Lookup(identity)
	if !ok {
		if c.cfg.RevealUnknownIdentity {
			return nil, false, c.fatal(ReasonUnknownPSKIdentity, alertUnknownPSKIdentity, fmt.Errorf("no key for identity %s", quoteIdentity(identity)))
		}
		key = make([]byte, 32)
		rand.Read(key)
		return key, false, nil
	}
	if err := validKey(key); err != nil {
		return nil, false, c.fatal(ReasonInternal, alertInternalError, err)
	}
	return key, true, nil
}

// unknownIdentityError turns the decrypt_error that an unknown identity's random key
// ends in into the unknown_psk_identity it really is, for the log; the alert already sent
// stays decrypt_error. Any other failure (the peer hanging up first) is left alone.
func unknownIdentityError(err error, identity string) error {
	var e *Error
	if errors.As(err, &e) && e.Reason == ReasonDecryptError {
		return &Error{Reason: ReasonUnknownPSKIdentity, Alert: e.Alert, Err: fmt.Errorf("no key for identity %s", quoteIdentity(identity))}
	}
	if err == nil {
		// Cannot happen: a random 256-bit key does not verify. Refuse all the same.
		return &Error{Reason: ReasonUnknownPSKIdentity, Err: fmt.Errorf("no key for identity %s", quoteIdentity(identity))}
	}
	return err
}

// selectSuite picks the first suite in the server's order that the client offers and that
// can be completed: ECDHE_PSK needs a shared group, CBC needs encrypt_then_mac. The reason
// tells a CBC-only client without encrypt_then_mac apart from no overlap at all.
func selectSuite(ch *clientHello, suites []*suite) (*suite, uint16, string) {
	group := selectGroup(ch)
	cbcBlocked := false
	for _, s := range suites {
		if s.tls13 || !ch.offersSuite(s.id) || (s.ecdhe && group == 0) {
			continue
		}
		if !s.aead() && !ch.etm {
			cbcBlocked = true
			continue
		}
		return s, group, ""
	}
	if cbcBlocked {
		return nil, 0, ReasonCBCWithoutETM
	}
	return nil, 0, ReasonNoSharedCipher
}

// selectGroup picks the ECDHE group: X25519, then P-256 (RFC 8422 §5.1). A client without
// supported_groups is assumed to take P-256; P-256 also needs the uncompressed point format
// when the client lists point formats.
func selectGroup(ch *clientHello) uint16 {
	if !ch.hasGroups {
		return groupP256
	}
	if slices.Contains(ch.groups, groupX25519) {
		return groupX25519
	}
	if slices.Contains(ch.groups, groupP256) && (!ch.hasPointFormats || slices.Contains(ch.pointFormats, pointFormatUncompressd)) {
		return groupP256
	}
	return 0
}

// writeFlight sends handshake messages, packed into as few records as possible.
func (c *Conn) writeFlight(msgs []byte) error {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	c.out.buf = c.appendRecords(c.out.buf[:0], recordTypeHandshake, msgs)
	return c.flushLocked()
}

// writeFinished sends ChangeCipherSpec, switches to the new write keys and sends Finished,
// all in one write.
func (c *Conn) writeFinished(cipher recordCipher, finished []byte) error {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	c.out.buf = c.appendRecord(c.out.buf[:0], recordTypeChangeCipherSpec, []byte{1})
	c.out.cipher, c.out.seq = cipher, 0
	c.out.buf = c.appendRecords(c.out.buf, recordTypeHandshake, finished)
	return c.flushLocked()
}

// quoteIdentity renders an identity for an error message: quoted, and cut to 64 bytes.
func quoteIdentity(id string) string {
	const max = 64
	if len(id) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(id[cut]) {
			cut--
		}
		return fmt.Sprintf("%q…", id[:cut])
	}
	return fmt.Sprintf("%q", id)
}
