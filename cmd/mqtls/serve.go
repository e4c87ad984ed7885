package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

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
	// defaultPerIPBurst lets a gateway behind one address reconnect a handful of devices at once.
	defaultPerIPBurst = 20
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
		str("config", "", "YAML config `file` with any number of listeners (see README); not combined with the listener flags below"),
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
		&cli.IntFlag{Name: "per-ip-burst", Value: defaultPerIPBurst, Usage: "burst of new connections allowed from one source address above --per-ip-rate", EnvVars: envFor("per-ip-burst")},
		&cli.IntFlag{Name: "max-connections-per-identity", Usage: "most sessions one identity may hold; one more gets CONNACK server busy; 0 for no cap", EnvVars: envFor("max-connections-per-identity")},
		str("proxy-protocol", "", "send a PROXY protocol header to the upstream: v1 or v2 (v2 carries the TLS version, cipher and client CN)"),
		list("proxy-protocol-from", "accept a PROXY protocol header from this source `CIDR` (repeatable; behind a load balancer)"),
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
		dur("memory-release-after", defaultMemoryRelease, "after a burst of handshakes, return the memory it used to the OS once none has run for this long (0: never)"),
		dur("busy-poll", 0, "after each event, keep polling sessions in conversation for this long instead of sleeping: lower latency for a CPU's worth of polling (Linux; 0: off)"),
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

// maxBusyPoll bounds --busy-poll: polling longer after each event would hold a CPU nearly
// all the time for a gain that ends once the round trip it waits for is over.
const maxBusyPoll = 100 * time.Millisecond

// serveConfig is everything serve needs, validated.
type serveConfig struct {
	configFile   string // "" when built from flags
	listeners    []listenerSpec
	drainTimeout time.Duration
	memRelease   time.Duration // 0: off
	busyPoll     time.Duration // 0: off
	logFormat    string
	logLevel     zerolog.Level
	admin        adminConfig
}

// serveConfigFrom reads and validates the flags, or the config file --config names. Every
// problem found is reported, each naming the flag (or key) to change.
func serveConfigFrom(c *cli.Context) (serveConfig, error) {
	if file := c.String("config"); file != "" {
		var set []string
		for _, name := range c.FlagNames() {
			if name != "config" && name != "help" && c.IsSet(name) {
				set = append(set, "--"+name)
			}
		}
		if len(set) > 0 {
			return serveConfig{}, fmt.Errorf("--config %s cannot be combined with %s: put those settings in the file", file, strings.Join(set, ", "))
		}
		return loadConfigFile(file)
	}

	cfg := serveConfig{
		drainTimeout: c.Duration("drain-timeout"),
		memRelease:   c.Duration("memory-release-after"),
		busyPoll:     c.Duration("busy-poll"),
		logFormat:    c.String("log-format"),
		admin: adminConfig{
			listen:           c.String("admin-listen"),
			pprof:            c.Bool("admin-pprof"),
			reloadInterval:   c.Duration("reload-interval"),
			revokeTerminates: c.Bool("revoke-terminates"),
			expiryWarning:    c.Duration("expiry-warning"),
		},
	}
	errs := commonProblems(&cfg, c.String("log-level"), func(k string) string {
		return map[string]string{"log.format": "--log-format", "log.level": "--log-level", "drain_timeout": "--drain-timeout", "memory_release_after": "--memory-release-after", "busy_poll": "--busy-poll",
			"admin.listen": "--admin-listen", "admin.pprof": "--admin-pprof", "admin.reload_interval": "--reload-interval",
			"admin.expiry_warning": "--expiry-warning"}[k]
	})

	dur := func(name string) duration { return duration(c.Duration(name)) }
	l := listenerFile{
		Name:     "tcp",
		Listen:   c.String("listen"),
		Upstream: c.String("upstream"),
		TLS: tlsFile{Cert: c.String("cert"), Key: c.String("key"), ClientCA: c.String("client-ca"),
			ClientAuth: c.String("client-auth"), CRLs: c.StringSlice("crl"), MinVersion: c.String("min-tls")},
		PSK: pskFile{File: c.String("psk-file"), Hint: c.String("psk-hint")},
		Policy: policyFile{Identity: c.String("identity"), ClientID: c.String("client-id"),
			ClientIDSeparator: c.String("client-id-separator"), Username: c.String("username"), Password: c.String("password"),
			Allow: c.StringSlice("allow"), Deny: c.StringSlice("deny"), IdentityProperty: c.String("identity-property")},
		Limits: limitsFile{MaxConnections: c.Int("max-connections"), MaxHandshakes: c.Int("max-handshakes"),
			PerIPRate: c.Float64("per-ip-rate"), PerIPBurst: c.Int("per-ip-burst"),
			MaxConnectionsPerIdentity: c.Int("max-connections-per-identity"), MaxConnectSize: c.Int("max-connect-size")},
		Timeouts:      timeoutsFile{Handshake: dur("handshake-timeout"), Connect: dur("connect-timeout"), Dial: dur("dial-timeout")},
		DTLS:          dtlsFile{MaxDatagram: c.Int("dtls-max-datagram")},
		ProxyProtocol: proxyProtocolFile{Send: c.String("proxy-protocol"), AcceptFrom: c.StringSlice("proxy-protocol-from")},
	}
	if c.IsSet("psk-format") {
		l.PSK.Format = c.String("psk-format")
	}
	for _, d := range []string{"handshake-timeout", "connect-timeout", "dial-timeout"} {
		if c.Duration(d) <= 0 {
			errs = append(errs, fmt.Errorf("--%s %v: must be positive", d, c.Duration(d)))
		}
	}
	if c.Duration("dtls-idle-timeout") < 0 {
		errs = append(errs, fmt.Errorf("--dtls-idle-timeout %v: must not be negative (0 turns it off)", c.Duration("dtls-idle-timeout")))
	}
	sp, e := buildListener(l, flagNamer)
	errs = append(errs, e...)
	cfg.listeners = append(cfg.listeners, sp)
	if addr := c.String("dtls-listen"); addr != "" {
		d := l
		d.Name, d.Transport, d.Listen = "dtls", "dtls", addr
		d.ProxyProtocol.AcceptFrom = nil // TCP only; --proxy-protocol-from applies to --listen
		d.TLS.MinVersion = ""
		d.Timeouts.Idle = dur("dtls-idle-timeout")
		dsp, e := buildListener(d, func(k string) string {
			if k == "listen" {
				return "--dtls-listen"
			}
			return flagNamer(k)
		})
		if len(e) > 0 && len(errs) == 0 {
			errs = append(errs, e...)
		}
		if c.Duration("dtls-idle-timeout") == 0 {
			dsp.proxy.IdleTimeout = 0
		}
		dsp.shareWith = sp.name
		cfg.listeners = append(cfg.listeners, dsp)
	}
	return cfg, errors.Join(errs...)
}

func trimPolicy(err error) string { return strings.TrimPrefix(err.Error(), "policy: ") }

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
