package policy

import (
	"fmt"
	"strings"

	"github.com/mqtls/mqtls/handshake"
)

// field is one identity field a template can name.
type field uint8

const (
	fieldLiteral field = iota // not a field: literal text
	fieldCN
	fieldO
	fieldOU
	fieldSerial
	fieldDNS
	fieldURI
	fieldEmail
	fieldFingerprint
	fieldPSK
)

// fieldNames spells each field as a template names it.
var fieldNames = [...]string{
	fieldCN:          "cn",
	fieldO:           "o",
	fieldOU:          "ou",
	fieldSerial:      "serial",
	fieldDNS:         "dns",
	fieldURI:         "uri",
	fieldEmail:       "email",
	fieldFingerprint: "fingerprint",
	fieldPSK:         "psk",
}

const validFields = "cn, o, ou, serial, dns, uri, email, fingerprint, psk"

// segment is literal text or one field.
type segment struct {
	field field
	lit   string
}

// Template selects the string that is the device from a handshake.Identity, e.g. "{cn}",
// "{uri}", "tenant-{o}-{cn}" or "{cn}{psk}". Compile it once with ParseTemplate. The zero
// Template renders "" for every identity.
type Template struct {
	src  string
	segs []segment
}

// ParseTemplate compiles s: literal text with fields in braces. The fields are cn, o, ou,
// serial, dns, uri, email, fingerprint (certificate sessions) and psk (PSK sessions). An
// empty template, an unknown field, an unbalanced brace, or a template naming no field (it
// would give every device the same identity) is an error that lists the valid fields.
func ParseTemplate(s string) (Template, error) {
	if s == "" {
		return Template{}, fmt.Errorf("policy: empty identity template (want fields in braces, e.g. {cn}; valid fields: %s)", validFields)
	}
	t := Template{src: s}
	hasField := false
	for off := 0; off < len(s); {
		i := strings.IndexAny(s[off:], "{}")
		if i < 0 {
			t.segs = append(t.segs, segment{lit: s[off:]})
			break
		}
		i += off
		if s[i] == '}' {
			return Template{}, fmt.Errorf("policy: identity template %q: unbalanced '}' at offset %d (valid fields: %s)", s, i, validFields)
		}
		if i > off {
			t.segs = append(t.segs, segment{lit: s[off:i]})
		}
		j := strings.IndexAny(s[i+1:], "{}")
		if j < 0 || s[i+1+j] == '{' {
			return Template{}, fmt.Errorf("policy: identity template %q: unbalanced '{' at offset %d (valid fields: %s)", s, i, validFields)
		}
		j += i + 1
		f := lookupField(s[i+1 : j])
		if f == fieldLiteral {
			return Template{}, fmt.Errorf("policy: identity template %q: unknown field {%s} (valid fields: %s)", s, s[i+1:j], validFields)
		}
		t.segs = append(t.segs, segment{field: f})
		hasField = true
		off = j + 1
	}
	if !hasField {
		return Template{}, fmt.Errorf("policy: identity template %q names no field, so every device would get the same identity (valid fields: %s)", s, validFields)
	}
	return t, nil
}

func lookupField(name string) field {
	for f, n := range fieldNames {
		if n != "" && n == name {
			return field(f)
		}
	}
	return fieldLiteral
}

// Render returns the identity t selects from id. A multi-valued field (o, ou, dns, uri,
// email) renders its first value; a field the session's kind does not have (psk on a
// certificate session, cn on a PSK session, anything on KindNone) renders "". When every
// field renders "", so does the whole template, literals included: "tenant-{cn}" must not
// turn an unauthenticated session into the identity "tenant-". A template that is exactly
// one field allocates nothing.
func (t Template) Render(id handshake.Identity) string {
	if len(t.segs) == 1 {
		return fieldValue(id, t.segs[0].field) // the only segment of a parsed template is a field
	}
	n, found := 0, false
	for _, s := range t.segs {
		if s.field == fieldLiteral {
			n += len(s.lit)
			continue
		}
		v := fieldValue(id, s.field)
		n += len(v)
		found = found || v != ""
	}
	if !found {
		return ""
	}
	var b strings.Builder
	b.Grow(n)
	for _, s := range t.segs {
		if s.field == fieldLiteral {
			b.WriteString(s.lit)
		} else {
			b.WriteString(fieldValue(id, s.field))
		}
	}
	return b.String()
}

func fieldValue(id handshake.Identity, f field) string {
	if f == fieldPSK {
		if id.Kind == handshake.KindPSK {
			return id.PSKIdentity
		}
		return ""
	}
	if id.Kind != handshake.KindCertificate {
		return ""
	}
	switch f {
	case fieldCN:
		return id.CommonName
	case fieldO:
		return first(id.Organization)
	case fieldOU:
		return first(id.OrganizationalUnit)
	case fieldSerial:
		return id.SerialNumber
	case fieldDNS:
		return first(id.DNSNames)
	case fieldURI:
		return first(id.URIs)
	case fieldEmail:
		return first(id.Emails)
	case fieldFingerprint:
		return id.Fingerprint
	}
	return ""
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// String returns the template as written.
func (t Template) String() string { return t.src }

// Kinds returns the identity kinds t's fields can come from, in the order certificate, PSK:
// KindCertificate for cn, o, ou, serial, dns, uri, email and fingerprint, KindPSK for psk.
// The CLI uses it to refuse a binding that a listener can never satisfy, e.g. {cn} on a
// listener without a client CA.
func (t Template) Kinds() []handshake.Kind {
	var cert, psk bool
	for _, s := range t.segs {
		switch s.field {
		case fieldLiteral:
		case fieldPSK:
			psk = true
		default:
			cert = true
		}
	}
	var kinds []handshake.Kind
	if cert {
		kinds = append(kinds, handshake.KindCertificate)
	}
	if psk {
		kinds = append(kinds, handshake.KindPSK)
	}
	return kinds
}
