package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// fileConfig is the YAML config file (serve --config). Every key is optional except
// listeners; a zero value means the default the README's config reference gives. Unknown
// keys are errors.
type fileConfig struct {
	Listeners    []listenerFile `yaml:"listeners"`
	Admin        adminFile      `yaml:"admin"`
	Log          logFile        `yaml:"log"`
	DrainTimeout duration       `yaml:"drain_timeout"`
	MemRelease   *duration      `yaml:"memory_release_after"` // nil: the default; 0: off
	BusyPoll     duration       `yaml:"busy_poll"`
}

type adminFile struct {
	Listen           string   `yaml:"listen"`
	Pprof            bool     `yaml:"pprof"`
	ReloadInterval   duration `yaml:"reload_interval"`
	RevokeTerminates bool     `yaml:"revoke_terminates"`
	ExpiryWarning    duration `yaml:"expiry_warning"`
}

type logFile struct {
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
}

// listenerFile is one listener, in the file or built from serve's flags.
type listenerFile struct {
	Name          string            `yaml:"name"`
	Transport     string            `yaml:"transport"`
	Listen        string            `yaml:"listen"`
	Upstream      string            `yaml:"upstream"`
	TLS           tlsFile           `yaml:"tls"`
	PSK           pskFile           `yaml:"psk"`
	Policy        policyFile        `yaml:"policy"`
	Limits        limitsFile        `yaml:"limits"`
	Timeouts      timeoutsFile      `yaml:"timeouts"`
	DTLS          dtlsFile          `yaml:"dtls"`
	ProxyProtocol proxyProtocolFile `yaml:"proxy_protocol"`
}

type tlsFile struct {
	Cert       string   `yaml:"cert"`
	Key        string   `yaml:"key"`
	ClientCA   string   `yaml:"client_ca"`
	ClientAuth string   `yaml:"client_auth"`
	CRLs       []string `yaml:"crls"`
	MinVersion string   `yaml:"min_version"`
}

type pskFile struct {
	File   string `yaml:"file"`
	Format string `yaml:"format"`
	Hint   string `yaml:"hint"`
}

type policyFile struct {
	Identity          string   `yaml:"identity"`
	ClientID          string   `yaml:"client_id"`
	ClientIDSeparator string   `yaml:"client_id_separator"`
	Username          string   `yaml:"username"`
	Password          string   `yaml:"password"`
	Allow             []string `yaml:"allow"`
	Deny              []string `yaml:"deny"`
	IdentityProperty  string   `yaml:"identity_property"`
}

type limitsFile struct {
	MaxConnections            int     `yaml:"max_connections"`
	MaxHandshakes             int     `yaml:"max_handshakes"`
	PerIPRate                 float64 `yaml:"per_ip_rate"`
	PerIPBurst                int     `yaml:"per_ip_burst"`
	MaxConnectionsPerIdentity int     `yaml:"max_connections_per_identity"`
	MaxConnectSize            int     `yaml:"max_connect_size"`
}

type timeoutsFile struct {
	Handshake duration `yaml:"handshake"`
	Connect   duration `yaml:"connect"`
	Dial      duration `yaml:"dial"`
	Idle      duration `yaml:"idle"`
}

type dtlsFile struct {
	MaxDatagram int `yaml:"max_datagram"`
}

type proxyProtocolFile struct {
	Send       string   `yaml:"send"`
	AcceptFrom []string `yaml:"accept_from"`
}

// duration is a time.Duration written as Go writes it ("10s", "5m", "720h").
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 10s, 5m or 720h", n.Line, s)
	}
	*d = duration(v)
	return nil
}

// listenerSpec is one validated listener, ready to serve.
type listenerSpec struct {
	name      string
	transport string // "tcp" or "dtls"
	listen    string
	tls       handshake.TLSConfig // CertFile "" means no certificate handshakes
	pskFile   string              // "" means no PSK handshakes
	pskFormat handshake.PSKFormat
	pskHint   string
	policy    policy.Config
	proxy     proxy.Config // Handshaker, Policy, Logger and Hooks are set by serve
	// sendProxy is "", "v1" or "v2": the PROXY protocol header sent to the upstream.
	sendProxy string
	// proxyFrom are the sources trusted to send a PROXY header; nil means none.
	proxyFrom []netip.Prefix
	// shareWith names the listener whose handshake material this one uses (the DTLS
	// listener built from flags shares the TCP one's), "" for its own.
	shareWith string
	// keyPrefix spells the listener's keys in messages about its files: "" for flags,
	// "listeners[2]." for the file.
	keyPrefix string
}

// key names a listener key for a message, as a flag or as a key path.
func (sp listenerSpec) key(k string) string {
	if sp.keyPrefix == "" {
		return flagNamer(k)
	}
	return sp.keyPrefix + k
}

// keyNamer spells a listener key for messages: "--client-id" for flags,
// "listeners[2].policy.client_id" for the file.
type keyNamer func(key string) string

// flagNames maps listener keys to serve's flags.
var flagNames = map[string]string{
	"name": "--name", "transport": "--transport", "listen": "--listen", "upstream": "--upstream",
	"tls.cert": "--cert", "tls.key": "--key", "tls.client_ca": "--client-ca", "tls.client_auth": "--client-auth",
	"tls.crls": "--crl", "tls.min_version": "--min-tls",
	"psk.file": "--psk-file", "psk.format": "--psk-format", "psk.hint": "--psk-hint",
	"policy.identity": "--identity", "policy.client_id": "--client-id", "policy.client_id_separator": "--client-id-separator",
	"policy.username": "--username", "policy.password": "--password", "policy.allow": "--allow", "policy.deny": "--deny",
	"policy.identity_property":            "--identity-property",
	"limits.max_connections":              "--max-connections",
	"limits.max_handshakes":               "--max-handshakes",
	"limits.per_ip_rate":                  "--per-ip-rate",
	"limits.per_ip_burst":                 "--per-ip-burst",
	"limits.max_connections_per_identity": "--max-connections-per-identity",
	"limits.max_connect_size":             "--max-connect-size",
	"timeouts.handshake":                  "--handshake-timeout", "timeouts.connect": "--connect-timeout",
	"timeouts.dial": "--dial-timeout", "timeouts.idle": "--dtls-idle-timeout",
	"dtls.max_datagram":          "--dtls-max-datagram",
	"proxy_protocol.send":        "--proxy-protocol",
	"proxy_protocol.accept_from": "--proxy-protocol-from",
}

func flagNamer(key string) string {
	if f, ok := flagNames[key]; ok {
		return f
	}
	return "--" + key
}

func fileNamer(i int) keyNamer {
	return func(key string) string { return fmt.Sprintf("listeners[%d].%s", i, key) }
}

// prefixOf recovers the key prefix a namer puts before every key.
func prefixOf(key keyNamer) string {
	if k := key("name"); strings.HasPrefix(k, "listeners[") {
		return strings.TrimSuffix(k, "name")
	}
	return ""
}

// buildListener validates l and turns it into a spec. Every problem is reported, each
// naming the key (or flag) to change.
func buildListener(l listenerFile, key keyNamer) (listenerSpec, []error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	sp := listenerSpec{name: l.Name, transport: l.Transport, listen: l.Listen, keyPrefix: prefixOf(key)}

	switch sp.transport {
	case "", "tcp":
		sp.transport = "tcp"
	case "dtls":
	default:
		bad("%s %q: want tcp or dtls", key("transport"), l.Transport)
	}
	if sp.name == "" {
		sp.name = sp.transport
	}
	if _, _, err := net.SplitHostPort(sp.listen); err != nil {
		bad("%s %q: want host:port or :port: %v", key("listen"), sp.listen, err)
	}

	// Handshake material.
	sp.tls = handshake.TLSConfig{CertFile: l.TLS.Cert, KeyFile: l.TLS.Key, ClientCAFile: l.TLS.ClientCA, CRLFiles: l.TLS.CRLs}
	sp.pskFile, sp.pskHint = l.PSK.File, l.PSK.Hint
	format := l.PSK.Format
	if format == "" {
		format = "mosquitto"
	}
	var err error
	if sp.pskFormat, err = handshake.ParsePSKFormat(format); err != nil {
		bad("%s: %w", key("psk.format"), err)
	}
	if sp.pskFile == "" && (l.PSK.Hint != "" || l.PSK.Format != "" && l.PSK.Format != "mosquitto") {
		bad("%s and %s need %s: the file of device keys", key("psk.hint"), key("psk.format"), key("psk.file"))
	}
	certs := sp.tls.CertFile != "" || sp.tls.KeyFile != ""
	switch {
	case !certs && sp.pskFile == "":
		bad("%s and %s are required (the server certificate chain and its private key, PEM files), or %s for TLS-PSK",
			key("tls.cert"), key("tls.key"), key("psk.file"))
	case sp.tls.CertFile == "" && certs:
		bad("%s is set but %s is not: give the certificate that goes with the key", key("tls.key"), key("tls.cert"))
	case sp.tls.KeyFile == "" && certs:
		bad("%s is set but %s is not: give the certificate's private key", key("tls.cert"), key("tls.key"))
	case !certs && sp.tls.ClientCAFile != "":
		bad("%s needs %s and %s: a PSK-only listener has no certificate handshakes", key("tls.client_ca"), key("tls.cert"), key("tls.key"))
	}
	mutual := sp.tls.ClientCAFile != ""
	switch auth := l.TLS.ClientAuth; {
	case auth == "" && mutual:
		sp.tls.ClientAuth = handshake.ClientAuthRequire
	case auth == "":
		sp.tls.ClientAuth = handshake.ClientAuthNone
	default:
		a, err := handshake.ParseClientAuth(auth)
		switch {
		case err != nil:
			bad("%s: %w", key("tls.client_auth"), err)
		case a != handshake.ClientAuthNone && !mutual:
			bad("%s %s needs %s: the CA file that issues device certificates", key("tls.client_auth"), auth, key("tls.client_ca"))
		case a == handshake.ClientAuthNone && mutual:
			bad("%s none with %s: drop %s, or use request or require", key("tls.client_auth"), key("tls.client_ca"), key("tls.client_ca"))
		}
		sp.tls.ClientAuth = a
	}
	if len(sp.tls.CRLFiles) > 0 && !mutual {
		bad("%s needs %s: CRLs are checked against the CAs that issue device certificates", key("tls.crls"), key("tls.client_ca"))
	}
	switch v := l.TLS.MinVersion; v {
	case "", "1.2":
		sp.tls.MinVersion = tls.VersionTLS12
	case "1.3":
		sp.tls.MinVersion = tls.VersionTLS13
	default:
		bad("%s %q: want 1.2 or 1.3", key("tls.min_version"), v)
	}
	if sp.pskFile != "" && l.TLS.MinVersion == "1.3" {
		bad("%s 1.3 with %s: TLS-PSK is served over TLS 1.2 only", key("tls.min_version"), key("psk.file"))
	}
	if sp.transport == "dtls" && l.TLS.MinVersion == "1.3" {
		bad("%s 1.3 on a DTLS listener: mqtls serves DTLS 1.2 only", key("tls.min_version"))
	}

	// Binding policy.
	identity := l.Policy.Identity
	if identity == "" {
		switch {
		case sp.pskFile != "" && !certs:
			identity = "{psk}"
		case sp.pskFile != "":
			identity = "{cn}{psk}"
		default:
			identity = "{cn}"
		}
	}
	sp.policy = policy.Config{
		Identity:          identity,
		ClientIDSeparator: l.Policy.ClientIDSeparator,
		Allow:             l.Policy.Allow,
		Deny:              l.Policy.Deny,
		IdentityProperty:  l.Policy.IdentityProperty,
	}
	mode := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	if sp.policy.ClientID, err = policy.ParseClientIDMode(mode(l.Policy.ClientID, "off")); err != nil {
		bad("%s: %s", key("policy.client_id"), trimPolicy(err))
	}
	if sp.policy.Username, err = policy.ParseUsernameMode(mode(l.Policy.Username, "keep")); err != nil {
		bad("%s: %s", key("policy.username"), trimPolicy(err))
	}
	if sp.policy.Password, err = policy.ParsePasswordMode(mode(l.Policy.Password, "keep")); err != nil {
		bad("%s: %s", key("policy.password"), trimPolicy(err))
	}
	tmpl, tmplErr := policy.ParseTemplate(identity)
	if tmplErr != nil {
		bad("%s %q: %s", key("policy.identity"), identity, trimPolicy(tmplErr))
	}
	for _, list := range []struct {
		key   string
		exprs []string
	}{{"policy.allow", l.Policy.Allow}, {"policy.deny", l.Policy.Deny}} {
		for _, e := range list.exprs {
			if _, err := regexp.Compile(e); err != nil || e == "" {
				if err == nil {
					err = errors.New("empty expression; write ^$ to match an empty identity")
				}
				bad("%s %q: %v", key(list.key), e, err)
			}
		}
	}
	if len(errs) == 0 {
		if _, err := policy.New(sp.policy); err != nil {
			bad("%s", trimPolicy(err))
		}
	}
	if tmplErr == nil && len(errs) == 0 {
		errs = append(errs, identitySourceProblems(sp, tmpl, key)...)
	}

	// Proxying.
	sp.proxy = proxy.Config{
		Name:             sp.name,
		Upstream:         l.Upstream,
		HandshakeTimeout: time.Duration(l.Timeouts.Handshake),
		ConnectTimeout:   time.Duration(l.Timeouts.Connect),
		DialTimeout:      time.Duration(l.Timeouts.Dial),
		MaxConnectSize:   l.Limits.MaxConnectSize,
		MaxConnections:   l.Limits.MaxConnections,
		MaxHandshakes:    l.Limits.MaxHandshakes,
		PerIPRate:        l.Limits.PerIPRate,
		PerIPBurst:       l.Limits.PerIPBurst,
		MaxPerIdentity:   l.Limits.MaxConnectionsPerIdentity,
		Datagram:         sp.transport == "dtls",
		MaxDatagram:      l.DTLS.MaxDatagram,
	}
	if sp.proxy.Upstream == "" {
		sp.proxy.Upstream = defaultUpstream
	}
	if sp.transport == "dtls" {
		sp.proxy.IdleTimeout = time.Duration(l.Timeouts.Idle)
		if l.Timeouts.Idle == 0 {
			sp.proxy.IdleTimeout = defaultDTLSIdle
		}
	} else if l.Timeouts.Idle != 0 {
		sp.proxy.IdleTimeout = time.Duration(l.Timeouts.Idle)
	}
	if sp.proxy.MaxDatagram == 0 {
		sp.proxy.MaxDatagram = datagram.DefaultMaxDatagram
	}
	if sp.proxy.PerIPBurst == 0 {
		sp.proxy.PerIPBurst = defaultPerIPBurst
	}
	if sp.proxy.MaxConnectSize == 0 {
		sp.proxy.MaxConnectSize = proxy.DefaultMaxConnectSize
	}
	if err := proxy.ValidateUpstream(sp.proxy.Upstream); err != nil {
		bad("%s: %w", key("upstream"), err)
	}
	for k, d := range map[string]duration{"timeouts.handshake": l.Timeouts.Handshake, "timeouts.connect": l.Timeouts.Connect,
		"timeouts.dial": l.Timeouts.Dial, "timeouts.idle": l.Timeouts.Idle} {
		if d < 0 {
			bad("%s %v: must not be negative", key(k), time.Duration(d))
		}
	}
	if n := sp.proxy.MaxConnectSize; n < 16 || n > policy.MaxRemainingLength {
		bad("%s %d: want 16 to %d bytes", key("limits.max_connect_size"), n, policy.MaxRemainingLength)
	}
	if n := sp.proxy.MaxDatagram; n < 64 || n > datagram.MaxRecord {
		bad("%s %d: want 64 to %d bytes", key("dtls.max_datagram"), n, datagram.MaxRecord)
	}
	for k, n := range map[string]int{"limits.max_connections": l.Limits.MaxConnections, "limits.max_handshakes": l.Limits.MaxHandshakes,
		"limits.max_connections_per_identity": l.Limits.MaxConnectionsPerIdentity} {
		if n < 0 {
			bad("%s %d: must not be negative (0 means no cap)", key(k), n)
		}
	}
	if sp.proxy.PerIPRate < 0 {
		bad("%s %v: must not be negative (0 means no limit)", key("limits.per_ip_rate"), sp.proxy.PerIPRate)
	}
	if sp.proxy.PerIPBurst < 1 {
		bad("%s %d: must be at least 1", key("limits.per_ip_burst"), sp.proxy.PerIPBurst)
	}

	// PROXY protocol.
	switch sp.sendProxy = l.ProxyProtocol.Send; sp.sendProxy {
	case "", "v1", "v2":
	default:
		bad("%s %q: want v1 or v2 (or leave it empty)", key("proxy_protocol.send"), sp.sendProxy)
	}
	for _, s := range l.ProxyProtocol.AcceptFrom {
		p, err := parsePrefix(s)
		if err != nil {
			bad("%s %q: want a CIDR like 10.0.0.0/8 or an address: %v", key("proxy_protocol.accept_from"), s, err)
			continue
		}
		sp.proxyFrom = append(sp.proxyFrom, p)
	}
	if sp.transport == "dtls" && (len(sp.proxyFrom) > 0) {
		bad("%s on a DTLS listener: the PROXY protocol is accepted on TCP listeners only", key("proxy_protocol.accept_from"))
	}
	return sp, errs
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// identitySourceProblems refuses a binding the listener can never satisfy: one that needs
// an identity when no handshake of this listener can yield one.
func identitySourceProblems(sp listenerSpec, tmpl policy.Template, key keyNamer) []error {
	var needs []string
	if sp.policy.ClientID != policy.ClientIDOff {
		needs = append(needs, key("policy.client_id")+" "+sp.policy.ClientID.String())
	}
	if sp.policy.Username == policy.UsernameIdentity {
		needs = append(needs, key("policy.username")+" identity")
	}
	if len(sp.policy.Allow) > 0 {
		needs = append(needs, key("policy.allow"))
	}
	if sp.policy.IdentityProperty != "" {
		needs = append(needs, key("policy.identity_property"))
	}
	if len(needs) == 0 {
		return nil
	}
	what := strings.Join(needs, " and ")
	certs, psks := sp.tls.ClientCAFile != "", sp.pskFile != ""
	kinds := tmpl.Kinds()
	switch {
	case !certs && !psks:
		return []error{fmt.Errorf("%s needs an identity, but without %s or %s no device proves one: add %s (device certificates) or %s (pre-shared keys), or drop %s",
			what, key("tls.client_ca"), key("psk.file"), key("tls.client_ca"), key("psk.file"), what)}
	case !(certs && slices.Contains(kinds, handshake.KindCertificate)) && !(psks && slices.Contains(kinds, handshake.KindPSK)):
		have, fields := "certificates ("+key("tls.client_ca")+")", "{cn}, {uri}, {dns}, ..."
		if !certs {
			have, fields = "pre-shared keys ("+key("psk.file")+")", "{psk}"
		}
		return []error{fmt.Errorf("%s %q names no field the devices of this listener have, so %s can never be satisfied: its devices prove %s; use %s",
			key("policy.identity"), sp.policy.Identity, what, have, fields)}
	}
	return nil
}

// loadConfigFile reads and validates a config file.
func loadConfigFile(path string) (serveConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return serveConfig{}, fmt.Errorf("reading config file: %w", err)
	}
	return parseConfigFile(path, data)
}

// parseConfigFile validates the config file called path with contents data. Errors name
// the file, and the line or key path.
func parseConfigFile(path string, data []byte) (serveConfig, error) {
	var f fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return serveConfig{}, fmt.Errorf("config file %s: %s", path, yamlMessage(err))
	}
	var errs []error
	cfg := serveConfig{
		configFile:   path,
		drainTimeout: time.Duration(f.DrainTimeout),
		logFormat:    f.Log.Format,
		admin: adminConfig{
			listen:           f.Admin.Listen,
			pprof:            f.Admin.Pprof,
			reloadInterval:   time.Duration(f.Admin.ReloadInterval),
			revokeTerminates: f.Admin.RevokeTerminates,
			expiryWarning:    time.Duration(f.Admin.ExpiryWarning),
		},
	}
	if f.DrainTimeout == 0 {
		cfg.drainTimeout = defaultDrainTimeout
	}
	cfg.busyPoll = time.Duration(f.BusyPoll)
	cfg.memRelease = defaultMemoryRelease
	if f.MemRelease != nil {
		cfg.memRelease = time.Duration(*f.MemRelease)
	}
	if f.Admin.ReloadInterval == 0 {
		cfg.admin.reloadInterval = defaultReloadInterval
	}
	if f.Admin.ExpiryWarning == 0 {
		cfg.admin.expiryWarning = defaultExpiryWarning
	}
	if cfg.logFormat == "" {
		cfg.logFormat = "json"
	}
	level := f.Log.Level
	if level == "" {
		level = "info"
	}
	errs = append(errs, commonProblems(&cfg, level, func(k string) string { return k })...)
	if len(f.Listeners) == 0 {
		errs = append(errs, errors.New("listeners: the file defines none; add at least one"))
	}
	names := map[string]int{}
	addrs := map[string]int{}
	for i, l := range f.Listeners {
		sp, e := buildListener(l, fileNamer(i))
		errs = append(errs, e...)
		if j, dup := names[sp.name]; dup {
			errs = append(errs, fmt.Errorf("listeners[%d].name %q: listeners[%d] has the same name; names must be unique", i, sp.name, j))
		}
		names[sp.name] = i
		addr := sp.transport + " " + sp.listen
		if _, port, _ := net.SplitHostPort(sp.listen); port == "0" {
			addr = "" // port 0: each listener gets a port of its own from the system
		}
		if j, dup := addrs[addr]; dup && addr != "" {
			errs = append(errs, fmt.Errorf("listeners[%d].listen %q: listeners[%d] listens there too", i, sp.listen, j))
		}
		addrs[addr] = i
		cfg.listeners = append(cfg.listeners, sp)
	}
	if len(errs) > 0 {
		return serveConfig{}, fmt.Errorf("config file %s: %w", path, errors.Join(errs...))
	}
	return cfg, nil
}

// yamlTypes name the structs of fileConfig the way a config file's reader knows them.
var yamlTypes = map[string]string{
	"fileConfig": "the top level", "listenerFile": "a listener", "adminFile": "admin", "logFile": "log",
	"tlsFile": "tls", "pskFile": "psk", "policyFile": "policy", "limitsFile": "limits",
	"timeoutsFile": "timeouts", "dtlsFile": "dtls", "proxyProtocolFile": "proxy_protocol",
}

var (
	yamlUnknownField = regexp.MustCompile(`field (\S+) not found in type main\.(\w+)`)
	yamlTypeName     = regexp.MustCompile(`into main\.(\w+)`)
)

// yamlMessage is a decoding error of yaml.v3 in the config file's terms: "unknown key
// client_cert in tls" rather than "field client_cert not found in type main.tlsFile".
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = yamlUnknownField.ReplaceAllStringFunc(msg, func(m string) string {
		sub := yamlUnknownField.FindStringSubmatch(m)
		where, ok := yamlTypes[sub[2]]
		switch {
		case !ok:
			return m
		case sub[2] == "fileConfig":
			return "unknown key " + sub[1] + " at " + where
		}
		return "unknown key " + sub[1] + " in " + where
	})
	return yamlTypeName.ReplaceAllStringFunc(msg, func(m string) string {
		if where, ok := yamlTypes[yamlTypeName.FindStringSubmatch(m)[1]]; ok {
			return "into " + where
		}
		return m
	})
}

// commonProblems checks the settings outside the listeners, naming them with key.
func commonProblems(cfg *serveConfig, level string, key func(string) string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.logFormat != "json" && cfg.logFormat != "console" {
		bad("%s %q: want json or console", key("log.format"), cfg.logFormat)
	}
	var err error
	if cfg.logLevel, err = zerologLevel(level); err != nil {
		bad("%s %q: want debug, info, warn or error", key("log.level"), level)
	}
	if cfg.drainTimeout < 0 {
		bad("%s %v: must not be negative", key("drain_timeout"), cfg.drainTimeout)
	}
	if cfg.memRelease < 0 {
		bad("%s %v: must not be negative (0 turns it off)", key("memory_release_after"), cfg.memRelease)
	}
	if cfg.busyPoll < 0 || cfg.busyPoll > maxBusyPoll {
		bad("%s %v: want 0 (off) to %v; the poll holds a CPU this long after each event", key("busy_poll"), cfg.busyPoll, maxBusyPoll)
	}
	if cfg.admin.listen != "" {
		if _, _, err := net.SplitHostPort(cfg.admin.listen); err != nil {
			bad("%s %q: want host:port or :port: %v", key("admin.listen"), cfg.admin.listen, err)
		}
	}
	if cfg.admin.pprof && cfg.admin.listen == "" {
		bad("%s needs %s: the address to serve it on", key("admin.pprof"), key("admin.listen"))
	}
	if cfg.admin.reloadInterval < 0 {
		bad("%s %v: must not be negative (0 means only on SIGHUP)", key("admin.reload_interval"), cfg.admin.reloadInterval)
	}
	if cfg.admin.expiryWarning < 0 {
		bad("%s %v: must not be negative", key("admin.expiry_warning"), cfg.admin.expiryWarning)
	}
	return errs
}

// zerologLevel parses a log level, refusing the empty string zerolog takes for "no level".
func zerologLevel(s string) (zerolog.Level, error) {
	if s == "" {
		return zerolog.NoLevel, errors.New("empty log level")
	}
	return zerolog.ParseLevel(s)
}
