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
		if !contains(err, tt.want) || !contains(err, "valid fields: cn, o, ou, serial, dns, uri, email, fingerprint, psk") {
			t.Errorf("ParseTemplate(%q) = %v, want %q and the valid fields", tt.in, err, tt.want)
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
		{"{cn}{psk}", "dev1", "dev2", "gw-7", ""}, // one template for a mixed listener
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
	cert, psk := handshake.KindCertificate, handshake.KindPSK
	tests := []struct {
		tmpl string
		want []handshake.Kind
	}{
		{"{cn}", []handshake.Kind{cert}},
		{"{fingerprint}-{uri}", []handshake.Kind{cert}},
		{"{psk}", []handshake.Kind{psk}},
		{"{psk}{cn}", []handshake.Kind{cert, psk}},
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
