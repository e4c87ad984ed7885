package handshake

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// Reasons a client-mode handshake toward a remote broker fails, besides the certificate
// reasons a server uses (untrusted_cert, expired_cert, key_not_pinned, ...).
const (
	// ReasonNameMismatch: the remote's certificate is not for the name we asked for.
	ReasonNameMismatch = "name_mismatch"
	// ReasonServerRefused: the remote broker refused our credentials (an alert from it).
	ReasonServerRefused = "server_refused"
)

// ClientConfig is the remote side of a client-mode listener: how mqtls secures the
// connection it opens to a remote broker for each local session. Exactly one of
// certificates (the default, optionally with CertFile and KeyFile for mutual TLS) and
// TLS-PSK (PSKFile with PSKIdentity) is used.
type ClientConfig struct {
	// ServerName is sent as SNI and is the name the remote's certificate must carry;
	// "" means the host part of the address dialled.
	ServerName string
	// CAFile is a PEM bundle of the CAs trusted for the remote; "" means the system roots.
	CAFile string
	// CertFile and KeyFile are the gateway's own certificate and key, for mutual TLS.
	CertFile, KeyFile string
	// ServerKeysFile pins the remote's key (the format of ParseKeys): its leaf must carry
	// one of the keys listed, on top of the chain and name checks.
	ServerKeysFile string
	// PSKFile, PSKFormat and PSKIdentity select TLS-PSK: the key of PSKIdentity in
	// PSKFile. Certificates are then not used.
	PSKFile     string
	PSKFormat   PSKFormat
	PSKIdentity string
	// MinVersion is tls.VersionTLS12 (the default) or tls.VersionTLS13. TLS-PSK offers
	// TLS 1.3 and, unless the minimum is 1.3, TLS 1.2.
	MinVersion uint16
	// InsecureSkipVerify accepts any certificate the remote shows: for tests against a
	// broker whose CA is not at hand, never for production. A pinned key still applies.
	InsecureSkipVerify bool
}

// Validate reports a configuration that cannot work, naming the field and the fix.
func (c ClientConfig) Validate() error {
	psk := c.PSKFile != "" || c.PSKIdentity != ""
	switch {
	case (c.CertFile == "") != (c.KeyFile == ""):
		return errors.New("a client certificate needs its key and a key its certificate")
	case psk && (c.PSKFile == "" || c.PSKIdentity == ""):
		return errors.New("TLS-PSK toward the remote needs both the PSK file and the identity to use from it")
	case psk && (c.CertFile != "" || c.CAFile != "" || c.ServerKeysFile != "" || c.InsecureSkipVerify):
		return errors.New("TLS-PSK toward the remote uses no certificates: drop the certificate, CA, pinned-key and insecure settings, or the PSK ones")
	case c.InsecureSkipVerify && c.CAFile != "":
		return errors.New("a remote CA file and insecure skip-verify contradict each other: drop one")
	case c.MinVersion != 0 && c.MinVersion != tls.VersionTLS12 && c.MinVersion != tls.VersionTLS13:
		return fmt.Errorf("minimum TLS version %#04x is not supported: use TLS 1.2 or 1.3", c.MinVersion)
	}
	return nil
}

// clientMaterial is what a Client read from files; a reload swaps all of it at once.
type clientMaterial struct {
	cert  *tls.Certificate // nil without mutual TLS
	roots *x509.CertPool   // nil: the system roots
	keys  *KeyStore        // nil: no pinned server key
	psk   []byte           // nil without TLS-PSK
	self  Identity         // the credential this side presents
}

// Client secures connections toward a remote broker (client mode). It is safe for
// concurrent use; Reload swaps its files without touching sessions already established.
type Client struct {
	cfg      ClientConfig
	material atomic.Pointer[clientMaterial]
}

// NewClient loads the files c names.
func NewClient(c ClientConfig) (*Client, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cl := &Client{cfg: c}
	if err := cl.Reload(); err != nil {
		return nil, err
	}
	return cl, nil
}

// Config returns the configuration the client was built from.
func (cl *Client) Config() ClientConfig { return cl.cfg }

// Files lists the files the client reads, for reload watching.
func (cl *Client) Files() []string {
	var out []string
	for _, f := range []string{cl.cfg.CertFile, cl.cfg.KeyFile, cl.cfg.CAFile, cl.cfg.ServerKeysFile, cl.cfg.PSKFile} {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Identity is the credential this side presents to the remote: the gateway's certificate
// (its subject fields), its PSK identity, or KindNone when it presents nothing.
func (cl *Client) Identity() Identity { return cl.material.Load().self }

// Reload reads the files again and, only if all of them are good, makes new connections
// use them. On error the old material stays.
func (cl *Client) Reload() error {
	c := cl.cfg
	m := &clientMaterial{}
	if c.PSKFile != "" {
		keys, err := ParsePSKsFile(c.PSKFile, c.PSKFormat)
		if err != nil {
			return err
		}
		key, ok := keys[c.PSKIdentity]
		if !ok {
			return fmt.Errorf("PSK file %s has no key for identity %q", c.PSKFile, c.PSKIdentity)
		}
		m.psk = key
		m.self = Identity{Kind: KindPSK, PSKIdentity: c.PSKIdentity}
		cl.material.Store(m)
		return nil
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return fmt.Errorf("loading client certificate %s and key %s: %w", c.CertFile, c.KeyFile, err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return fmt.Errorf("parsing client certificate %s: %w", c.CertFile, err)
		}
		cert.Leaf = leaf
		m.cert = &cert
		m.self = identify([]*x509.Certificate{leaf}, "")
	}
	if c.CAFile != "" {
		certs, err := readCertificates(c.CAFile)
		if err != nil {
			return err
		}
		m.roots = x509.NewCertPool()
		for _, ca := range certs {
			m.roots.AddCert(ca)
		}
	}
	if c.ServerKeysFile != "" {
		keys, err := LoadKeyFile(c.ServerKeysFile)
		if err != nil {
			return err
		}
		m.keys = keys
	}
	cl.material.Store(m)
	return nil
}

// ParsePSKsFile reads a PSK file in format f and returns its keys by identity.
func ParsePSKsFile(file string, f PSKFormat) (map[string][]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading PSK file: %w", err)
	}
	return ParsePSKs(file, data, f)
}

// Dial connects to addr ("host:port", or a unix socket path with network "unix") and
// secures the connection under ctx. A failed handshake is an *Error whose reason says why
// (untrusted_cert, name_mismatch, key_not_pinned, expired_cert, server_refused, ...); a
// failed dial is returned as it is.
func (cl *Client) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	raw, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	c, err := cl.Handshake(ctx, raw, addr)
	if err != nil {
		raw.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return c, nil
}

// Handshake secures raw, a connection to addr, as the client side.
func (cl *Client) Handshake(ctx context.Context, raw net.Conn, addr string) (net.Conn, error) {
	m := cl.material.Load()
	name := cl.cfg.ServerName
	if name == "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			name = h
		}
	}
	if m.psk != nil {
		versions := []uint16{tlspsk.VersionTLS13, tlspsk.VersionTLS12}
		if cl.cfg.MinVersion == tls.VersionTLS13 {
			versions = versions[:1]
		}
		sni := name
		if net.ParseIP(sni) != nil {
			sni = "" // an address is never sent as SNI (RFC 6066 §3)
		}
		pc := tlspsk.Client(raw, &tlspsk.ClientConfig{Identity: cl.cfg.PSKIdentity, Key: m.psk, ServerName: sni, Versions: versions})
		if err := pc.HandshakeContext(ctx); err != nil {
			return nil, classifyClientPSK(err)
		}
		return pc, nil
	}
	min := cl.cfg.MinVersion
	if min == 0 {
		min = tls.VersionTLS12
	}
	cfg := &tls.Config{
		MinVersion:   min,
		CipherSuites: tls12Suites,
		ServerName:   name,
		RootCAs:      m.roots,
		// The chain, name and pin are checked in VerifyConnection, so a refusal carries
		// its reason; crypto/tls's own check would only say "bad certificate".
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return cl.verifyServer(m, name, cs)
		},
	}
	if m.cert != nil {
		cfg.Certificates = []tls.Certificate{*m.cert}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, classifyClient(err)
	}
	return tc, nil
}

// verifyServer checks the remote's chain against the roots, its name, and its pinned key.
func (cl *Client) verifyServer(m *clientMaterial, name string, cs tls.ConnectionState) error {
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return &Error{Reason: ReasonUntrustedCert, Err: errors.New("the remote sent no certificate")}
	}
	if !cl.cfg.InsecureSkipVerify {
		if name == "" { // a unix socket upstream: nothing would check whose certificate it is
			return &Error{Reason: ReasonNameMismatch, Err: errors.New("no server name to check the remote's certificate against: set the remote server name")}
		}
		inters := x509.NewCertPool()
		for _, c := range certs[1:] {
			inters.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: inters, DNSName: name}); err != nil {
			var host x509.HostnameError
			if errors.As(err, &host) {
				return &Error{Reason: ReasonNameMismatch, Err: fmt.Errorf("remote certificate: %w", err)}
			}
			return &Error{Reason: verifyReason(err), Err: fmt.Errorf("remote certificate: %w", err)}
		}
	}
	if m.keys != nil {
		if _, ok := m.keys.Lookup(certs[0]); !ok {
			sum := sha256.Sum256(certs[0].RawSubjectPublicKeyInfo)
			return &Error{Reason: ReasonKeyNotPinned, Err: fmt.Errorf("the remote's key (SPKI sha256 %x) is not in %s", sum, cl.cfg.ServerKeysFile)}
		}
	}
	return nil
}

// ClassifyClient returns err, from a client-mode handshake or the first read after it, as
// an *Error with a reason: an alert from the remote is server_refused (in TLS 1.3 a server
// refuses a client certificate only after the client's handshake has finished, so the
// refusal arrives on the first read).
func ClassifyClient(err error) error { return classifyClient(err) }

func classifyClient(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	// crypto/tls reports an alert it received as a *net.OpError with Op "remote error".
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return &Error{Reason: ReasonServerRefused, Err: err}
	}
	return classify(err)
}

func classifyClientPSK(err error) error {
	var pe *tlspsk.Error
	if errors.As(err, &pe) && pe.Remote {
		return &Error{Reason: ReasonServerRefused, Err: err}
	}
	return classifyPSK(err)
}
