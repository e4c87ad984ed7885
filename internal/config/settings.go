package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/proxy"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// Defaults that are not a package's own default.
const (
	DefaultListen       = ":8883"
	DefaultUpstream     = "127.0.0.1:1883"
	DefaultDrainTimeout = 30 * time.Second
	// DefaultDTLSIdle outlasts MQTT's customary 60 s keep-alive with room for a lost PINGREQ.
	DefaultDTLSIdle = 5 * time.Minute
	// DefaultReloadInterval notices a rotated Kubernetes Secret within seconds; reading a
	// few small files that often costs nothing.
	DefaultReloadInterval = 5 * time.Second
	DefaultExpiryWarning  = 30 * 24 * time.Hour
	// DefaultPerIPBurst lets a gateway behind one address reconnect a handful of devices at once.
	DefaultPerIPBurst = 20
	// DefaultMemoryRelease is how long handshakes must have stopped before the memory a
	// burst of them used is given back (see internal/supervisor's memRelease).
	DefaultMemoryRelease = 2 * time.Second
	// MaxBusyPoll bounds busy_poll: polling longer after each event would hold a CPU nearly
	// all the time for a gain that ends once the round trip it waits for is over.
	MaxBusyPoll = 100 * time.Millisecond
)

// Config is everything serve needs, validated.
type Config struct {
	ConfigFile   string // "" when built from flags
	Listeners    []ListenerSpec
	DrainTimeout time.Duration
	MemRelease   time.Duration // 0: off
	BusyPoll     time.Duration // 0: off
	LogFormat    string        // "json", "console" or "auto": console on a terminal
	LogLevel     zerolog.Level
	// Audit writes the audit line of every connection whatever LogLevel is.
	Audit bool
	Admin AdminConfig
}

// AdminConfig is the operations side of serve.
type AdminConfig struct {
	Listen           string
	Pprof            bool
	ReloadInterval   time.Duration
	RevokeTerminates bool
	ExpiryWarning    time.Duration
	// CRLExpiryWarning is ExpiryWarning for CRLs (handshake.DefaultCRLWarnWindow).
	CRLExpiryWarning time.Duration
}

// Scope says where a setting's key lives in the config file.
type Scope int

const (
	// TopLevel keys sit at the top of the file ("admin.listen").
	TopLevel Scope = iota
	// InListener keys sit in each entry of listeners ("tls.cert").
	InListener
	// FlagOnly settings have no key: they exist on the command line only.
	FlagOnly
)

// Setting is one of serve's settings: its flag, the key the config file spells it with,
// its default and its help text. Settings is the only list of them: serve's flags are
// built from it, the flags fill the same File the YAML does, error messages name a key's
// flag from it, and README.md's flag table is checked against it.
type Setting struct {
	Flag  string // without "--"; its environment variable is EnvVar(Flag)
	Scope Scope
	Key   string // the key path in the file, below a listener for InListener
	// Default is the flag's default, and its Go type is the flag's type: string,
	// []string (repeatable), int, float64, bool or time.Duration.
	Default any
	Usage   string
	// DTLSOnly fills the key of the DTLS listener --dtls-listen adds, not --listen's.
	DTLSOnly bool
}

// Settings are serve's (and check's) flags, in the order --help lists them. To add a
// setting, add its field (with its yaml tag) to File or Listener, one entry here, and a
// row to README.md's flag table and config reference; the tests say what is missing.
var Settings = []Setting{
	{Flag: "config", Scope: FlagOnly, Default: "", Usage: "YAML config `file` with any number of listeners (see README); not combined with the listener flags below"},
	{Flag: "listen", Scope: InListener, Key: "listen", Default: DefaultListen, Usage: "TCP `address` to accept TLS connections on"},
	{Flag: "upstream", Scope: InListener, Key: "upstream", Default: DefaultUpstream, Usage: "the broker: `host:port` or unix:/path"},
	{Flag: "cert", Scope: InListener, Key: "tls.cert", Default: "", Usage: "server certificate chain, PEM `file`"},
	{Flag: "key", Scope: InListener, Key: "tls.key", Default: "", Usage: "server private key, PEM `file`"},
	{Flag: "psk-file", Scope: InListener, Key: "psk.file", Default: "", Usage: "`file` of pre-shared keys, one identity:key per line; turns TLS-PSK on"},
	{Flag: "psk-format", Scope: InListener, Key: "psk.format", Default: "mosquitto", Usage: "syntax of --psk-file: mosquitto (identity:hexkey) or stunnel (PSKsecrets)"},
	{Flag: "psk-hint", Scope: InListener, Key: "psk.hint", Default: "", Usage: "PSK identity `hint` sent to clients"},
	{Flag: "client-ca", Scope: InListener, Key: "tls.client_ca", Default: "", Usage: "PEM `file` of the CAs that issue device certificates; turns client certificates on"},
	{Flag: "client-auth", Scope: InListener, Key: "tls.client_auth", Default: "", Usage: "client certificates: none, request or require (default require with --client-ca, else none)"},
	{Flag: "crl", Scope: InListener, Key: "tls.crls", Default: []string(nil), Usage: "PEM or DER CRL `file` checked on every handshake (repeatable)"},
	{Flag: "min-tls", Scope: InListener, Key: "tls.min_version", Default: "1.2", Usage: "lowest TLS version accepted: 1.2 or 1.3"},
	{Flag: "identity", Scope: InListener, Key: "policy.identity", Default: "", Usage: "`template` selecting the device's identity: {cn} {o} {ou} {serial} {dns} {uri} {email} {fingerprint} {name} {psk}, with literal text (default: {cn} with --client-ca, {name} with --client-keys, {psk} with --psk-file; with several, each after the first behind a prefix: {cn}psk-{psk})"},
	{Flag: "client-id", Scope: InListener, Key: "policy.client_id", Default: "off", Usage: "bind the client ID to the identity: off, enforce, prefix or rewrite"},
	{Flag: "client-id-separator", Scope: InListener, Key: "policy.client_id_separator", Default: "/", Usage: "between identity and suffix in --client-id prefix"},
	{Flag: "username", Scope: InListener, Key: "policy.username", Default: "keep", Usage: "user name forwarded: keep, identity or strip"},
	{Flag: "password", Scope: InListener, Key: "policy.password", Default: "keep", Usage: "password forwarded: keep or strip"},
	{Flag: "allow", Scope: InListener, Key: "policy.allow", Default: []string(nil), Usage: "regular `expression` an identity must match, anchored at both ends (repeatable)"},
	{Flag: "deny", Scope: InListener, Key: "policy.deny", Default: []string(nil), Usage: "regular `expression` refusing the identities it matches, anchored at both ends (repeatable)"},
	{Flag: "identity-property", Scope: InListener, Key: "policy.identity_property", Default: "", Usage: "MQTT 5 user property `name` that carries the identity to the broker"},
	// Pinned keys, CRL grace, identity rendering and TLS 1.3 PSK (#14, #15).
	{Flag: "client-keys", Scope: InListener, Key: "tls.client_keys", Default: "", Usage: "`file` of pinned device keys, one name:sha256-of-SubjectPublicKeyInfo per line (mqtls keys add); turns client certificates on, with or without --client-ca"},
	{Flag: "crl-grace", Scope: InListener, Key: "tls.crl_grace", Default: time.Duration(0), Usage: "how long past its next update a CRL still counts (0: a stale CRL refuses its CA's devices, crl_expired)"},
	{Flag: "crl-expiry-warning", Scope: TopLevel, Key: "admin.crl_expiry_warning", Default: handshake.DefaultCRLWarnWindow, Usage: "warn (daily) when a CRL's next update is due within this long"},
	{Flag: "allow-slash", Scope: InListener, Key: "policy.allow_slash", Default: false, Usage: "let an identity contain / ({uri}, SPIFFE IDs); only where no identity is a topic prefix of another in the broker's ACLs"},
	{Flag: "psk-allow-no-dhe", Scope: InListener, Key: "psk.allow_psk_ke", Default: false, Usage: "accept TLS 1.3 PSK clients that offer only psk_ke (no key exchange, so no forward secrecy)"},
	{Flag: "psk-reveal-unknown-identity", Scope: InListener, Key: "psk.reveal_unknown_identity", Default: false, Usage: "answer an unknown PSK identity with unknown_psk_identity rather than as a wrong key (debugging only: it lets clients enumerate identities)"},
	{Flag: "dtls-listen", Scope: FlagOnly, Default: "", Usage: "UDP `address` to accept DTLS connections on (off when empty); same certificates, PSKs and policy as --listen"},
	{Flag: "dtls-max-datagram", Scope: InListener, Key: "dtls.max_datagram", Default: datagram.DefaultMaxDatagram, Usage: "largest datagram sent to DTLS devices, in `bytes`; whole MQTT packets are packed up to it"},
	{Flag: "dtls-idle-timeout", Scope: InListener, Key: "timeouts.idle", DTLSOnly: true, Default: DefaultDTLSIdle, Usage: "close a DTLS session after this long without a datagram from the device (UDP has no FIN)"},
	// A DTLS listener's defence against spoofed-source ClientHello floods (see ListenDTLS).
	{Flag: "dtls-max-unproven", Scope: InListener, Key: "dtls.max_unproven", Default: 0, Usage: "most source addresses holding DTLS state before they return their cookie; the oldest is displaced once 250ms old (0: 4096)"},
	{Flag: "dtls-unproven-timeout", Scope: InListener, Key: "dtls.unproven_timeout", Default: time.Duration(0), Usage: "how long an address that has not returned its DTLS cookie keeps its state (0: 3s)"},
	{Flag: "dtls-refuse-unknown-psk-identity", Scope: InListener, Key: "dtls.refuse_unknown_psk_identity", Default: false, Usage: "debugging only: end a DTLS handshake with an unknown PSK identity at once, which lets anyone probe for identities (default: fail it like a wrong key)"},
	{Flag: "max-connections", Scope: InListener, Key: "limits.max_connections", Default: 0, Usage: "most open connections per listener, handshakes included; 0 for no cap"},
	{Flag: "max-handshakes", Scope: InListener, Key: "limits.max_handshakes", Default: 0, Usage: "most handshakes in progress per listener; 0 for no cap"},
	{Flag: "per-ip-rate", Scope: InListener, Key: "limits.per_ip_rate", Default: 0.0, Usage: "new connections per second allowed from one source address (token bucket); 0 for no limit"},
	{Flag: "per-ip-burst", Scope: InListener, Key: "limits.per_ip_burst", Default: DefaultPerIPBurst, Usage: "burst of new connections allowed from one source address above --per-ip-rate"},
	{Flag: "max-connections-per-identity", Scope: InListener, Key: "limits.max_connections_per_identity", Default: 0, Usage: "most sessions one identity may hold; one more gets CONNACK server busy; 0 for no cap"},
	{Flag: "proxy-protocol", Scope: InListener, Key: "proxy_protocol.send", Default: "", Usage: "send a PROXY protocol header to the upstream: v1 or v2 (v2 carries the TLS version, cipher and client CN)"},
	{Flag: "proxy-protocol-from", Scope: InListener, Key: "proxy_protocol.accept_from", Default: []string(nil), Usage: "accept a PROXY protocol header from this source `CIDR` (repeatable; behind a load balancer)"},
	// Client mode (#18): plain MQTT in from local clients, TLS out to a remote broker.
	{Flag: "mode", Scope: InListener, Key: "mode", Default: "server", Usage: "server (TLS in, plain MQTT to --upstream) or client (plain MQTT in, TLS to the remote broker --upstream)"},
	{Flag: "remote-server-name", Scope: InListener, Key: "remote.server_name", Default: "", Usage: "client mode: `name` sent as SNI and required in the remote broker's certificate (default the host of --upstream)"},
	{Flag: "remote-ca", Scope: InListener, Key: "remote.ca", Default: "", Usage: "client mode: PEM `file` of the CAs trusted for the remote broker (default the system roots)"},
	{Flag: "remote-cert", Scope: InListener, Key: "remote.cert", Default: "", Usage: "client mode: the gateway's certificate chain, PEM `file`, for mutual TLS"},
	{Flag: "remote-key", Scope: InListener, Key: "remote.key", Default: "", Usage: "client mode: the gateway's private key, PEM `file`"},
	{Flag: "remote-pinned-keys", Scope: InListener, Key: "remote.pinned_keys", Default: "", Usage: "client mode: `file` of pinned keys (name sha256-of-SPKI per line); the remote's key must be one"},
	{Flag: "remote-psk-file", Scope: InListener, Key: "remote.psk_file", Default: "", Usage: "client mode: pre-shared key `file`; with --remote-psk-identity turns TLS-PSK on"},
	{Flag: "remote-psk-format", Scope: InListener, Key: "remote.psk_format", Default: "mosquitto", Usage: "syntax of --remote-psk-file: mosquitto or stunnel"},
	{Flag: "remote-psk-identity", Scope: InListener, Key: "remote.psk_identity", Default: "", Usage: "client mode: the PSK `identity` (in --remote-psk-file) the gateway presents"},
	{Flag: "remote-min-tls", Scope: InListener, Key: "remote.min_version", Default: "1.2", Usage: "client mode: lowest TLS version offered to the remote broker: 1.2 or 1.3"},
	{Flag: "remote-insecure-skip-verify", Scope: InListener, Key: "remote.insecure_skip_verify", Default: false, Usage: "client mode: accept any certificate from the remote broker (tests only; a pinned key still applies)"},
	{Flag: "remote-client-id", Scope: InListener, Key: "remote.client_id", Default: "", Usage: "client mode: `template` rewriting each local client ID, e.g. {cn}/{client_id}; fields client_id, username, cn, o, ou, serial, fingerprint, psk"},
	{Flag: "remote-username", Scope: InListener, Key: "remote.username", Default: "", Usage: "client mode: `template` rewriting each local user name, fields as --remote-client-id"},
	{Flag: "admin-listen", Scope: TopLevel, Key: "admin.listen", Default: "", Usage: "TCP `address` for /metrics, /healthz and /readyz (off when empty), e.g. 127.0.0.1:9090"},
	{Flag: "admin-pprof", Scope: TopLevel, Key: "admin.pprof", Default: false, Usage: "also serve /debug/pprof on --admin-listen"},
	{Flag: "reload-interval", Scope: TopLevel, Key: "admin.reload_interval", Default: DefaultReloadInterval, Usage: "how often certificate, CA, CRL and PSK files are checked for changes (0: only on SIGHUP)"},
	{Flag: "revoke-terminates", Scope: TopLevel, Key: "admin.revoke_terminates", Default: false, Usage: "on reload, close sessions whose PSK identity was removed or whose certificate a CRL now revokes"},
	{Flag: "expiry-warning", Scope: TopLevel, Key: "admin.expiry_warning", Default: DefaultExpiryWarning, Usage: "warn (daily) when a certificate, CA or CRL expires within this long"},
	{Flag: "handshake-timeout", Scope: InListener, Key: "timeouts.handshake", Default: proxy.DefaultHandshakeTimeout, Usage: "time allowed for the TLS handshake"},
	{Flag: "connect-timeout", Scope: InListener, Key: "timeouts.connect", Default: proxy.DefaultConnectTimeout, Usage: "time allowed for the CONNECT packet after the handshake"},
	{Flag: "dial-timeout", Scope: InListener, Key: "timeouts.dial", Default: proxy.DefaultDialTimeout, Usage: "time allowed to connect to the upstream broker"},
	{Flag: "max-connect-size", Scope: InListener, Key: "limits.max_connect_size", Default: proxy.DefaultMaxConnectSize, Usage: "largest CONNECT packet accepted, in `bytes`"},
	{Flag: "drain-timeout", Scope: TopLevel, Key: "drain_timeout", Default: DefaultDrainTimeout, Usage: "on SIGTERM or SIGINT, time open sessions get to end before they are closed"},
	{Flag: "memory-release-after", Scope: TopLevel, Key: "memory_release_after", Default: DefaultMemoryRelease, Usage: "after a burst of handshakes, return the memory it used to the OS once none has run for this long (0: never)"},
	{Flag: "busy-poll", Scope: TopLevel, Key: "busy_poll", Default: time.Duration(0), Usage: "after each event, keep polling sessions in conversation for this long instead of sleeping: lower latency for a CPU's worth of polling (Linux; 0: off)"},
	{Flag: "log-format", Scope: TopLevel, Key: "log.format", Default: "auto", Usage: "log format: json, console, or auto (console on a terminal, json elsewhere)"},
	{Flag: "log-level", Scope: TopLevel, Key: "log.level", Default: "info", Usage: "log level: debug, info, warn or error"},

	// #19: logs an operator can read.
	{Flag: "audit-log", Scope: TopLevel, Key: "log.audit", Default: true, Usage: "write the audit line of every connection, whatever --log-level is (--audit-log=false turns it off)"},
}

// FileOnlyKeys are the listener keys no flag sets: the flags describe one TCP listener
// named tcp (plus --dtls-listen's twin named dtls).
var FileOnlyKeys = append([]string{"name", "transport"}, sniKeys()...)

// EnvVar is the environment variable that sets a flag: --client-id is MQTLS_CLIENT_ID.
func EnvVar(flag string) string {
	return "MQTLS_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// flagFor spells the key of scope as its flag; a key without one as --key.
func flagFor(scope Scope, key string) string {
	for _, s := range Settings {
		if s.Scope == scope && s.Key == key {
			return "--" + s.Flag
		}
	}
	return "--" + key
}

// Flags are what FromFlags reads the flags from; a *cli.Context of urfave/cli is one.
type Flags interface {
	IsSet(name string) bool
	FlagNames() []string
	String(name string) string
	StringSlice(name string) []string
	Int(name string) int
	Float64(name string) float64
	Bool(name string) bool
	Duration(name string) time.Duration
}

// FromFlags reads and validates the flags, or the config file --config names. Every
// problem found is reported, each naming the flag (or key) to change.
func FromFlags(fl Flags) (Config, error) {
	if file := fl.String("config"); file != "" {
		var set []string
		for _, name := range fl.FlagNames() {
			if name != "config" && name != "help" && fl.IsSet(name) {
				set = append(set, "--"+name)
			}
		}
		if len(set) > 0 {
			return Config{}, fmt.Errorf("--config %s cannot be combined with %s: put those settings in the file", file, strings.Join(set, ", "))
		}
		return Load(file)
	}

	// The flags fill a File as the YAML would, with one listener and its DTLS twin.
	var f File
	l := Listener{Name: "tcp"}
	var dtlsOnly []Setting
	for _, s := range Settings {
		switch {
		case s.Scope == FlagOnly:
		case s.DTLSOnly:
			dtlsOnly = append(dtlsOnly, s)
		case s.Scope == TopLevel:
			setKey(&f, s, fl)
		default:
			setKey(&l, s, fl)
		}
	}
	cfg, level := topLevel(f, false)
	errs := commonProblems(&cfg, level, func(k string) string { return flagFor(TopLevel, k) })

	for _, d := range []string{"handshake-timeout", "connect-timeout", "dial-timeout"} {
		if fl.Duration(d) <= 0 {
			errs = append(errs, fmt.Errorf("--%s %v: must be positive", d, fl.Duration(d)))
		}
	}
	if fl.Duration("dtls-idle-timeout") < 0 {
		errs = append(errs, fmt.Errorf("--dtls-idle-timeout %v: must not be negative (0 turns it off)", fl.Duration("dtls-idle-timeout")))
	}
	sp, e := BuildListener(l, FlagNamer)
	errs = append(errs, e...)
	cfg.Listeners = append(cfg.Listeners, sp)
	if addr := fl.String("dtls-listen"); addr != "" {
		d := l
		d.Name, d.Transport, d.Listen = "dtls", "dtls", addr
		d.ProxyProtocol.AcceptFrom = nil // TCP only; --proxy-protocol-from applies to --listen
		d.TLS.MinVersion = ""
		for _, s := range dtlsOnly {
			setKey(&d, s, fl)
		}
		dsp, e := BuildListener(d, func(k string) string {
			if k == "listen" {
				return "--dtls-listen"
			}
			return FlagNamer(k)
		})
		if len(e) > 0 && len(errs) == 0 {
			errs = append(errs, e...)
		}
		if fl.Duration("dtls-idle-timeout") == 0 {
			dsp.Proxy.IdleTimeout = 0
		}
		dsp.ShareWith = sp.Name
		cfg.Listeners = append(cfg.Listeners, dsp)
	}
	return cfg, errors.Join(errs...)
}

// setKey sets the field of dst (a *File or *Listener) that s's key names to s's flag value.
func setKey(dst any, s Setting, fl Flags) {
	f := field(reflect.ValueOf(dst).Elem(), s.Key)
	if !f.IsValid() {
		panic("config: setting --" + s.Flag + " names key " + s.Key + ", which the schema does not have")
	}
	var v reflect.Value
	switch s.Default.(type) {
	case string:
		v = reflect.ValueOf(fl.String(s.Flag))
	case []string:
		v = reflect.ValueOf(fl.StringSlice(s.Flag))
	case int:
		v = reflect.ValueOf(fl.Int(s.Flag))
	case float64:
		v = reflect.ValueOf(fl.Float64(s.Flag))
	case bool:
		v = reflect.ValueOf(fl.Bool(s.Flag))
	case time.Duration:
		v = reflect.ValueOf(Duration(fl.Duration(s.Flag)))
	default:
		panic(fmt.Sprintf("config: setting --%s has a default of type %T", s.Flag, s.Default))
	}
	if f.Kind() == reflect.Pointer { // memory_release_after: nil means the default
		p := reflect.New(f.Type().Elem())
		p.Elem().Set(v.Convert(f.Type().Elem()))
		f.Set(p)
		return
	}
	f.Set(v.Convert(f.Type()))
}

// field finds the field of struct v whose yaml key path is key ("tls.cert"); the zero
// Value when there is none.
func field(v reflect.Value, key string) reflect.Value {
	for v.Kind() == reflect.Slice { // a list of sections (sni.tenants): its entries' keys
		v = reflect.Zero(v.Type().Elem())
	}
	if v.Kind() != reflect.Struct {
		return reflect.Value{}
	}
	head, rest, nested := strings.Cut(key, ".")
	for i := range v.NumField() {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		if name != head {
			continue
		}
		if nested {
			return field(v.Field(i), rest)
		}
		return v.Field(i)
	}
	return reflect.Value{}
}
