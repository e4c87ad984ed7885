package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/mqtls/mqtls/handshake"
)

func TestNewRewriteRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  RewriteConfig
		want string
	}{
		{"unknown field", RewriteConfig{ClientID: "{cn}/{nope}"}, "unknown field {nope}"},
		{"server-only field", RewriteConfig{ClientID: "{uri}/{client_id}"}, "unknown field {uri}"},
		{"unbalanced open", RewriteConfig{ClientID: "{cn/{client_id}"}, "unbalanced '{'"},
		{"unbalanced close", RewriteConfig{Username: "cn}"}, "unbalanced '}'"},
		{"NUL in literal", RewriteConfig{ClientID: "a\x00{client_id}"}, "not valid UTF-8 without U+0000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewRewrite(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewRewrite(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
			}
		})
	}
	if r, err := NewRewrite(RewriteConfig{}); r != nil || err != nil {
		t.Errorf("NewRewrite of no template = %v, %v; want nil, nil", r, err)
	}
}

// TestRewriteCheck: a template naming a field the gateway's credential lacks is refused
// at load, not rendered half empty for every session.
func TestRewriteCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		tmpl string
		gw   handshake.Identity
		ok   bool
	}{
		{"cn with a certificate", "{cn}/{client_id}", certID("gw-1"), true},
		{"psk with a PSK", "{psk}/{client_id}", pskID("gw-psk"), true},
		{"cn with a PSK", "{cn}/{client_id}", pskID("gw-psk"), false},
		{"psk with a certificate", "{psk}/{client_id}", certID("gw-1"), false},
		{"cn without a credential", "{cn}/{client_id}", handshake.Identity{}, false},
		{"local fields only without a credential", "site-{client_id}", handshake.Identity{}, true},
		{"two CNs", "{cn}/{client_id}", handshake.Identity{Kind: handshake.KindCertificate, CommonName: "b", CommonNames: []string{"a", "b"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRewrite(RewriteConfig{ClientID: tc.tmpl})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Check(tc.gw); (err == nil) != tc.ok {
				t.Errorf("Check = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestRewriteBind(t *testing.T) {
	gw := certID("gw-1")
	withUser := packet(header(Level311, 0x82), s16("dev7"), s16("alice"))
	for _, tc := range []struct {
		name       string
		cfg        RewriteConfig
		pkt        []byte
		wantID     string
		wantUser   string
		wantReason string
	}{
		{"client ID into the namespace", RewriteConfig{ClientID: "{cn}/{client_id}"}, withUser, "gw-1/dev7", "alice", ""},
		{"user name from both", RewriteConfig{Username: "{cn}:{username}"}, withUser, "dev7", "gw-1:alice", ""},
		{"user name where none was sent", RewriteConfig{Username: "{cn}"}, packet(header(Level311, 0x02), s16("dev7")), "dev7", "gw-1", ""},
		{"empty local client ID", RewriteConfig{ClientID: "{cn}/{client_id}"}, packet(header(Level311, 0x02), s16("")), "", "", ReasonClientIDInvalid},
		{"wildcard in local client ID", RewriteConfig{ClientID: "{cn}/{client_id}"}, packet(header(Level311, 0x02), s16("a/#")), "", "", ReasonClientIDInvalid},
		{"missing user name", RewriteConfig{Username: "{username}"}, packet(header(Level311, 0x02), s16("dev7")), "", "", ReasonClientIDInvalid},
		{"3.1 limit applies to the result", RewriteConfig{ClientID: "{cn}/{client_id}"}, packet(header(Level31, 0x02), s16("abcdefghijklmnopqrstu")), "", "", ReasonClientIDInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRewrite(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseConnect(tc.pkt)
			if err != nil {
				t.Fatal(err)
			}
			d, err := r.Bind(gw, &c)
			if tc.wantReason != "" {
				var rej *Reject
				if !errors.As(err, &rej) || rej.Reason != tc.wantReason {
					t.Fatalf("Bind = %v, want a rejection with reason %s", err, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out, err := ParseConnect(d.Packet)
			if err != nil {
				t.Fatalf("the rewritten CONNECT does not parse: %v", err)
			}
			if string(out.ClientID) != tc.wantID || string(out.Username) != tc.wantUser || string(d.ClientID) != tc.wantID {
				t.Errorf("forwarded client ID %q user %q, want %q %q", out.ClientID, out.Username, tc.wantID, tc.wantUser)
			}
		})
	}
}

// FuzzParseRewrite: any template either is refused or renders a CONNECT that parses.
func FuzzParseRewrite(f *testing.F) {
	for _, s := range []string{"{cn}/{client_id}", "{psk}-{username}", "{", "}", "{client_id}{client_id}", "x{o}y{ou}z"} {
		f.Add(s)
	}
	pkt := packet(header(Level5, 0x82), props(), s16("dev7"), s16("alice"))
	f.Fuzz(func(t *testing.T, s string) {
		r, err := NewRewrite(RewriteConfig{ClientID: s, Username: s})
		if err != nil || r == nil {
			return
		}
		gw := handshake.Identity{Kind: handshake.KindCertificate, CommonName: "gw", Organization: []string{"o"}, OrganizationalUnit: []string{"ou"}, SerialNumber: "1", Fingerprint: "ab"}
		if r.Check(gw) != nil {
			return
		}
		c, err := ParseConnect(pkt)
		if err != nil {
			t.Fatal(err)
		}
		d, err := r.Bind(gw, &c)
		if err != nil {
			return
		}
		if _, err := ParseConnect(d.Packet); err != nil {
			t.Fatalf("template %q: rewritten CONNECT does not parse: %v", s, err)
		}
	})
}
