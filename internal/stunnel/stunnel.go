package stunnel

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/internal/config"
	"github.com/mqtls/mqtls/proxy"
)

// stunnelOption is one "key = value" line of a stunnel.conf.
type stunnelOption struct {
	line      int
	key       string // as written; stunnel compares keys without case
	value     string
	inherited bool // set in the global section, a default for every service
}

func (o stunnelOption) is(key string) bool { return strings.EqualFold(o.key, key) }

// String shows the option as the file has it, with secrets left out.
func (o stunnelOption) String() string {
	v := o.value
	if isSecretOption(o.key) {
		v = "<redacted>"
	}
	return o.key + " = " + v
}

func isSecretOption(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "secret") && k != "psksecrets" || strings.Contains(k, "password") ||
		strings.Contains(k, "pin") || k == "enginectrl"
}

// stunnelSection is the global section (name "") or one [service].
type stunnelSection struct {
	name string
	line int
	opts []stunnelOption
}

// parseStunnel splits a stunnel.conf into its global section and services. Like stunnel,
// it takes lines starting with ';' or '#' as comments and keys without regard to case.
func parseStunnel(data []byte) ([]stunnelSection, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // stunnel on Windows writes a BOM
	sections := []stunnelSection{{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == ';' || line[0] == '#':
		case line[0] == '[':
			name, ok := strings.CutSuffix(line[1:], "]")
			name = strings.TrimSpace(name)
			if !ok || name == "" {
				return nil, fmt.Errorf("line %d: %q: want [service name]", n, line)
			}
			sections = append(sections, stunnelSection{name: name, line: n})
		default:
			key, value, ok := strings.Cut(line, "=")
			key, value = strings.TrimSpace(key), strings.TrimSpace(value)
			if !ok || key == "" {
				return nil, fmt.Errorf("line %d: %q: want key = value, [service name] or a comment", n, line)
			}
			s := &sections[len(sections)-1]
			s.opts = append(s.opts, stunnelOption{line: n, key: key, value: value})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return sections, nil
}

// Why stunnel options have no mqtls equivalent, by lower-case key. An option missing from
// both this table and the ones the converter translates gets unknownOptionWhy.
var stunnelUntranslated = map[string]string{
	// Global options: the process, which systemd manages for mqtls.
	"foreground":    "mqtls always runs in the foreground and never forks; under systemd use Type=simple (examples/gateway/mqtls.service)",
	"pid":           "mqtls writes no pid file: systemd tracks the process (systemctl reload mqtls sends SIGHUP, systemctl stop mqtls SIGTERM)",
	"setuid":        "start mqtls unprivileged with systemd instead: DynamicUser=yes, plus AmbientCapabilities=CAP_NET_BIND_SERVICE for ports below 1024 (examples/gateway/mqtls.service)",
	"setgid":        "start mqtls unprivileged with systemd instead: DynamicUser=yes, and SupplementaryGroups= for a group that may read the key files (examples/gateway/mqtls.service)",
	"output":        "mqtls logs JSON lines to stdout; under systemd they go to the journal (journalctl -u mqtls); log.format: console gives plain text",
	"syslog":        "mqtls logs to stdout; under systemd the journal collects it and forwards it to syslog when the journal is set up to",
	"log":           "mqtls logs to stdout; under systemd the journal keeps and rotates it",
	"chroot":        "use systemd's sandboxing instead: ProtectSystem=strict, ReadOnlyPaths=/etc/mqtls, PrivateTmp=yes (examples/gateway/mqtls.service)",
	"compression":   "TLS compression is insecure (CRIME) and mqtls never uses it",
	"egd":           "mqtls takes randomness from the kernel (getrandom)",
	"rndbytes":      "mqtls takes randomness from the kernel (getrandom)",
	"rndfile":       "mqtls takes randomness from the kernel (getrandom)",
	"rndoverwrite":  "mqtls takes randomness from the kernel (getrandom)",
	"engine":        "OpenSSL engines (hardware keys) are not supported: tls.key must be a PEM file",
	"enginectrl":    "OpenSSL engines (hardware keys) are not supported: tls.key must be a PEM file",
	"enginedefault": "OpenSSL engines (hardware keys) are not supported: tls.key must be a PEM file",
	"engineid":      "OpenSSL engines (hardware keys) are not supported: tls.key must be a PEM file",
	"enginenum":     "OpenSSL engines (hardware keys) are not supported: tls.key must be a PEM file",
	"fips":          "Go's cryptographic module has a FIPS 140-3 mode of its own: run mqtls with GODEBUG=fips140=on (Environment= in the systemd unit)",
	"iconactive":    "Windows GUI option",
	"iconerror":     "Windows GUI option",
	"iconidle":      "Windows GUI option",
	"taskbar":       "Windows GUI option",
	"service":       "names an inetd or Windows service; under systemd the unit is examples/gateway/mqtls.service",
	"include":       "convert each included file on its own and put their listeners into one file",

	// Service options.
	"ciphers":                "mqtls's cipher suites are fixed and cannot be chosen: AEAD only (ECDHE with AES-GCM or ChaCha20-Poly1305; for PSK also AES-CCM, and AES-CBC only with encrypt-then-MAC)",
	"ciphersuites":           "mqtls's TLS 1.3 suites are Go's fixed set (AES-GCM and ChaCha20-Poly1305) and cannot be chosen",
	"curves":                 "mqtls uses Go's key exchange groups (X25519, P-256, P-384) and they cannot be chosen",
	"ecdhcurve":              "mqtls uses Go's key exchange groups (X25519, P-256, P-384) and they cannot be chosen",
	"options":                "OpenSSL options; mqtls's protocol settings are fixed: no SSLv3, TLS 1.0 or 1.1, no compression, no renegotiation",
	"securitylevel":          "OpenSSL security level; mqtls's algorithms are fixed (TLS 1.2 or later, ECDHE and AEAD suites only)",
	"config":                 "OpenSSL configuration commands; mqtls's TLS settings are fixed",
	"pskidentity":            "client-side option (the identity stunnel sends when it is the PSK client): stunnel ignores it in a server service; in a client service it is remote.psk_identity",
	"sessioncachesize":       resumptionWhy,
	"sessioncachetimeout":    resumptionWhy,
	"sessionresume":          resumptionWhy,
	"sessiond":               resumptionWhy,
	"ticketkeysecret":        resumptionWhy,
	"ticketmacsecret":        resumptionWhy,
	"sni":                    "sni takes service:server-name in a server service (a tenant of that service's listener, sni.tenants) and a server name in a client service (remote.server_name)",
	"checkhost":              "to accept only some client certificates, use policy.allow over the identity (policy.identity {dns} or {cn})",
	"checkemail":             "to accept only some client certificates, use policy.allow over the identity (policy.identity {email})",
	"checkip":                "to accept only some client certificates, use policy.allow over the identity (policy.identity {cn} or {dns})",
	"crlpath":                "mqtls reads CRL files, not a hashed directory: list each CRL file under tls.crls",
	"ocsp":                   "mqtls does not query OCSP responders: publish a CRL and list it under tls.crls",
	"ocspaia":                "mqtls does not query OCSP responders: publish a CRL and list it under tls.crls",
	"ocspflag":               "mqtls does not query OCSP responders: publish a CRL and list it under tls.crls",
	"ocspnonce":              "mqtls does not query OCSP responders: publish a CRL and list it under tls.crls",
	"ocsprequire":            "mqtls does not query OCSP responders: publish a CRL and list it under tls.crls",
	"local":                  "mqtls dials the upstream from the system's default source address",
	"transparent":            "mqtls cannot send the device's address as its own; set proxy_protocol.send: v2 for a broker that reads PROXY headers",
	"delay":                  "mqtls resolves the upstream on every dial",
	"failover":               "mqtls has one upstream per listener; when it is down, devices get CONNACK server unavailable",
	"retry":                  "mqtls dials the upstream once per connection; when it is down, devices get CONNACK server unavailable",
	"exec":                   "mqtls forwards to a broker over TCP or a unix socket only",
	"execargs":               "mqtls forwards to a broker over TCP or a unix socket only",
	"pty":                    "mqtls forwards to a broker over TCP or a unix socket only",
	"redirect":               "mqtls refuses a device that fails verification with a TLS alert; it does not redirect it",
	"libwrap":                "TCP wrappers are not supported: use the firewall, or policy.allow and policy.deny over identities",
	"ident":                  "ident lookups are not supported",
	"logid":                  "every mqtls log line carries conn_id",
	"socket":                 "socket options: mqtls uses Go's defaults (TCP_NODELAY, TCP keep-alive)",
	"stack":                  "not needed in Go",
	"reset":                  "mqtls ends a session with TLS close_notify and a FIN",
	"timeoutbusy":            "mqtls has no timeout for a blocked transfer; timeouts.idle closes sessions that stop sending",
	"timeoutclose":           "when one side of a session ends, mqtls gives the other a fixed " + proxy.DefaultCloseTimeout.String() + " to finish",
	"protocolauthentication": "belongs to protocol negotiation, which mqtls does not do (it speaks MQTT)",
	"protocoldomain":         "belongs to protocol negotiation, which mqtls does not do (it speaks MQTT)",
	"protocolheader":         "belongs to protocol negotiation, which mqtls does not do (it speaks MQTT)",
	"protocolhost":           "belongs to protocol negotiation, which mqtls does not do (it speaks MQTT)",
	"protocolpassword":       "belongs to protocol negotiation, which mqtls does not do (it speaks MQTT)",
	"protocolusername":       "belongs to protocol negotiation, which mqtls does not do (it speaks MQTT)",
}

const (
	unknownOptionWhy = "no mqtls equivalent"
	resumptionWhy    = "session resumption cannot be tuned: certificate sessions resume with Go's session tickets (keys rotated automatically); TLS-PSK sessions do not resume"
)

// stunnelGlobalOnly are the options that apply to the process, not to a service.
var stunnelGlobalOnly = []string{
	"chroot", "compression", "egd", "engine", "enginectrl", "enginedefault", "fips", "foreground",
	"iconactive", "iconerror", "iconidle", "log", "output", "pid", "rndbytes", "rndfile", "rndoverwrite",
	"service", "setgid", "setuid", "syslog", "taskbar", "include",
}

// stunnelPerService are the service options the converter weighs per service: they
// translate, or not, depending on the rest of the service. In the global section they are
// defaults for every service.
var stunnelPerService = []string{
	"accept", "connect", "cert", "key", "cafile", "capath", "crlfile", "verify", "verifychain",
	"verifypeer", "requirecert", "psksecrets", "sslversion", "sslversionmin", "sslversionmax",
	"timeoutidle", "timeoutconnect", "protocol", "renegotiation", "client", "debug",
}

// stunnelConverter turns a parsed stunnel.conf into listeners and notes.
type stunnelConverter struct {
	// readFile reads a CAfile whose certificates become pinned keys.
	readFile func(string) ([]byte, error)
	// keyFiles are the pinned-key files made so far.
	keyFiles []KeyFile

	notes []stunnelNote
}

// stunnelNote is one line of what convert prints on stderr, about stunnel's line.
type stunnelNote struct {
	line int
	text string
}

func (cv *stunnelConverter) note(line int, s string) {
	if !slices.Contains(cv.notes, stunnelNote{line, s}) {
		cv.notes = append(cv.notes, stunnelNote{line, s})
	}
}

// sortFrom puts the notes from index i on in the order of the file's lines.
func (cv *stunnelConverter) sortFrom(i int) {
	slices.SortStableFunc(cv.notes[i:], func(a, b stunnelNote) int { return a.line - b.line })
}

func (cv *stunnelConverter) texts() []string {
	var out []string
	for _, n := range cv.notes {
		out = append(out, n.text)
	}
	return out
}

// untranslated notes an option of service svc ("" for the global section) that has no
// mqtls equivalent.
func (cv *stunnelConverter) untranslated(svc string, o stunnelOption, why string) {
	cv.note(o.line, fmt.Sprintf("%s line %d: %s: not translated: %s", where(svc, o), o.line, o, why))
}

// changed notes an option translated to something that behaves differently.
func (cv *stunnelConverter) changed(svc string, o stunnelOption, what string) {
	cv.note(o.line, fmt.Sprintf("%s line %d: %s: changed: %s", where(svc, o), o.line, o, what))
}

func where(svc string, o stunnelOption) string {
	if svc == "" {
		return "global"
	}
	return "service [" + svc + "]"
}

// converted is one listener with, for the file's comments, the stunnel lines each of its
// keys came from.
type converted struct {
	l       config.Listener
	sources map[string]string // key path ("tls.cert") → "line 12: cert = ..."
	head    string
}

// KeyFile is a pinned-key file a conversion made (see ConvertFiles).
type KeyFile struct {
	Path string // where the converted config's tls.client_keys expects it
	Data []byte // its contents, in the format of handshake.ParseKeys
}

// Convert translates a stunnel.conf (called file, with contents data) into an mqtls
// config file. The notes say, one per line, what was not translated or behaves
// differently, and why; they are returned even with an error. The pinned-key files of
// services that verify the peer are not returned: use ConvertFiles to write them.
func Convert(file string, data []byte) ([]byte, []string, error) {
	out, notes, _, err := ConvertFiles(file, data, os.ReadFile)
	return out, notes, err
}

// ConvertFiles is Convert that also returns the pinned-key files the config names. A
// service that verifies the peer (verify = 3 or 4, verifyPeer = yes) trusts exactly the
// certificates in its CAfile; mqtls pins their public keys (tls.client_keys) rather than
// trust them as CAs (tls.client_ca), which would let each listed device issue certificates
// for the others. readFile reads those CAfiles; one it cannot read gets a keys file path
// that does not exist yet, so check and serve fail until it is made.
func ConvertFiles(file string, data []byte, readFile func(string) ([]byte, error)) ([]byte, []string, []KeyFile, error) {
	out, notes, err := convert(file, data, readFile)
	if err != nil {
		return nil, notes, nil, err
	}
	return out.config, notes, out.keyFiles, nil
}

type conversion struct {
	config   []byte
	keyFiles []KeyFile
}

func convert(file string, data []byte, readFile func(string) ([]byte, error)) (conversion, []string, error) {
	sections, err := parseStunnel(data)
	if err != nil {
		return conversion{}, nil, fmt.Errorf("stunnel config %s: %w", file, err)
	}
	cv := &stunnelConverter{readFile: readFile}
	var defaults []stunnelOption
	for _, o := range sections[0].opts {
		k := strings.ToLower(o.key)
		switch {
		case k == "debug":
			cv.untranslated("", o, debugWhy(o.value))
		case slices.Contains(stunnelGlobalOnly, k):
			cv.untranslated("", o, whyNot(k))
		case slices.Contains(stunnelPerService, k):
			o.inherited = true
			defaults = append(defaults, o)
		default:
			cv.untranslated("", o, whyNot(k))
		}
	}
	var out []converted
	var tenants []stunnelSection // services with sni = parent:name, for after their parents
	for _, s := range sections[1:] {
		opts := append(slices.Clone(defaults), s.opts...)
		if _, _, _, ok := sniOf(opts); ok && !isClient(opts) {
			tenants = append(tenants, s)
			continue
		}
		from := len(cv.notes)
		if c, ok := cv.service(s, opts); ok {
			out = append(out, c)
		}
		cv.sortFrom(from)
	}
	for _, s := range tenants {
		from := len(cv.notes)
		cv.tenant(out, s, append(slices.Clone(defaults), s.opts...))
		cv.sortFrom(from)
	}
	if len(out) == 0 {
		return conversion{}, cv.texts(), fmt.Errorf("stunnel config %s: no server service to convert", file)
	}
	text, err := encodeConverted(file, out)
	if err != nil {
		return conversion{}, cv.texts(), err
	}
	// The output must be a config serve accepts: refuse to print one that is not.
	if _, err := config.Parse(file, text); err != nil {
		return conversion{}, cv.texts(), fmt.Errorf("converting: the result does not validate: %w", err)
	}
	return conversion{config: text, keyFiles: cv.keyFiles}, cv.texts(), nil
}

func whyNot(key string) string {
	if why, ok := stunnelUntranslated[key]; ok {
		return why
	}
	return unknownOptionWhy
}

// debugWhy points from stunnel's debug level (a syslog level, by number or name, maybe
// after a facility: "local0.info") to log.level.
func debugWhy(v string) string {
	if i := strings.LastIndexByte(v, '.'); i >= 0 {
		v = v[i+1:]
	}
	levels := []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}
	n, err := strconv.Atoi(v)
	if err != nil {
		n = slices.Index(levels, strings.ToLower(v))
		if strings.EqualFold(v, "error") {
			n = 3
		}
	}
	level := "info"
	switch {
	case n >= 7:
		level = "debug"
	case n == 4:
		level = "warn"
	case n >= 0 && n <= 3:
		level = "error"
	}
	return "mqtls logs at log.level (debug, info, warn or error); the closest to this level is log.level: " + level
}

// service converts one [service]. It returns false, with a note saying why, for a service
// mqtls cannot serve.
func (cv *stunnelConverter) service(s stunnelSection, opts []stunnelOption) (converted, bool) {
	svc := s.name
	skip := func(o stunnelOption, why string) (converted, bool) {
		cv.note(o.line, fmt.Sprintf("service [%s] line %d: %s: not translated: %s; service skipped", svc, o.line, o, why))
		return converted{}, false
	}
	skipService := func(why string) (converted, bool) {
		cv.note(s.line, fmt.Sprintf("service [%s] line %d: [%s]: not translated: %s; service skipped", svc, s.line, svc, why))
		return converted{}, false
	}
	for _, o := range slices.Backward(opts) {
		if o.is("client") {
			if yes, _ := stunnelBool(o.value); yes {
				return cv.clientService(s, opts) // client.go
			}
			break
		}
	}

	c := converted{sources: map[string]string{}, head: fmt.Sprintf("line %d: [%s]", s.line, svc)}
	l := &c.l
	l.Name = svc
	src := func(key string, o stunnelOption) { c.sources[key] = fmt.Sprintf("line %d: %s", o.line, o) }
	// rewritten is src for a value mqtls writes otherwise than stunnel: the comment says
	// both, so nobody has to work out which address or file it became.
	rewritten := func(key string, o stunnelOption, value string) {
		src(key, o)
		if value != o.value {
			c.sources[key] += ", written " + value
		}
	}

	var accepts, connects []stunnelOption
	var cert, key, caFile, caPath, crlFile, pskFile, auth *stunnelOption
	var chain, peer, require bool
	var verifyZero *stunnelOption
	var minVer, maxVer *stunnelOption
	for _, o := range opts {
		k := strings.ToLower(o.key)
		switch k {
		case "accept":
			accepts = append(accepts, o)
		case "connect":
			connects = append(connects, o)
		case "cert":
			cert = &o
		case "key":
			key = &o
		case "cafile":
			caFile = &o
		case "capath":
			caPath = &o
		case "crlfile":
			crlFile = &o
		case "psksecrets":
			pskFile = &o
		case "verify":
			n, err := strconv.Atoi(o.value)
			if err != nil || n < 0 || n > 4 {
				cv.untranslated(svc, o, "not a verify level (0 to 4)")
				continue
			}
			// stunnel 5: 0 asks for a certificate and ignores it, 1 verifies one if given,
			// 2 requires one, 3 also requires it to be in CAfile, 4 only that.
			require, chain, peer = n >= 2, n >= 1 && n <= 3, n >= 3
			auth, verifyZero = &o, nil
			if n == 0 {
				verifyZero = &o
			}
		case "verifychain", "verifypeer", "requirecert":
			yes, ok := stunnelBool(o.value)
			if !ok {
				cv.untranslated(svc, o, "want yes or no")
				continue
			}
			switch {
			case k == "requirecert":
				require = yes
			case k == "verifychain":
				chain = yes
			default:
				peer = yes
			}
			if yes && k != "requirecert" { // stunnel: verifyChain and verifyPeer imply requireCert
				require = true
			}
			auth = &o
		case "sslversion":
			minVer, maxVer = &o, &o
		case "sslversionmin":
			minVer = &o
		case "sslversionmax":
			maxVer = &o
		case "timeoutidle", "timeoutconnect":
			n, err := strconv.Atoi(o.value)
			if err != nil || n < 0 {
				cv.untranslated(svc, o, "not a number of seconds")
				continue
			}
			d := config.Duration(time.Duration(n) * time.Second)
			if k == "timeoutidle" {
				l.Timeouts.Idle = d
				src("timeouts.idle", o)
			} else {
				l.Timeouts.Dial = d
				src("timeouts.dial", o)
			}
		case "protocol":
			if strings.EqualFold(o.value, "proxy") {
				l.ProxyProtocol.Send = "v1"
				src("proxy_protocol.send", o)
				continue
			}
			cv.untranslated(svc, o, "mqtls speaks MQTT and negotiates no other protocol before TLS")
		case "renegotiation":
			if yes, _ := stunnelBool(o.value); yes {
				cv.untranslated(svc, o, "mqtls refuses renegotiation")
			} else {
				cv.untranslated(svc, o, "not needed: mqtls refuses renegotiation whatever the configuration")
			}
		case "client":
		case "debug":
			cv.untranslated(svc, o, debugWhy(o.value))
		default:
			cv.untranslated(svc, o, whyNot(k))
		}
	}

	// Addresses. A service's own accept and connect replace the global section's.
	accepts, connects = own(accepts), own(connects)
	if len(accepts) == 0 {
		return skipService("no accept: the address to listen on")
	}
	if strings.HasPrefix(accepts[0].value, "/") {
		return skip(accepts[0], "mqtls listens on TCP and UDP addresses, not unix sockets")
	}
	o := cv.first(svc, accepts, "an mqtls listener has one address: add another listener for it")
	l.Listen = stunnelAddr(o.value, "0.0.0.0") // stunnel: no host is every IPv4 address, not IPv6
	rewritten("listen", o, l.Listen)
	if len(connects) == 0 {
		return skipService("no connect: the broker to forward to")
	}
	o = cv.first(svc, connects, "an mqtls listener has one upstream; stunnel's failover to the next connect is not carried over")
	if strings.HasPrefix(o.value, "/") {
		l.Upstream = "unix:" + o.value
	} else {
		l.Upstream = stunnelAddr(o.value, "127.0.0.1") // stunnel: no host is localhost
	}
	rewritten("upstream", o, l.Upstream)

	// Server certificate and PSKs.
	if cert != nil {
		l.TLS.Cert = cert.value
		src("tls.cert", *cert)
		if key == nil {
			// stunnel reads the key from the certificate file when key is not set.
			l.TLS.Key = cert.value
			c.sources["tls.key"] = fmt.Sprintf("line %d: %s (stunnel reads the key from the certificate file when key is not set)", cert.line, *cert)
		}
	}
	if key != nil {
		l.TLS.Key = key.value
		src("tls.key", *key)
	}
	if pskFile != nil {
		l.PSK.File, l.PSK.Format = pskFile.value, "stunnel"
		src("psk.file", *pskFile)
	}
	certs := l.TLS.Cert != "" || l.TLS.Key != ""
	if !certs && l.PSK.File == "" {
		return skipService("neither cert nor PSKsecrets: mqtls needs a server certificate (tls.cert, tls.key) or pre-shared keys (psk.file)")
	}

	// Client certificates.
	verifying := chain || peer
	switch {
	case !verifying || !certs:
		if verifyZero != nil && certs {
			cv.untranslated(svc, *verifyZero, "stunnel asks for a client certificate and accepts it unverified; mqtls verifies every certificate it asks for, so this listener asks for none (client_auth none)")
		}
		if verifying && auth != nil {
			cv.untranslated(svc, *auth, "a service without cert has no certificate handshakes to verify clients in; PSKsecrets authenticates its devices")
		}
		if !verifying && auth != nil && auth.is("requireCert") && require {
			cv.untranslated(svc, *auth, "requireCert only matters with verifyChain or verifyPeer, which this service does not set")
		}
		why := "this service does not verify client certificates (no verifyChain, verifyPeer or verify of 1 or more), so mqtls needs no CA for them"
		if verifying {
			why = "a service without cert verifies no client certificates"
		}
		for _, o := range []*stunnelOption{caFile, caPath, crlFile} {
			if o != nil {
				cv.untranslated(svc, *o, why)
			}
		}
	case peer && caFile != nil:
		// The peer must be one of CAfile's certificates: pin their keys. As a client CA
		// each listed device could issue a certificate for any other.
		l.TLS.ClientKeys = cv.pinnedKeys(svc, *caFile)
		src("tls.client_keys", *caFile)
		l.TLS.ClientAuth = "require"
		src("tls.client_auth", *auth)
		if chain {
			cv.changed(svc, *auth, "mqtls pins the public keys of CAfile's certificates (tls.client_keys): a device must present one of them, as stunnel requires, but its chain is not verified as well")
		}
		if caPath != nil {
			cv.untranslated(svc, *caPath, "pinned keys come from CAfile only: add the directory's device certificates with mqtls keys add")
		}
		if crlFile != nil {
			cv.untranslated(svc, *crlFile, "pinned keys are not checked against CRLs: to revoke a device, remove its line from tls.client_keys")
		}
	default:
		switch {
		case caFile != nil:
			l.TLS.ClientCA = caFile.value
			src("tls.client_ca", *caFile)
			if caPath != nil {
				cv.untranslated(svc, *caPath, fmt.Sprintf("mqtls takes one CA bundle file, not a directory: concatenate the directory's certificates into one file (cat %s/*.pem >> %s)", caPath.value, caFile.value))
			}
		case caPath != nil:
			// Fail closed: name a bundle that does not exist yet, so check and serve refuse
			// to run until it does, rather than accept unverified devices.
			bundle := strings.TrimRight(caPath.value, "/") + ".pem"
			l.TLS.ClientCA = bundle
			c.sources["tls.client_ca"] = fmt.Sprintf("line %d: %s (make this file: see the note on stderr)", caPath.line, *caPath)
			cv.untranslated(svc, *caPath, fmt.Sprintf("mqtls takes one CA bundle file, not a directory: concatenate the directory's certificates into one file (cat %s/*.pem > %s); tls.client_ca names it", caPath.value, bundle))
		default:
			return skip(*auth, "no CAfile or CApath to verify client certificates against")
		}
		l.TLS.ClientAuth = "request"
		if require {
			l.TLS.ClientAuth = "require"
		}
		src("tls.client_auth", *auth)
		if peer {
			cv.changed(svc, *auth, "CApath is not translated into pinned keys: the certificates of tls.client_ca are trusted as issuers, so a device certificate they issued is accepted as well as one listed there; pin the listed devices with mqtls keys add and tls.client_keys instead")
		}
		if crlFile != nil {
			l.TLS.CRLs = []string{crlFile.value}
			src("tls.crls", *crlFile)
		}
	}

	// Protocol versions.
	if minVer != nil {
		v, ok := stunnelVersion(minVer.value)
		switch {
		case !ok:
			cv.untranslated(svc, *minVer, "not a TLS version (TLSv1.2, TLSv1.3, all, ...)")
		case v >= 13:
			l.TLS.MinVersion = "1.3"
			src("tls.min_version", *minVer)
		case v == 12:
			l.TLS.MinVersion = "1.2"
			src("tls.min_version", *minVer)
		default:
			l.TLS.MinVersion = "1.2"
			src("tls.min_version", *minVer)
			cv.changed(svc, *minVer, "tls.min_version is 1.2: mqtls accepts TLS 1.2 and 1.3 only, so devices limited to older versions fail the handshake")
		}
	}
	if maxVer != nil {
		v, ok := stunnelVersion(maxVer.value)
		switch {
		case !ok:
			if maxVer != minVer {
				cv.untranslated(svc, *maxVer, "not a TLS version (TLSv1.2, TLSv1.3, all, ...)")
			}
		case strings.EqualFold(maxVer.value, "all"), maxVer == minVer && v < 12: // the minimum's note says it
		case v < 12:
			cv.untranslated(svc, *maxVer, "mqtls accepts TLS 1.2 and 1.3 only: devices limited to older versions cannot connect")
		case v == 12:
			cv.untranslated(svc, *maxVer, "mqtls has no maximum version: it also accepts TLS 1.3 (certificates and PSKs), which devices use when they offer it")
		}
	}

	if l.Policy.ClientID == "" {
		c.head += "\nIdentity binding is off, as in stunnel: the broker sees whatever client ID the device sends.\n" +
			"To bind it to the identity the handshake proved, add policy: {client_id: enforce} (and an ACL on %c)."
	}
	if why := invalid(c.l); why != "" {
		return skipService(why)
	}
	return c, true
}

// first returns the first of opts, noting each further one as not translated, for why.
func (cv *stunnelConverter) first(svc string, opts []stunnelOption, why string) stunnelOption {
	for _, o := range opts[1:] {
		cv.untranslated(svc, o, why)
	}
	return opts[0]
}

// own drops the options inherited from the global section when the service has its own.
func own(opts []stunnelOption) []stunnelOption {
	if i := slices.IndexFunc(opts, func(o stunnelOption) bool { return !o.inherited }); i >= 0 {
		return opts[i:]
	}
	return opts
}

// stunnelAddr turns stunnel's [host:]port into host:port; a bare port gets host bare.
func stunnelAddr(v, bare string) string {
	i := strings.LastIndexByte(v, ':')
	if i < 0 {
		return bare + ":" + v
	}
	host, port := v[:i], v[i+1:]
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]" // IPv6, which stunnel writes without brackets: :::8883
	}
	return host + ":" + port
}

func stunnelBool(v string) (value, ok bool) {
	switch strings.ToLower(v) {
	case "yes":
		return true, true
	case "no":
		return false, true
	}
	return false, false
}

// stunnelVersion parses an sslVersion value into 10 (SSLv2, SSLv3 and TLSv1 alike), 11,
// 12 or 13; "all" is the lowest.
func stunnelVersion(v string) (int, bool) {
	switch strings.ToLower(v) {
	case "all", "sslv2", "sslv3", "tlsv1", "tlsv1.0":
		return 10, true
	case "tlsv1.1":
		return 11, true
	case "tlsv1.2":
		return 12, true
	case "tlsv1.3":
		return 13, true
	}
	return 0, false
}

// encodeConverted writes the listeners as an mqtls config file: the keys of config.File in
// its order, only those set, each with a comment naming the stunnel line it came from.
func encodeConverted(file string, cs []converted) ([]byte, error) {
	seq := &yaml.Node{Kind: yaml.SequenceNode}
	for _, c := range cs {
		n := structNode(reflect.ValueOf(c.l), "", c.sources)
		n.HeadComment = c.head
		seq.Content = append(seq.Content, n)
	}
	root := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{strNode("listeners"), seq}}
	doc := &yaml.Node{
		Kind: yaml.DocumentNode,
		HeadComment: "mqtls config file converted from the stunnel config " + file + " by `mqtls convert stunnel`.\n" +
			"Options with no mqtls equivalent were listed on stderr. Check it with: mqtls check --config FILE",
		Content: []*yaml.Node{root},
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("writing the config file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("writing the config file: %w", err)
	}
	return buf.Bytes(), nil
}

// structNode encodes the set fields of a config struct, in declaration order, under their
// yaml keys; prefix is the key path of v ("tls.").
func structNode(v reflect.Value, prefix string, comments map[string]string) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for i := range v.NumField() {
		f, fv := v.Type().Field(i), v.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || fv.IsZero() {
			continue
		}
		path := prefix + key
		var n *yaml.Node
		switch {
		case fv.Type() == reflect.TypeOf(config.Duration(0)):
			d := time.Duration(fv.Int())
			s := d.String()
			if d%time.Second == 0 {
				s = strconv.FormatInt(int64(d/time.Second), 10) + "s"
			}
			n = strNode(s)
		case fv.Kind() == reflect.Struct:
			n = structNode(fv, path+".", comments)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct: // sni.tenants
			n = &yaml.Node{Kind: yaml.SequenceNode}
			for j := range fv.Len() {
				e := structNode(fv.Index(j), fmt.Sprintf("%s.%d.", path, j), comments)
				e.HeadComment = comments[fmt.Sprintf("%s.%d", path, j)]
				n.Content = append(n.Content, e)
			}
		case fv.Kind() == reflect.Slice:
			n = &yaml.Node{Kind: yaml.SequenceNode}
			for j := range fv.Len() {
				n.Content = append(n.Content, strNode(fmt.Sprint(fv.Index(j).Interface())))
			}
		case fv.Kind() == reflect.String:
			n = strNode(fv.String())
		default:
			n = &yaml.Node{Kind: yaml.ScalarNode, Value: fmt.Sprint(fv.Interface())}
		}
		k := strNode(key)
		if c := comments[path]; c != "" {
			if n.Kind == yaml.ScalarNode {
				n.LineComment = c
			} else {
				k.LineComment = c
			}
		}
		m.Content = append(m.Content, k, n)
	}
	return m
}

func strNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if strings.HasPrefix(s, ":") {
		n.Style = yaml.DoubleQuotedStyle // ":8883" reads better quoted, as the README writes it
	}
	return n
}

// pinnedKeys makes the pinned-key file of a service that verifies the peer against
// caFile's certificates, and returns its path: caFile with the extension .keys, next to
// it. Each certificate is named after its CN, made safe for a name, or its place in the
// file; names are unique. A CAfile that cannot be read or holds no certificate gets a
// note, and the path is returned anyway, so the config fails closed until the file exists.
func (cv *stunnelConverter) pinnedKeys(svc string, caFile stunnelOption) string {
	path := strings.TrimSuffix(caFile.value, filepath.Ext(caFile.value)) + ".keys"
	if path == caFile.value {
		path += ".keys"
	}
	for _, kf := range cv.keyFiles {
		if kf.Path == path { // another service of the same CAfile
			return path
		}
	}
	fail := func(why string) string {
		cv.untranslated(svc, caFile, fmt.Sprintf("%s; make %s with `mqtls keys add --file %s NAME CERT.pem` for each device certificate in it (tls.client_keys names it)", why, path, path))
		return path
	}
	data, err := cv.readFile(caFile.value)
	if err != nil {
		return fail(fmt.Sprintf("reading it for its certificates' keys: %v", err))
	}
	var lines bytes.Buffer
	fmt.Fprintf(&lines, "# pinned keys of the certificates in %s, by mqtls convert stunnel\n", caFile.value)
	names, hashes := map[string]bool{}, map[string]string{}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fail(fmt.Sprintf("certificate %d does not parse: %v", n, err))
		}
		hash, err := handshake.SPKIHash(pem.EncodeToMemory(block))
		if err != nil {
			return fail(fmt.Sprintf("certificate %d: %v", n, err))
		}
		if prev, dup := hashes[hash]; dup {
			cv.note(caFile.line, fmt.Sprintf("service [%s] line %d: %s: changed: certificate %d has the key of %s, pinned once", svc, caFile.line, caFile, n, prev))
			continue
		}
		name := keyName(cert.Subject.CommonName)
		if name == "" || names[name] {
			name = fmt.Sprintf("%s-%d", orDefault(name, "cert"), n)
		}
		names[name], hashes[hash] = true, name
		fmt.Fprintf(&lines, "%s:%s\n", name, hash)
	}
	if n == 0 {
		return fail("it holds no PEM certificate")
	}
	if _, err := handshake.ParseKeys(path, lines.Bytes()); err != nil {
		return fail(fmt.Sprintf("its certificates do not make a pinned-key file: %v", err))
	}
	cv.keyFiles = append(cv.keyFiles, KeyFile{Path: path, Data: lines.Bytes()})
	return path
}

// keyName makes s a pinned key's name: runes a name may not hold become '-'.
func keyName(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(":/+#", r) || r == utf8.RuneError {
			return '-'
		}
		return r
	}, s)
	if len(s) > 100 {
		s = strings.ToValidUTF8(s[:100], "")
	}
	return s
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
