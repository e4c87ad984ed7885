package policy

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/mqtls/mqtls/handshake"
)

func TestParseModes(t *testing.T) {
	for _, m := range []ClientIDMode{ClientIDOff, ClientIDEnforce, ClientIDPrefix, ClientIDRewrite} {
		if got, err := ParseClientIDMode(m.String()); err != nil || got != m {
			t.Errorf("ParseClientIDMode(%q) = %v, %v", m, got, err)
		}
	}
	for _, m := range []UsernameMode{UsernameKeep, UsernameIdentity, UsernameStrip} {
		if got, err := ParseUsernameMode(m.String()); err != nil || got != m {
			t.Errorf("ParseUsernameMode(%q) = %v, %v", m, got, err)
		}
	}
	for _, m := range []PasswordMode{PasswordKeep, PasswordStrip} {
		if got, err := ParsePasswordMode(m.String()); err != nil || got != m {
			t.Errorf("ParsePasswordMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseClientIDMode("Enforce"); err == nil || err.Error() != `policy: unknown client ID mode "Enforce" (want off, enforce, prefix or rewrite)` {
		t.Errorf("ParseClientIDMode error: %v", err)
	}
	if _, err := ParseUsernameMode(""); err == nil || err.Error() != `policy: unknown username mode "" (want keep, identity or strip)` {
		t.Errorf("ParseUsernameMode error: %v", err)
	}
	if _, err := ParsePasswordMode("drop"); err == nil || err.Error() != `policy: unknown password mode "drop" (want keep or strip)` {
		t.Errorf("ParsePasswordMode error: %v", err)
	}
	if got := ClientIDMode(9).String(); got != "ClientIDMode(9)" {
		t.Errorf("String() = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"zero value", Config{}, nil},
		{"everything", Config{Identity: "tenant-{o}-{cn}", ClientID: ClientIDPrefix, ClientIDSeparator: ":",
			Username: UsernameIdentity, Password: PasswordStrip, Allow: []string{"tenant-acme-.*"}, Deny: []string{`tenant-acme-bad\d+`},
			IdentityProperty: "mqtls-identity"}, nil},
		{"bad template", Config{Identity: "{nope}"}, []string{"policy: identity: identity template \"{nope}\": unknown field {nope} (valid fields: cn,"}},
		{"bad regexp", Config{Allow: []string{"dev.*", "a("}}, []string{"policy: allow[1] \"a(\": error parsing regexp: missing closing ): `a(`"}},
		{"regexp that only fails anchored", Config{Deny: []string{"a)|(b"}}, []string{"policy: deny[0] \"a)|(b\": error parsing regexp"}},
		{"empty pattern", Config{Deny: []string{""}}, []string{"policy: deny[0] is empty; remove it, or write ^$"}},
		{"bad modes", Config{ClientID: 4, Username: 3, Password: 2}, []string{
			"policy: client_id: unknown mode 4 (want off, enforce, prefix or rewrite)",
			"policy: username: unknown mode 3 (want keep, identity or strip)",
			"policy: password: unknown mode 2 (want keep or strip)",
		}},
		{"bad separator", Config{ClientID: ClientIDPrefix, ClientIDSeparator: "\x00"}, []string{"policy: client_id_separator"}},
		{"bad identity property", Config{IdentityProperty: "a\xff"}, []string{"policy: identity_property"}},
		{"several at once", Config{Identity: "{", Allow: []string{"("}}, []string{"policy: identity:", "policy: allow[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := New(tt.cfg); err != nil {
					t.Fatal(err)
				}
				return
			}
			for _, w := range tt.want {
				if !contains(err, w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if p, err2 := New(tt.cfg); p != nil || err2 == nil || err2.Error() != err.Error() {
				t.Errorf("New = %v, %v; want nil and the Validate error", p, err2)
			}
		})
	}
}

func TestNeedsIdentity(t *testing.T) {
	tests := []struct {
		cfg  Config
		want bool
	}{
		{Config{}, false},
		{Config{Username: UsernameStrip, Password: PasswordStrip}, false},
		{Config{Deny: []string{"x"}}, false},
		{Config{ClientID: ClientIDEnforce}, true},
		{Config{ClientID: ClientIDPrefix}, true},
		{Config{ClientID: ClientIDRewrite}, true},
		{Config{Username: UsernameIdentity}, true},
		{Config{Allow: []string{"x"}}, true},
		{Config{IdentityProperty: "id"}, true},
	}
	for _, tt := range tests {
		p, err := New(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.NeedsIdentity(); got != tt.want {
			t.Errorf("%+v: NeedsIdentity() = %v, want %v", tt.cfg, got, tt.want)
		}
	}
	p, _ := New(Config{})
	if p.Template().String() != "{cn}" {
		t.Errorf("default template %q, want {cn}", p.Template())
	}
}

func TestBindAccept(t *testing.T) {
	forged := packet(header(Level5, 0x02), props(
		[]byte{0x11, 0, 0, 0, 5}, // session expiry interval: kept in place
		userProp("mqtls-identity", "forged"),
		userProp("k", "v"),              // unrelated user property: kept in order
		userProp("MQTLS-IDENTITY", "x"), // names are case-sensitive: kept
		userProp("mqtls-identity", "again"),
	), s16("dev1"))

	tests := []struct {
		name string
		cfg  Config
		id   handshake.Identity
		pkt  []byte
		want []byte // nil: forwarded as received (Raw, no copy)
	}{
		{"off, no identity", Config{}, handshake.Identity{}, connect311, nil},
		{"off, 3.1", Config{}, certID("x"), connect31, nil},
		{"off, 5.0 empty ID", Config{}, handshake.Identity{}, connect5PasswordOnly, nil},
		{"enforce 3.1.1", Config{ClientID: ClientIDEnforce}, certID("dev1"), connect311, nil},
		{"enforce 5.0", Config{ClientID: ClientIDEnforce}, certID("dev1"), connect5, nil},
		{"enforce psk", Config{Identity: "{psk}", ClientID: ClientIDEnforce}, pskID("dev1"), connect31, nil},
		{"enforce mixed template", Config{Identity: "{cn}psk-{psk}", ClientID: ClientIDEnforce}, certID("dev1"), connect311, nil},
		{"prefix", Config{ClientID: ClientIDPrefix}, certID("dev1"), packet(header(Level311, 0x02), s16("dev1/kitchen")), nil},
		{"prefix one byte", Config{ClientID: ClientIDPrefix}, certID("dev1"), packet(header(Level311, 0x02), s16("dev1/k")), nil},
		{"prefix custom separator", Config{ClientID: ClientIDPrefix, ClientIDSeparator: "::"}, certID("dev1"), packet(header(Level5, 0x02), props(), s16("dev1::2")), nil},
		{"rewrite already equal", Config{ClientID: ClientIDRewrite}, certID("dev1"), connect311, nil},
		{"username identity already equal", Config{Username: UsernameIdentity}, certID("alice"), connect311, nil},
		{"strip with nothing to strip", Config{Username: UsernameStrip, Password: PasswordStrip}, certID("dev1"), connect311Min, nil},
		{"identity property ignored on 3.1.1", Config{IdentityProperty: "mqtls-identity"}, certID("dev1"), connect311, nil},
		{"identity property already last", Config{IdentityProperty: "id"}, certID("dev1"),
			packet(header(Level5, 0x02), props(userProp("k", "v"), userProp("id", "dev1")), s16("c")), nil},
		{"allow match", Config{Allow: []string{"gw-.*", "dev[0-9]+"}}, certID("dev1"), connect311, nil},
		{"deny miss", Config{Deny: []string{"dev"}}, certID("dev1"), connect311, nil}, // anchored: "dev" is not "dev1"
		{"deny does not need an identity", Config{Deny: []string{"bad"}}, handshake.Identity{}, connect311, nil},

		{"rewrite", Config{ClientID: ClientIDRewrite}, certID("device-7"), connect311Min, []byte{
			0x10, 0x14, // CONNECT, remaining length 20
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, // unchanged variable header
			0x00, 0x08, 'd', 'e', 'v', 'i', 'c', 'e', '-', '7', // client ID: the identity
		}},
		// 3.1.1 refuses an empty ID with clean session 0 [MQTT-3.1.3-8], but after the rewrite
		// the ID is not empty, so it is forwarded.
		{"rewrite empty ID clean 0", Config{ClientID: ClientIDRewrite}, certID("dev1"), connect311EmptyID, []byte{
			0x10, 0x10, // CONNECT, remaining length 16
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x00, 0x00, 0x3c, // clean session still 0
			0x00, 0x04, 'd', 'e', 'v', '1', // client ID
		}},
		{"rewrite 5.0 empty ID", Config{ClientID: ClientIDRewrite}, certID("dev1"), connect5PasswordOnly, []byte{
			0x10, 0x18, // CONNECT, remaining length 24
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x40, 0x00, 0x00, 0x00, // header, property length 0
			0x00, 0x04, 'd', 'e', 'v', '1', // client ID
			0x00, 0x05, 't', 'o', 'k', 'e', 'n', // password kept: 5.0 allows it alone
		}},
		{"username identity added", Config{Username: UsernameIdentity}, certID("dev1"), connect311Min, []byte{
			0x10, 0x16, // CONNECT, remaining length 22
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04,
			0x82,       // flags: user name added, clean session
			0x00, 0x3c, // keep alive
			0x00, 0x04, 'd', 'e', 'v', '1', // client ID
			0x00, 0x04, 'd', 'e', 'v', '1', // user name: the identity
		}},
		{"username identity replaces", Config{Username: UsernameIdentity, ClientID: ClientIDEnforce}, certID("dev1"), connect311,
			packet(header(Level311, 0xee)[:8], []byte{0x00, 0x1e}, s16("dev1"), s16("d/dev1/status"), s16("gone"), s16("dev1"), s16("s3cret"))},
		// 3.x forbids a password without a user name [MQTT-3.1.2-22], so it goes too.
		{"3.1.1 username strip drops password", Config{Username: UsernameStrip}, certID("dev1"), connect311,
			packet(header(Level311, 0x2e)[:8], []byte{0x00, 0x1e}, s16("dev1"), s16("d/dev1/status"), s16("gone"))},
		{"5.0 username strip keeps password", Config{Username: UsernameStrip}, certID("dev1"), connect5,
			packet(connect5[2:9], []byte{0x56}, connect5[10:76], s16("s3cret"))},
		{"password strip", Config{Password: PasswordStrip}, certID("dev1"), connect311,
			packet(header(Level311, 0xae)[:8], []byte{0x00, 0x1e}, s16("dev1"), s16("d/dev1/status"), s16("gone"), s16("alice"))},
		{"username identity and password strip 3.1", Config{Username: UsernameIdentity, Password: PasswordStrip, ClientID: ClientIDEnforce}, certID("dev1"),
			packet(header(Level31, 0xc2), s16("dev1"), s16("u"), s16("p")),
			packet(header(Level31, 0x82), s16("dev1"), s16("dev1"))},
		{"identity property replaces forged", Config{IdentityProperty: "mqtls-identity", ClientID: ClientIDEnforce}, certID("dev1"), forged,
			packet(header(Level5, 0x02), props(
				[]byte{0x11, 0, 0, 0, 5},
				userProp("k", "v"),
				userProp("MQTLS-IDENTITY", "x"),
				userProp("mqtls-identity", "dev1"), // ours, last
			), s16("dev1"))},
		{"identity property added", Config{IdentityProperty: "id"}, certID("dev1"), connect5PasswordOnly,
			packet(header(Level5, 0x40)[:8], []byte{0, 0}, props(userProp("id", "dev1")), s16(""), s16("token"))},
		{"everything at once", Config{Identity: "t-{cn}", ClientID: ClientIDRewrite, Username: UsernameIdentity, Password: PasswordStrip, IdentityProperty: "id"},
			certID("dev1"), connect5,
			packet(cat(connect5[2:9], []byte{0x96}, connect5[10:12]), props(connect5[13:28], userProp("id", "t-dev1")),
				s16("t-dev1"), connect5[34:76], s16("t-dev1"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, c, d, err := bind(t, tt.cfg, tt.id, tt.pkt)
			before, _ := ParseConnect(tt.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if diffConnect(c, before) != "" || !bytes.Equal(tt.pkt, c.Raw) {
				t.Error("Bind modified its input")
			}
			if tt.want == nil {
				if d.Rewritten || &d.Packet[0] != &c.Raw[0] || len(d.Packet) != len(c.Raw) {
					t.Errorf("want Raw forwarded as is; Rewritten=%v\n got % x", d.Rewritten, d.Packet)
				}
			} else if !d.Rewritten || !bytes.Equal(d.Packet, tt.want) {
				t.Errorf("Rewritten=%v\n got % x\nwant % x", d.Rewritten, d.Packet, tt.want)
			}
			if err := checkBind(tt.cfg, p.Template().Render(tt.id), &c, d, nil); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestBindReject(t *testing.T) {
	long24 := strings.Repeat("x", 24)
	tests := []struct {
		name   string
		cfg    Config
		id     handshake.Identity
		pkt    []byte
		code   Code
		reason string
		msg    string
	}{
		{"enforce without identity", Config{ClientID: ClientIDEnforce}, handshake.Identity{}, connect311,
			CodeNotAuthorized, ReasonNoIdentity, `policy: no_identity: identity template "{cn}" renders empty for this none session`},
		{"psk template on a certificate", Config{Identity: "{psk}", ClientID: ClientIDRewrite}, certID("dev1"), connect311,
			CodeNotAuthorized, ReasonNoIdentity, "certificate session"},
		{"literal template without identity", Config{Identity: "tenant-{cn}", Username: UsernameIdentity}, handshake.Identity{}, connect311,
			CodeNotAuthorized, ReasonNoIdentity, ""},
		{"allow without identity", Config{Allow: []string{".*"}}, handshake.Identity{}, connect311,
			CodeNotAuthorized, ReasonNoIdentity, ""},
		{"property without identity", Config{IdentityProperty: "id"}, handshake.Identity{}, connect5,
			CodeNotAuthorized, ReasonNoIdentity, ""},
		{"enforce mismatch", Config{ClientID: ClientIDEnforce}, certID("dev2"), connect311,
			CodeClientIDNotValid, ReasonClientIDMismatch, `policy: client_id_mismatch: client ID "dev1" is not the identity "dev2"`},
		{"enforce is exact", Config{ClientID: ClientIDEnforce}, certID("dev"), connect311,
			CodeClientIDNotValid, ReasonClientIDMismatch, ""},
		{"prefix without suffix", Config{ClientID: ClientIDPrefix}, certID("dev1"), packet(header(Level311, 0x02), s16("dev1/")),
			CodeClientIDNotValid, ReasonClientIDMismatch, `then "/" and a suffix`},
		{"prefix equal to identity", Config{ClientID: ClientIDPrefix}, certID("dev1"), connect311,
			CodeClientIDNotValid, ReasonClientIDMismatch, ""},
		{"prefix longer identity", Config{ClientID: ClientIDPrefix}, certID("dev1"), packet(header(Level311, 0x02), s16("dev10/a")),
			CodeClientIDNotValid, ReasonClientIDMismatch, ""},
		{"prefix wrong separator", Config{ClientID: ClientIDPrefix, ClientIDSeparator: ":"}, certID("dev1"), packet(header(Level311, 0x02), s16("dev1/a")),
			CodeClientIDNotValid, ReasonClientIDMismatch, ""},
		{"prefix shorter than identity", Config{ClientID: ClientIDPrefix}, certID("device-1"), packet(header(Level311, 0x02), s16("dev")),
			CodeClientIDNotValid, ReasonClientIDMismatch, ""},
		{"deny", Config{Deny: []string{"dev[0-9]"}, Allow: []string{"dev1"}}, certID("dev1"), connect311,
			CodeNotAuthorized, ReasonIdentityDenied, `policy: identity_denied: identity "dev1" matches deny[0]`},
		{"not allowed", Config{Allow: []string{"gw-.*", "dev"}}, certID("dev1"), connect311,
			CodeNotAuthorized, ReasonIdentityNotAllowed, `policy: identity_not_allowed: identity "dev1" matches no allow pattern`},
		{"allow is anchored at the start", Config{Allow: []string{"ev1"}}, certID("dev1"), connect311,
			CodeNotAuthorized, ReasonIdentityNotAllowed, ""},
		{"allow alternation is anchored", Config{Allow: []string{"a|dev"}}, certID("dev1"), connect311,
			CodeNotAuthorized, ReasonIdentityNotAllowed, ""},
		{"3.1.1 empty ID clean 0", Config{}, handshake.Identity{}, connect311EmptyID,
			CodeClientIDNotValid, ReasonClientIDInvalid, "policy: client_id_invalid: empty client ID with clean session 0 [MQTT-3.1.3-8]"},
		{"3.1 empty ID", Config{}, handshake.Identity{}, packet(header(Level31, 0x02), s16("")),
			CodeClientIDNotValid, ReasonClientIDInvalid, "is 0 bytes; MQTT 3.1 needs 1 to 23"},
		{"3.1 24-byte ID", Config{}, handshake.Identity{}, packet(header(Level31, 0x02), s16(long24)),
			CodeClientIDNotValid, ReasonClientIDInvalid, "is 24 bytes"},
		{"3.1 rewrite to 24 bytes", Config{ClientID: ClientIDRewrite}, certID(long24), connect31,
			CodeClientIDNotValid, ReasonClientIDInvalid, ""},
		{"3.1 enforce 24 bytes", Config{ClientID: ClientIDEnforce}, certID(long24), packet(header(Level31, 0x02), s16(long24)),
			CodeClientIDNotValid, ReasonClientIDInvalid, ""},
		{"identity with U+0000", Config{ClientID: ClientIDRewrite}, certID("a\x00b"), connect311,
			CodeNotAuthorized, ReasonIdentityUnsafe, `{cn} "a\x00b" contains "\x00"`},
		{"identity invalid UTF-8 as user name", Config{Username: UsernameIdentity}, certID("\xff"), connect311,
			CodeNotAuthorized, ReasonIdentityUnsafe, "not UTF-8"},
		{"identity too long", Config{ClientID: ClientIDRewrite}, certID(strings.Repeat("x", 65536)), connect311,
			CodeNotAuthorized, ReasonIdentityInvalid, `"…`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _, d, err := bind(t, tt.cfg, tt.id, tt.pkt)
			var r *Reject
			if !errors.As(err, &r) {
				t.Fatalf("err = %v, want *Reject", err)
			}
			if r.Code != tt.code || r.Reason != tt.reason {
				t.Errorf("got %#x %s, want %#x %s (%v)", byte(r.Code), r.Reason, byte(tt.code), tt.reason, err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("message %q, want it to contain %q", err, tt.msg)
			}
			if errors.Unwrap(err) != r.Err || r.Err == nil {
				t.Error("Unwrap does not return the cause")
			}
			if d.Packet != nil || d.Identity != p.Template().Render(tt.id) {
				t.Errorf("rejected Decision %+v: want no packet and the identity for logs", d)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Error("the password leaked into the error")
			}
		})
	}
}

// TestBindModeSweep runs every mode combination over every fixture and several identities,
// checking the invariants FuzzBind checks.
func TestBindModeSweep(t *testing.T) {
	idents := []string{"dev1", "device-7", "", "dev1/x", strings.Repeat("y", 30), "gw-deny"}
	for _, f := range append(fixtures[:len(fixtures):len(fixtures)], struct {
		name string
		pkt  []byte
	}{"prefixed", packet(header(Level311, 0x02), s16("dev1/kitchen"))}) {
		c, err := ParseConnect(f.pkt)
		if err != nil {
			t.Fatal(err)
		}
		for m := uint16(0); m < 1<<11; m++ {
			if m>>2&3 == 3 {
				continue
			}
			for _, cn := range idents {
				cfg, id := fuzzPolicy(m, cn)
				p, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				d, err := p.Bind(id, &c)
				if err := checkBind(cfg, p.Template().Render(id), &c, d, err); err != nil {
					t.Fatalf("%s, modes %#x, cn %q: %v", f.name, m, cn, err)
				}
			}
		}
	}
}

func TestBindAllocs(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		pkt  []byte
	}{
		{"off", Config{}, connect311},
		{"enforce 3.1.1", Config{ClientID: ClientIDEnforce}, connect311},
		{"enforce 5.0", Config{ClientID: ClientIDEnforce, Username: UsernameKeep}, connect5},
		{"prefix", Config{ClientID: ClientIDPrefix}, packet(header(Level311, 0x02), s16("dev1/a"))},
		{"rewrite equal", Config{ClientID: ClientIDRewrite, Username: UsernameStrip}, connect311Min},
		{"allow", Config{ClientID: ClientIDEnforce, Allow: []string{"dev[0-9]+"}, Deny: []string{"bad.*"}}, connect311},
	}
	for _, tt := range tests {
		p, err := New(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseConnect(tt.pkt)
		if err != nil {
			t.Fatal(err)
		}
		id := certID("dev1")
		if n := testing.AllocsPerRun(100, func() {
			if _, err := p.Bind(id, &c); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: Bind allocates %v times when nothing changes", tt.name, n)
		}
	}
}
