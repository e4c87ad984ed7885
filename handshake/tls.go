package handshake

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
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
	// ClientCAFile is a PEM bundle of the CAs that issue device certificates. Setting it
	// is what turns client certificates on.
	ClientCAFile string
	ClientAuth   ClientAuth // default ClientAuthNone; must not be none when ClientCAFile is set
	// CRLFiles are PEM or DER CRLs, each signed by a CA in ClientCAFile, checked on every
	// handshake, resumed ones included.
	CRLFiles   []string
	MinVersion uint16 // tls.VersionTLS12 (the default) or tls.VersionTLS13
}

// Validate reports a configuration that cannot work, naming the field and the fix.
func (c TLSConfig) Validate() error {
	switch {
	case c.CertFile == "" || c.KeyFile == "":
		return errors.New("a server certificate and key are both required")
	case c.ClientCAFile == "" && c.ClientAuth != ClientAuthNone:
		return fmt.Errorf("client auth %q needs a client CA file", c.ClientAuth)
	case c.ClientCAFile != "" && c.ClientAuth == ClientAuthNone:
		return errors.New("a client CA file is set but client auth is none: use request or require")
	case len(c.CRLFiles) > 0 && c.ClientCAFile == "":
		return errors.New("CRL files need a client CA file to check them against")
	case c.MinVersion != 0 && c.MinVersion != tls.VersionTLS12 && c.MinVersion != tls.VersionTLS13:
		return fmt.Errorf("minimum TLS version %#04x is not supported: use TLS 1.2 or 1.3", c.MinVersion)
	}
	return nil
}

// tlsMaterial is everything read from files; a reload swaps the whole of it at once.
type tlsMaterial struct {
	cert  *tls.Certificate
	roots *x509.CertPool
	// revoked maps a CA's raw subject to the serials (decimal) its CRLs revoke.
	revoked map[string]map[string]struct{}
	// files describes what was loaded, for expiry monitoring and mqtls check.
	files []FileInfo
}

// FileInfo is one certificate or CRL a server loaded, and when it stops being valid.
type FileInfo struct {
	File    string
	Role    string // "server", "client_ca" or "crl"
	Subject string // the certificate's subject, or the CRL's issuer
	// NotAfter is the certificate's expiry, or the CRL's next update (zero if it has none).
	NotAfter time.Time
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

// Files describes the certificates and CRLs in use.
func (s *TLSServer) Files() []FileInfo { return s.material.Load().files }

// Config returns the configuration the server was built from.
func (s *TLSServer) Config() TLSConfig { return s.cfg }

// Revoked reports whether id's certificate is revoked by the CRLs now loaded: after a
// reload, sessions that authenticated before may be closed with it.
func (s *TLSServer) Revoked(id Identity) bool {
	if id.Kind != KindCertificate || id.issuer == "" {
		return false
	}
	_, revoked := s.material.Load().revoked[id.issuer][id.serialDec]
	return revoked
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
	m := &tlsMaterial{cert: &cert, revoked: map[string]map[string]struct{}{}}
	m.files = append(m.files, FileInfo{File: c.CertFile, Role: "server", Subject: leaf.Subject.String(), NotAfter: leaf.NotAfter})
	if c.ClientCAFile == "" {
		return m, nil
	}
	cas, err := readCertificates(c.ClientCAFile)
	if err != nil {
		return nil, err
	}
	m.roots = x509.NewCertPool()
	for _, ca := range cas {
		m.roots.AddCert(ca)
		m.files = append(m.files, FileInfo{File: c.ClientCAFile, Role: "client_ca", Subject: ca.Subject.String(), NotAfter: ca.NotAfter})
	}
	for _, f := range c.CRLFiles {
		if err := m.addCRL(f, cas); err != nil {
			return nil, err
		}
	}
	return m, nil
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

func (m *tlsMaterial) addCRL(file string, cas []*x509.Certificate) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading CRL: %w", err)
	}
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return fmt.Errorf("CRL file %s: PEM block is %q, want \"X509 CRL\"", file, block.Type)
		}
		data = block.Bytes
	}
	crl, err := x509.ParseRevocationList(data)
	if err != nil {
		return fmt.Errorf("parsing CRL file %s: %w", file, err)
	}
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) != nil {
			continue
		}
		key := string(ca.RawSubject)
		set := m.revoked[key]
		if set == nil {
			set = map[string]struct{}{}
			m.revoked[key] = set
		}
		for _, e := range crl.RevokedCertificateEntries {
			set[e.SerialNumber.String()] = struct{}{}
		}
		m.files = append(m.files, FileInfo{File: file, Role: "crl", Subject: crl.Issuer.String(), NotAfter: crl.NextUpdate})
		return nil
	}
	return fmt.Errorf("CRL file %s (issuer %q) is not signed by any CA in the client CA file", file, crl.Issuer)
}

// verify checks the client chain against the current roots and CRLs. The error it returns
// is the one crypto/tls hands back from the handshake, so it carries the reason.
func (s *TLSServer) verify(cs tls.ConnectionState) error { return s.verifyChain(cs.PeerCertificates) }

// verifyChain checks the certificates a client sent, leaf first.
func (s *TLSServer) verifyChain(certs []*x509.Certificate) error {
	if len(certs) == 0 {
		if s.auth == ClientAuthRequire {
			return &Error{Reason: ReasonNoClientCert, Err: errors.New("the client sent no certificate")}
		}
		return nil
	}
	m := s.material.Load()
	leaf := certs[0]
	opts := x509.VerifyOptions{
		Roots:         m.roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return &Error{Reason: verifyReason(err, leaf), Err: fmt.Errorf("client certificate %q: %w", leaf.Subject.CommonName, err)}
	}
	for _, chain := range chains {
		for i := 0; i+1 < len(chain); i++ {
			if _, revoked := m.revoked[string(chain[i+1].RawSubject)][chain[i].SerialNumber.String()]; revoked {
				return &Error{Reason: ReasonRevokedCert, Err: fmt.Errorf("certificate %q (serial %x) is revoked by a CRL of %q",
					chain[i].Subject.CommonName, chain[i].SerialNumber, chain[i+1].Subject.CommonName)}
			}
		}
	}
	return nil
}

func verifyReason(err error, leaf *x509.Certificate) string {
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
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, Identity{}, classify(err)
	}
	cs := tc.ConnectionState()
	var id Identity
	// The chain was verified in VerifyConnection; a certificate here is one that passed.
	if s.auth != ClientAuthNone && len(cs.PeerCertificates) > 0 {
		id = FromCertificate(cs.PeerCertificates[0])
	}
	id.TLSVersion, id.CipherSuite = cs.Version, cs.CipherSuite
	return &Conn{Conn: tc, rec: rc}, id, nil
}

// Conn is the secure connection a TLS handshake yields.
type Conn struct {
	*tls.Conn
	rec *recordConn
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
	return c.Conn.Read(p)
}

// IsWouldBlock reports whether err is a TryRead (of a TLS or a TLS-PSK conn) finding
// nothing to read.
func IsWouldBlock(err error) bool {
	return errors.Is(err, errWouldBlock) || errors.Is(err, tlspsk.ErrWouldBlock)
}

// CloseWrite sends close_notify and then half-closes the TCP connection underneath, so the
// device sees both the TLS and the TCP end of the stream.
func (c *Conn) CloseWrite() error {
	err := c.Conn.CloseWrite()
	if cw, ok := c.rec.Conn.(interface{ CloseWrite() error }); ok {
		if err2 := cw.CloseWrite(); err == nil {
			err = err2
		}
	}
	return err
}
