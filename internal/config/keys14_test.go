package config

import (
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// TestBuildListenerPinnedKeysAndPSK13: the #14 and #15 keys reach the spec: client_keys
// turns client certificates on by itself, the default identity names each kind of proof
// the listener takes, TLS 1.3 PSK follows min_version, and impossible combinations name
// their keys.
func TestBuildListenerPinnedKeysAndPSK13(t *testing.T) {
	base := func() Listener {
		return Listener{Name: "l", Listen: ":8883", TLS: TLS{Cert: "s.crt", Key: "s.key"}}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Listener)
		check func(ListenerSpec) bool
		err   string
	}{
		{name: "client_keys alone", edit: func(l *Listener) { l.TLS.ClientKeys = "k" },
			check: func(sp ListenerSpec) bool {
				return sp.TLS.ClientKeysFile == "k" && sp.TLS.ClientAuth == handshake.ClientAuthRequire && sp.Policy.Identity == "{name}"
			}},
		{name: "client_ca and client_keys", edit: func(l *Listener) { l.TLS.ClientKeys, l.TLS.ClientCA = "k", "ca" },
			check: func(sp ListenerSpec) bool { return sp.Policy.Identity == "{cn}key-{name}" }},
		{name: "mixed", edit: func(l *Listener) { l.TLS.ClientCA, l.PSK.File = "ca", "p" },
			check: func(sp ListenerSpec) bool { return sp.Policy.Identity == "{cn}psk-{psk}" }},
		{name: "one-way TLS and PSK", edit: func(l *Listener) { l.PSK.File = "p" },
			check: func(sp ListenerSpec) bool { return sp.Policy.Identity == "{psk}" }},
		{name: "crl_grace", edit: func(l *Listener) {
			l.TLS.ClientCA, l.TLS.CRLs, l.TLS.CRLGrace = "ca", []string{"c"}, Duration(2*time.Hour)
		}, check: func(sp ListenerSpec) bool { return sp.TLS.CRLGrace == 2*time.Hour }},
		{name: "PSK TLS 1.3 only", edit: func(l *Listener) { l.PSK.File, l.TLS.MinVersion, l.PSK.AllowPSKKE = "p", "1.3", true },
			check: func(sp ListenerSpec) bool {
				return sp.PSKOptions.MinVersion == tlspsk.VersionTLS13 && sp.PSKOptions.AllowPSKKE
			}},
		{name: "allow_slash", edit: func(l *Listener) { l.Policy.AllowSlash = true },
			check: func(sp ListenerSpec) bool { return sp.Policy.AllowSlash }},
		{name: "crls with client_keys only", edit: func(l *Listener) { l.TLS.ClientKeys, l.TLS.CRLs = "k", []string{"c"} },
			err: "tls.crls needs tls.client_ca"},
		{name: "crl_grace without crls", edit: func(l *Listener) { l.TLS.ClientCA, l.TLS.CRLGrace = "ca", Duration(time.Hour) },
			err: "tls.crl_grace needs tls.crls"},
		{name: "client_auth none with client_keys", edit: func(l *Listener) { l.TLS.ClientKeys, l.TLS.ClientAuth = "k", "none" },
			err: "tls.client_auth none with tls.client_ca or tls.client_keys"},
		{name: "PSK options without a PSK file", edit: func(l *Listener) { l.PSK.RevealUnknownIdentity = true },
			err: "psk.reveal_unknown_identity need psk.file"},
		{name: "client_keys on a PSK-only listener", edit: func(l *Listener) { l.TLS = TLS{ClientKeys: "k"}; l.PSK.File = "p" },
			err: "tls.client_keys needs tls.cert and tls.key"},
		{name: "{name} with client_id enforce and no keys", edit: func(l *Listener) {
			l.TLS.ClientCA, l.Policy.Identity, l.Policy.ClientID = "ca", "{name}", "enforce"
		}, err: "its devices prove certificates (tls.client_ca); use {cn}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := base()
			tc.edit(&l)
			sp, errs := BuildListener(l, func(k string) string { return k })
			if tc.err != "" {
				var msgs []string
				for _, e := range errs {
					msgs = append(msgs, e.Error())
				}
				if !strings.Contains(strings.Join(msgs, "\n"), tc.err) {
					t.Errorf("errors %q, want one containing %q", msgs, tc.err)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if !tc.check(sp) {
				t.Errorf("spec %+v", sp)
			}
		})
	}
}

// TestCRLExpiryWarningDefault: the config file's zero admin.crl_expiry_warning is
// handshake.DefaultCRLWarnWindow.
func TestCRLExpiryWarningDefault(t *testing.T) {
	cfg, err := Parse("f.yaml", []byte("listeners: [{listen: ':1', tls: {cert: a, key: b}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.CRLExpiryWarning != handshake.DefaultCRLWarnWindow {
		t.Errorf("crl_expiry_warning %v, want %v", cfg.Admin.CRLExpiryWarning, handshake.DefaultCRLWarnWindow)
	}
}
