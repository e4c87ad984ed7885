package stunnel

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mqtls/mqtls/internal/config"
)

// clientService converts a service with client = yes (stunnel wraps local plaintext
// connections in TLS toward a remote server) into a client-mode listener.
func (cv *stunnelConverter) clientService(s stunnelSection, opts []stunnelOption) (converted, bool) {
	svc := s.name
	skipService := func(why string) (converted, bool) {
		cv.note(s.line, fmt.Sprintf("service [%s] line %d: [%s]: not translated: %s; service skipped", svc, s.line, svc, why))
		return converted{}, false
	}
	c := converted{sources: map[string]string{}, head: fmt.Sprintf("line %d: [%s] (client = yes)", s.line, svc)}
	l := &c.l
	l.Name, l.Mode = svc, config.ModeClient
	src := func(key string, o stunnelOption) { c.sources[key] = fmt.Sprintf("line %d: %s", o.line, o) }

	var accepts, connects []stunnelOption
	var caFile, checkHost, sni, chain, peer, minVer *stunnelOption
	for _, o := range opts {
		k := strings.ToLower(o.key)
		switch k {
		case "accept":
			accepts = append(accepts, o)
		case "connect":
			connects = append(connects, o)
		case "cert":
			l.Remote.Cert = o.value
			src("remote.cert", o)
			if l.Remote.Key == "" {
				l.Remote.Key = o.value // stunnel reads the key from the certificate file when key is not set
				src("remote.key", o)
			}
		case "key":
			l.Remote.Key = o.value
			src("remote.key", o)
		case "cafile":
			caFile = &o
		case "checkhost":
			checkHost = &o
		case "sni":
			sni = &o
		case "verifychain":
			chain = &o
		case "verifypeer":
			peer = &o
		case "psksecrets":
			l.Remote.PSKFile, l.Remote.PSKFormat = o.value, "stunnel"
			src("remote.psk_file", o)
		case "pskidentity":
			l.Remote.PSKIdentity = o.value
			src("remote.psk_identity", o)
		case "sslversion", "sslversionmin":
			minVer = &o
		case "timeoutidle", "timeoutconnect":
			cv.untranslated(svc, o, "client mode uses timeouts.idle and timeouts.dial like server mode: set them by hand")
		case "client", "sslversionmax":
		case "debug":
			cv.untranslated(svc, o, debugWhy(o.value))
		case "verify":
			cv.untranslated(svc, o, "use verifyChain = yes (remote.ca) or checkHost (remote.server_name): mqtls always verifies the remote broker")
		default:
			cv.untranslated(svc, o, whyNot(k))
		}
	}

	accepts, connects = own(accepts), own(connects)
	if len(accepts) == 0 {
		return skipService("no accept: the local address to listen on")
	}
	o := cv.first(svc, accepts, "an mqtls listener has one address: add another listener for it")
	if strings.HasPrefix(o.value, "/") {
		l.Listen = config.UnixPrefix + o.value
	} else {
		l.Listen = stunnelAddr(o.value, "")
	}
	src("listen", o)
	if len(connects) == 0 {
		return skipService("no connect: the remote broker")
	}
	o = cv.first(svc, connects, "an mqtls listener has one upstream; stunnel's failover to the next connect is not carried over")
	l.Upstream = stunnelAddr(o.value, "127.0.0.1")
	src("upstream", o)

	psk := l.Remote.PSKFile != ""
	if psk && l.Remote.PSKIdentity == "" {
		return skipService("PSKsecrets without PSKidentity: stunnel then sends the file's first identity; set PSKidentity (remote.psk_identity) to the one to use")
	}
	// The remote's name: sni sets what is sent, checkHost what is checked; mqtls uses one.
	switch {
	case checkHost != nil:
		l.Remote.ServerName = checkHost.value
		src("remote.server_name", *checkHost)
		if sni != nil && !strings.EqualFold(sni.value, checkHost.value) {
			cv.untranslated(svc, *sni, "mqtls sends the name it checks (remote.server_name, from checkHost) as SNI")
		}
	case sni != nil:
		l.Remote.ServerName = sni.value
		src("remote.server_name", *sni)
		if !psk {
			cv.changed(svc, *sni, "mqtls also checks the remote's certificate for this name (stunnel sent it but checked nothing without checkHost)")
		}
	}
	verifies := chain != nil && isYes(*chain)
	switch {
	case psk:
		for _, x := range []*stunnelOption{caFile, chain, peer, checkHost} {
			if x != nil {
				cv.untranslated(svc, *x, "a TLS-PSK uplink uses no certificates")
			}
		}
		l.Remote.ServerName = ""
		delete(c.sources, "remote.server_name")
	default:
		if caFile != nil {
			l.Remote.CA = caFile.value
			src("remote.ca", *caFile)
		}
		if !verifies {
			what := "stunnel did not verify the remote broker (no verifyChain = yes); mqtls does, against "
			if caFile != nil {
				what += "remote.ca"
			} else {
				what += "the system roots"
			}
			o := opts[0]
			if chain != nil {
				o = *chain
			}
			cv.changed(svc, o, what+"; set remote.insecure_skip_verify: true only to keep stunnel's behaviour for a test")
		}
		if peer != nil && isYes(*peer) {
			cv.untranslated(svc, *peer, "to accept only a known server key, list it in remote.pinned_keys (mqtls keys add)")
		}
	}
	if minVer != nil {
		switch v, ok := stunnelVersion(minVer.value); {
		case ok && v >= 13:
			l.Remote.MinVersion = "1.3"
			src("remote.min_version", *minVer)
		case ok && v < 12:
			cv.changed(svc, *minVer, "mqtls offers the remote broker TLS 1.2 and 1.3 only")
		}
	}
	if why := invalid(c.l); why != "" {
		return skipService(why)
	}
	return c, true
}

func isYes(o stunnelOption) bool { yes, _ := stunnelBool(o.value); return yes }

// sniOf reports a server service that stunnel serves on another service's port for the
// server names matching a pattern: "sni = parent:pattern".
func sniOf(opts []stunnelOption) (o stunnelOption, parent, pattern string, ok bool) {
	i := slices.IndexFunc(opts, func(o stunnelOption) bool { return o.is("sni") && !o.inherited })
	if i < 0 {
		return stunnelOption{}, "", "", false
	}
	parent, pattern, ok = strings.Cut(opts[i].value, ":")
	return opts[i], parent, pattern, ok
}

// tenant converts a service with "sni = parent:pattern" into a tenant of the listener
// converted from parent.
func (cv *stunnelConverter) tenant(out []converted, s stunnelSection, opts []stunnelOption) {
	o, parent, pattern, _ := sniOf(opts)
	skip := func(why string) {
		cv.note(o.line, fmt.Sprintf("service [%s] line %d: %s: not translated: %s; service skipped", s.name, o.line, o, why))
	}
	i := slices.IndexFunc(out, func(c converted) bool { return c.l.Name == parent && c.l.Mode == "" })
	switch {
	case i < 0:
		skip(fmt.Sprintf("no server service [%s] was converted to serve it", parent))
		return
	case strings.ContainsAny(pattern, "*?"):
		skip("mqtls matches server names exactly: list each name as a tenant's server_names")
		return
	}
	// Convert it as a service on its parent's address, then keep what a tenant has.
	own := append(slices.Clone(opts), stunnelOption{line: o.line, key: "accept", value: out[i].l.Listen})
	own = slices.DeleteFunc(own, func(x stunnelOption) bool { return x.is("sni") })
	c, ok := cv.service(s, own)
	if !ok {
		return
	}
	p := &out[i]
	p.l.SNI.Tenants = append(p.l.SNI.Tenants, config.Tenant{Name: s.name, ServerNames: []string{pattern},
		Upstream: c.l.Upstream, TLS: c.l.TLS, PSK: c.l.PSK, Policy: c.l.Policy})
	n := len(p.l.SNI.Tenants) - 1
	p.sources[fmt.Sprintf("sni.tenants.%d", n)] = fmt.Sprintf("line %d: [%s] %s", s.line, s.name, o)
	for k, v := range c.sources { // the tenant's lines, where its keys landed
		if k != "listen" {
			p.sources[fmt.Sprintf("sni.tenants.%d.%s", n, k)] = v
		}
	}
}

// isClient reports a service with client = yes (the last one given counts).
func isClient(opts []stunnelOption) bool {
	for _, o := range slices.Backward(opts) {
		if o.is("client") {
			return isYes(o)
		}
	}
	return false
}

// invalid says why l is not a listener serve accepts, "" if it is.
func invalid(l config.Listener) string {
	_, errs := config.BuildListener(l, config.FileNamer(0))
	if len(errs) == 0 {
		return ""
	}
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, strings.TrimPrefix(e.Error(), "listeners[0]."))
	}
	return "the result does not validate: " + strings.Join(msgs, "; ")
}
