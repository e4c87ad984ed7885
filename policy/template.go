package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

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
	fieldName
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
	fieldName:        "name",
}

const validFields = "cn, o, ou, serial, dns, uri, email, fingerprint, psk, name"

// The kinds of session a template renders for, as indexes into Template.plans.
const (
	planCert = iota
	planPinned
	planPSK
	numPlans
)

var planKinds = [numPlans]handshake.Kind{handshake.KindCertificate, handshake.KindPinnedKey, handshake.KindPSK}

// planOf returns the plan index for a session kind, or -1 for KindNone.
func planOf(k handshake.Kind) int {
	for i, pk := range planKinds {
		if pk == k {
			return i
		}
	}
	return -1
}

// inPlan reports whether f has a value in sessions of plan i: the certificate fields in
// certificate sessions, {fingerprint} also for pinned keys (it is the same leaf either
// way), {name} for pinned keys, {psk} for PSK sessions.
func (f field) inPlan(i int) bool {
	switch f {
	case fieldPSK:
		return i == planPSK
	case fieldName:
		return i == planPinned
	case fieldFingerprint:
		return i == planCert || i == planPinned
	default:
		return i == planCert
	}
}

// segment is literal text or one field.
type segment struct {
	field field
	lit   string
}

// plan is what a template renders for one kind of session: its fields and the literal text
// that belongs to them, adjacent literals merged, so fields and literals alternate.
type plan struct {
	segs []segment
	// prefix is the literal text every rendering of this plan starts with.
	prefix string
	// longer lists the prefixes of the template's other plans that extend this one's: a
	// rendering of this plan that starts with one of them is refused, so renderings of
	// different kinds never meet (see ParseTemplate).
	longer []string
}

// Template selects the string that is the device from a handshake.Identity, e.g. "{cn}",
// "{uri}", "tenant-{o}-{cn}" or "{cn}psk-{psk}". Compile it once with ParseTemplate. The
// zero Template renders "" for every identity.
type Template struct {
	src  string
	segs []segment
	// plans is shared by copies: Template is passed by value, and a Template is immutable.
	plans *[numPlans]plan
}

// ParseTemplate compiles s: literal text with fields in braces. The fields are cn, o, ou,
// serial, dns, uri, email (certificate sessions), fingerprint (certificate and pinned-key
// sessions), name (pinned-key sessions: the operator's name for the key) and psk (PSK
// sessions).
//
// A template must give one string to one device, so these are errors, each listing the
// valid fields or naming the fix: an empty template, an unknown field, an unbalanced brace,
// a template naming no field (every device would get the same identity), two fields with
// no literal text between them ("{o}{cn}": O "ab", CN "c" and O "a", CN "bc" meet), and,
// when the template serves more than one kind of session, kinds whose parts start with the
// same literal text ("{cn}{psk}": a CN "dev-1" and a PSK identity "dev-1" meet).
//
// Literal text belongs to the field after it (trailing text to the last field), and a
// session renders only its kind's fields and their literal text: on a listener with
// certificates and PSKs, "{cn}psk-{psk}" gives a certificate its CN and a PSK device
// "psk-" and its PSK identity.
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
	t.plans = new([numPlans]plan)
	if err := t.makePlans(); err != nil {
		return Template{}, err
	}
	return t, nil
}

// makePlans splits the template into one plan per kind of session and refuses a template
// that could render one string for two devices.
func (t *Template) makePlans() error {
	// owner[i] is the field segment literal segment i belongs to.
	owner := make([]int, len(t.segs))
	last := -1
	for i := len(t.segs) - 1; i >= 0; i-- {
		if t.segs[i].field != fieldLiteral {
			last = i
			break
		}
	}
	next := last
	for i := len(t.segs) - 1; i >= 0; i-- {
		if t.segs[i].field != fieldLiteral {
			next = i
		}
		owner[i] = next
	}
	// A kind has a plan when the template names a field only it has, or names {fingerprint}
	// and no field of the other kind with a fingerprint: "{fingerprint}-{uri}" is for
	// certificates, "{fingerprint}" for certificates and pinned keys alike (the same leaf
	// renders the same either way).
	var own [numPlans]bool
	shared := false
	for _, sg := range t.segs {
		switch sg.field {
		case fieldLiteral:
		case fieldFingerprint:
			shared = true
		case fieldPSK:
			own[planPSK] = true
		case fieldName:
			own[planPinned] = true
		default:
			own[planCert] = true
		}
	}
	active := own
	active[planCert] = own[planCert] || shared && !own[planPinned]
	active[planPinned] = own[planPinned] || shared && !own[planCert]
	for k := range t.plans {
		p := &t.plans[k]
		if !active[k] {
			continue
		}
		for i, sg := range t.segs {
			if !t.segs[owner[i]].field.inPlan(k) {
				continue
			}
			n := len(p.segs)
			switch {
			case sg.field == fieldLiteral && n > 0 && p.segs[n-1].field == fieldLiteral:
				p.segs[n-1].lit += sg.lit
			case sg.field != fieldLiteral && n > 0 && p.segs[n-1].field != fieldLiteral:
				a, b := fieldNames[p.segs[n-1].field], fieldNames[sg.field]
				return fmt.Errorf("policy: identity template %q: {%s} and {%s} touch, so two devices could render the same identity (e.g. %s \"ab\", %s \"c\" and %s \"a\", %s \"bc\"); put a separator between them, e.g. \"{%s}.{%s}\"",
					t.src, a, b, a, b, a, b, a, b)
			default:
				p.segs = append(p.segs, sg)
			}
		}
		if len(p.segs) > 0 && p.segs[0].field == fieldLiteral {
			p.prefix = p.segs[0].lit
		}
	}
	for k := range t.plans {
		for o := range t.plans {
			pk, po := &t.plans[k], &t.plans[o]
			if o == k || len(pk.segs) == 0 || len(po.segs) == 0 || slices.Equal(pk.segs, po.segs) {
				continue
			}
			switch {
			case pk.prefix == po.prefix && k < o:
				return fmt.Errorf("policy: identity template %q: %s and %s sessions could render the same identity (e.g. two devices both called \"dev-1\"); start one kind's part with literal text of its own, e.g. %q",
					t.src, planKinds[k], planKinds[o], DefaultTemplate(t.Kinds()...))
			case len(po.prefix) > len(pk.prefix) && strings.HasPrefix(po.prefix, pk.prefix):
				pk.longer = append(pk.longer, po.prefix)
			}
		}
	}
	return nil
}

func lookupField(name string) field {
	for f, n := range fieldNames {
		if n != "" && n == name {
			return field(f)
		}
	}
	return fieldLiteral
}

// DefaultTemplate returns the identity template for a listener whose devices prove the
// given kinds: "{cn}" for certificates, "{name}" for pinned keys, "{psk}" for PSKs, and for
// several kinds the first of those (in that order) as is and each other behind a prefix of
// its own ("key-", "psk-"), e.g. "{cn}psk-{psk}", so that no two kinds can meet. With no
// kind it returns "{cn}".
func DefaultTemplate(kinds ...handshake.Kind) string {
	var b strings.Builder
	for _, k := range []handshake.Kind{handshake.KindCertificate, handshake.KindPinnedKey, handshake.KindPSK} {
		has := false
		for _, want := range kinds {
			has = has || want == k
		}
		if !has {
			continue
		}
		prefixed := b.Len() > 0
		switch k {
		case handshake.KindCertificate:
			b.WriteString("{cn}")
		case handshake.KindPinnedKey:
			if prefixed {
				b.WriteString("key-")
			}
			b.WriteString("{name}")
		case handshake.KindPSK:
			if prefixed {
				b.WriteString("psk-")
			}
			b.WriteString("{psk}")
		}
	}
	if b.Len() == 0 {
		return "{cn}"
	}
	return b.String()
}

// Render returns the identity t selects from id, without the checks Policy.Bind makes (for
// logs). A multi-valued field (o, ou, dns, uri, email) renders its first value; a field the
// session's kind does not have (psk on a certificate session, cn on a PSK session, anything
// on KindNone) renders "" and so does the literal text that belongs to it. When every field
// of the session's kind renders "", so does the whole template, literals included:
// "tenant-{cn}" must not turn an unauthenticated session into the identity "tenant-". A
// template that is exactly one field allocates nothing.
func (t Template) Render(id handshake.Identity) string {
	s, _ := t.render(id, false, false)
	return s
}

// render is Render, and with check it also refuses, as a *Reject, an identity that is not
// one device's string: a value of more than one attribute the template uses
// (identity_multivalued), a character that would let it escape a topic level or fool a log
// (identity_unsafe; "/" passes with allowSlash), or a value that would make the rendering
// read as another device's (identity_ambiguous). The string is returned either way, for logs.
func (t Template) render(id handshake.Identity, allowSlash, check bool) (string, *Reject) {
	k := planOf(id.Kind)
	if k < 0 || t.plans == nil {
		return "", nil
	}
	p := &t.plans[k]
	var rej *Reject
	if len(p.segs) == 1 { // one field, no literal: no allocation
		f := p.segs[0].field
		v, n := fieldValue(id, f)
		if check {
			if rej = checkValue(f, v, n, allowSlash); rej == nil {
				rej = p.checkPrefix(v, id.Kind, t.src)
			}
		}
		return v, rej
	}
	size, found := 0, false
	for _, sg := range p.segs {
		if sg.field == fieldLiteral {
			size += len(sg.lit)
			continue
		}
		v, n := fieldValue(id, sg.field)
		size += len(v)
		found = found || v != ""
		if check && rej == nil {
			rej = checkValue(sg.field, v, n, allowSlash)
		}
	}
	if !found {
		return "", nil
	}
	var b strings.Builder
	b.Grow(size)
	for i := 0; i < len(p.segs); i++ {
		sg := p.segs[i]
		if sg.field == fieldLiteral {
			b.WriteString(sg.lit)
			continue
		}
		start := b.Len()
		v, _ := fieldValue(id, sg.field)
		b.WriteString(v)
		if i+2 >= len(p.segs) {
			continue
		}
		// Literal text and another field follow (fields and literals alternate in a
		// plan). The text must first occur where this field ends, or the string would
		// split into other field values: "tenant-{o}-{cn}" with O "acme-x", CN "y" reads
		// as O "acme", CN "x-y".
		i++
		lit := p.segs[i].lit
		b.WriteString(lit)
		if check && rej == nil && strings.Index(b.String()[start:], lit) != len(v) {
			rej = reject(CodeNotAuthorized, ReasonIdentityAmbiguous,
				"{%s} %s contains %q, the text after it in the identity template %q, so the identity would read as another device's",
				fieldNames[sg.field], quote(v), lit, t.src)
		}
	}
	s := b.String()
	if check && rej == nil {
		rej = p.checkPrefix(s, id.Kind, t.src)
	}
	return s, rej
}

// checkPrefix refuses a rendering s of p that starts with the literal text another kind's
// renderings start with: with "{cn}psk-{psk}", a CN "psk-dev-1" would pass for PSK
// identity "dev-1".
func (p *plan) checkPrefix(s string, kind handshake.Kind, src string) *Reject {
	for _, other := range p.longer {
		if strings.HasPrefix(s, other) {
			return reject(CodeNotAuthorized, ReasonIdentityAmbiguous,
				"%s identity %s starts with %q, which the identity template %q gives another kind of session", kind, quote(s), other, src)
		}
	}
	return nil
}

// fieldValue returns f's value in id and how many values id has for it: a subject with two
// CNs, or a certificate with two URIs, has no single value to render.
// It is called only for the fields of the session's plan, which are the fields its kind has.
func fieldValue(id handshake.Identity, f field) (string, int) {
	switch f {
	case fieldPSK:
		return id.PSKIdentity, 1
	case fieldName:
		return id.KeyName, 1
	case fieldFingerprint:
		return id.Fingerprint, 1
	case fieldCN:
		return id.CommonName, max(1, len(id.CommonNames))
	case fieldO:
		return first(id.Organization)
	case fieldOU:
		return first(id.OrganizationalUnit)
	case fieldSerial:
		return id.SerialNumber, 1
	case fieldDNS:
		return first(id.DNSNames)
	case fieldURI:
		return first(id.URIs)
	case fieldEmail:
		return first(id.Emails)
	}
	return "", 0
}

func first(s []string) (string, int) {
	if len(s) == 0 {
		return "", 0
	}
	return s[0], len(s)
}

// checkValue refuses a field value that is not one device's safe string: one of several
// values (identity_multivalued), or holding a character unsafe in a client ID that broker
// ACLs substitute into topics (identity_unsafe).
func checkValue(f field, v string, n int, allowSlash bool) *Reject {
	if n > 1 {
		return reject(CodeNotAuthorized, ReasonIdentityMultivalued,
			"the session has %d values for {%s}, so it is not one identity (Mosquitto would read the first CN, mqtls the last); issue it one", n, fieldNames[f])
	}
	if r, bad := unsafeRune(v, allowSlash); bad {
		return reject(CodeNotAuthorized, ReasonIdentityUnsafe,
			"{%s} %s contains %s, which could reach outside the device's topics in a broker ACL pattern or fool a log", fieldNames[f], quote(v), describeRune(r))
	}
	return nil
}

// unsafeRune returns the first rune of s that an identity must not contain: the MQTT topic
// characters "/", "+" and "#" ("/" allowed with allowSlash), a control character (Unicode
// Cc: C0, DEL, C1), or a byte that is not UTF-8 (returned as utf8.RuneError).
func unsafeRune(s string, allowSlash bool) (rune, bool) {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c == '+' || c == '#' || c == '/' && !allowSlash || c < 0x20 || c == 0x7f {
				return rune(c), true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || unicode.IsControl(r) {
			return r, true
		}
		i += size
	}
	return 0, false
}

func describeRune(r rune) string {
	if r == utf8.RuneError {
		return "bytes that are not UTF-8"
	}
	return strconv.Quote(string(r))
}

// String returns the template as written.
func (t Template) String() string { return t.src }

// Kinds returns the identity kinds t's fields can come from, in the order certificate, PSK,
// pinned key: KindCertificate for cn, o, ou, serial, dns, uri, email and fingerprint,
// KindPSK for psk, KindPinnedKey for name and fingerprint. The CLI uses it to refuse a
// binding that a listener can never satisfy, e.g. {cn} on a listener without a client CA.
func (t Template) Kinds() []handshake.Kind {
	var kinds []handshake.Kind
	if t.plans == nil {
		return nil
	}
	for _, k := range []int{planCert, planPSK, planPinned} {
		for _, sg := range t.plans[k].segs {
			if sg.field != fieldLiteral {
				kinds = append(kinds, planKinds[k])
				break
			}
		}
	}
	return kinds
}

// literals returns the template's literal text, for checks that depend on the policy.
func (t Template) literals() []string {
	var lits []string
	for _, sg := range t.segs {
		if sg.field == fieldLiteral {
			lits = append(lits, sg.lit)
		}
	}
	return lits
}
