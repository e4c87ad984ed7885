package policy

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"github.com/mqtls/mqtls/handshake"
)

// ClientIDMode says how the client ID must relate to the identity.
type ClientIDMode uint8

const (
	ClientIDOff     ClientIDMode = iota // forward the client ID untouched
	ClientIDEnforce                     // the client ID must equal the identity
	ClientIDPrefix                      // the client ID must be identity + separator + at least one byte
	ClientIDRewrite                     // replace the client ID, empty included, with the identity
)

var clientIDModes = [...]string{"off", "enforce", "prefix", "rewrite"}

func (m ClientIDMode) String() string { return modeString(clientIDModes[:], uint8(m), "ClientIDMode") }

// ParseClientIDMode parses "off", "enforce", "prefix" or "rewrite".
func ParseClientIDMode(s string) (ClientIDMode, error) {
	m, err := parseMode(clientIDModes[:], s, "client ID")
	return ClientIDMode(m), err
}

// UsernameMode says what the forwarded CONNECT carries as user name.
type UsernameMode uint8

const (
	UsernameKeep     UsernameMode = iota // whatever the client sent, or nothing
	UsernameIdentity                     // the identity, for broker ACL patterns on %u
	UsernameStrip                        // no user name
)

var usernameModes = [...]string{"keep", "identity", "strip"}

func (m UsernameMode) String() string { return modeString(usernameModes[:], uint8(m), "UsernameMode") }

// ParseUsernameMode parses "keep", "identity" or "strip".
func ParseUsernameMode(s string) (UsernameMode, error) {
	m, err := parseMode(usernameModes[:], s, "username")
	return UsernameMode(m), err
}

// PasswordMode says whether the client's password is forwarded.
type PasswordMode uint8

const (
	PasswordKeep  PasswordMode = iota // forward it (dropped anyway on 3.x when no user name is forwarded)
	PasswordStrip                     // never forward it
)

var passwordModes = [...]string{"keep", "strip"}

func (m PasswordMode) String() string { return modeString(passwordModes[:], uint8(m), "PasswordMode") }

// ParsePasswordMode parses "keep" or "strip".
func ParsePasswordMode(s string) (PasswordMode, error) {
	m, err := parseMode(passwordModes[:], s, "password")
	return PasswordMode(m), err
}

func modeString(names []string, m uint8, typ string) string {
	if int(m) < len(names) {
		return names[m]
	}
	return typ + "(" + strconv.Itoa(int(m)) + ")"
}

func parseMode(names []string, s, what string) (uint8, error) {
	for i, n := range names {
		if s == n {
			return uint8(i), nil
		}
	}
	return 0, fmt.Errorf("policy: unknown %s mode %q (want %s)", what, s, orList(names))
}

func orList(names []string) string {
	s := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			s += " or "
		default:
			s += ", "
		}
		s += n
	}
	return s
}

// Config is one listener's binding policy. The zero value is the documented default: the
// identity is "{cn}", nothing is bound (client ID off, user name and password kept), no
// allow or deny list, no identity property.
type Config struct {
	// Identity is the template selecting the device's identity (see ParseTemplate);
	// "" means "{cn}".
	Identity string
	// ClientID binds the client ID to the identity.
	ClientID ClientIDMode
	// ClientIDSeparator goes between identity and suffix in prefix mode; "" means "/". The
	// suffix may not contain it, so a client ID names exactly one identity, the text before
	// its last separator: identity "a" cannot claim "a/b/x", a session of identity "a/b".
	ClientIDSeparator string
	Username          UsernameMode
	Password          PasswordMode
	// Allow and Deny are regular expressions (RE2 syntax) matched against the whole rendered
	// identity: each is anchored at both ends, so "dev-1" matches only "dev-1", and
	// "dev-.*" every identity starting "dev-". Escape metacharacters for exact names
	// ("dev\.1"). A deny match refuses the connection; a non-empty allow list refuses any
	// identity none of its patterns match. Deny is checked first.
	Allow, Deny []string
	// IdentityProperty names an MQTT 5 user property that carries the identity to the
	// broker; "" means none. Any user property of that name the client sent is removed
	// first, so the broker can trust the one it sees. Ignored for 3.x clients, which have
	// no properties. It is removed from the will properties too, where a device could
	// otherwise plant a forged one for every subscriber of its will topic.
	IdentityProperty string
	// AllowSlash lets a rendered identity contain "/", which URI identities ({uri}, SPIFFE
	// IDs) need; "+", "#", control characters and invalid UTF-8 stay refused
	// (identity_unsafe). The risk is the broker's: behind "pattern write devices/%c/#",
	// identity "spiffe://td/a" may write devices/spiffe:/td/a/b/..., the tree of identity
	// "spiffe://td/a/b", so use it only where no identity is a path prefix of another or
	// the ACLs do not nest identities. Prefix mode stays safe (see ClientIDSeparator).
	AllowSlash bool
}

// Validate reports every problem in c, each naming the field and what to change.
func (c Config) Validate() error {
	_, err := c.compile()
	return err
}

// Policy is a compiled Config. It is immutable and safe for concurrent use.
type Policy struct {
	tmpl        Template
	clientID    ClientIDMode
	sep         string
	username    UsernameMode
	password    PasswordMode
	allow, deny []*regexp.Regexp
	property    string
	needs       bool
	allowSlash  bool
}

// New validates c and compiles it.
func New(c Config) (*Policy, error) { return c.compile() }

func (c Config) compile() (*Policy, error) {
	var errs []error
	p := &Policy{
		clientID:   c.ClientID,
		sep:        c.ClientIDSeparator,
		username:   c.Username,
		password:   c.Password,
		property:   c.IdentityProperty,
		allowSlash: c.AllowSlash,
	}
	src := c.Identity
	if src == "" {
		src = "{cn}"
	}
	var err error
	if p.tmpl, err = ParseTemplate(src); err != nil {
		errs = append(errs, fmt.Errorf("policy: identity: %s", trimPrefix(err.Error())))
	}
	for _, lit := range p.tmpl.literals() {
		if r, bad := unsafeRune(lit, c.AllowSlash); bad {
			fix := "remove it"
			if r == '/' {
				fix = "remove it, or set allow_slash if the broker's ACLs can take it"
			}
			errs = append(errs, fmt.Errorf("policy: identity: identity template %q: literal text holds %s, which would let every identity reach outside its topics in a broker ACL pattern; %s", src, describeRune(r), fix))
			break
		}
	}
	if int(c.ClientID) >= len(clientIDModes) {
		errs = append(errs, fmt.Errorf("policy: client_id: unknown mode %d (want %s)", c.ClientID, orList(clientIDModes[:])))
	}
	if p.sep == "" {
		p.sep = "/"
	}
	if !validString(p.sep) {
		errs = append(errs, fmt.Errorf("policy: client_id_separator %q: not valid UTF-8 without U+0000, so no client ID could contain it", p.sep))
	}
	if int(c.Username) >= len(usernameModes) {
		errs = append(errs, fmt.Errorf("policy: username: unknown mode %d (want %s)", c.Username, orList(usernameModes[:])))
	}
	if int(c.Password) >= len(passwordModes) {
		errs = append(errs, fmt.Errorf("policy: password: unknown mode %d (want %s)", c.Password, orList(passwordModes[:])))
	}
	var e []error
	p.allow, e = compileList("allow", c.Allow)
	errs = append(errs, e...)
	p.deny, e = compileList("deny", c.Deny)
	errs = append(errs, e...)
	if c.IdentityProperty != "" && !validString(c.IdentityProperty) {
		errs = append(errs, fmt.Errorf("policy: identity_property %q: must be valid UTF-8 without U+0000, at most 65535 bytes", c.IdentityProperty))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	p.needs = p.clientID != ClientIDOff || p.username == UsernameIdentity ||
		len(p.allow) > 0 || p.property != ""
	return p, nil
}

// trimPrefix drops the "policy: " a nested error already carries.
func trimPrefix(s string) string {
	const prefix = "policy: "
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}

func compileList(name string, exprs []string) ([]*regexp.Regexp, []error) {
	var res []*regexp.Regexp
	var errs []error
	for i, expr := range exprs {
		if expr == "" {
			errs = append(errs, fmt.Errorf("policy: %s[%d] is empty; remove it, or write ^$ to match an empty identity", name, i))
			continue
		}
		// Compile the expression as written first, so an error quotes what the operator wrote.
		if _, err := regexp.Compile(expr); err != nil {
			errs = append(errs, fmt.Errorf("policy: %s[%d] %q: %w", name, i, expr, err))
			continue
		}
		re, err := regexp.Compile(`\A(?:` + expr + `)\z`)
		if err != nil {
			errs = append(errs, fmt.Errorf("policy: %s[%d] %q: %w", name, i, expr, err))
			continue
		}
		res = append(res, re)
	}
	return res, errs
}

// NeedsIdentity reports whether the policy refuses a session whose identity renders empty:
// true when the client ID is bound (enforce, prefix, rewrite), the user name is the
// identity, an allow list is set, or the identity property is on. A deny list alone does not
// need one.
func (p *Policy) NeedsIdentity() bool { return p.needs }

// Template returns the compiled identity template.
func (p *Policy) Template() Template { return p.tmpl }

// Decision is what Bind lets through.
type Decision struct {
	// Packet is the CONNECT to forward: the received bytes themselves (Connect.Raw) when
	// nothing changed, without a copy, otherwise a fresh encoding.
	Packet    []byte
	Rewritten bool
	Identity  string // the rendered identity, "" if none; set on rejections too, for logs
	ClientID  []byte // the client ID as forwarded
}

// Bind applies the policy to c, which ParseConnect accepted for a session that proved id.
// It does not modify c. The error is always a *Reject; the Decision's Identity is set
// either way, for logs.
//
// The inbound side is checked before anything outbound is written: identity present
// (no_identity), the identity one device's safe string (identity_unsafe,
// identity_multivalued, identity_ambiguous; see Template and Config.AllowSlash), deny then
// allow lists, then the client ID against its mode
// (client_id_mismatch), then the forwarded client ID against its protocol level
// (client_id_invalid): 3.1 needs 1 to 23 bytes (3.1 §3.1), 3.1.1 an empty one needs clean
// session [MQTT-3.1.3-8]. Only then are the user name, password and identity property set.
// On 3.x a password without a user name is invalid [MQTT-3.1.2-22], so when the forwarded
// CONNECT has no user name its password is dropped too.
//
// When nothing changes, Packet is c.Raw and Bind allocates nothing.
func (p *Policy) Bind(id handshake.Identity, c *Connect) (Decision, error) {
	ident, unsafe := p.tmpl.render(id, p.allowSlash, true) // once per Bind: a multi-field template allocates
	d := Decision{Identity: ident}

	if ident == "" && p.needs {
		return d, reject(CodeNotAuthorized, ReasonNoIdentity,
			"identity template %q renders empty for this %s session", p.tmpl.src, id.Kind)
	}
	// Whatever the binding, an identity that is not one device's safe string is refused: it
	// reaches logs and allow/deny lists, and the broker through PROXY headers and ACLs.
	if unsafe != nil {
		return d, unsafe
	}
	for i, re := range p.deny {
		if re.MatchString(ident) {
			return d, reject(CodeNotAuthorized, ReasonIdentityDenied, "identity %s matches deny[%d]", quote(ident), i)
		}
	}
	if len(p.allow) > 0 && !matchAny(p.allow, ident) {
		return d, reject(CodeNotAuthorized, ReasonIdentityNotAllowed, "identity %s matches no allow pattern", quote(ident))
	}

	// The identity is written into the packet by these modes; it must be a legal MQTT string.
	v5 := c.Level == Level5
	if (p.clientID == ClientIDRewrite || p.username == UsernameIdentity || v5 && p.property != "") && !validString(ident) {
		return d, reject(CodeNotAuthorized, ReasonIdentityInvalid,
			"identity %s is not an MQTT string (valid UTF-8, no U+0000, at most 65535 bytes)", quote(ident))
	}

	out := *c // the outbound CONNECT; its slices still alias c.Raw until replaced
	changed := false
	var identBytes []byte // the identity as bytes, made once and only if written
	identAsBytes := func() []byte {
		if identBytes == nil {
			identBytes = []byte(ident)
		}
		return identBytes
	}

	switch p.clientID {
	case ClientIDEnforce:
		if string(c.ClientID) != ident {
			return d, reject(CodeClientIDNotValid, ReasonClientIDMismatch,
				"client ID %s is not the identity %s", quote(c.ClientID), quote(ident))
		}
	case ClientIDPrefix:
		if !hasPrefixSep(c.ClientID, ident, p.sep) {
			return d, reject(CodeClientIDNotValid, ReasonClientIDMismatch,
				"client ID %s does not start with the identity %s then %q and a suffix", quote(c.ClientID), quote(ident), p.sep)
		}
	case ClientIDRewrite:
		if string(c.ClientID) != ident {
			out.ClientID = identAsBytes()
			changed = true
		}
	}
	if err := checkClientID(&out); err != nil {
		return d, err
	}

	switch p.username {
	case UsernameIdentity:
		if !c.HasUsername() || string(c.Username) != ident {
			out.Flags |= flagUsername
			out.Username = identAsBytes()
			changed = true
		}
	case UsernameStrip:
		if c.HasUsername() {
			out.Flags &^= flagUsername
			out.Username = nil
			changed = true
		}
	}
	if out.HasPassword() && (p.password == PasswordStrip || !v5 && !out.HasUsername()) {
		out.Flags &^= flagPassword
		out.Password = nil
		changed = true
	}
	if v5 && p.property != "" {
		if props := withUserProperty(c.Properties, p.property, ident); string(props) != string(c.Properties) {
			out.Properties = props
			changed = true
		}
		if c.HasWill() {
			if props := withoutUserProperty(c.WillProperties, p.property); len(props) != len(c.WillProperties) {
				out.WillProperties = props
				changed = true
			}
		}
	}

	d.ClientID = out.ClientID
	if !changed && c.Raw != nil {
		d.Packet = c.Raw
		return d, nil
	}
	rem := out.remainingLength()
	if rem > MaxRemainingLength {
		return d, reject(CodePacketTooLarge, ReasonPacketTooLarge,
			"rewritten CONNECT needs a remaining length of %d, over %d", rem, MaxRemainingLength)
	}
	d.Packet = out.AppendEncode(make([]byte, 0, 1+vbiLen(rem)+rem))
	d.Rewritten = changed
	return d, nil
}

func matchAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// checkClientID applies the client ID rules of c's level to the ID as it will be forwarded.
func checkClientID(c *Connect) *Reject {
	switch {
	case c.Level == Level31 && (len(c.ClientID) == 0 || len(c.ClientID) > 23):
		return reject(CodeClientIDNotValid, ReasonClientIDInvalid,
			"client ID %s is %d bytes; MQTT 3.1 needs 1 to 23 (3.1 §3.1)", quote(c.ClientID), len(c.ClientID))
	case c.Level == Level311 && len(c.ClientID) == 0 && !c.CleanStart():
		return reject(CodeClientIDNotValid, ReasonClientIDInvalid,
			"empty client ID with clean session 0 [MQTT-3.1.3-8]")
	}
	return nil
}

// hasPrefixSep reports whether id is prefix, then sep, then a suffix of at least one byte
// without sep: so prefix is all of id before its last sep, and no other identity can claim
// id by a shorter prefix.
func hasPrefixSep(id []byte, prefix, sep string) bool {
	return len(id) > len(prefix)+len(sep) &&
		string(id[:len(prefix)]) == prefix &&
		string(id[len(prefix):len(prefix)+len(sep)]) == sep &&
		!bytes.Contains(id[len(prefix)+len(sep):], []byte(sep))
}
