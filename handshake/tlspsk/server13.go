package tlspsk

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
)

// tls13Groups are the groups of psk_dhe_ke, in the server's order.
var tls13Groups = []uint16{groupX25519, groupP256}

// ReasonNoSharedGroup: psk_dhe_ke was asked for but the client has no group this server
// takes (or, after a HelloRetryRequest, still sent no share for the one asked for).
const ReasonNoSharedGroup = "no_shared_group"

// ReasonPSKKERefused: the client offers only psk_ke (no forward secrecy), which the
// listener does not allow (Config.AllowPSKKE).
const ReasonPSKKERefused = "psk_ke_refused"

// serverHandshake13 answers a ClientHello that offers TLS 1.3 with a PSK (RFC 8446 §2.2):
//
//	ClientHello + key_share + psk_key_exchange_modes + pre_shared_key  -->
//	                  <--  [HelloRetryRequest  -->  ClientHello]
//	                  <--  ServerHello + key_share + pre_shared_key, [ChangeCipherSpec],
//	                       {EncryptedExtensions}, {Finished}
//	[ChangeCipherSpec], {Finished}  -->
//
// msg is the ClientHello, header included. c.in.mu is held.
func (c *Conn) serverHandshake13(ch *clientHello, msg []byte, suites []*suite) (err error) {
	c.tls13 = true
	c.in.ccsOK = true
	c.in.skipEarly = ch.earlyData
	c.state.Version = VersionTLS13
	c.state.ServerName = ch.serverName

	if len(ch.compression) != 1 || ch.compression[0] != 0 {
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("TLS 1.3 ClientHello with compression methods other than null"))
	}
	if !ch.hasPSKModes {
		return c.fatal(ReasonMalformedHandshake, alertMissingExtension, errors.New("pre_shared_key without psk_key_exchange_modes"))
	}
	var s *suite
	for _, o := range suites {
		if o.tls13 && ch.offersSuite(o.id) {
			s = o
			break
		}
	}
	if s == nil {
		return c.fatal(ReasonNoSharedCipher, alertHandshakeFailure, errors.New("the client offers no TLS 1.3 suite this server accepts"))
	}
	c.state.CipherSuite = s.id
	c.suite13 = s

	th := newTranscript()
	var prefix []byte // what precedes the final ClientHello in the transcript
	dhe, group, retry, reason := c.selectKeyExchange(ch)
	if reason != "" {
		what := "the client offers psk_dhe_ke with no group this server takes (X25519, P-256)"
		if reason == ReasonPSKKERefused {
			what = "the client offers only psk_ke, which gives no forward secrecy and is not allowed here"
		}
		return c.fatal(reason, alertHandshakeFailure, errors.New(what))
	}
	sentCCS := false
	if retry {
		// HelloRetryRequest (RFC 8446 §4.1.4): ClientHello1 becomes its hash in the
		// transcript.
		h := sha256.Sum256(msg)
		hrr := (&serverHello13{random: helloRetryRandom, sessionID: ch.sessionID, suite: s.id, group: group, hasKeyShare: true}).marshal()
		prefix = append(messageHash(h[:]), hrr...)
		th.add(prefix)
		if err := c.writeServerFlight(hrr, len(ch.sessionID) > 0, nil); err != nil {
			return err
		}
		sentCCS = len(ch.sessionID) > 0
		msg, err = c.readHandshakeMessage()
		if err != nil {
			return err
		}
		if msg[0] != typeClientHello {
			return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of the second ClientHello", msg[0]))
		}
		ch2, err := parseClientHello(msg[handshakeHeaderLen:])
		if err != nil {
			return c.fatal(ReasonMalformedHandshake, alertDecodeError, err)
		}
		switch {
		case !ch2.offersVersion(VersionTLS13) || !ch2.offersSuite(s.id) || !ch2.hasPSK || !ch2.hasPSKModes:
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("the second ClientHello differs from the first beyond what RFC 8446 §4.1.2 allows"))
		case ch2.earlyData:
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errEarlyDataAfterHRR)
		case len(ch2.keyShares) != 1 || ch2.keyShares[0].group != group:
			return c.fatal(ReasonNoSharedGroup, alertIllegalParameter, fmt.Errorf("the second ClientHello has no single key share for group %d, which the HelloRetryRequest asked for", group))
		}
		ch = ch2
		c.in.skipEarly = false // early data comes before the second ClientHello only
	}

	// The binder (RFC 8446 §4.2.11.2) proves the client holds the key, before anything
	// else depends on the identity.
	idx, key, known, err := c.choosePSK(ch)
	if err != nil {
		return err
	}
	identity := string(ch.pskIdentities[idx].identity)
	if !known {
		defer func() { err = unknownIdentityError(err, identity) }()
	}
	early := earlySecret(key)
	h := sha256.New()
	h.Write(prefix)
	h.Write(msg[:len(msg)-ch.bindersLen]) // the ClientHello without its binders
	want := finishedMAC(binderKey(early), h.Sum(nil))
	if subtle.ConstantTimeCompare(want, ch.pskBinders[idx]) != 1 {
		return c.fatal(ReasonDecryptError, alertDecryptError, errors.New("the client's PSK binder does not verify (different keys)"))
	}
	c.state.Identity = identity
	th.add(msg)

	sh := &serverHello13{random: make([]byte, 32), sessionID: ch.sessionID, suite: s.id, hasPSK: true, selectedPSK: uint16(idx)}
	rand.Read(sh.random)
	var shared []byte
	if dhe {
		priv, err := curveFor(group).GenerateKey(rand.Reader)
		if err != nil {
			return c.fatal(ReasonInternal, alertInternalError, err)
		}
		peer, err := priv.Curve().NewPublicKey(ch.share(group))
		if err == nil {
			shared, err = priv.ECDH(peer)
		}
		if err != nil {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("the client's key share is invalid"))
		}
		sh.hasKeyShare, sh.group, sh.share = true, group, publicBytes(priv)
	}
	shMsg := sh.marshal()
	th.add(shMsg)
	hs := handshakeSecret(early, shared)
	clear(shared)
	clear(early)
	hsKeys, err := trafficKeys(s, hs, "hs", th.sum())
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	defer clear(hsKeys.clientSecret)
	defer clear(hsKeys.serverSecret)

	var limit uint16
	if ch.recordSizeLimit != 0 {
		if ch.recordSizeLimit < minRecordLimit {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, fmt.Errorf("record_size_limit %d is under 64", ch.recordSizeLimit))
		}
		limit = maxPlaintext + 1
		c.out.maxFrag = min(int(ch.recordSizeLimit)-1, maxPlaintext)
	}
	ee := marshalEncryptedExtensions(limit)
	th.add(ee)
	sFin := appendHandshake(nil, typeFinished, finishedMAC(hsKeys.serverSecret, th.sum()))
	th.add(sFin)
	finHash := th.sum()
	master := masterSecret13(hs)
	clear(hs)
	apKeys, err := trafficKeys(s, master, "ap", finHash)
	clear(master)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	c.in.secret, c.out.secret = [hashLen]byte(apKeys.clientSecret), [hashLen]byte(apKeys.serverSecret)
	clear(apKeys.clientSecret)
	clear(apKeys.serverSecret)

	c.in.strictVersion = true
	if err := c.writeServerFlight(shMsg, len(ch.sessionID) > 0 && !sentCCS, func() []byte {
		c.out.cipher, c.out.seq = hsKeys.server, 0
		b := c.appendRecords(nil, recordTypeHandshake, append(ee, sFin...))
		c.out.cipher, c.out.seq = apKeys.server, 0
		return b
	}); err != nil {
		return err
	}

	c.in.cipher, c.in.seq, c.in.finishedNext = hsKeys.client, 0, true
	msg, err = c.readHandshakeMessage()
	if err != nil {
		return err
	}
	if msg[0] != typeFinished {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of Finished", msg[0]))
	}
	if len(c.in.hs) != 0 {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, errors.New("handshake data after the client's Finished, across a key change"))
	}
	if subtle.ConstantTimeCompare(msg[handshakeHeaderLen:], finishedMAC(hsKeys.clientSecret, finHash)) != 1 {
		return c.fatal(ReasonDecryptError, alertDecryptError, errors.New("the client's Finished does not verify"))
	}
	c.in.cipher, c.in.seq = apKeys.client, 0
	c.in.ccsOK, c.in.skipEarly = false, false
	return nil
}

// selectKeyExchange decides psk_dhe_ke (with its group, and whether a HelloRetryRequest is
// needed first) or psk_ke, or returns the reason for refusing.
func (c *Conn) selectKeyExchange(ch *clientHello) (dhe bool, group uint16, retry bool, reason string) {
	if ch.offersPSKMode(pskModeDHEKE) {
		for _, g := range tls13Groups {
			if ch.share(g) != nil {
				return true, g, false, ""
			}
		}
		for _, g := range tls13Groups {
			if slices.Contains(ch.groups, g) {
				return true, g, true, ""
			}
		}
	}
	if ch.offersPSKMode(pskModeKE) {
		if c.cfg.AllowPSKKE {
			return false, 0, false, ""
		}
		if !ch.offersPSKMode(pskModeDHEKE) {
			return false, 0, false, ReasonPSKKERefused
		}
	}
	return false, 0, false, ReasonNoSharedGroup
}

// choosePSK picks the first offered identity Lookup knows. When it knows none, the first
// identity goes on with a random key, so the binder fails exactly as for a wrong key.
func (c *Conn) choosePSK(ch *clientHello) (idx int, key []byte, known bool, err error) {
	for i, id := range ch.pskIdentities {
		if k, ok := c.cfg.Lookup(string(id.identity)); ok {
			if err := validKey(k); err != nil {
				return 0, nil, false, c.fatal(ReasonInternal, alertInternalError, err)
			}
			return i, k, true, nil
		}
	}
	key, known, err = c.lookupKey(string(ch.pskIdentities[0].identity))
	return 0, key, known, err
}

// writeServerFlight sends a plaintext handshake message, then the middlebox-compatibility
// ChangeCipherSpec if ccs (RFC 8446 §D.4), then whatever more builds (under out.mu, so it
// may switch keys), in one write.
func (c *Conn) writeServerFlight(msg []byte, ccs bool, more func() []byte) error {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	c.out.buf = c.appendRecords(c.out.buf[:0], recordTypeHandshake, msg)
	if ccs {
		c.out.buf = c.appendRecord(c.out.buf, recordTypeChangeCipherSpec, []byte{1})
	}
	if more != nil {
		c.out.buf = append(c.out.buf, more()...)
	}
	return c.flushLocked()
}

// postHandshake13 handles handshake messages after a TLS 1.3 handshake: KeyUpdate both
// ways (RFC 8446 §4.6.3), and on the client the NewSessionTicket it never uses. A KeyUpdate
// counts as a record without data, so a flood of them ends the connection. c.in.mu is held.
func (c *Conn) postHandshake13() error {
	for len(c.in.hs) >= handshakeHeaderLen {
		n := int(c.in.hs[1])<<16 | int(c.in.hs[2])<<8 | int(c.in.hs[3])
		if n > maxHandshakeLen {
			return c.fatal(ReasonMalformedHandshake, alertDecodeError, fmt.Errorf("handshake message of %d bytes", n))
		}
		if len(c.in.hs) < handshakeHeaderLen+n {
			return nil // wait for the rest
		}
		typ, body := c.in.hs[0], c.in.hs[handshakeHeaderLen:handshakeHeaderLen+n]
		c.in.hs = c.in.hs[handshakeHeaderLen+n:]
		switch {
		case typ == typeKeyUpdate:
			if len(body) != 1 || body[0] > 1 {
				return c.fatal(ReasonMalformedHandshake, alertDecodeError, fmt.Errorf("%w KeyUpdate", errMalformed))
			}
			if len(c.in.hs) != 0 {
				// Keys change at a record boundary only (RFC 8446 §5.1).
				return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, errors.New("handshake data after KeyUpdate in the same record"))
			}
			if err := c.idleRecord(); err != nil {
				return err
			}
			next := nextTrafficSecret(c.in.secret[:])
			rc, err := newCipher13(c.suite13, next)
			if err != nil {
				return c.fatal(ReasonInternal, alertInternalError, err)
			}
			c.in.secret, c.in.cipher, c.in.seq = [hashLen]byte(next), rc, 0
			clear(next)
			if body[0] == 1 { // update_requested: answer with our own, not requested
				if err := c.sendKeyUpdate(false); err != nil {
					return err
				}
			}
		case typ == typeNewSessionTicket && c.isClient:
			if err := c.idleRecord(); err != nil {
				return err
			}
		default:
			return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d after the handshake", typ))
		}
	}
	if len(c.in.hs) == 0 {
		c.in.hs = nil
	}
	return nil
}

// sendKeyUpdate sends a KeyUpdate under the current write keys and switches to the next.
func (c *Conn) sendKeyUpdate(requested bool) error {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	err := c.keyUpdateLocked(requested)
	c.out.buf = nil // an idle session holds no buffer
	return err
}

// keyUpdateLocked is sendKeyUpdate with out.mu held.
func (c *Conn) keyUpdateLocked(requested bool) error {
	if c.out.err != nil {
		return c.out.err
	}
	var req byte
	if requested {
		req = 1
	}
	next := nextTrafficSecret(c.out.secret[:])
	wc, err := newCipher13(c.suite13, next)
	if err != nil {
		return &Error{Reason: ReasonInternal, Err: err}
	}
	c.out.buf = c.appendRecord(c.out.buf[:0], recordTypeHandshake, appendHandshake(nil, typeKeyUpdate, []byte{req}))
	c.out.secret, c.out.cipher, c.out.seq = [hashLen]byte(next), wc, 0
	clear(next)
	return c.flushLocked()
}
