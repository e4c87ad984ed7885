package policy

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/mqtls/mqtls/handshake"
)

// The committed seed corpora live in testdata/fuzz/<target>/ and are written by
// TestFuzzCorpus -update (corpus_test.go); f.Add seeds the fixtures as well.

func FuzzParseFixedHeader(f *testing.F) {
	for _, s := range fixedHeaderSeeds() {
		f.Add(s.in)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		first, rem, hl, err := ParseFixedHeader(b)
		if len(b) > 0 && first != b[0] {
			t.Fatalf("first = %#x, want %#x", first, b[0])
		}
		if err != nil {
			if !errors.Is(err, ErrIncomplete) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			// More bytes never turn a malformed header into a good one, and an incomplete
			// header is a prefix of something.
			if errors.Is(err, ErrMalformed) {
				if _, _, _, err2 := ParseFixedHeader(append(bytes.Clone(b), 0x01, 0x01, 0x01, 0x01)); !errors.Is(err2, ErrMalformed) {
					t.Fatalf("malformed header %x became %v with more bytes", b, err2)
				}
			}
			return
		}
		if hl < 2 || hl > 5 || hl > len(b) || rem < 0 || rem > MaxRemainingLength {
			t.Fatalf("headerLen %d, remaining %d out of range for %d bytes", hl, rem, len(b))
		}
		// The shortest form is the only form: encoding the value gives the same bytes.
		if got := appendVBI(nil, rem); !bytes.Equal(got, b[1:hl]) {
			t.Fatalf("length % x re-encodes as % x", b[1:hl], got)
		}
	})
}

func FuzzParseConnect(f *testing.F) {
	for _, s := range connectSeeds() {
		f.Add(s.pkt)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		c, err := ParseConnect(pkt)
		if err != nil {
			var r *Reject
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotConnect) && !errors.Is(err, ErrIncomplete) && !errors.As(err, &r) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		enc := c.AppendEncode(nil)
		if !bytes.Equal(enc, pkt) {
			t.Fatalf("AppendEncode differs from the input:\n got % x\nwant % x", enc, pkt)
		}
		c2, err := ParseConnect(enc)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if d := diffConnect(c2, c); d != "" {
			t.Fatalf("re-parse differs: %s", d)
		}
	})
}

// fuzzPolicy turns fuzzer bits into a Config and an Identity:
//
//	bits 0-1  client ID mode          bit 6  allow "dev.*"
//	bits 2-3  username mode (mod 3)   bit 7  deny ".*deny.*"
//	bit  4    password strip          bit 8  KindNone instead of a certificate
//	bit  5    identity property       bit 9  template "t-{cn}" instead of "{cn}"
//	bit  10   separator ":" instead of the default "/"
func fuzzPolicy(modes uint16, cn string) (Config, handshake.Identity) {
	cfg := Config{
		ClientID: ClientIDMode(modes & 3),
		Username: UsernameMode(modes >> 2 & 3 % 3),
		Password: PasswordMode(modes >> 4 & 1),
	}
	if modes&(1<<5) != 0 {
		cfg.IdentityProperty = "mqtls-identity"
	}
	if modes&(1<<6) != 0 {
		cfg.Allow = []string{"dev.*"}
	}
	if modes&(1<<7) != 0 {
		cfg.Deny = []string{".*deny.*"}
	}
	if modes&(1<<9) != 0 {
		cfg.Identity = "t-{cn}"
	}
	if modes&(1<<10) != 0 {
		cfg.ClientIDSeparator = ":"
	}
	id := certID(cn)
	if modes&(1<<8) != 0 {
		id = handshake.Identity{Kind: handshake.KindNone}
	}
	return cfg, id
}

func FuzzBind(f *testing.F) {
	for _, s := range bindSeeds() {
		f.Add(s.pkt, s.modes, s.cn)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, modes uint16, cn string) {
		c, err := ParseConnect(pkt)
		if err != nil {
			return
		}
		cfg, id := fuzzPolicy(modes, cn)
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		before := bytes.Clone(pkt)
		d, err := p.Bind(id, &c)
		if !bytes.Equal(pkt, before) {
			t.Fatal("Bind modified the received packet")
		}
		if err := checkBind(cfg, p.Template().Render(id), &c, d, err); err != nil {
			t.Fatal(err)
		}
		// No secret in errors: the same CONNECT with a recognisable password must give a
		// message without it.
		if err != nil && c.HasPassword() {
			const secret = "PASSWORD-SENTINEL-5f0c"
			c.Password = []byte(secret)
			if _, err := p.Bind(id, &c); err == nil || strings.Contains(err.Error(), secret) {
				t.Fatalf("with a new password: %v", err)
			}
		}
	})
}

// checkBind verifies what Bind promises about its result for in under cfg, given the
// identity the template renders. It is shared by FuzzBind and the mode sweep in
// policy_test.go.
func checkBind(cfg Config, ident string, in *Connect, d Decision, err error) error {
	if d.Identity != ident {
		return fmt.Errorf("Decision.Identity = %q, want %q", d.Identity, ident)
	}
	if err != nil {
		var r *Reject
		if !errors.As(err, &r) {
			return fmt.Errorf("Bind error %v is not a *Reject", err)
		}
		switch r.Reason {
		case ReasonClientIDInvalid, ReasonClientIDMismatch, ReasonNoIdentity, ReasonIdentityNotAllowed,
			ReasonIdentityDenied, ReasonIdentityInvalid, ReasonPacketTooLarge,
			ReasonIdentityUnsafe, ReasonIdentityAmbiguous, ReasonIdentityMultivalued:
		default:
			return fmt.Errorf("unknown reason %q", r.Reason)
		}
		return nil
	}
	out, perr := ParseConnect(d.Packet)
	if perr != nil {
		return fmt.Errorf("forwarded packet does not parse: %v\n% x", perr, d.Packet)
	}
	if !bytes.Equal(out.ClientID, d.ClientID) {
		return fmt.Errorf("Decision.ClientID %q, packet has %q", d.ClientID, out.ClientID)
	}
	sep := cfg.ClientIDSeparator
	if sep == "" {
		sep = "/"
	}
	id := string(out.ClientID)
	switch cfg.ClientID {
	case ClientIDOff:
		if !bytes.Equal(out.ClientID, in.ClientID) {
			return fmt.Errorf("off: client ID %q became %q", in.ClientID, id)
		}
	case ClientIDEnforce, ClientIDRewrite:
		if id != ident {
			return fmt.Errorf("%s: client ID %q, identity %q", cfg.ClientID, id, ident)
		}
	case ClientIDPrefix:
		if len(id) <= len(ident)+len(sep) || id[:len(ident)+len(sep)] != ident+sep {
			return fmt.Errorf("prefix: client ID %q, identity %q", id, ident)
		}
		if strings.LastIndex(id, sep) != len(ident) {
			return fmt.Errorf("prefix: client ID %q has the separator %q after the identity %q", id, sep, ident)
		}
	}
	if strings.ContainsAny(ident, "+#") || !cfg.AllowSlash && strings.Contains(ident, "/") || !utf8.ValidString(ident) ||
		strings.ContainsFunc(ident, unicode.IsControl) {
		return fmt.Errorf("unsafe identity %q accepted", ident)
	}
	if ident == "" && (cfg.ClientID != ClientIDOff || cfg.Username == UsernameIdentity || len(cfg.Allow) > 0 || cfg.IdentityProperty != "") {
		return fmt.Errorf("accepted without an identity")
	}
	switch {
	case out.Level == Level31 && (len(id) == 0 || len(id) > 23):
		return fmt.Errorf("3.1 client ID of %d bytes forwarded", len(id))
	case out.Level == Level311 && id == "" && !out.CleanStart():
		return fmt.Errorf("3.1.1 empty client ID without clean session forwarded")
	}
	switch cfg.Username {
	case UsernameKeep:
		if out.HasUsername() != in.HasUsername() || !bytes.Equal(out.Username, in.Username) {
			return fmt.Errorf("keep: user name changed")
		}
	case UsernameIdentity:
		if !out.HasUsername() || string(out.Username) != ident {
			return fmt.Errorf("identity: user name %q, identity %q", out.Username, ident)
		}
	case UsernameStrip:
		if out.HasUsername() {
			return fmt.Errorf("strip: user name forwarded")
		}
	}
	wantPassword := in.HasPassword() && cfg.Password == PasswordKeep && (out.Level == Level5 || out.HasUsername())
	if out.HasPassword() != wantPassword || wantPassword && !bytes.Equal(out.Password, in.Password) {
		return fmt.Errorf("password forwarded = %v, want %v", out.HasPassword(), wantPassword)
	}
	if out.Level == Level5 && cfg.IdentityProperty != "" {
		var values []string
		var last []byte
		for rest := out.Properties; ; {
			pid, prop, v, next, ok := nextProperty(rest)
			if !ok {
				break
			}
			if pid == propUserProperty && string(v[2:2+be16(v)]) == cfg.IdentityProperty {
				k := 2 + be16(v)
				values = append(values, string(v[k+2:]))
			}
			last, rest = prop, next
		}
		want := cat([]byte{propUserProperty}, s16(cfg.IdentityProperty), s16(ident))
		if len(values) != 1 || values[0] != ident || !bytes.Equal(last, want) {
			return fmt.Errorf("identity property values %q, last property % x", values, last)
		}
	} else if !bytes.Equal(out.Properties, in.Properties) {
		return fmt.Errorf("properties changed without an identity property")
	}
	wantWill := in.WillProperties
	if out.Level == Level5 && cfg.IdentityProperty != "" {
		// The will keeps every property but the identity's, in order.
		wantWill = nil
		for rest := in.WillProperties; ; {
			pid, prop, v, next, ok := nextProperty(rest)
			if !ok {
				break
			}
			if pid != propUserProperty || string(v[2:2+be16(v)]) != cfg.IdentityProperty {
				wantWill = append(wantWill, prop...)
			}
			rest = next
		}
	}
	if !bytes.Equal(out.WillProperties, wantWill) {
		return fmt.Errorf("will properties %q, want %q", out.WillProperties, wantWill)
	}
	if out.Level != in.Level || out.KeepAlive != in.KeepAlive || out.CleanStart() != in.CleanStart() ||
		out.Flags&0x3c != in.Flags&0x3c || !bytes.Equal(out.ProtocolName, in.ProtocolName) ||
		!bytes.Equal(out.WillTopic, in.WillTopic) ||
		!bytes.Equal(out.WillPayload, in.WillPayload) {
		return fmt.Errorf("a field Bind does not own changed")
	}
	if d.Rewritten == bytes.Equal(d.Packet, in.Raw) {
		return fmt.Errorf("Rewritten = %v but packet equal = %v", d.Rewritten, !d.Rewritten)
	}
	if !d.Rewritten && &d.Packet[0] != &in.Raw[0] {
		return fmt.Errorf("unchanged CONNECT was copied instead of forwarding Raw")
	}
	return nil
}

// renderTemplates are the templates FuzzRenderIdentity renders with, picked by a byte: the
// single fields, literal separators that field values may hold, and mixed-kind templates.
var renderTemplates = []string{
	"{cn}", "tenant-{o}-{cn}", "{o}aa{cn}", "{o}.{ou}.{cn}", "{cn}psk-{psk}",
	"{cn}key-{name}psk-{psk}", "{uri}", "{psk}@{cn}", "{fingerprint}", "x{dns}-{email}y",
	"{name}", "{cn}-{cn}", "{fingerprint}-{uri}", "a{o}ab{cn}ba",
}

// fuzzIdentity builds an Identity from fuzzer input: kind 0 none, 1 certificate, 2 PSK,
// 3 pinned key; vals holds cn, o, ou, dns, uri, email, psk, name and fingerprint separated
// by NUL (a byte every identity refuses anyway), missing ones empty.
func fuzzIdentity(kind uint8, vals string, twoCNs bool) handshake.Identity {
	v := strings.SplitN(vals, "\x00", 9)
	v = append(v, make([]string, 9-len(v))...)
	one := func(s string) []string {
		if s == "" {
			return nil
		}
		return []string{s}
	}
	id := handshake.Identity{
		Kind:               [...]handshake.Kind{handshake.KindNone, handshake.KindCertificate, handshake.KindPSK, handshake.KindPinnedKey}[kind&3],
		CommonName:         v[0],
		Organization:       one(v[1]),
		OrganizationalUnit: one(v[2]),
		DNSNames:           one(v[3]),
		URIs:               one(v[4]),
		Emails:             one(v[5]),
		PSKIdentity:        v[6],
		KeyName:            v[7],
		Fingerprint:        v[8],
	}
	if twoCNs {
		id.CommonNames = []string{"first", v[0]}
	}
	return id
}

// FuzzRenderIdentity renders two arbitrary identities with one template and checks the
// promise broker ACLs rest on: nothing unsafe comes out ("/" only with allow_slash), and
// two identities render the same string only if the template's fields are equal for both.
//
//	bits 0-1  kind of a     bit 4  allow "/"
//	bits 2-3  kind of b     bit 5  a has two CNs
func FuzzRenderIdentity(f *testing.F) {
	for _, s := range renderSeeds() {
		f.Add(s.tmpl, s.bits, s.a, s.b)
	}
	f.Fuzz(func(t *testing.T, which, bits uint8, a, b string) {
		src := renderTemplates[int(which)%len(renderTemplates)]
		tmpl, err := ParseTemplate(src)
		if err != nil {
			t.Fatal(err)
		}
		allowSlash := bits&(1<<4) != 0
		ida, idb := fuzzIdentity(bits, a, bits&(1<<5) != 0), fuzzIdentity(bits>>2, b, false)
		sa, ra := tmpl.render(ida, allowSlash, true)
		sb, rb := tmpl.render(idb, allowSlash, true)
		for _, r := range []struct {
			s   string
			rej *Reject
		}{{sa, ra}, {sb, rb}} {
			if r.rej != nil || r.s == "" {
				continue
			}
			if c, bad := unsafeRune(r.s, allowSlash); bad {
				t.Fatalf("%q rendered %q holding %s", src, r.s, describeRune(c))
			}
		}
		if ra != nil || rb != nil || sa == "" || sa != sb {
			return
		}
		// Equal renderings: the kinds must render alike and every field must agree.
		pa, pb := &tmpl.plans[planOf(ida.Kind)], &tmpl.plans[planOf(idb.Kind)]
		if !slices.Equal(pa.segs, pb.segs) {
			t.Fatalf("%q renders %q for a %s and a %s session", src, sa, ida.Kind, idb.Kind)
		}
		for _, sg := range pa.segs {
			if sg.field == fieldLiteral {
				continue
			}
			if va, _ := fieldValue(ida, sg.field); va != mustValue(idb, sg.field) {
				t.Fatalf("%q renders %q for {%s} %q and %q", src, sa, fieldNames[sg.field], va, mustValue(idb, sg.field))
			}
		}
	})
}

func mustValue(id handshake.Identity, f field) string {
	v, _ := fieldValue(id, f)
	return v
}
