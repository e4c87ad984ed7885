package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
)

// Handshaker secures an accepted connection and says who the peer is. The caller has set
// the connection's deadline; ctx is cancelled when the server shuts down.
type Handshaker interface {
	Handshake(ctx context.Context, c net.Conn) (net.Conn, handshake.Identity, error)
}

// Config is one listener's behaviour. Zero durations and sizes mean the documented defaults.
type Config struct {
	Name       string // listener name in logs; default "tcp"
	Upstream   string // broker address: "host:port" or "unix:/path"
	Handshaker Handshaker
	Policy     *policy.Policy

	HandshakeTimeout time.Duration // default 10s
	ConnectTimeout   time.Duration // first packet after the handshake; default 10s
	DialTimeout      time.Duration // upstream dial; default 5s
	// CloseTimeout bounds how long the other direction may run once one side has ended;
	// default 5s.
	CloseTimeout   time.Duration
	MaxConnectSize int // largest CONNECT accepted, fixed header included; default 64 KiB
	// IdleTimeout closes a session when the device sends nothing for this long; 0 means
	// never (the broker's keep-alive judges TCP sessions). DTLS needs it: UDP has no FIN.
	IdleTimeout time.Duration

	// Datagram says the handshaker yields message-oriented conns (DTLS): MQTT packets are
	// then framed as package datagram describes, with datagrams toward the device of at
	// most MaxDatagram bytes (default datagram.DefaultMaxDatagram).
	Datagram    bool
	MaxDatagram int

	// MaxConnections caps open connections, handshakes included; 0 means no cap. A
	// connection over it is closed at accept, before any handshake work.
	MaxConnections int
	// MaxHandshakes caps handshakes in progress; 0 means no cap. A connection that would
	// exceed it is closed at once, before its handshake starts.
	MaxHandshakes int
	// PerIPRate and PerIPBurst limit new connections per source address (a token bucket:
	// PerIPRate per second, bursts of PerIPBurst); PerIPRate 0 means no limit. Excess is
	// closed at accept.
	PerIPRate  float64
	PerIPBurst int
	// MaxPerIdentity caps the forwarded sessions one identity may hold; 0 means no cap.
	// One more is refused with CONNACK "server busy" (0x89; 0x03 on 3.x).
	MaxPerIdentity int

	// TrustProxyFrom lists the sources (load balancers) whose PROXY protocol v1/v2 header is
	// read: the client it names is then the remote address for logs, limits and the header
	// sent upstream. A connection from them must start with a header: without one it is
	// refused (ReasonProxyHeaderMissing), and a LOCAL header (v1 UNKNOWN), a health check,
	// passes as the balancer itself. From anyone else a header is not read, so it fails the
	// handshake.
	TrustProxyFrom []netip.Prefix
	// SendProxyHeader is "v1" or "v2" to send a PROXY header to the upstream before the
	// CONNECT ("" for none); v2 carries the TLS version, cipher and client CN as TLVs.
	SendProxyHeader string

	// Uplink makes this a client-mode listener: local clients connect in plain text
	// (Handshaker Plain) and each session goes to Upstream through Uplink.Dial, secured
	// toward the remote broker. nil is server mode, a plain dial.
	Uplink Uplink
	// Rewrite, in client mode, rewrites each local client's CONNECT from templates over the
	// uplink's credential (see policy.Rewrite); nil forwards it under Policy.
	Rewrite *policy.Rewrite
	// SNI, when set, chooses each connection's tenant by its ClientHello's server name
	// (see SNI); this Config's limits apply at accept, the tenant's from the handshake on.
	SNI *SNI

	Hooks  Hooks
	Logger zerolog.Logger
	// NoAudit turns off the audit line of each connection. Otherwise it is written at info
	// level whatever Logger's level is.
	NoAudit bool
}

// Defaults, exported so the CLI's help and the README quote the same numbers.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultDialTimeout      = 5 * time.Second
	DefaultCloseTimeout     = 5 * time.Second
	DefaultMaxConnectSize   = 64 << 10
)

// connIDs numbers connections across every Server of the process, so a conn_id names one
// connection in the whole log, not one per listener.
var connIDs atomic.Uint64

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (c *Config) name() string {
	if c.Name == "" {
		return "tcp"
	}
	return c.Name
}

func (c *Config) maxConnectSize() int {
	if c.MaxConnectSize > 0 {
		return c.MaxConnectSize
	}
	return DefaultMaxConnectSize
}

// Validate reports a Config that cannot serve.
func (c *Config) Validate() error {
	switch {
	case c.Handshaker == nil:
		return errors.New("proxy: no handshaker configured")
	case c.Policy == nil:
		return errors.New("proxy: no policy configured")
	}
	if _, _, err := parseUpstream(c.Upstream); err != nil {
		return err
	}
	switch c.SendProxyHeader {
	case "", "v1", "v2":
	default:
		return fmt.Errorf("proxy: SendProxyHeader %q: want v1, v2 or empty", c.SendProxyHeader)
	}
	if c.Rewrite != nil && c.Uplink == nil {
		return errors.New("proxy: Rewrite is for client mode: it needs an Uplink")
	}
	if c.SNI != nil {
		return c.SNI.validate()
	}
	return nil
}

// Server serves one listener. Create it with New; it is safe for concurrent use.
type Server struct {
	cfg     *Config // replaced whole by Update, under mu
	cfgName string  // cfg.name(), which Update cannot change
	log     zerolog.Logger

	ctx    context.Context // cancelled by Shutdown once draining ends
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	draining  bool
	wg        sync.WaitGroup

	handshakes atomic.Int64
	perIP      *ipLimiter // nil without PerIPRate
	identities identityCounter
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       &cfg,
		cfgName:   cfg.name(),
		log:       cfg.Logger.With().Str(fieldListener, cfg.name()).Logger(),
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	if cfg.PerIPRate > 0 {
		s.perIP = newIPLimiter(cfg.PerIPRate, cfg.PerIPBurst)
	}
	return s, nil
}

// ErrServerClosed is returned by Serve once Shutdown has been called.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts connections on ln until Shutdown. Temporary accept errors (such as running
// out of file descriptors) are logged and retried with a backoff rather than ending it.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	s.log.Info().Str(fieldAddr, ln.Addr().String()).Msg("listening")

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isDraining() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Any other accept error (EMFILE, ECONNABORTED, ...) is transient from our point
			// of view: back off like net/http does and keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error().Err(err).Str("retry_in", backoff.String()).Msg("accepting connection")
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		cn := s.newConn(c)
		if cn == nil {
			c.Close()
			continue
		}
		go cn.serve()
	}
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *Server) newConn(c net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil
	}
	now := time.Now()
	reason := ""
	switch {
	case s.cfg.MaxConnections > 0 && len(s.conns) >= s.cfg.MaxConnections:
		reason = ReasonMaxConnections
	case s.perIP != nil && !trustsProxy(s.cfg.TrustProxyFrom, c.RemoteAddr()) && !s.perIP.allow(c.RemoteAddr(), now):
		reason = ReasonPerIPRate
	}
	if reason != "" {
		if h := s.cfg.Hooks.Refused; h != nil { // before the log line, as for the audit line
			h(s.cfg.name(), reason)
		}
		s.log.Debug().Str(fieldRemote, c.RemoteAddr().String()).Str(fieldReason, reason).Msg("connection refused at accept")
		return nil
	}
	cn := &conn{srv: s, cfg: s.cfg, device: c, id: connIDs.Add(1), start: now}
	s.conns[cn] = struct{}{}
	s.wg.Add(1)
	if h := s.cfg.Hooks.Opened; h != nil {
		h(s.cfg.name())
	}
	return cn
}

func (s *Server) forget(cn *conn) {
	s.mu.Lock()
	delete(s.conns, cn)
	s.mu.Unlock()
	s.wg.Done()
}

// Update makes new connections use cfg: a changed policy, handshaker, upstream, timeouts or
// limits. Connections already accepted keep the configuration they started with. The
// listener name must not change.
func (s *Server) Update(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cfg.name() != s.cfg.name() {
		return fmt.Errorf("proxy: listener %q cannot be renamed to %q", s.cfg.name(), cfg.name())
	}
	if cfg.PerIPRate != s.cfg.PerIPRate || cfg.PerIPBurst != s.cfg.PerIPBurst {
		s.perIP = nil
		if cfg.PerIPRate > 0 {
			s.perIP = newIPLimiter(cfg.PerIPRate, cfg.PerIPBurst)
		}
	}
	s.cfg = &cfg
	return nil
}

// CloseMatching closes the sessions whose identity match reports true, for instance those
// authenticated by a PSK that was just removed or a certificate just revoked, and returns
// how many it closed.
func (s *Server) CloseMatching(match func(handshake.Identity) bool) int {
	return s.closeMatching("", match)
}

// closeMatching is CloseMatching for the sessions of one SNI tenant ("" for the
// listener's own): each is judged by the files of the entry that authenticated it.
func (s *Server) closeMatching(tenant string, match func(handshake.Identity) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for cn := range s.conns {
		if id, ok := cn.identityIfSecured(); ok && cn.tenantOf() == tenant && match(id) {
			cn.revoke()
			n++
		}
	}
	return n
}

// Shutdown stops accepting, lets open connections finish until ctx is done, then closes
// the rest and waits for their goroutines. It returns ctx.Err() if it had to close any.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.conns)
	for cn := range s.conns {
		cn.abort()
	}
	s.mu.Unlock()
	s.log.Info().Int("open_connections", n).Msg("drain timeout: closing remaining connections")
	s.cancel()
	<-done
	return ctx.Err()
}
