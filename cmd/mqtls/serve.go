package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// Defaults of the serve flags that are not a package's own default.
const (
	defaultListen       = ":8883"
	defaultUpstream     = "127.0.0.1:1883"
	defaultDrainTimeout = 30 * time.Second
	// defaultDTLSIdle outlasts MQTT's customary 60 s keep-alive with room for a lost PINGREQ.
	defaultDTLSIdle = 5 * time.Minute
	// defaultReloadInterval notices a rotated Kubernetes Secret within seconds; reading a
	// few small files that often costs nothing.
	defaultReloadInterval = 5 * time.Second
	defaultExpiryWarning  = 30 * 24 * time.Hour
	// readyInterval is how recently the broker must have been reached for /readyz.
	readyInterval = 10 * time.Second
)

// envFor is the environment variable that sets a flag: --client-id is MQTLS_CLIENT_ID.
func envFor(flag string) []string {
	return []string{"MQTLS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))}
}

func serveFlags() []cli.Flag {
	str := func(name, value, usage string) cli.Flag {
		return &cli.StringFlag{Name: name, Value: value, Usage: usage, EnvVars: envFor(name)}
	}
	list := func(name, usage string) cli.Flag {
		return &cli.StringSliceFlag{Name: name, Usage: usage, EnvVars: envFor(name)}
	}
	dur := func(name string, value time.Duration, usage string) cli.Flag {
		return &cli.DurationFlag{Name: name, Value: value, Usage: usage, EnvVars: envFor(name)}
	}
	return []cli.Flag{
		str("listen", defaultListen, "TCP `address` to accept TLS connections on"),
		str("upstream", defaultUpstream, "the broker: `host:port` or unix:/path"),
		str("cert", "", "server certificate chain, PEM `file`"),
		str("key", "", "server private key, PEM `file`"),
		str("psk-file", "", "`file` of pre-shared keys, one identity:key per line; turns TLS-PSK on"),
		str("psk-format", "mosquitto", "syntax of --psk-file: mosquitto (identity:hexkey) or stunnel (PSKsecrets)"),
		str("psk-hint", "", "PSK identity `hint` sent to clients"),
		str("client-ca", "", "PEM `file` of the CAs that issue device certificates; turns client certificates on"),
		str("client-auth", "", "client certificates: none, request or require (default require with --client-ca, else none)"),
		list("crl", "PEM or DER CRL `file` checked on every handshake (repeatable)"),
		str("min-tls", "1.2", "lowest TLS version accepted: 1.2 or 1.3"),
		str("identity", "", "`template` selecting the device's identity: {cn} {o} {ou} {serial} {dns} {uri} {email} {fingerprint} {psk}, with literal text (default {cn}; {psk} with only --psk-file; {cn}{psk} with both)"),
		str("client-id", "off", "bind the client ID to the identity: off, enforce, prefix or rewrite"),
		str("client-id-separator", "/", "between identity and suffix in --client-id prefix"),
		str("username", "keep", "user name forwarded: keep, identity or strip"),
		str("password", "keep", "password forwarded: keep or strip"),
		list("allow", "regular `expression` an identity must match, anchored at both ends (repeatable)"),
		list("deny", "regular `expression` refusing the identities it matches, anchored at both ends (repeatable)"),
		str("identity-property", "", "MQTT 5 user property `name` that carries the identity to the broker"),
		str("dtls-listen", "", "UDP `address` to accept DTLS connections on (off when empty); same certificates, PSKs and policy as --listen"),
		&cli.IntFlag{Name: "dtls-max-datagram", Value: datagram.DefaultMaxDatagram, Usage: "largest datagram sent to DTLS devices, in `bytes`; whole MQTT packets are packed up to it", EnvVars: envFor("dtls-max-datagram")},
		dur("dtls-idle-timeout", defaultDTLSIdle, "close a DTLS session after this long without a datagram from the device (UDP has no FIN)"),
		&cli.IntFlag{Name: "max-connections", Usage: "most open connections per listener, handshakes included; 0 for no cap", EnvVars: envFor("max-connections")},
		&cli.IntFlag{Name: "max-handshakes", Usage: "most handshakes in progress per listener; 0 for no cap", EnvVars: envFor("max-handshakes")},
		&cli.Float64Flag{Name: "per-ip-rate", Usage: "new connections per second allowed from one source address (token bucket); 0 for no limit", EnvVars: envFor("per-ip-rate")},
		&cli.IntFlag{Name: "per-ip-burst", Value: 20, Usage: "burst of new connections allowed from one source address above --per-ip-rate", EnvVars: envFor("per-ip-burst")},
		&cli.IntFlag{Name: "max-connections-per-identity", Usage: "most sessions one identity may hold; one more gets CONNACK server busy; 0 for no cap", EnvVars: envFor("max-connections-per-identity")},
		str("admin-listen", "", "TCP `address` for /metrics, /healthz and /readyz (off when empty), e.g. 127.0.0.1:9090"),
		&cli.BoolFlag{Name: "admin-pprof", Usage: "also serve /debug/pprof on --admin-listen", EnvVars: envFor("admin-pprof")},
		dur("reload-interval", defaultReloadInterval, "how often certificate, CA, CRL and PSK files are checked for changes (0: only on SIGHUP)"),
		&cli.BoolFlag{Name: "revoke-terminates", Usage: "on reload, close sessions whose PSK identity was removed or whose certificate a CRL now revokes", EnvVars: envFor("revoke-terminates")},
		dur("expiry-warning", defaultExpiryWarning, "warn (daily) when a certificate, CA or CRL expires within this long"),
		dur("handshake-timeout", proxy.DefaultHandshakeTimeout, "time allowed for the TLS handshake"),
		dur("connect-timeout", proxy.DefaultConnectTimeout, "time allowed for the CONNECT packet after the handshake"),
		dur("dial-timeout", proxy.DefaultDialTimeout, "time allowed to connect to the upstream broker"),
		&cli.IntFlag{Name: "max-connect-size", Value: proxy.DefaultMaxConnectSize, Usage: "largest CONNECT packet accepted, in `bytes`", EnvVars: envFor("max-connect-size")},
		dur("drain-timeout", defaultDrainTimeout, "on SIGTERM or SIGINT, time open sessions get to end before they are closed"),
		str("log-format", "json", "log format: json or console"),
		str("log-level", "info", "log level: debug, info, warn or error"),
	}
}

func serveCommand(stdout io.Writer, sig signals) *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "accept TLS sessions and proxy them to the broker",
		Description: "Every flag can also be set with an environment variable: --client-id is MQTLS_CLIENT_ID.\n" +
			"A list flag (--crl, --allow, --deny) set from the environment takes one value.",
		Flags: serveFlags(),
		Action: func(c *cli.Context) error {
			cfg, err := serveConfigFrom(c)
			if err != nil {
				return err
			}
			return serve(c.Context, cfg, stdout, sig)
		},
	}
}

// adminConfig is the operations side of serve.
type adminConfig struct {
	listen           string
	pprof            bool
	reloadInterval   time.Duration
	revokeTerminates bool
	expiryWarning    time.Duration
}

// serveConfig is everything serve needs, validated.
type serveConfig struct {
	listen       string
	tls          handshake.TLSConfig // CertFile "" means no certificate handshakes
	pskFile      string              // "" means no PSK handshakes
	pskFormat    handshake.PSKFormat
	pskHint      string
	dtlsListen   string
	admin        adminConfig
	policy       policy.Config
	proxy        proxy.Config // Handshaker, Policy and Logger are set by serve
	drainTimeout time.Duration
	logFormat    string
	logLevel     zerolog.Level
}

// serveConfigFrom reads and validates the flags. Every problem found is reported, each
// naming the flag to change.
func serveConfigFrom(c *cli.Context) (serveConfig, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	cfg := serveConfig{
		listen:       c.String("listen"),
		drainTimeout: c.Duration("drain-timeout"),
		logFormat:    c.String("log-format"),
	}

	// TLS.
	cfg.tls = handshake.TLSConfig{
		CertFile:     c.String("cert"),
		KeyFile:      c.String("key"),
		ClientCAFile: c.String("client-ca"),
		CRLFiles:     c.StringSlice("crl"),
	}
	cfg.pskFile, cfg.pskHint = c.String("psk-file"), c.String("psk-hint")
	var err error
	if cfg.pskFormat, err = handshake.ParsePSKFormat(c.String("psk-format")); err != nil {
		bad("--psk-format: %w", err)
	}
	if cfg.pskFile == "" && (c.IsSet("psk-hint") || c.IsSet("psk-format")) {
		bad("--psk-hint and --psk-format need --psk-file: the file of device keys")
	}
	switch {
	case cfg.tls.CertFile == "" && cfg.tls.KeyFile == "" && cfg.pskFile == "":
		bad("--cert and --key are required (the server certificate chain and its private key, PEM files), or --psk-file for TLS-PSK")
	case cfg.tls.CertFile == "" && cfg.tls.KeyFile == "":
		if mutual := c.String("client-ca"); mutual != "" {
			bad("--client-ca needs --cert and --key: a PSK-only listener has no certificate handshakes")
		}
	case cfg.tls.CertFile == "":
		bad("--key is set but --cert is not: give the certificate that goes with the key")
	case cfg.tls.KeyFile == "":
		bad("--cert is set but --key is not: give the certificate's private key")
	}
	mutual := cfg.tls.ClientCAFile != ""
	switch auth := c.String("client-auth"); {
	case auth == "" && mutual:
		cfg.tls.ClientAuth = handshake.ClientAuthRequire
	case auth == "":
		cfg.tls.ClientAuth = handshake.ClientAuthNone
	default:
		a, err := handshake.ParseClientAuth(auth)
		switch {
		case err != nil:
			bad("--client-auth: %w", err)
		case a != handshake.ClientAuthNone && !mutual:
			bad("--client-auth %s needs --client-ca: the CA file that issues device certificates", auth)
		case a == handshake.ClientAuthNone && mutual:
			bad("--client-auth none with --client-ca: drop --client-ca, or use --client-auth request or require")
		}
		cfg.tls.ClientAuth = a
	}
	if len(cfg.tls.CRLFiles) > 0 && !mutual {
		bad("--crl needs --client-ca: CRLs are checked against the CAs that issue device certificates")
	}
	switch v := c.String("min-tls"); v {
	case "1.2":
		cfg.tls.MinVersion = tls.VersionTLS12
	case "1.3":
		cfg.tls.MinVersion = tls.VersionTLS13
	default:
		bad("--min-tls %q: want 1.2 or 1.3", v)
	}

	// Binding policy.
	identity := c.String("identity")
	if identity == "" {
		switch {
		case cfg.pskFile != "" && cfg.tls.CertFile == "":
			identity = "{psk}"
		case cfg.pskFile != "":
			identity = "{cn}{psk}"
		default:
			identity = "{cn}"
		}
	}
	cfg.policy = policy.Config{
		Identity:          identity,
		ClientIDSeparator: c.String("client-id-separator"),
		Allow:             c.StringSlice("allow"),
		Deny:              c.StringSlice("deny"),
		IdentityProperty:  c.String("identity-property"),
	}
	if cfg.policy.ClientID, err = policy.ParseClientIDMode(c.String("client-id")); err != nil {
		bad("--client-id: %s", trimPolicy(err))
	}
	if cfg.policy.Username, err = policy.ParseUsernameMode(c.String("username")); err != nil {
		bad("--username: %s", trimPolicy(err))
	}
	if cfg.policy.Password, err = policy.ParsePasswordMode(c.String("password")); err != nil {
		bad("--password: %s", trimPolicy(err))
	}
	tmpl, err := policy.ParseTemplate(cfg.policy.Identity)
	if err != nil {
		bad("--identity %q: %s", cfg.policy.Identity, trimPolicy(err))
	}
	for _, l := range []struct {
		flag  string
		exprs []string
	}{{"--allow", cfg.policy.Allow}, {"--deny", cfg.policy.Deny}} {
		for _, e := range l.exprs {
			if _, err := regexp.Compile(e); err != nil || e == "" {
				if err == nil {
					err = errors.New("empty expression; write ^$ to match an empty identity")
				}
				bad("%s %q: %v", l.flag, e, err)
			}
		}
	}
	if len(errs) == 0 {
		// Only now, so that its messages do not repeat the ones above.
		if _, err := policy.New(cfg.policy); err != nil {
			bad("%s", trimPolicy(err))
		}
	}
	if err == nil && len(errs) == 0 {
		errs = append(errs, identitySourceProblems(c, cfg, tmpl)...)
	}

	// Proxy.
	cfg.proxy = proxy.Config{
		Name:             "tcp",
		Upstream:         c.String("upstream"),
		HandshakeTimeout: c.Duration("handshake-timeout"),
		ConnectTimeout:   c.Duration("connect-timeout"),
		DialTimeout:      c.Duration("dial-timeout"),
		MaxConnectSize:   c.Int("max-connect-size"),
		MaxConnections:   c.Int("max-connections"),
		MaxHandshakes:    c.Int("max-handshakes"),
		IdleTimeout:      c.Duration("dtls-idle-timeout"), // used on the DTLS listener only
		MaxDatagram:      c.Int("dtls-max-datagram"),
	}
	cfg.proxy.PerIPRate = c.Float64("per-ip-rate")
	cfg.proxy.PerIPBurst = c.Int("per-ip-burst")
	cfg.proxy.MaxPerIdentity = c.Int("max-connections-per-identity")
	if cfg.proxy.PerIPRate < 0 {
		bad("--per-ip-rate %v: must not be negative (0 means no limit)", cfg.proxy.PerIPRate)
	}
	if c.Int("per-ip-burst") < 1 {
		bad("--per-ip-burst %d: must be at least 1", c.Int("per-ip-burst"))
	}
	if cfg.proxy.MaxPerIdentity < 0 {
		bad("--max-connections-per-identity %d: must not be negative (0 means no cap)", cfg.proxy.MaxPerIdentity)
	}
	cfg.admin = adminConfig{
		listen:           c.String("admin-listen"),
		pprof:            c.Bool("admin-pprof"),
		reloadInterval:   c.Duration("reload-interval"),
		revokeTerminates: c.Bool("revoke-terminates"),
		expiryWarning:    c.Duration("expiry-warning"),
	}
	if cfg.admin.listen != "" {
		if _, _, err := net.SplitHostPort(cfg.admin.listen); err != nil {
			bad("--admin-listen %q: want host:port or :port: %v", cfg.admin.listen, err)
		}
	}
	if cfg.admin.pprof && cfg.admin.listen == "" {
		bad("--admin-pprof needs --admin-listen: the address to serve it on")
	}
	if cfg.admin.reloadInterval < 0 {
		bad("--reload-interval %v: must not be negative (0 means only on SIGHUP)", cfg.admin.reloadInterval)
	}
	if cfg.admin.expiryWarning < 0 {
		bad("--expiry-warning %v: must not be negative", cfg.admin.expiryWarning)
	}
	cfg.dtlsListen = c.String("dtls-listen")
	if cfg.dtlsListen != "" {
		if _, _, err := net.SplitHostPort(cfg.dtlsListen); err != nil {
			bad("--dtls-listen %q: want host:port or :port: %v", cfg.dtlsListen, err)
		}
	}
	if n := cfg.proxy.MaxDatagram; n < 64 || n > datagram.MaxRecord {
		bad("--dtls-max-datagram %d: want 64 to %d bytes", n, datagram.MaxRecord)
	}
	if cfg.proxy.IdleTimeout < 0 {
		bad("--dtls-idle-timeout %v: must not be negative (0 turns it off)", cfg.proxy.IdleTimeout)
	}
	for _, f := range []string{"max-connections", "max-handshakes"} {
		if c.Int(f) < 0 {
			bad("--%s %d: must not be negative (0 means no cap)", f, c.Int(f))
		}
	}
	if err := proxy.ValidateUpstream(cfg.proxy.Upstream); err != nil {
		bad("--upstream: %w", err)
	}
	for _, d := range []string{"handshake-timeout", "connect-timeout", "dial-timeout"} {
		if c.Duration(d) <= 0 {
			bad("--%s %v: must be positive", d, c.Duration(d))
		}
	}
	if cfg.drainTimeout < 0 {
		bad("--drain-timeout %v: must not be negative", cfg.drainTimeout)
	}
	if n := c.Int("max-connect-size"); n < 16 || n > policy.MaxRemainingLength {
		bad("--max-connect-size %d: want 16 to %d bytes", n, policy.MaxRemainingLength)
	}
	if _, _, err := net.SplitHostPort(cfg.listen); err != nil {
		bad("--listen %q: want host:port or :port: %v", cfg.listen, err)
	}

	// Logs.
	if cfg.logFormat != "json" && cfg.logFormat != "console" {
		bad("--log-format %q: want json or console", cfg.logFormat)
	}
	if cfg.logLevel, err = zerolog.ParseLevel(c.String("log-level")); err != nil || c.String("log-level") == "" {
		bad("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	return cfg, errors.Join(errs...)
}

// identitySourceProblems refuses a binding the listener can never satisfy: one that needs
// an identity when no handshake of this listener can yield one.
func identitySourceProblems(c *cli.Context, cfg serveConfig, tmpl policy.Template) []error {
	var needs []string
	if cfg.policy.ClientID != policy.ClientIDOff {
		needs = append(needs, "--client-id "+cfg.policy.ClientID.String())
	}
	if cfg.policy.Username == policy.UsernameIdentity {
		needs = append(needs, "--username identity")
	}
	if len(cfg.policy.Allow) > 0 {
		needs = append(needs, "--allow")
	}
	if cfg.policy.IdentityProperty != "" {
		needs = append(needs, "--identity-property")
	}
	if len(needs) == 0 {
		return nil
	}
	what := strings.Join(needs, " and ")
	certs, psks := cfg.tls.ClientCAFile != "", cfg.pskFile != ""
	kinds := tmpl.Kinds()
	switch {
	case !certs && !psks:
		return []error{fmt.Errorf("%s needs an identity, but without --client-ca or --psk-file no device proves one: add --client-ca (device certificates) or --psk-file (pre-shared keys), or drop %s", what, what)}
	case !(certs && slices.Contains(kinds, handshake.KindCertificate)) && !(psks && slices.Contains(kinds, handshake.KindPSK)):
		have := "certificates (--client-ca)"
		fields := "{cn}, {uri}, {dns}, ..."
		if !certs {
			have, fields = "pre-shared keys (--psk-file)", "{psk}"
		}
		return []error{fmt.Errorf("--identity %q names no field the devices of this listener have, so %s can never be satisfied: its devices prove %s; use %s", cfg.policy.Identity, what, have, fields)}
	}
	return nil
}

func trimPolicy(err error) string { return strings.TrimPrefix(err.Error(), "policy: ") }

// serve runs the listeners until ctx is cancelled, then drains them: /readyz turns false
// at once, the listeners stop accepting, and sessions get the drain timeout to end (or
// less, if sig.hardStop fires: a second SIGTERM).
func serve(ctx context.Context, cfg serveConfig, stdout io.Writer, sig signals) error {
	log := newLogger(stdout, cfg.logFormat, cfg.logLevel)

	hs, err := newHandshaker(cfg)
	if err != nil {
		return err
	}
	pol, err := policy.New(cfg.policy)
	if err != nil {
		return err
	}
	m := newMetrics()
	ready := &readiness{interval: readyInterval}
	hooks := m.hooks()
	dialed := hooks.UpstreamDial
	hooks.UpstreamDial = func(l string, err error) {
		dialed(l, err)
		if err == nil {
			ready.upstreamOK.Store(time.Now().UnixNano())
		}
	}

	type listener struct {
		srv *proxy.Server
		ln  net.Listener
	}
	var listeners []listener
	defer func() {
		for _, l := range listeners {
			l.ln.Close()
		}
	}()

	pc := cfg.proxy
	pc.Handshaker, pc.Policy, pc.Logger, pc.Hooks = hs.Handshaker, pol, log, hooks
	pc.IdleTimeout = 0 // TCP sessions end with FIN; the broker's keep-alive judges idleness
	srv, err := proxy.New(pc)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	listeners = append(listeners, listener{srv, ln})

	if cfg.dtlsListen != "" {
		dln, dtlsSrv, err := handshake.ListenDTLS(cfg.dtlsListen, handshake.DTLSConfig{TLS: hs.tls, PSK: hs.psk})
		if err != nil {
			return fmt.Errorf("--dtls-listen: %w", err)
		}
		dc := cfg.proxy
		dc.Name, dc.Datagram = "dtls", true
		dc.Handshaker, dc.Policy, dc.Logger, dc.Hooks = dtlsSrv, pol, log, hooks
		dsrv, err := proxy.New(dc)
		if err != nil {
			dln.Close()
			return err
		}
		listeners = append(listeners, listener{dsrv, dln})
	}

	var admin *http.Server
	var adminLn net.Listener
	if cfg.admin.listen != "" {
		if adminLn, err = net.Listen("tcp", cfg.admin.listen); err != nil {
			return fmt.Errorf("%w: %w", errAdminListen, err)
		}
		admin = adminServer(m, ready, cfg.admin.pprof)
	}

	bg, stopBG := context.WithCancel(context.Background())
	var bgDone sync.WaitGroup
	defer func() {
		stopBG()
		bgDone.Wait()
	}()
	rl := &reloader{log: log, m: m, tls: hs.tls, revokeTerminates: cfg.admin.revokeTerminates}
	if hs.psk != nil {
		rl.psk = hs.psk.Store()
	}
	for _, l := range listeners {
		rl.servers = append(rl.servers, l.srv)
	}
	rl.snapshot()
	bgDone.Add(1)
	go func() {
		defer bgDone.Done()
		rl.run(bg, cfg.admin.reloadInterval, sig.hup, cfg.admin.expiryWarning)
	}()

	ev := log.Info().Str("version", version).Str("upstream", pc.Upstream).
		Str("client_id", cfg.policy.ClientID.String()).Str("identity", pol.Template().String())
	if cfg.tls.CertFile != "" {
		ev = ev.Str("client_auth", cfg.tls.ClientAuth.String())
	}
	if cfg.pskFile != "" {
		ev = ev.Str("psk_file", cfg.pskFile).Int("psk_identities", hs.psks)
	}
	ev.Msg("starting")

	serveErr := make(chan error, len(listeners)+1)
	for _, l := range listeners {
		go func() { serveErr <- l.srv.Serve(l.ln) }()
	}
	ready.bound.Store(true)
	if admin != nil {
		log.Info().Str("addr", adminLn.Addr().String()).Msg("admin listening")
		go func() {
			if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("%w: %w", errAdminListen, err)
			}
		}()
		bgDone.Add(1)
		go func() {
			defer bgDone.Done()
			ready.probeUpstream(bg, pc.Upstream, orDefault(pc.DialTimeout, proxy.DefaultDialTimeout))
		}()
	}

	var failed error
	select {
	case err := <-serveErr:
		// Serve only returns early when a listener fails for good.
		failed = fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	ready.draining.Store(true)
	log.Info().Dur("drain_timeout", cfg.drainTimeout).Msg("shutting down: draining connections")
	dctx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
	defer cancel()
	go func() {
		select {
		case <-sig.hardStop:
			log.Info().Msg("second signal: closing all connections now")
			cancel()
		case <-dctx.Done():
		}
	}()
	done := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { done <- l.srv.Shutdown(dctx) }()
	}
	for range listeners {
		if err := <-done; err != nil {
			log.Info().Msg("drain ended: remaining connections closed")
		}
	}
	if admin != nil {
		admin.Close()
	}
	log.Info().Msg("stopped")
	return failed
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// handshakers is what newHandshaker built: the listener's handshaker and, for the start-up
// log line, how many PSK identities it loaded.
type handshakers struct {
	proxy.Handshaker
	tls  *handshake.TLSServer // nil without certificates
	psk  *handshake.PSKServer // nil without PSKs
	psks int
}

// newHandshaker loads the files cfg names and returns the listener's handshaker:
// crypto/tls, TLS-PSK, or both behind a ClientHello router.
func newHandshaker(cfg serveConfig) (handshakers, error) {
	var tlsSrv *handshake.TLSServer
	var pskSrv *handshake.PSKServer
	var out handshakers
	if cfg.tls.CertFile != "" {
		var err error
		if tlsSrv, err = handshake.NewTLSServer(cfg.tls); err != nil {
			return out, err
		}
		out.Handshaker = tlsSrv
	}
	if cfg.pskFile != "" {
		store, err := handshake.LoadPSKFile(cfg.pskFile, cfg.pskFormat)
		if err != nil {
			return out, fmt.Errorf("--psk-file: %w", err)
		}
		if pskSrv, err = handshake.NewPSKServer(store, cfg.pskHint); err != nil {
			return out, fmt.Errorf("--psk-hint: %w", err)
		}
		out.Handshaker, out.psks = pskSrv, store.Len()
	}
	if tlsSrv != nil && pskSrv != nil {
		out.Handshaker = &handshake.Mixed{TLS: tlsSrv, PSK: pskSrv}
	}
	out.tls, out.psk = tlsSrv, pskSrv
	return out, nil
}

func newLogger(w io.Writer, format string, level zerolog.Level) zerolog.Logger {
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
