package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"reflect"
	"strings"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
)

// ModeClient is a listener's mode: "client" accepts plain MQTT from local clients and
// carries each session to a remote broker over TLS, mutual TLS or TLS-PSK (stunnel's
// client = yes). "" or "server" is the default: TLS in, plain out.
const ModeClient = "client"

// Remote is a client-mode listener's remote side: how the remote broker (upstream) is
// reached and verified, and how local clients' CONNECTs are rewritten for it.
type Remote struct {
	ServerName  string `yaml:"server_name"`
	CA          string `yaml:"ca"`
	Cert        string `yaml:"cert"`
	Key         string `yaml:"key"`
	PinnedKeys  string `yaml:"pinned_keys"`
	PSKFile     string `yaml:"psk_file"`
	PSKFormat   string `yaml:"psk_format"`
	PSKIdentity string `yaml:"psk_identity"`
	MinVersion  string `yaml:"min_version"`
	// InsecureSkipVerify accepts any server certificate; its name says what it is.
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	ClientID           string `yaml:"client_id"`
	Username           string `yaml:"username"`
}

// ClientSpec is what a client-mode listener adds to its ListenerSpec.
type ClientSpec struct {
	Remote  handshake.ClientConfig
	Rewrite policy.RewriteConfig
}

// UnixPrefix marks a listen address that is a unix socket path (client mode only).
const UnixPrefix = "unix:"

// buildClientListener is BuildListener for mode client. The settings it shares with
// server mode (upstream, limits, timeouts) are validated by BuildListener itself, on a
// copy of l holding only those.
func buildClientListener(l Listener, key KeyNamer) (ListenerSpec, []error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !serverKeysUnset(l) {
		bad("%s, %s and %s are for server mode: a client-mode listener accepts plain MQTT, and its credentials toward the remote broker go in %s",
			key("tls"), key("psk"), key("policy"), key("remote"))
	}
	if l.Transport != "" && l.Transport != "tcp" {
		bad("%s %q: a client-mode listener accepts TCP or a unix socket (listen: unix:/path)", key("transport"), l.Transport)
	}
	if l.ProxyProtocol.Send != "" || len(l.ProxyProtocol.AcceptFrom) > 0 {
		bad("%s: the PROXY protocol is not spoken toward a remote broker", key("proxy_protocol"))
	}
	shared := Listener{Name: l.Name, Listen: l.Listen, Upstream: l.Upstream, Limits: l.Limits, Timeouts: l.Timeouts,
		PSK: PSK{File: "(client mode)"}} // satisfies BuildListener's need for server material; never loaded
	unixPath, isUnix := strings.CutPrefix(l.Listen, UnixPrefix)
	if isUnix {
		if unixPath == "" {
			bad("%s %q: the unix socket path is empty", key("listen"), l.Listen)
		}
		shared.Listen = "127.0.0.1:0"
	}
	sp, e := BuildListener(shared, key)
	errs = append(errs, e...)
	sp.Listen, sp.PSKFile, sp.Policy = l.Listen, "", policy.Config{}
	if l.Upstream == "" {
		bad("%s is required in client mode: the remote broker's host:port", key("upstream"))
	}

	r := l.Remote
	cc := handshake.ClientConfig{
		ServerName: r.ServerName, CAFile: r.CA, CertFile: r.Cert, KeyFile: r.Key, ServerKeysFile: r.PinnedKeys,
		PSKFile: r.PSKFile, PSKIdentity: r.PSKIdentity, InsecureSkipVerify: r.InsecureSkipVerify,
	}
	format := r.PSKFormat
	if format == "" {
		format = "mosquitto"
	}
	var err error
	if cc.PSKFormat, err = handshake.ParsePSKFormat(format); err != nil {
		bad("%s: %w", key("remote.psk_format"), err)
	}
	switch r.MinVersion {
	case "", "1.2":
		cc.MinVersion = tls.VersionTLS12
	case "1.3":
		cc.MinVersion = tls.VersionTLS13
	default:
		bad("%s %q: want 1.2 or 1.3", key("remote.min_version"), r.MinVersion)
	}
	if err := cc.Validate(); err != nil {
		bad("%s: %w", key("remote"), err)
	}
	if h, _, err := net.SplitHostPort(l.Upstream); err == nil && cc.ServerName == "" && cc.PSKFile == "" && net.ParseIP(h) != nil && !cc.InsecureSkipVerify {
		bad("%s %q is an address: set %s to the name the remote broker's certificate carries", key("upstream"), l.Upstream, key("remote.server_name"))
	}
	rw := policy.RewriteConfig{ClientID: r.ClientID, Username: r.Username}
	if _, err := policy.NewRewrite(rw); err != nil {
		bad("%s/%s: %s", key("remote.client_id"), key("remote.username"), trimPolicy(err))
	}
	sp.Mode = ModeClient
	sp.Client = ClientSpec{Remote: cc, Rewrite: rw}
	return sp, errs
}

// remoteUnset reports whether r sets nothing but defaults, as a server-mode listener must.
func remoteUnset(r Remote) bool {
	r.PSKFormat = strings.TrimPrefix(r.PSKFormat, "mosquitto")
	r.MinVersion = strings.TrimPrefix(r.MinVersion, "1.2")
	return r == Remote{}
}

// serverKeysUnset reports whether l sets none of the server-mode tls, psk and policy keys
// to anything but its default (serve's flags fill every key with its default). It compares
// whole sections, so a key added to them later is covered without a change here.
func serverKeysUnset(l Listener) bool {
	undefault := func(v *string, def string) {
		if *v == def {
			*v = ""
		}
	}
	t, k, p := l.TLS, l.PSK, l.Policy
	undefault(&t.MinVersion, "1.2")
	undefault(&k.Format, "mosquitto")
	undefault(&p.ClientID, "off")
	undefault(&p.ClientIDSeparator, "/")
	undefault(&p.Username, "keep")
	undefault(&p.Password, "keep")
	if len(t.CRLs) == 0 {
		t.CRLs = nil
	}
	if len(p.Allow) == 0 {
		p.Allow = nil
	}
	if len(p.Deny) == 0 {
		p.Deny = nil
	}
	return reflect.DeepEqual(t, TLS{}) && k == PSK{} && reflect.DeepEqual(p, Policy{})
}
