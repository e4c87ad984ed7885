package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake/tlspsk"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// Modes: how the load tool secures its sessions with the target.
const (
	modePlain   = "plain"    // no TLS: straight to a broker, the baseline
	modeTLS     = "tls"      // server-authenticated TLS
	modeMTLS    = "mtls"     // mutual TLS with a client certificate
	modePSK     = "psk"      // TLS 1.2 PSK
	modeDTLSPSK = "dtls-psk" // DTLS 1.2 PSK, MQTT framed as package datagram says
)

// dialConfig is how to reach the target and secure a session with it.
type dialConfig struct {
	mode      string
	addr      string
	tls       *tls.Config
	psk       *tlspsk.ClientConfig
	dtlsOpts  []dtls.ClientOption
	sources   *sources
	opTimeout time.Duration
}

// sources hands out local addresses round-robin, so many connections to one target do not
// share one address's ephemeral ports. A nil *sources lets the kernel choose.
type sources struct {
	ips  []net.IP
	next atomic.Uint64
}

// parseSources parses "none", one address, or an inclusive IPv4 range "A-B" within one /24
// or across several (127.0.0.2-127.0.0.254).
func parseSources(s string) (*sources, error) {
	if s == "" || s == "none" {
		return nil, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := netip.ParseAddr(strings.TrimSpace(lo))
	if err != nil {
		return nil, fmt.Errorf("--source-ips %q: %w", s, err)
	}
	b := a
	if isRange {
		if b, err = netip.ParseAddr(strings.TrimSpace(hi)); err != nil {
			return nil, fmt.Errorf("--source-ips %q: %w", s, err)
		}
	}
	if !a.Is4() || !b.Is4() || b.Less(a) {
		return nil, fmt.Errorf("--source-ips %q: want IPv4 A-B with A ≤ B", s)
	}
	src := &sources{}
	for ip := a; ; ip = ip.Next() {
		src.ips = append(src.ips, net.IP(ip.AsSlice()))
		if ip == b || len(src.ips) > 1<<16 {
			break
		}
	}
	return src, nil
}

func (s *sources) pick() net.IP {
	if s == nil {
		return nil
	}
	return s.ips[(s.next.Add(1)-1)%uint64(len(s.ips))]
}

// session is one secured connection with the target, as an MQTT byte stream.
type session struct {
	net.Conn
	handshake time.Duration // from dial start to the end of the secure handshake
	resumed   bool          // a TLS session resumed with a ticket
}

// dial opens and secures one session. ctx bounds it.
func (d *dialConfig) dial(ctx context.Context) (*session, error) {
	start := time.Now()
	if d.mode == modeDTLSPSK {
		c, err := d.dialDTLS(ctx)
		if err != nil {
			return nil, err
		}
		return &session{Conn: c, handshake: time.Since(start)}, nil
	}
	nd := net.Dialer{}
	if ip := d.sources.pick(); ip != nil {
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	raw, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", d.addr, err)
	}
	var c net.Conn = raw
	resumed := false
	switch d.mode {
	case modeTLS, modeMTLS:
		tc := tls.Client(raw, d.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", d.addr, err)
		}
		c, resumed = tc, tc.ConnectionState().DidResume
	case modePSK:
		pc := tlspsk.Client(raw, d.psk)
		if err := pc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS-PSK handshake with %s: %w", d.addr, err)
		}
		c = pc
	}
	return &session{Conn: c, handshake: time.Since(start), resumed: resumed}, nil
}

func (d *dialConfig) dialDTLS(ctx context.Context) (net.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", d.addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: d.sources.pick()})
	if err != nil {
		return nil, fmt.Errorf("opening a UDP socket: %w", err)
	}
	dc, err := dtls.ClientWithOptions(pc, raddr, d.dtlsOpts...)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("DTLS client for %s: %w", d.addr, err)
	}
	if err := dc.HandshakeContext(ctx); err != nil {
		dc.Close()
		return nil, fmt.Errorf("DTLS handshake with %s: %w", d.addr, err)
	}
	return datagram.New(dc, datagram.Options{}), nil
}

// tlsOptions are the flags that make a dialConfig.
type tlsOptions struct {
	mode, addr, serverName string
	ca, cert, key          string
	insecure               bool
	tlsVersion, curve      string
	pskIdentity, pskKey    string
	pskSuite, dtlsSuite    string
	sourceIPs              string
	opTimeout              time.Duration
	resume                 bool
}

var curves = map[string]tls.CurveID{
	"x25519":         tls.X25519,
	"p256":           tls.CurveP256,
	"x25519mlkem768": tls.X25519MLKEM768,
}

var dtlsSuites = map[string]dtls.CipherSuiteID{
	"TLS_PSK_WITH_AES_128_CCM_8":                  dtls.TLS_PSK_WITH_AES_128_CCM_8,
	"TLS_PSK_WITH_AES_128_CCM":                    dtls.TLS_PSK_WITH_AES_128_CCM,
	"TLS_PSK_WITH_AES_128_GCM_SHA256":             dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
	"TLS_PSK_WITH_CHACHA20_POLY1305_SHA256":       dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	"TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256": dtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
}

func pskSuiteID(name string) (uint16, error) {
	for _, id := range tlspsk.DefaultSuites() {
		if tlspsk.CipherSuiteName(id) == name {
			return id, nil
		}
	}
	return 0, fmt.Errorf("--psk-suite %q: not a suite the TLS-PSK client implements", name)
}

func (o tlsOptions) build() (*dialConfig, error) {
	d := &dialConfig{mode: o.mode, addr: o.addr, opTimeout: o.opTimeout}
	var err error
	if d.sources, err = parseSources(o.sourceIPs); err != nil {
		return nil, err
	}
	if err := loopbackOnly("--addr", o.addr); err != nil {
		return nil, err
	}
	if o.resume && o.mode != modeTLS && o.mode != modeMTLS {
		return nil, fmt.Errorf("--resume with --mode %s: resumption is for tls and mtls (TLS session tickets)", o.mode)
	}
	switch o.mode {
	case modePlain:
	case modeTLS, modeMTLS:
		cfg := &tls.Config{ServerName: o.serverName, InsecureSkipVerify: o.insecure}
		switch o.tlsVersion {
		case "1.2":
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		case "1.3":
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
		default:
			return nil, fmt.Errorf("--tls-version %q: want 1.2 or 1.3", o.tlsVersion)
		}
		c, ok := curves[o.curve]
		if !ok {
			return nil, fmt.Errorf("--curve %q: want x25519, p256 or x25519mlkem768", o.curve)
		}
		cfg.CurvePreferences = []tls.CurveID{c}
		if o.resume {
			// One ticket for the whole run, replaced by each session's new one: every
			// session but the first few (opened before any ticket came) resumes.
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		if !o.insecure {
			if o.ca == "" {
				return nil, errors.New("--ca is required (or --insecure) to verify the target's certificate")
			}
			pem, err := os.ReadFile(o.ca)
			if err != nil {
				return nil, fmt.Errorf("reading --ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca %s: no PEM certificate in it", o.ca)
			}
		}
		if o.mode == modeMTLS {
			if o.cert == "" || o.key == "" {
				return nil, errors.New("--cert and --key are required for --mode mtls")
			}
			kp, err := tls.LoadX509KeyPair(o.cert, o.key)
			if err != nil {
				return nil, fmt.Errorf("loading --cert/--key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{kp}
		}
		d.tls = cfg
	case modePSK, modeDTLSPSK:
		if o.pskIdentity == "" || o.pskKey == "" {
			return nil, errors.New("--psk-identity and --psk-key are required for the PSK modes")
		}
		key, err := hex.DecodeString(o.pskKey)
		if err != nil {
			return nil, errors.New("--psk-key: want hex digits")
		}
		if o.mode == modePSK {
			id, err := pskSuiteID(o.pskSuite)
			if err != nil {
				return nil, err
			}
			d.psk = &tlspsk.ClientConfig{Identity: o.pskIdentity, Key: key, Suites: []uint16{id}}
			if err := d.psk.Validate(); err != nil {
				return nil, err
			}
			break
		}
		suite, ok := dtlsSuites[o.dtlsSuite]
		if !ok {
			return nil, fmt.Errorf("--dtls-suite %q: not one of the DTLS PSK suites", o.dtlsSuite)
		}
		d.dtlsOpts = []dtls.ClientOption{
			dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			dtls.WithPSKIdentityHint([]byte(o.pskIdentity)), // pion's client sends its identity from this
			dtls.WithCipherSuites(suite),
			dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		}
	default:
		return nil, fmt.Errorf("--mode %q: want plain, tls, mtls, psk or dtls-psk", o.mode)
	}
	return d, nil
}

// loopbackOnly refuses an address off this machine: a load tool must never be pointed at
// someone else's server by a typo.
func loopbackOnly(flag, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", flag, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%s %q: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed", flag, addr)
	}
	return nil
}
