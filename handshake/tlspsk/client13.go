package tlspsk

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"slices"
)

// tls13ClientKnobs make the TLS 1.3 client misbehave on purpose, for tests.
type tls13ClientKnobs struct {
	shareGroups     []uint16 // groups to send key shares for; nil: the first of groups
	secondShare     uint16   // after a HelloRetryRequest, send a share for this group instead
	pskModes        []uint8  // nil: psk_dhe_ke
	tamperBinder    bool
	tamperFinished  bool
	earlyData       []byte // offered and sent as 0-RTT data
	compat          bool   // middlebox compatibility: session ID and ChangeCipherSpec
	recordSizeLimit uint16
	extraIdentity   string // offered before the real one, with a binder from a random key
}

func (cfg *ClientConfig) speaks13() bool {
	if cfg.Versions == nil && len(cfg.Suites) > 0 && !slices.ContainsFunc(cfg.Suites, func(id uint16) bool { return !suiteByID(id).tls13 }) {
		return true
	}
	if !slices.Contains(cfg.Versions, VersionTLS13) {
		return false
	}
	return slices.ContainsFunc(cfg.suites(), func(s *suite) bool { return s.tls13 })
}

// clientHandshake13 is the client half of serverHandshake13. c.in.mu is held.
func (c *Conn) clientHandshake13() error {
	cfg, k := c.ccfg, &c.ccfg.t13
	c.tls13 = true
	c.in.ccsOK = true
	ch := &clientHello{
		version:     VersionTLS12,
		random:      make([]byte, clientRandomLen),
		compression: []byte{0},
		serverName:  cfg.ServerName,
		hasGroups:   true,
		groups:      []uint16{groupX25519, groupP256},
	}
	rand.Read(ch.random)
	if cfg.groups != nil {
		ch.groups = cfg.groups
	}
	if k.compat {
		ch.sessionID = make([]byte, 32)
		rand.Read(ch.sessionID)
	}
	var suites []*suite
	for _, s := range cfg.suites() {
		if s.tls13 || slices.Contains(cfg.Versions, VersionTLS12) {
			suites = append(suites, s)
			ch.suites = append(ch.suites, s.id)
		}
	}
	versions := []byte{3, 4}
	if slices.Contains(cfg.Versions, VersionTLS12) {
		versions = append(versions, 3, 3)
		ch.ems, ch.hasRenegInfo = true, true
	}
	modes := k.pskModes
	if modes == nil {
		modes = []uint8{pskModeDHEKE}
	}
	shareGroups := k.shareGroups
	if shareGroups == nil && len(ch.groups) > 0 && slices.Contains(modes, pskModeDHEKE) {
		shareGroups = ch.groups[:1]
	}
	type share struct {
		group uint16
		priv  *ecdh.PrivateKey
	}
	var shares []share
	newShare := func(g uint16) error {
		curve := curveFor(g)
		if curve == nil {
			return fmt.Errorf("no curve for group %d", g)
		}
		priv, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		shares = append(shares, share{g, priv})
		return nil
	}
	for _, g := range shareGroups {
		if err := newShare(g); err != nil {
			return c.fatal(ReasonInternal, alertInternalError, err)
		}
	}
	early := earlySecret(cfg.Key)
	ids := []string{cfg.Identity}
	keys := [][]byte{early}
	if k.extraIdentity != "" {
		bogus := make([]byte, 32)
		rand.Read(bogus)
		ids = []string{k.extraIdentity, cfg.Identity}
		keys = [][]byte{earlySecret(bogus), early}
	}

	// build marshals a ClientHello with the PSK extension last and its binders computed
	// over prefix (the transcript before it) and the hello without them.
	build := func(prefix []byte, withEarly bool) []byte {
		var ext []byte
		ext = appendExtension(ext, extSupportedVersions, appendU8Bytes(nil, versions))
		var ks []byte
		for _, s := range shares {
			ks = appendU16(ks, s.group)
			ks = appendU16Bytes(ks, publicBytes(s.priv))
		}
		ext = appendExtension(ext, extKeyShare, appendU16Bytes(nil, ks))
		ext = appendExtension(ext, extPSKKeyExchangeModes, appendU8Bytes(nil, modes))
		if withEarly {
			ext = appendExtension(ext, extEarlyData, nil)
		}
		if k.recordSizeLimit != 0 {
			ext = appendExtension(ext, extRecordSizeLimit, appendU16(nil, k.recordSizeLimit))
		}
		var idList, binders []byte
		for _, id := range ids {
			idList = appendU16Bytes(idList, []byte(id))
			idList = append(idList, 0, 0, 0, 0) // obfuscated_ticket_age 0: an external PSK
			binders = appendU8Bytes(binders, make([]byte, hashLen))
		}
		psk := appendU16Bytes(appendU16Bytes(nil, idList), binders)
		ext = appendExtension(ext, extPreSharedKey, psk)
		ch.rawExts = ext
		msg := marshalClientHello(ch)
		truncated := msg[:len(msg)-2-len(binders)]
		h := sha256.New()
		h.Write(prefix)
		h.Write(truncated)
		sum := h.Sum(nil)
		off := len(truncated) + 2
		for _, e := range keys {
			b := finishedMAC(binderKey(e), sum)
			if k.tamperBinder {
				b[0] ^= 1
			}
			copy(msg[off+1:], b)
			off += 1 + hashLen
		}
		return msg
	}

	msg := build(nil, k.earlyData != nil)
	c.out.mu.Lock()
	c.out.buf = c.appendRecordsVersion(c.out.buf[:0], recordTypeHandshake, 0x0301, msg)
	if k.earlyData != nil {
		// 0-RTT data under client_early_traffic_secret (RFC 8446 §7.1), which a server
		// that refuses early data skips.
		h := sha256.Sum256(msg)
		ec, err := newCipher13(suites[0], deriveSecret(early, "c e traffic", h[:]))
		if err == nil {
			c.out.cipher, c.out.seq = ec, 0
			c.out.buf = c.appendRecords(c.out.buf, recordTypeApplicationData, k.earlyData)
			c.out.cipher = nil
		}
	}
	err := c.flushLocked()
	c.out.mu.Unlock()
	if err != nil {
		return err
	}
	th := newTranscript()
	sentCCS := false
	sendCCS := func() []byte {
		if !k.compat || sentCCS {
			return nil
		}
		sentCCS = true
		return record(recordTypeChangeCipherSpec, VersionTLS12, []byte{1})
	}

	var sh *serverHello13
	shMsg, err := c.readHandshakeMessage()
	if err != nil {
		return err
	}
	for retried := false; ; retried = true {
		if shMsg[0] != typeServerHello {
			return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of ServerHello", shMsg[0]))
		}
		var version uint16
		sh, version, err = parseServerHello13(shMsg[handshakeHeaderLen:])
		if err != nil {
			return c.fatal(ReasonMalformedHandshake, alertDecodeError, err)
		}
		if version != VersionTLS13 {
			return c.fatal(ReasonProtocolVersion, alertProtocolVersion, fmt.Errorf("server chose version 0x%04X; this client does not fall back", version))
		}
		if !bytes.Equal(sh.random, helloRetryRandom) {
			break
		}
		if retried || !sh.hasKeyShare || sh.share != nil || !slices.Contains(ch.groups, sh.group) ||
			slices.ContainsFunc(shares, func(s share) bool { return s.group == sh.group }) {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("unusable HelloRetryRequest"))
		}
		h := sha256.Sum256(msg)
		prefix := append(messageHash(h[:]), shMsg...)
		th.add(prefix)
		shares = shares[:0]
		g := sh.group
		if k.secondShare != 0 {
			g = k.secondShare
		}
		if err := newShare(g); err != nil {
			return c.fatal(ReasonInternal, alertInternalError, err)
		}
		msg = build(prefix, false)
		c.out.mu.Lock()
		c.out.buf = append(c.out.buf[:0], sendCCS()...)
		c.out.buf = c.appendRecords(c.out.buf, recordTypeHandshake, msg)
		err = c.flushLocked()
		c.out.mu.Unlock()
		if err != nil {
			return err
		}
		if shMsg, err = c.readHandshakeMessage(); err != nil {
			return err
		}
	}
	s := suiteByID(sh.suite)
	if s == nil || !s.tls13 || !slices.Contains(ch.suites, sh.suite) {
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, fmt.Errorf("server chose suite 0x%04X, which was not offered", sh.suite))
	}
	if !sh.hasPSK || int(sh.selectedPSK) >= len(ids) || ids[sh.selectedPSK] != cfg.Identity {
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("server did not select this client's PSK"))
	}
	var shared []byte
	if sh.hasKeyShare {
		i := slices.IndexFunc(shares, func(s share) bool { return s.group == sh.group })
		if i < 0 || !slices.Contains(modes, pskModeDHEKE) {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("server key share for a group not offered"))
		}
		peer, err := shares[i].priv.Curve().NewPublicKey(sh.share)
		if err == nil {
			shared, err = shares[i].priv.ECDH(peer)
		}
		if err != nil {
			return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("the server's key share is invalid"))
		}
	} else if !slices.Contains(modes, pskModeKE) {
		return c.fatal(ReasonIllegalParameter, alertIllegalParameter, errors.New("server chose psk_ke, which was not offered"))
	}
	c.suite13 = s
	c.state.Version, c.state.CipherSuite, c.state.Identity, c.state.ServerName = VersionTLS13, s.id, cfg.Identity, cfg.ServerName
	th.add(msg, shMsg)
	hs := handshakeSecret(early, shared)
	hsKeys, err := trafficKeys(s, hs, "hs", th.sum())
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	c.in.cipher, c.in.seq, c.in.finishedNext = hsKeys.server, 0, true
	c.in.strictVersion = true

	ee, err := c.readHandshakeMessage()
	if err != nil {
		return err
	}
	if ee[0] != typeEncryptedExtensions {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of EncryptedExtensions", ee[0]))
	}
	limit, err := parseEncryptedExtensions(ee[handshakeHeaderLen:], k.recordSizeLimit != 0)
	if err != nil {
		return c.fatal(ReasonIllegalParameter, alertUnsupportedExtension, err)
	}
	if limit != 0 {
		c.out.maxFrag = min(int(limit)-1, maxPlaintext)
	}
	th.add(ee)
	fin, err := c.readHandshakeMessage()
	if err != nil {
		return err
	}
	if fin[0] != typeFinished {
		return c.fatal(ReasonUnexpectedMessage, alertUnexpectedMessage, fmt.Errorf("handshake message %d instead of Finished", fin[0]))
	}
	if subtle.ConstantTimeCompare(fin[handshakeHeaderLen:], finishedMAC(hsKeys.serverSecret, th.sum())) != 1 {
		return c.fatal(ReasonDecryptError, alertDecryptError, errors.New("the server's Finished does not verify"))
	}
	th.add(fin)
	finHash := th.sum()
	apKeys, err := trafficKeys(s, masterSecret13(hs), "ap", finHash)
	if err != nil {
		return c.fatal(ReasonInternal, alertInternalError, err)
	}
	c.in.secret, c.out.secret = [hashLen]byte(apKeys.serverSecret), [hashLen]byte(apKeys.clientSecret)
	clear(apKeys.serverSecret)
	clear(apKeys.clientSecret)
	c.in.cipher, c.in.seq, c.in.ccsOK = apKeys.server, 0, false

	verify := finishedMAC(hsKeys.clientSecret, finHash)
	if k.tamperFinished {
		verify[0] ^= 1
	}
	c.out.mu.Lock()
	c.out.buf = append(c.out.buf[:0], sendCCS()...)
	c.out.cipher, c.out.seq = hsKeys.client, 0
	c.out.buf = c.appendRecords(c.out.buf, recordTypeHandshake, appendHandshake(nil, typeFinished, verify))
	c.out.cipher, c.out.seq = apKeys.client, 0
	err = c.flushLocked()
	c.out.mu.Unlock()
	return err
}

// record frames data as one plaintext record.
func record(typ uint8, version uint16, data []byte) []byte {
	return append([]byte{typ, byte(version >> 8), byte(version), byte(len(data) >> 8), byte(len(data))}, data...)
}
