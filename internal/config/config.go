package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/tlspsk"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// File is the YAML config file (serve --config). Every key is optional except
// listeners; a zero value means the default the README's config reference gives. Unknown
// keys are errors.
type File struct {
	Listeners    []Listener `yaml:"listeners"`
	Admin        Admin      `yaml:"admin"`
	Log          Log        `yaml:"log"`
	DrainTimeout Duration   `yaml:"drain_timeout"`
	MemRelease   *Duration  `yaml:"memory_release_after"` // nil: the default; 0: off
	BusyPoll     Duration   `yaml:"busy_poll"`
}

type Admin struct {
	Listen           string   `yaml:"listen"`
	Pprof            bool     `yaml:"pprof"`
	ReloadInterval   Duration `yaml:"reload_interval"`
	RevokeTerminates bool     `yaml:"revoke_terminates"`
	ExpiryWarning    Duration `yaml:"expiry_warning"`
	// CRLExpiryWarning is expiry_warning for CRLs, which are reissued far more often.
	CRLExpiryWarning Duration `yaml:"crl_expiry_warning"`
}

type Log struct {
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
	Audit  *bool  `yaml:"audit"` // nil: true
}

// Listener is one listener, in the file or built from serve's flags.
type Listener struct {
	Name          string        `yaml:"name"`
	Transport     string        `yaml:"transport"`
	Listen        string        `yaml:"listen"`
	Upstream      string        `yaml:"upstream"`
	TLS           TLS           `yaml:"tls"`
	PSK           PSK           `yaml:"psk"`
	Policy        Policy        `yaml:"policy"`
	Limits        Limits        `yaml:"limits"`
	Timeouts      Timeouts      `yaml:"timeouts"`
	DTLS          DTLS          `yaml:"dtls"`
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
	Mode          string        `yaml:"mode"`   // "" (server) or ModeClient
	Remote        Remote        `yaml:"remote"` // client mode: see client.go
	SNI           SNI           `yaml:"sni"`    // tenants by server name: see sni.go
}

type TLS struct {
	Cert       string   `yaml:"cert"`
	Key        string   `yaml:"key"`
	ClientCA   string   `yaml:"client_ca"`
	ClientAuth string   `yaml:"client_auth"`
	CRLs       []string `yaml:"crls"`
	MinVersion string   `yaml:"min_version"`
	ClientKeys string   `yaml:"client_keys"`
	CRLGrace   Duration `yaml:"crl_grace"`
}

type PSK struct {
	File   string `yaml:"file"`
	Format string `yaml:"format"`
	Hint   string `yaml:"hint"`
	// AllowPSKKE and RevealUnknownIdentity are handshake.PSKOptions' fields of those names.
	AllowPSKKE            bool `yaml:"allow_psk_ke"`
	RevealUnknownIdentity bool `yaml:"reveal_unknown_identity"`
}

type Policy struct {
	Identity          string   `yaml:"identity"`
	ClientID          string   `yaml:"client_id"`
	ClientIDSeparator string   `yaml:"client_id_separator"`
	Username          string   `yaml:"username"`
	Password          string   `yaml:"password"`
	Allow             []string `yaml:"allow"`
	Deny              []string `yaml:"deny"`
	IdentityProperty  string   `yaml:"identity_property"`
	AllowSlash        bool     `yaml:"allow_slash"`
}

type Limits struct {
	MaxConnections            int     `yaml:"max_connections"`
	MaxHandshakes             int     `yaml:"max_handshakes"`
	PerIPRate                 float64 `yaml:"per_ip_rate"`
	PerIPBurst                int     `yaml:"per_ip_burst"`
	MaxConnectionsPerIdentity int     `yaml:"max_connections_per_identity"`
	MaxConnectSize            int     `yaml:"max_connect_size"`
}

type Timeouts struct {
	Handshake Duration `yaml:"handshake"`
	Connect   Duration `yaml:"connect"`
	Dial      Duration `yaml:"dial"`
	Idle      Duration `yaml:"idle"`
}

type DTLS struct {
	MaxDatagram              int      `yaml:"max_datagram"`
	MaxUnproven              int      `yaml:"max_unproven"`
	UnprovenTimeout          Duration `yaml:"unproven_timeout"`
	RefuseUnknownPSKIdentity bool     `yaml:"refuse_unknown_psk_identity"`
}

type ProxyProtocol struct {
	Send       string   `yaml:"send"`
	AcceptFrom []string `yaml:"accept_from"`
}

// Duration is a time.Duration written as Go writes it ("10s", "5m", "720h").
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 10s, 5m or 720h", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// ListenerSpec is one validated listener, ready to serve.
type ListenerSpec struct {
	Name      string
	Transport string // "tcp" or "dtls"
	Listen    string
	TLS       handshake.TLSConfig // CertFile "" means no certificate handshakes
	PSKFile   string              // "" means no PSK handshakes
	PSKFormat handshake.PSKFormat
	PSKHint   string
	// PSKOptions are the PSK server's settings (Hint is PSKHint).
	PSKOptions handshake.PSKOptions
	Policy     policy.Config
	Proxy      proxy.Config // Handshaker, Policy, Logger and Hooks are set by the supervisor
	// SendProxy is "", "v1" or "v2": the PROXY protocol header sent to the upstream.
	SendProxy string
	// ProxyFrom are the sources trusted to send a PROXY header; nil means none.
	ProxyFrom []netip.Prefix
	// ShareWith names the listener whose handshake material this one uses (the DTLS
	// listener built from flags shares the TCP one's), "" for its own.
	ShareWith string
	// DTLS holds a DTLS listener's flood and debugging settings; the supervisor adds its
	// handshake material (TLS, PSK) and drop hook.
	DTLS handshake.DTLSConfig
	// KeyPrefix spells the listener's keys in messages about its files: "" for flags,
	// "listeners[2]." for the file.
	KeyPrefix string
	// Mode is "" for server mode or ModeClient; Client is set in client mode.
	Mode   string
	Client ClientSpec
	// SNI lists the tenants chosen by server name; the spec itself is the default entry.
	SNI SNISpec
}

// Key names a listener key for a message, as a flag or as a key path.
func (sp ListenerSpec) Key(k string) string {
	if sp.KeyPrefix == "" {
		return FlagNamer(k)
	}
	return sp.KeyPrefix + k
}

// KeyNamer spells a listener key for messages: "--client-id" for flags,
// "listeners[2].policy.client_id" for the file.
type KeyNamer func(key string) string

// FlagNamer spells a listener key as serve's flag for it (from Settings).
func FlagNamer(key string) string { return flagFor(InListener, key) }

// FileNamer spells the keys of the file's listener i.
func FileNamer(i int) KeyNamer {
	return func(key string) string { return fmt.Sprintf("listeners[%d].%s", i, key) }
}

// prefixOf recovers the key prefix a namer puts before every key.
func prefixOf(key KeyNamer) string {
	if k := key("name"); strings.HasPrefix(k, "listeners[") {
		return strings.TrimSuffix(k, "name")
	}
	return ""
}

// BuildListener validates l and turns it into a spec. Every problem is reported, each
// naming the key (or flag) to change.
func BuildListener(l Listener, key KeyNamer) (ListenerSpec, []error) {
	switch l.Mode {
	case "", "server":
		if !remoteUnset(l.Remote) {
			return ListenerSpec{Name: l.Name}, []error{fmt.Errorf("%s is for client mode: set %s client, or drop it", key("remote"), key("mode"))}
		}
	case ModeClient:
		return buildClientListener(l, key)
	default:
		return ListenerSpec{Name: l.Name}, []error{fmt.Errorf("%s %q: want server or client", key("mode"), l.Mode)}
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	sp := ListenerSpec{Name: l.Name, Transport: l.Transport, Listen: l.Listen, KeyPrefix: prefixOf(key)}

	switch sp.Transport {
	case "", "tcp":
		sp.Transport = "tcp"
	case "dtls":
	default:
		bad("%s %q: want tcp or dtls", key("transport"), l.Transport)
	}
	if sp.Name == "" {
		sp.Name = sp.Transport
	}
	if _, _, err := net.SplitHostPort(sp.Listen); err != nil {
		bad("%s %q: want host:port or :port: %v", key("listen"), sp.Listen, err)
	}

	// Handshake material.
	sp.TLS = handshake.TLSConfig{CertFile: l.TLS.Cert, KeyFile: l.TLS.Key, ClientCAFile: l.TLS.ClientCA, CRLFiles: l.TLS.CRLs,
		ClientKeysFile: l.TLS.ClientKeys, CRLGrace: time.Duration(l.TLS.CRLGrace)}
	sp.PSKFile, sp.PSKHint = l.PSK.File, l.PSK.Hint
	sp.PSKOptions = handshake.PSKOptions{Hint: l.PSK.Hint, AllowPSKKE: l.PSK.AllowPSKKE, RevealUnknownIdentity: l.PSK.RevealUnknownIdentity}
	format := l.PSK.Format
	if format == "" {
		format = "mosquitto"
	}
	var err error
	if sp.PSKFormat, err = handshake.ParsePSKFormat(format); err != nil {
		bad("%s: %w", key("psk.format"), err)
	}
	if sp.PSKFile == "" && (l.PSK.Hint != "" || l.PSK.Format != "" && l.PSK.Format != "mosquitto") {
		bad("%s and %s need %s: the file of device keys", key("psk.hint"), key("psk.format"), key("psk.file"))
	}
	if sp.PSKFile == "" && (l.PSK.AllowPSKKE || l.PSK.RevealUnknownIdentity) {
		bad("%s and %s need %s: the file of device keys", key("psk.allow_psk_ke"), key("psk.reveal_unknown_identity"), key("psk.file"))
	}
	certs := sp.TLS.CertFile != "" || sp.TLS.KeyFile != ""
	switch {
	case !certs && sp.PSKFile == "":
		bad("%s and %s are required (the server certificate chain and its private key, PEM files), or %s for TLS-PSK",
			key("tls.cert"), key("tls.key"), key("psk.file"))
	case sp.TLS.CertFile == "" && certs:
		bad("%s is set but %s is not: give the certificate that goes with the key", key("tls.key"), key("tls.cert"))
	case sp.TLS.KeyFile == "" && certs:
		bad("%s is set but %s is not: give the certificate's private key", key("tls.cert"), key("tls.key"))
	case !certs && sp.TLS.ClientCAFile != "":
		bad("%s needs %s and %s: a PSK-only listener has no certificate handshakes", key("tls.client_ca"), key("tls.cert"), key("tls.key"))
	case !certs && sp.TLS.ClientKeysFile != "":
		bad("%s needs %s and %s: a PSK-only listener has no certificate handshakes", key("tls.client_keys"), key("tls.cert"), key("tls.key"))
	}
	// Pinned keys turn client certificates on as a client CA does, with or without one.
	mutual := sp.TLS.ClientCAFile != "" || sp.TLS.ClientKeysFile != ""
	switch auth := l.TLS.ClientAuth; {
	case auth == "" && mutual:
		sp.TLS.ClientAuth = handshake.ClientAuthRequire
	case auth == "":
		sp.TLS.ClientAuth = handshake.ClientAuthNone
	default:
		a, err := handshake.ParseClientAuth(auth)
		switch {
		case err != nil:
			bad("%s: %w", key("tls.client_auth"), err)
		case a != handshake.ClientAuthNone && !mutual:
			bad("%s %s needs %s (the CA file that issues device certificates) or %s (pinned device keys)", key("tls.client_auth"), auth, key("tls.client_ca"), key("tls.client_keys"))
		case a == handshake.ClientAuthNone && mutual:
			bad("%s none with %s or %s: drop them, or use request or require", key("tls.client_auth"), key("tls.client_ca"), key("tls.client_keys"))
		}
		sp.TLS.ClientAuth = a
	}
	if sp.TLS.CRLGrace < 0 {
		bad("%s %v: must not be negative", key("tls.crl_grace"), sp.TLS.CRLGrace)
	}
	if sp.TLS.CRLGrace > 0 && len(sp.TLS.CRLFiles) == 0 {
		bad("%s needs %s: the grace is how long a CRL counts past its next update", key("tls.crl_grace"), key("tls.crls"))
	}
	if len(sp.TLS.CRLFiles) > 0 && sp.TLS.ClientCAFile == "" {
		bad("%s needs %s: CRLs are checked against the CAs that issue device certificates", key("tls.crls"), key("tls.client_ca"))
	}
	switch v := l.TLS.MinVersion; v {
	case "", "1.2":
		sp.TLS.MinVersion = tls.VersionTLS12
	case "1.3":
		sp.TLS.MinVersion = tls.VersionTLS13
	default:
		bad("%s %q: want 1.2 or 1.3", key("tls.min_version"), v)
	}
	if sp.PSKFile != "" && l.TLS.MinVersion == "1.3" {
		sp.PSKOptions.MinVersion = tlspsk.VersionTLS13
	}
	if sp.Transport == "dtls" && l.TLS.MinVersion == "1.3" {
		bad("%s 1.3 on a DTLS listener: mqtls serves DTLS 1.2 only", key("tls.min_version"))
	}

	// Binding policy.
	identity := l.Policy.Identity
	if identity == "" {
		// One field per kind of proof the listener takes, each kind but the first behind a
		// literal prefix of its own, so that no two devices can render the same string.
		var kinds []handshake.Kind
		if sp.TLS.ClientCAFile != "" {
			kinds = append(kinds, handshake.KindCertificate)
		}
		if sp.TLS.ClientKeysFile != "" {
			kinds = append(kinds, handshake.KindPinnedKey)
		}
		if sp.PSKFile != "" {
			kinds = append(kinds, handshake.KindPSK)
		}
		identity = policy.DefaultTemplate(kinds...)
	}
	sp.Policy = policy.Config{
		Identity:          identity,
		ClientIDSeparator: l.Policy.ClientIDSeparator,
		Allow:             l.Policy.Allow,
		Deny:              l.Policy.Deny,
		IdentityProperty:  l.Policy.IdentityProperty,
		AllowSlash:        l.Policy.AllowSlash,
	}
	mode := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	if sp.Policy.ClientID, err = policy.ParseClientIDMode(mode(l.Policy.ClientID, "off")); err != nil {
		bad("%s: %s", key("policy.client_id"), trimPolicy(err))
	}
	if sp.Policy.Username, err = policy.ParseUsernameMode(mode(l.Policy.Username, "keep")); err != nil {
		bad("%s: %s", key("policy.username"), trimPolicy(err))
	}
	if sp.Policy.Password, err = policy.ParsePasswordMode(mode(l.Policy.Password, "keep")); err != nil {
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
		if _, err := policy.New(sp.Policy); err != nil {
			bad("%s", trimPolicy(err))
		}
	}
	if tmplErr == nil && len(errs) == 0 {
		errs = append(errs, identitySourceProblems(sp, tmpl, key)...)
	}

	// Proxying.
	sp.Proxy = proxy.Config{
		Name:             sp.Name,
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
		Datagram:         sp.Transport == "dtls",
		MaxDatagram:      l.DTLS.MaxDatagram,
	}
	if sp.Proxy.Upstream == "" {
		sp.Proxy.Upstream = DefaultUpstream
	}
	if sp.Transport == "dtls" {
		sp.Proxy.IdleTimeout = time.Duration(l.Timeouts.Idle)
		if l.Timeouts.Idle == 0 {
			sp.Proxy.IdleTimeout = DefaultDTLSIdle
		}
	} else if l.Timeouts.Idle != 0 {
		sp.Proxy.IdleTimeout = time.Duration(l.Timeouts.Idle)
	}
	sp.DTLS = handshake.DTLSConfig{
		MaxUnproven:              l.DTLS.MaxUnproven,
		UnprovenTimeout:          time.Duration(l.DTLS.UnprovenTimeout),
		RefuseUnknownPSKIdentity: l.DTLS.RefuseUnknownPSKIdentity,
	}
	if l.DTLS.MaxUnproven < 0 || l.DTLS.UnprovenTimeout < 0 {
		bad("%s and %s must not be negative (0 means the default)", key("dtls.max_unproven"), key("dtls.unproven_timeout"))
	}
	if sp.Proxy.MaxDatagram == 0 {
		sp.Proxy.MaxDatagram = datagram.DefaultMaxDatagram
	}
	if sp.Proxy.PerIPBurst == 0 {
		sp.Proxy.PerIPBurst = DefaultPerIPBurst
	}
	if sp.Proxy.MaxConnectSize == 0 {
		sp.Proxy.MaxConnectSize = proxy.DefaultMaxConnectSize
	}
	if err := proxy.ValidateUpstream(sp.Proxy.Upstream); err != nil {
		bad("%s: %w", key("upstream"), err)
	}
	for k, d := range map[string]Duration{"timeouts.handshake": l.Timeouts.Handshake, "timeouts.connect": l.Timeouts.Connect,
		"timeouts.dial": l.Timeouts.Dial, "timeouts.idle": l.Timeouts.Idle} {
		if d < 0 {
			bad("%s %v: must not be negative", key(k), time.Duration(d))
		}
	}
	if n := sp.Proxy.MaxConnectSize; n < 16 || n > policy.MaxRemainingLength {
		bad("%s %d: want 16 to %d bytes", key("limits.max_connect_size"), n, policy.MaxRemainingLength)
	}
	if n := sp.Proxy.MaxDatagram; n < 64 || n > datagram.MaxRecord {
		bad("%s %d: want 64 to %d bytes", key("dtls.max_datagram"), n, datagram.MaxRecord)
	}
	for k, n := range map[string]int{"limits.max_connections": l.Limits.MaxConnections, "limits.max_handshakes": l.Limits.MaxHandshakes,
		"limits.max_connections_per_identity": l.Limits.MaxConnectionsPerIdentity} {
		if n < 0 {
			bad("%s %d: must not be negative (0 means no cap)", key(k), n)
		}
	}
	if sp.Proxy.PerIPRate < 0 {
		bad("%s %v: must not be negative (0 means no limit)", key("limits.per_ip_rate"), sp.Proxy.PerIPRate)
	}
	if sp.Proxy.PerIPBurst < 1 {
		bad("%s %d: must be at least 1", key("limits.per_ip_burst"), sp.Proxy.PerIPBurst)
	}

	// PROXY protocol.
	switch sp.SendProxy = l.ProxyProtocol.Send; sp.SendProxy {
	case "", "v1", "v2":
	default:
		bad("%s %q: want v1 or v2 (or leave it empty)", key("proxy_protocol.send"), sp.SendProxy)
	}
	for _, s := range l.ProxyProtocol.AcceptFrom {
		p, err := parsePrefix(s)
		if err != nil {
			bad("%s %q: want a CIDR like 10.0.0.0/8 or an address: %v", key("proxy_protocol.accept_from"), s, err)
			continue
		}
		sp.ProxyFrom = append(sp.ProxyFrom, p)
	}
	if sp.Transport == "dtls" && (len(sp.ProxyFrom) > 0) {
		bad("%s on a DTLS listener: the PROXY protocol is accepted on TCP listeners only", key("proxy_protocol.accept_from"))
	}
	var sniErrs []error
	sp.SNI, sniErrs = buildSNI(l, key)
	errs = append(errs, sniErrs...)
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
func identitySourceProblems(sp ListenerSpec, tmpl policy.Template, key KeyNamer) []error {
	var needs []string
	if sp.Policy.ClientID != policy.ClientIDOff {
		needs = append(needs, key("policy.client_id")+" "+sp.Policy.ClientID.String())
	}
	if sp.Policy.Username == policy.UsernameIdentity {
		needs = append(needs, key("policy.username")+" identity")
	}
	if len(sp.Policy.Allow) > 0 {
		needs = append(needs, key("policy.allow"))
	}
	if sp.Policy.IdentityProperty != "" {
		needs = append(needs, key("policy.identity_property"))
	}
	if len(needs) == 0 {
		return nil
	}
	what := strings.Join(needs, " and ")
	certs, keys, psks := sp.TLS.ClientCAFile != "", sp.TLS.ClientKeysFile != "", sp.PSKFile != ""
	kinds := tmpl.Kinds()
	switch {
	case !certs && !keys && !psks:
		return []error{fmt.Errorf("%s needs an identity, but without %s, %s or %s no device proves one: add %s (device certificates), %s (pinned device keys) or %s (pre-shared keys), or drop %s",
			what, key("tls.client_ca"), key("tls.client_keys"), key("psk.file"), key("tls.client_ca"), key("tls.client_keys"), key("psk.file"), what)}
	case !(certs && slices.Contains(kinds, handshake.KindCertificate)) && !(keys && slices.Contains(kinds, handshake.KindPinnedKey)) &&
		!(psks && slices.Contains(kinds, handshake.KindPSK)):
		var have, fields []string
		if certs {
			have, fields = append(have, "certificates ("+key("tls.client_ca")+")"), append(fields, "{cn}, {uri}, {dns}, ...")
		}
		if keys {
			have, fields = append(have, "pinned keys ("+key("tls.client_keys")+")"), append(fields, "{name}")
		}
		if psks {
			have, fields = append(have, "pre-shared keys ("+key("psk.file")+")"), append(fields, "{psk}")
		}
		return []error{fmt.Errorf("%s %q names no field the devices of this listener have, so %s can never be satisfied: its devices prove %s; use %s",
			key("policy.identity"), sp.Policy.Identity, what, strings.Join(have, " or "), strings.Join(fields, " or "))}
	}
	return nil
}

// Load reads and validates a config file.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config file: %w", err)
	}
	return Parse(path, data)
}

// Parse validates the config file called path with contents data. Errors name the file,
// and the line or key path.
func Parse(path string, data []byte) (Config, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return Config{}, fmt.Errorf("config file %s: %s", path, yamlMessage(err))
	}
	cfg, level := topLevel(f, true)
	cfg.ConfigFile = path
	errs := commonProblems(&cfg, level, func(k string) string { return k })
	if len(f.Listeners) == 0 {
		errs = append(errs, errors.New("listeners: the file defines none; add at least one"))
	}
	names := map[string]int{}
	addrs := map[string]int{}
	for i, l := range f.Listeners {
		sp, e := BuildListener(l, FileNamer(i))
		errs = append(errs, e...)
		if j, dup := names[sp.Name]; dup {
			errs = append(errs, fmt.Errorf("listeners[%d].name %q: listeners[%d] has the same name; names must be unique", i, sp.Name, j))
		}
		names[sp.Name] = i
		addr := sp.Transport + " " + sp.Listen
		if _, port, _ := net.SplitHostPort(sp.Listen); port == "0" {
			addr = "" // port 0: each listener gets a port of its own from the system
		}
		if j, dup := addrs[addr]; dup && addr != "" {
			errs = append(errs, fmt.Errorf("listeners[%d].listen %q: listeners[%d] listens there too", i, sp.Listen, j))
		}
		addrs[addr] = i
		cfg.Listeners = append(cfg.Listeners, sp)
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("config file %s: %w", path, errors.Join(errs...))
	}
	return cfg, nil
}

// topLevel takes the settings outside the listeners from f, and returns the log level
// still to parse. With fileDefaults a zero drain_timeout, admin.reload_interval,
// admin.expiry_warning, log.format or log.level means its default, as the README's config
// reference says; a flag's zero is taken as written (--reload-interval 0: only on SIGHUP).
func topLevel(f File, fileDefaults bool) (Config, string) {
	cfg := Config{
		DrainTimeout: time.Duration(f.DrainTimeout),
		MemRelease:   DefaultMemoryRelease,
		BusyPoll:     time.Duration(f.BusyPoll),
		LogFormat:    f.Log.Format,
		Audit:        f.Log.Audit == nil || *f.Log.Audit,
		Admin: AdminConfig{
			Listen:           f.Admin.Listen,
			Pprof:            f.Admin.Pprof,
			ReloadInterval:   time.Duration(f.Admin.ReloadInterval),
			RevokeTerminates: f.Admin.RevokeTerminates,
			ExpiryWarning:    time.Duration(f.Admin.ExpiryWarning),
			CRLExpiryWarning: time.Duration(f.Admin.CRLExpiryWarning),
		},
	}
	if f.MemRelease != nil {
		cfg.MemRelease = time.Duration(*f.MemRelease)
	}
	level := f.Log.Level
	if !fileDefaults {
		return cfg, level
	}
	if f.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if f.Admin.ReloadInterval == 0 {
		cfg.Admin.ReloadInterval = DefaultReloadInterval
	}
	if f.Admin.ExpiryWarning == 0 {
		cfg.Admin.ExpiryWarning = DefaultExpiryWarning
	}
	if f.Admin.CRLExpiryWarning == 0 {
		cfg.Admin.CRLExpiryWarning = handshake.DefaultCRLWarnWindow
	}
	if cfg.LogFormat == "" {
		cfg.LogFormat = "auto"
	}
	if level == "" {
		level = "info"
	}
	return cfg, level
}

// yamlTypes name the structs of File the way a config file's reader knows them.
var yamlTypes = map[string]string{
	"File": "the top level", "Listener": "a listener", "Admin": "admin", "Log": "log",
	"TLS": "tls", "PSK": "psk", "Policy": "policy", "Limits": "limits",
	"Timeouts": "timeouts", "DTLS": "dtls", "ProxyProtocol": "proxy_protocol",
	"Remote": "remote", "SNI": "sni", "Tenant": "a tenant",
}

// keysOfType lists the keys of the struct of File named typeName, for suggestions.
func keysOfType(typeName string) []string {
	var keys []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		if t.Name() == typeName {
			for i := range t.NumField() {
				if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" {
					keys = append(keys, k)
				}
			}
			return
		}
		for i := range t.NumField() {
			walk(t.Field(i).Type)
		}
	}
	walk(reflect.TypeOf(File{}))
	return keys
}

var (
	yamlUnknownField = regexp.MustCompile(`field (\S+) not found in type config\.(\w+)`)
	yamlTypeName     = regexp.MustCompile(`into (\[\])?config\.(\w+)`)
)

// yamlMessage is a decoding error of yaml.v3 in the config file's terms: "unknown key
// client_cert in tls" rather than "field client_cert not found in type config.TLS".
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = yamlUnknownField.ReplaceAllStringFunc(msg, func(m string) string {
		sub := yamlUnknownField.FindStringSubmatch(m)
		where, ok := yamlTypes[sub[2]]
		switch {
		case !ok:
			return m
		}
		hint := ""
		if near := Nearest(sub[1], keysOfType(sub[2])); near != "" {
			hint = " (did you mean " + near + "?)"
		}
		if sub[2] == "File" {
			return "unknown key " + sub[1] + " at " + where + hint
		}
		return "unknown key " + sub[1] + " in " + where + hint
	})
	return yamlTypeName.ReplaceAllStringFunc(msg, func(m string) string {
		sub := yamlTypeName.FindStringSubmatch(m)
		where, ok := yamlTypes[sub[2]]
		switch {
		case !ok:
			return m
		case sub[1] != "" && sub[2] == "Listener":
			return "into the list of listeners"
		case sub[1] != "":
			return "into a list of " + where
		}
		return "into " + where
	})
}

// commonProblems checks the settings outside the listeners, naming them with key.
func commonProblems(cfg *Config, level string, key func(string) string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if cfg.LogFormat != "json" && cfg.LogFormat != "console" && cfg.LogFormat != "auto" {
		bad("%s %q: want json, console or auto", key("log.format"), cfg.LogFormat)
	}
	var err error
	if cfg.LogLevel, err = zerologLevel(level); err != nil {
		bad("%s %q: want debug, info, warn or error", key("log.level"), level)
	}
	if cfg.DrainTimeout < 0 {
		bad("%s %v: must not be negative", key("drain_timeout"), cfg.DrainTimeout)
	}
	if cfg.MemRelease < 0 {
		bad("%s %v: must not be negative (0 turns it off)", key("memory_release_after"), cfg.MemRelease)
	}
	if cfg.BusyPoll < 0 || cfg.BusyPoll > MaxBusyPoll {
		bad("%s %v: want 0 (off) to %v; the poll holds a CPU this long after each event", key("busy_poll"), cfg.BusyPoll, MaxBusyPoll)
	}
	if cfg.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.Admin.Listen); err != nil {
			bad("%s %q: want host:port or :port: %v", key("admin.listen"), cfg.Admin.Listen, err)
		}
	}
	if cfg.Admin.Pprof && cfg.Admin.Listen == "" {
		bad("%s needs %s: the address to serve it on", key("admin.pprof"), key("admin.listen"))
	}
	if cfg.Admin.ReloadInterval < 0 {
		bad("%s %v: must not be negative (0 means only on SIGHUP)", key("admin.reload_interval"), cfg.Admin.ReloadInterval)
	}
	if cfg.Admin.ExpiryWarning < 0 {
		bad("%s %v: must not be negative", key("admin.expiry_warning"), cfg.Admin.ExpiryWarning)
	}
	if cfg.Admin.CRLExpiryWarning < 0 {
		bad("%s %v: must not be negative", key("admin.crl_expiry_warning"), cfg.Admin.CRLExpiryWarning)
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

func trimPolicy(err error) string { return strings.TrimPrefix(err.Error(), "policy: ") }
