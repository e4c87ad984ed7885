package handshake

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// ClientAuth says whether a TLS listener asks devices for a certificate.
type ClientAuth uint8

// Client certificate modes.
const (
	ClientAuthNone    ClientAuth = iota // never ask; every session has KindNone
	ClientAuthRequest                   // ask; a device without one gets KindNone, a bad one is refused
	ClientAuthRequire                   // a verified certificate is required
)

// ParseClientAuth parses "none", "request" or "require".
func ParseClientAuth(s string) (ClientAuth, error) {
	switch s {
	case "none":
		return ClientAuthNone, nil
	case "request":
		return ClientAuthRequest, nil
	case "require":
		return ClientAuthRequire, nil
	}
	return 0, fmt.Errorf("unknown client auth mode %q: want none, request or require", s)
}

func (a ClientAuth) String() string {
	return [...]string{"none", "request", "require"}[a]
}

// TLSConfig is what a TLS or mutual-TLS listener is built from. Its zero value is not
// usable: CertFile and KeyFile are required.
type TLSConfig struct {
	CertFile, KeyFile string
	// ClientCAFile is a PEM bundle of the CAs that issue device certificates. A certificate
	// in it that another certificate in it issued is an intermediate (checked against its
	// issuer's CRL); the others are trust anchors.
	ClientCAFile string
	// ClientKeysFile lists devices trusted by their public key alone (see ParseKeys for the
	// format). A leaf whose key is listed is the device of that name, whatever it claims
	// and whether or not a client CA would also verify it; nothing is ever chained through
	// it. Setting ClientCAFile or ClientKeysFile is what turns client certificates on.
	ClientKeysFile string
	ClientAuth     ClientAuth // default ClientAuthNone; must not be none when client certificates are on
	// CRLFiles are PEM (one or more CRLs each) or DER CRLs, checked on every handshake,
	// resumed ones included. Every CRL must belong to a CA in ClientCAFile (its name and
	// key), and every CA there must then have one.
	CRLFiles []string
	// CRLGrace is how long past a CRL's nextUpdate it still counts. The default, 0, refuses
	// the certificates of a CA whose CRLs are all stale (crl_expired), as OpenSSL does;
	// a grace trades that for availability while a late CRL is republished.
	CRLGrace   time.Duration
	MinVersion uint16 // tls.VersionTLS12 (the default) or tls.VersionTLS13
}

// Validate reports a configuration that cannot work, naming the field and the fix.
func (c TLSConfig) Validate() error {
	clientCerts := c.ClientCAFile != "" || c.ClientKeysFile != ""
	switch {
	case c.CertFile == "" || c.KeyFile == "":
		return errors.New("a server certificate and key are both required")
	case !clientCerts && c.ClientAuth != ClientAuthNone:
		return fmt.Errorf("client auth %q needs a client CA file or a client keys file", c.ClientAuth)
	case clientCerts && c.ClientAuth == ClientAuthNone:
		return errors.New("a client CA file or client keys file is set but client auth is none: use request or require")
	case len(c.CRLFiles) > 0 && c.ClientCAFile == "":
		return errors.New("CRL files need a client CA file to check them against")
	case c.CRLGrace < 0:
		return fmt.Errorf("CRL grace %v is negative", c.CRLGrace)
	case c.MinVersion != 0 && c.MinVersion != tls.VersionTLS12 && c.MinVersion != tls.VersionTLS13:
		return fmt.Errorf("minimum TLS version %#04x is not supported: use TLS 1.2 or 1.3", c.MinVersion)
	}
	return nil
}

// tlsMaterial is everything read from files; a reload swaps the whole of it at once.
type tlsMaterial struct {
	cert *tls.Certificate
	// roots are the trust anchors of the client-CA file, inters the certificates in it that
	// another one there issued. Both nil without a client-CA file.
	roots, inters *x509.CertPool
	crls          crlSet    // nil: no CRL configured, so no revocation check
	keys          *KeyStore // nil: no pinned keys
	// files describes what was loaded, for expiry monitoring and mqtls check.
	files []FileInfo
}

// FileInfo is one certificate or CRL a server loaded, and when it stops being valid.
type FileInfo struct {
	File    string
	Role    string // "server", "client_ca" or "crl"
	Subject string // the certificate's subject, or the CRL's issuer
	// NotAfter is the certificate's expiry, or the CRL's nextUpdate.
	NotAfter time.Time
	// ThisUpdate is a CRL's issue time; Block its place in File, from 1 (a PEM file may
	// hold several CRLs). Both are zero for certificates.
	ThisUpdate time.Time
	Block      int
}

// TLSServer performs TLS and mutual-TLS handshakes with crypto/tls.
type TLSServer struct {
	cfg      TLSConfig
	auth     ClientAuth
	config   *tls.Config
	material atomic.Pointer[tlsMaterial]
}

// The TLS 1.2 suites mqtls offers: forward secret and AEAD only. Go's default list still
// carries CBC suites, which scanners flag (LUCKY13). TLS 1.3 suites are not configurable.
var tls12Suites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// NewTLSServer loads the files c names and returns a server ready to handshake.
func NewTLSServer(c TLSConfig) (*TLSServer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m, err := loadTLSMaterial(c)
	if err != nil {
		return nil, err
	}
	s := &TLSServer{cfg: c, auth: c.ClientAuth}
	s.material.Store(m)
	min := c.MinVersion
	if min == 0 {
		min = tls.VersionTLS12
	}
	s.config = &tls.Config{
		MinVersion:   min,
		CipherSuites: tls12Suites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.material.Load().cert, nil
		},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if rc, ok := hello.Conn.(*recordConn); ok {
				rc.helloReason = helloReason(hello, min, s.material.Load().cert)
			}
			return nil, nil // the server's own config
		},
	}
	if c.ClientAuth != ClientAuthNone {
		// We verify the chain ourselves in VerifyConnection, which runs on every handshake
		// (resumed ones too), so that a refusal carries a reason and CRLs are always checked.
		s.config.ClientAuth = tls.RequestClientCert
		s.config.VerifyConnection = s.verify
	}
	return s, nil
}

// Reload reads the files again and, only if all of them are good, makes new handshakes
// use them; established sessions are not touched. On error the old material stays.
func (s *TLSServer) Reload() error {
	m, err := loadTLSMaterial(s.cfg)
	if err != nil {
		return err
	}
	s.material.Store(m)
	return nil
}

// Files describes the certificates and CRLs in use, one entry per CRL.
func (s *TLSServer) Files() []FileInfo { return s.material.Load().files }

// Keys returns the pinned keys in use, or nil when the server has none.
func (s *TLSServer) Keys() *KeyStore { return s.material.Load().keys }

// Config returns the configuration the server was built from.
func (s *TLSServer) Config() TLSConfig { return s.cfg }

// Revoked reports whether the files now loaded would refuse the session id came from, or
// name it differently: after a reload, sessions that authenticated before may be closed
// with it. That covers a certificate revoked by a CRL (the leaf or any CA of its chain,
// whether the device sent that CA or not), a chain that no longer verifies (its CA
// removed, or a certificate of it expired since), a pinned key removed or renamed, and a
// device that would now be named by a pinned key. A CRL that merely went stale does not end sessions: it says nothing new
// about any device, and new handshakes are refused until it is renewed.
func (s *TLSServer) Revoked(id Identity) bool {
	return s.StillValid(id) != nil
}

// StillValid re-checks id's credentials against the files now loaded (see Revoked) and
// returns why they no longer hold, as an *Error with a reason, or nil.
func (s *TLSServer) StillValid(id Identity) error {
	if id.Kind != KindCertificate && id.Kind != KindPinnedKey {
		return nil
	}
	chain := id.chain
	if chain == nil && id.chainDER != nil {
		var err error
		if chain, err = parseDER(id.chainDER); err != nil {
			return err
		}
	}
	if len(chain) == 0 { // an Identity not made by a handshake: nothing to re-check
		return &Error{Reason: ReasonUntrustedCert, Err: errors.New("the session kept no certificate to re-check")}
	}
	m := s.material.Load()
	if id.Kind == KindPinnedKey {
		// Whatever a client CA would say now, this session's name came from the key list.
		switch name, ok := m.keys.Lookup(chain[0]); {
		case !ok:
			return &Error{Reason: ReasonKeyNotPinned, Err: fmt.Errorf("the key of %q was removed from the pinned-key file", id.KeyName)}
		case name != id.KeyName:
			return &Error{Reason: ReasonIdentityChanged, Err: fmt.Errorf("the key of %q is now pinned as %q", id.KeyName, name)}
		}
		return nil
	}
	name, err := m.check(chain, time.Now(), -1)
	if err != nil {
		return err
	}
	if name != id.KeyName {
		return &Error{Reason: ReasonIdentityChanged, Err: fmt.Errorf("the device is now named %q by the pinned keys, not %q", name, id.KeyName)}
	}
	return nil
}

func loadTLSMaterial(c TLSConfig) (*tlsMaterial, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading server certificate %s and key %s: %w", c.CertFile, c.KeyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing server certificate %s: %w", c.CertFile, err)
	}
	m := &tlsMaterial{cert: &cert}
	m.files = append(m.files, FileInfo{File: c.CertFile, Role: "server", Subject: leaf.Subject.String(), NotAfter: leaf.NotAfter})
	if c.ClientKeysFile != "" {
		if m.keys, err = LoadKeyFile(c.ClientKeysFile); err != nil {
			return nil, err
		}
	}
	if c.ClientCAFile == "" {
		return m, nil
	}
	cas, err := readCertificates(c.ClientCAFile)
	if err != nil {
		return nil, err
	}
	m.roots, m.inters = x509.NewCertPool(), x509.NewCertPool()
	anchors := 0
	bySubject := make(map[string][]*x509.Certificate, len(cas))
	for _, ca := range cas {
		bySubject[string(ca.RawSubject)] = append(bySubject[string(ca.RawSubject)], ca)
	}
	for _, ca := range cas {
		// A certificate another one in the file issued is an intermediate, so a chain runs
		// through it to that issuer and its revocation is checked, whether the device sends
		// it or not. The others are anchors: a file holding only an intermediate anchors
		// trust there, as before.
		if issuedInFile(ca, bySubject[string(ca.RawIssuer)]) {
			m.inters.AddCert(ca)
		} else {
			m.roots.AddCert(ca)
			anchors++
		}
		m.files = append(m.files, FileInfo{File: c.ClientCAFile, Role: "client_ca", Subject: ca.Subject.String(), NotAfter: ca.NotAfter})
	}
	if anchors == 0 {
		return nil, fmt.Errorf("client CA file %s: every certificate in it is issued by another one in it, so none can be the trust anchor", c.ClientCAFile)
	}
	if len(c.CRLFiles) > 0 {
		if err := m.loadCRLs(c.CRLFiles, c.ClientCAFile, cas); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// issuedInFile reports whether another certificate of candidates (those of the file whose
// subject is c's issuer) issued c. Indexing by subject keeps a file of thousands of
// self-signed certificates linear to load.
func issuedInFile(c *x509.Certificate, candidates []*x509.Certificate) bool {
	for _, p := range candidates {
		if p != c && !bytes.Equal(p.Raw, c.Raw) && c.CheckSignatureFrom(p) == nil {
			return true
		}
	}
	return false
}

func readCertificates(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading client CA file: %w", err)
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d in client CA file %s: %w", len(certs)+1, file, err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("client CA file %s holds no PEM certificate", file)
	}
	return certs, nil
}

// verify checks the client's certificates against the current material. The error it
// returns is the one crypto/tls hands back from the handshake, so it carries the reason.
func (s *TLSServer) verify(cs tls.ConnectionState) error {
	_, err := s.checkPeer(s.material.Load(), cs.PeerCertificates)
	return err
}

// checkPeer is check for what a client sent in a handshake: no certificate is an error
// only when one is required.
func (s *TLSServer) checkPeer(m *tlsMaterial, certs []*x509.Certificate) (keyName string, err error) {
	if len(certs) == 0 {
		if s.auth == ClientAuthRequire {
			return "", &Error{Reason: ReasonNoClientCert, Err: errors.New("the client sent no certificate")}
		}
		return "", nil
	}
	return m.check(certs, time.Now(), s.cfg.CRLGrace)
}

// check decides what certs (leaf first, as the client sent them) prove at now: the name
// of a pinned key, or "" for a chain to a client CA that verified and that no CRL revokes.
// A negative grace skips the CRLs' freshness (for re-checking established sessions).
func (m *tlsMaterial) check(certs []*x509.Certificate, now time.Time, grace time.Duration) (string, error) {
	leaf := certs[0]
	// A listed key wins: the operator named this device by its key. Its certificate is only
	// the key's wrapper, signed by the device itself, so its dates and extensions say
	// nothing the operator did not already decide by listing the key.
	if name, ok := m.keys.Lookup(leaf); ok {
		return name, nil
	}
	if m.roots == nil {
		return "", &Error{Reason: ReasonKeyNotPinned, Err: fmt.Errorf("client certificate %q: its key is not in the pinned-key file", leaf.Subject.CommonName)}
	}
	opts := x509.VerifyOptions{
		Roots:         m.roots,
		Intermediates: m.inters,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime:   now,
	}
	if len(certs) > 1 {
		opts.Intermediates = m.inters.Clone()
		for _, c := range certs[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return "", &Error{Reason: verifyReason(err), Err: fmt.Errorf("client certificate %q: %w", leaf.Subject.CommonName, err)}
	}
	if m.crls == nil {
		return "", nil
	}
	// Every chain crypto/x509 built, and in each every certificate but the anchor, is
	// checked against its issuer's CRLs: which chain the client steered towards must not
	// matter. Revocation is looked for everywhere before freshness, so that a revoked
	// device is told so even by a stale CRL.
	var stale error
	for _, chain := range chains {
		for i := 0; i+1 < len(chain); i++ {
			c, issuer := chain[i], chain[i+1]
			crls := m.crls.lookup(issuer)
			if crls == nil {
				// Only an intermediate the client sent can lack CRLs: loading made sure
				// every CA in the client-CA file has some.
				return "", &Error{Reason: ReasonCRLMissing, Err: fmt.Errorf("certificate %q is issued by %q, which has no CRL loaded: add that CA and its CRL to the client CA and CRL files",
					c.Subject.CommonName, issuer.Subject)}
			}
			if _, revoked := crls.revoked[c.SerialNumber.String()]; revoked {
				return "", &Error{Reason: ReasonRevokedCert, Err: fmt.Errorf("certificate %q (serial %x) is revoked by a CRL of %q",
					c.Subject.CommonName, c.SerialNumber, issuer.Subject.CommonName)}
			}
			if grace >= 0 && now.After(crls.nextUpdate.Add(grace)) && stale == nil {
				stale = &Error{Reason: ReasonCRLExpired, Err: fmt.Errorf("the CRLs of %q were due for renewal at %s: certificate %q cannot be checked",
					issuer.Subject, crls.nextUpdate.UTC().Format(time.RFC3339), c.Subject.CommonName)}
			}
		}
	}
	return "", stale
}

func verifyReason(err error) string {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.Expired:
			if time.Now().Before(invalid.Cert.NotBefore) {
				return ReasonNotYetValidCert
			}
			return ReasonExpiredCert
		case x509.IncompatibleUsage:
			return ReasonBadCertUsage
		}
	}
	return ReasonUntrustedCert
}

// checkDER checks the DER certificates a DTLS client sent against the current material,
// returning them parsed and the pinned name, if any.
func (s *TLSServer) checkDER(ders [][]byte) ([]*x509.Certificate, string, error) {
	certs, err := parseDER(ders)
	if err != nil {
		return nil, "", err
	}
	keyName, err := s.checkPeer(s.material.Load(), certs)
	return certs, keyName, err
}

// identifyDER is checkDER returning the Identity the certificates prove. The Identity keeps
// ders, not the parsed certificates, for StillValid.
func (s *TLSServer) identifyDER(ders [][]byte) (Identity, error) {
	certs, keyName, err := s.checkDER(ders)
	if err != nil || len(certs) == 0 {
		return Identity{}, err
	}
	id := identify(certs, keyName)
	id.chain, id.chainDER = nil, ders
	return id, nil
}

func parseDER(ders [][]byte) ([]*x509.Certificate, error) {
	certs := make([]*x509.Certificate, 0, len(ders))
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, &Error{Reason: ReasonUntrustedCert, Err: fmt.Errorf("parsing client certificate: %w", err)}
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// identify builds the Identity of a session whose certificates check accepted: a pinned
// key when keyName is set, a certificate otherwise. certs is kept (not copied) so that
// StillValid can re-check them after a reload.
func identify(certs []*x509.Certificate, keyName string) Identity {
	id := fromLeaf(certs[0])
	id.chain = certs
	if keyName != "" {
		id.Kind, id.KeyName = KindPinnedKey, keyName
	}
	return id
}

// Handshake runs the server side of a TLS handshake on c. The caller sets c's deadline;
// ctx cancels the handshake early (on shutdown). On success the returned conn is a *Conn and
// the Identity describes the client; on failure the error is an *Error with a Reason.
func (s *TLSServer) Handshake(ctx context.Context, c net.Conn) (net.Conn, Identity, error) {
	return s.handshake(ctx, c, nil)
}

// handshake is Handshake on a connection whose first bytes were already read: peeked.
func (s *TLSServer) handshake(ctx context.Context, c net.Conn, peeked []byte) (net.Conn, Identity, error) {
	rc := newRecordConn(c)
	rc.preload(peeked)
	tc := tls.Server(rc, s.config)
	before := s.material.Load()
	if err := tc.HandshakeContext(ctx); err != nil {
		if rc.helloReason != "" && !errors.As(err, new(*Error)) {
			return nil, Identity{}, &Error{Reason: rc.helloReason, Err: err}
		}
		return nil, Identity{}, classify(err)
	}
	cs := tc.ConnectionState()
	var id Identity
	if s.auth != ClientAuthNone && len(cs.PeerCertificates) > 0 {
		// VerifyConnection accepted these certificates against the material it loaded.
		// When no reload came in between, that was before, and naming the device needs only
		// the key lookup; otherwise the new material decides it all again.
		var keyName string
		if m := s.material.Load(); m == before {
			keyName, _ = m.keys.Lookup(cs.PeerCertificates[0])
		} else {
			var err error
			if keyName, err = s.checkPeer(m, cs.PeerCertificates); err != nil {
				tc.Close()
				return nil, Identity{}, err
			}
		}
		id = identify(cs.PeerCertificates, keyName)
	}
	id.TLSVersion, id.CipherSuite = cs.Version, cs.CipherSuite
	return &Conn{Conn: tc, rec: rc}, id, nil
}

// helloReason says why a handshake with hello would fail before it is tried, in the
// terms TLS-PSK listeners use: no version in common (protocol_version), or no cipher
// suite in common for the server's certificate (no_shared_cipher); "" otherwise. It is
// used only to name a failure crypto/tls reports.
func helloReason(hello *tls.ClientHelloInfo, minVersion uint16, cert *tls.Certificate) string {
	tls13, tls12 := false, false
	for _, v := range hello.SupportedVersions {
		tls13 = tls13 || v == tls.VersionTLS13
		tls12 = tls12 || v == tls.VersionTLS12 && minVersion <= tls.VersionTLS12
	}
	if !tls13 && !tls12 {
		return tlspsk.ReasonProtocolVersion
	}
	ecdsaCert := cert != nil && cert.Leaf != nil && cert.Leaf.PublicKeyAlgorithm == x509.ECDSA
	for _, cs := range hello.CipherSuites {
		switch {
		case tls13 && (cs == tls.TLS_AES_128_GCM_SHA256 || cs == tls.TLS_AES_256_GCM_SHA384 || cs == tls.TLS_CHACHA20_POLY1305_SHA256):
			return ""
		case tls12 && slices.Contains(tls12Suites, cs):
			if cert == nil || cert.Leaf == nil || ecdsaCert == isECDSASuite(cs) {
				return ""
			}
		}
	}
	return tlspsk.ReasonNoSharedCipher
}

func isECDSASuite(cs uint16) bool {
	switch cs {
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:
		return true
	}
	return false
}

// Conn is the secure connection a TLS handshake yields.
type Conn struct {
	*tls.Conn
	rec *recordConn
	// alerted: crypto/tls sent a fatal alert, so Close and CloseWrite send no close_notify
	// after it (crypto/tls itself would).
	alerted atomic.Bool
}

// Read is tls.Conn's Read, noting a fatal alert it sent.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && localAlert(err) {
		c.alerted.Store(true)
	}
	return n, err
}

// Write is tls.Conn's Write, noting a fatal alert it sent.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && localAlert(err) {
		c.alerted.Store(true)
	}
	return n, err
}

// Close closes the connection, with close_notify unless a fatal alert was sent.
func (c *Conn) Close() error {
	if c.alerted.Load() {
		return c.rec.Close()
	}
	return c.Conn.Close()
}

// WaitRead blocks until the device has sent something, or the read deadline passes, holding
// no buffer while it waits. After it returns nil, a Read with a buffer of at least 16 KiB
// returns without waiting on the network, so the pipe can borrow a buffer only then.
func (c *Conn) WaitRead() error { return c.rec.waitRead() }

// TryRead is Read that never waits for the network: when neither crypto/tls nor the socket
// has input it returns 0 and an error for which IsWouldBlock is true. WaitRead cannot see
// plaintext crypto/tls already holds (the rest of the record a CONNECT arrived in), so the
// pipe asks once with TryRead, rather than parking in a Read that holds its buffer.
func (c *Conn) TryRead(p []byte) (int, error) {
	if c.rec.raw == nil { // no socket to ask: an ordinary Read
		return c.Conn.Read(p)
	}
	c.rec.nonblock = true
	defer func() { c.rec.nonblock = false }()
	return c.Read(p)
}

// IsWouldBlock reports whether err is a TryRead (of a TLS or a TLS-PSK conn) finding
// nothing to read.
func IsWouldBlock(err error) bool {
	return errors.Is(err, errWouldBlock) || errors.Is(err, tlspsk.ErrWouldBlock)
}

// CloseWrite sends close_notify and then half-closes the TCP connection underneath, so the
// device sees both the TLS and the TCP end of the stream.
func (c *Conn) CloseWrite() error {
	var err error
	if !c.alerted.Load() {
		err = c.Conn.CloseWrite()
	}
	if cw, ok := c.rec.Conn.(interface{ CloseWrite() error }); ok {
		if err2 := cw.CloseWrite(); err == nil {
			err = err2
		}
	}
	return err
}
