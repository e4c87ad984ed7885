package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/mqtls/mqtls/handshake"
)

func TestParseTemplateErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"", "policy: empty identity template"},
		{"{CN}", `unknown field {CN}`},
		{"{common_name}", `unknown field {common_name}`},
		{"{}", `unknown field {}`},
		{"tenant-{org}-{cn}", `unknown field {org}`},
		{"{cn", `unbalanced '{' at offset 0`},
		{"cn}", `unbalanced '}' at offset 2`},
		{"{cn}}", `unbalanced '}' at offset 4`},
		{"{c{n}}", `unbalanced '{' at offset 0`},
		{"x{", `unbalanced '{' at offset 1`},
		{"device", `names no field`},
	}
	for _, tt := range tests {
		_, err := ParseTemplate(tt.in)
		if !contains(err, tt.want) || !contains(err, "valid fields: cn, o, ou, serial, dns, uri, email, fingerprint, psk, name") {
			t.Errorf("ParseTemplate(%q) = %v, want %q and the valid fields", tt.in, err, tt.want)
		}
	}
}

// Templates that could give two devices one identity name the fields and the fix.
func TestParseTemplateCollisions(t *testing.T) {
	tests := []struct{ in, want string }{
		{"{o}{cn}", `{o} and {cn} touch, so two devices could render the same identity (e.g. o "ab", cn "c" and o "a", cn "bc"); put a separator between them, e.g. "{o}.{cn}"`},
		{"x{serial}{cn}y", `{serial} and {cn} touch`},
		{"{cn}{psk}", `certificate and psk sessions could render the same identity (e.g. two devices both called "dev-1"); start one kind's part with literal text of its own, e.g. "{cn}psk-{psk}"`},
		{"{psk}{name}", `pinned_key and psk sessions could render the same identity (e.g. two devices both called "dev-1"); start one kind's part with literal text of its own, e.g. "{name}psk-{psk}"`},
		{"a{cn}a{psk}", `certificate and psk sessions`},
		{"{cn}{name}", `certificate and pinned_key sessions`},
	}
	for _, tt := range tests {
		if _, err := ParseTemplate(tt.in); !contains(err, tt.want) {
			t.Errorf("ParseTemplate(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
	for _, ok := range []string{"{o}-{cn}", "{cn}psk-{psk}", "{psk}@{cn}", "{fingerprint}", "{fingerprint}-{uri}", "{cn}key-{name}psk-{psk}", "{cn}-{cn}"} {
		if _, err := ParseTemplate(ok); err != nil {
			t.Errorf("ParseTemplate(%q): %v", ok, err)
		}
	}
}

func TestDefaultTemplate(t *testing.T) {
	cert, psk, pinned := handshake.KindCertificate, handshake.KindPSK, handshake.KindPinnedKey
	tests := []struct {
		kinds []handshake.Kind
		want  string
	}{
		{nil, "{cn}"},
		{[]handshake.Kind{cert}, "{cn}"},
		{[]handshake.Kind{psk}, "{psk}"},
		{[]handshake.Kind{pinned}, "{name}"},
		{[]handshake.Kind{psk, cert}, "{cn}psk-{psk}"},
		{[]handshake.Kind{pinned, cert}, "{cn}key-{name}"},
		{[]handshake.Kind{pinned, psk}, "{name}psk-{psk}"},
		{[]handshake.Kind{cert, pinned, psk}, "{cn}key-{name}psk-{psk}"},
	}
	for _, tt := range tests {
		got := DefaultTemplate(tt.kinds...)
		if got != tt.want {
			t.Errorf("DefaultTemplate(%v) = %q, want %q", tt.kinds, got, tt.want)
		}
		if _, err := ParseTemplate(got); err != nil {
			t.Errorf("DefaultTemplate(%v) does not parse: %v", tt.kinds, err)
		}
	}
}

func TestTemplateRender(t *testing.T) {
	cert := handshake.Identity{
		Kind:               handshake.KindCertificate,
		CommonName:         "dev1",
		Organization:       []string{"acme", "other"},
		OrganizationalUnit: []string{"sensors"},
		SerialNumber:       "1f2e",
		DNSNames:           []string{"dev1.example.com", "alt.example.com"},
		URIs:               []string{"spiffe://acme/dev1"},
		Emails:             []string{"dev1@acme.example"},
		Fingerprint:        "ab12",
		PSKIdentity:        "ignored: not a PSK session",
	}
	bare := handshake.Identity{Kind: handshake.KindCertificate, CommonName: "dev2"}
	psk := pskID("gw-7")
	psk.CommonName = "ignored: not a certificate session"
	none := handshake.Identity{Kind: handshake.KindNone, CommonName: "ignored", PSKIdentity: "ignored"}

	tests := []struct {
		tmpl            string
		cert, bare, psk string
		none            string
	}{
		{"{cn}", "dev1", "dev2", "", ""},
		{"{o}", "acme", "", "", ""}, // first value of a multi-valued field
		{"{ou}", "sensors", "", "", ""},
		{"{serial}", "1f2e", "", "", ""},
		{"{dns}", "dev1.example.com", "", "", ""},
		{"{uri}", "spiffe://acme/dev1", "", "", ""},
		{"{email}", "dev1@acme.example", "", "", ""},
		{"{fingerprint}", "ab12", "", "", ""},
		{"{psk}", "", "", "gw-7", ""},
		{"{cn}psk-{psk}", "dev1", "dev2", "psk-gw-7", ""}, // one template for a mixed listener: literals belong to the field after them
		{"{psk}@{cn}", "@dev1", "@dev2", "gw-7", ""},
		{"tenant-{o}-{cn}", "tenant-acme-dev1", "tenant--dev2", "", ""},
		{"psk:{psk}", "", "", "psk:gw-7", ""}, // literals alone never make an identity
	}
	for _, tt := range tests {
		tmpl, err := ParseTemplate(tt.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			id   handshake.Identity
			want string
		}{{cert, tt.cert}, {bare, tt.bare}, {psk, tt.psk}, {none, tt.none}} {
			if got := tmpl.Render(c.id); got != c.want {
				t.Errorf("%q on %s %q: got %q, want %q", tt.tmpl, c.id.Kind, c.id.CommonName, got, c.want)
			}
		}
		if tmpl.String() != tt.tmpl {
			t.Errorf("String() = %q, want %q", tmpl.String(), tt.tmpl)
		}
	}
	if got := (Template{}).Render(cert); got != "" {
		t.Errorf("zero Template rendered %q", got)
	}
}

func TestTemplateRenderAllocs(t *testing.T) {
	id := handshake.Identity{Kind: handshake.KindCertificate, CommonName: "dev1", URIs: []string{"spiffe://x/y"}}
	for _, s := range []string{"{cn}", "{uri}", "{psk}"} {
		tmpl, _ := ParseTemplate(s)
		if n := testing.AllocsPerRun(100, func() { tmpl.Render(id) }); n != 0 {
			t.Errorf("%s: Render allocates %v times", s, n)
		}
	}
	tmpl, _ := ParseTemplate("a-{cn}-{uri}")
	if n := testing.AllocsPerRun(100, func() { tmpl.Render(id) }); n > 1 {
		t.Errorf("multi-field Render allocates %v times, want at most 1", n)
	}
}

func TestTemplateKinds(t *testing.T) {
	cert, psk, pinned := handshake.KindCertificate, handshake.KindPSK, handshake.KindPinnedKey
	tests := []struct {
		tmpl string
		want []handshake.Kind
	}{
		{"{cn}", []handshake.Kind{cert}},
		{"{fingerprint}-{uri}", []handshake.Kind{cert}},
		{"{psk}", []handshake.Kind{psk}},
		{"{psk}-{cn}", []handshake.Kind{cert, psk}},
		{"{fingerprint}", []handshake.Kind{cert, pinned}},
		{"{name}", []handshake.Kind{pinned}},
		{"{cn}key-{name}", []handshake.Kind{cert, pinned}},
		{"x-{psk}-{o}-{psk}", []handshake.Kind{cert, psk}},
	}
	for _, tt := range tests {
		tmpl, err := ParseTemplate(tt.tmpl)
		if err != nil {
			t.Fatal(err)
		}
		if got := tmpl.Kinds(); !slices.Equal(got, tt.want) {
			t.Errorf("%q: Kinds() = %v, want %v", tt.tmpl, got, tt.want)
		}
	}
	if got := (Template{}).Kinds(); len(got) != 0 {
		t.Errorf("zero Template kinds %v", got)
	}
	// Every valid field parses, and each is listed in the error text.
	for _, name := range strings.Split(validFields, ", ") {
		if _, err := ParseTemplate("{" + name + "}"); err != nil {
			t.Errorf("field %s: %v", name, err)
		}
	}
}
