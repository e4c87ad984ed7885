package policy

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mqtls/mqtls/handshake"
)

// Rewrite is client mode's binding: local clients connect in plain text to a gateway, which
// carries their sessions to a remote broker under its own credential. The remote broker
// knows only the gateway, so the gateway can confine its clients to a namespace of its own
// by rewriting each client ID (and user name) from a template over the gateway's
// credential and what the local client sent, e.g. "{cn}/{client_id}".
//
// Template fields: {client_id} and {username} are the local client's; {cn}, {o}, {ou},
// {serial}, {fingerprint} (the gateway's certificate) and {psk} (its PSK identity) are the
// gateway's. Check refuses a template whose gateway fields the credential does not have.
type Rewrite struct {
	clientID, username []segment
	src                [2]string
}

// RewriteConfig are the templates; "" leaves that part of the CONNECT as it was sent.
type RewriteConfig struct {
	ClientID, Username string
}

// Extra fields of a rewrite template, beyond the identity fields of Template.
const (
	fieldClientID field = 100 + iota
	fieldUsername
)

// rewriteGatewayFields are the identity fields a rewrite template may name.
var rewriteGatewayFields = []field{fieldCN, fieldO, fieldOU, fieldSerial, fieldFingerprint, fieldPSK}

const validRewriteFields = "client_id, username (the local client's); cn, o, ou, serial, fingerprint, psk (the gateway's credential)"

// NewRewrite compiles c. It returns nil, nil when c sets no template.
func NewRewrite(c RewriteConfig) (*Rewrite, error) {
	if c == (RewriteConfig{}) {
		return nil, nil
	}
	r := &Rewrite{src: [2]string{c.ClientID, c.Username}}
	var errs []error
	var err error
	if c.ClientID != "" {
		if r.clientID, err = parseRewrite(c.ClientID); err != nil {
			errs = append(errs, fmt.Errorf("policy: client ID template: %w", err))
		}
	}
	if c.Username != "" {
		if r.username, err = parseRewrite(c.Username); err != nil {
			errs = append(errs, fmt.Errorf("policy: user name template: %w", err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

func parseRewrite(s string) ([]segment, error) {
	var segs []segment
	for off := 0; off < len(s); {
		i := strings.IndexAny(s[off:], "{}")
		if i < 0 {
			segs = append(segs, segment{lit: s[off:]})
			break
		}
		i += off
		if s[i] == '}' {
			return nil, fmt.Errorf("%q: unbalanced '}' at offset %d (valid fields: %s)", s, i, validRewriteFields)
		}
		if i > off {
			segs = append(segs, segment{lit: s[off:i]})
		}
		j := strings.IndexAny(s[i+1:], "{}")
		if j < 0 || s[i+1+j] == '{' {
			return nil, fmt.Errorf("%q: unbalanced '{' at offset %d (valid fields: %s)", s, i, validRewriteFields)
		}
		j += i + 1
		name := s[i+1 : j]
		f := fieldLiteral
		switch name {
		case "client_id":
			f = fieldClientID
		case "username":
			f = fieldUsername
		default:
			for _, g := range rewriteGatewayFields {
				if fieldNames[g] == name {
					f = g
				}
			}
		}
		if f == fieldLiteral {
			return nil, fmt.Errorf("%q: unknown field {%s} (valid fields: %s)", s, name, validRewriteFields)
		}
		segs = append(segs, segment{field: f})
		off = j + 1
	}
	for _, sg := range segs {
		if sg.field == fieldLiteral && !validString(sg.lit) {
			return nil, fmt.Errorf("%q: literal text is not valid UTF-8 without U+0000", s)
		}
	}
	return segs, nil
}

// Check reports a template that cannot be rendered for the gateway's credential gw: a
// gateway field it does not have ({cn} with a PSK, {psk} with a certificate, anything
// without a credential), or one with several values.
func (r *Rewrite) Check(gw handshake.Identity) error {
	if r == nil {
		return nil
	}
	for i, segs := range [][]segment{r.clientID, r.username} {
		for _, sg := range segs {
			if sg.field == fieldLiteral || sg.field >= fieldClientID {
				continue
			}
			what := [2]string{"client ID", "user name"}[i]
			v, n := fieldValue(gw, sg.field)
			switch {
			case v == "":
				return fmt.Errorf("policy: %s template %q: the gateway's %s credential has no {%s}", what, r.src[i], gw.Kind, fieldNames[sg.field])
			case n > 1:
				return fmt.Errorf("policy: %s template %q: the gateway's credential has %d values for {%s}", what, r.src[i], n, fieldNames[sg.field])
			case !validString(v):
				return fmt.Errorf("policy: %s template %q: the gateway's {%s} is not an MQTT string", what, r.src[i], fieldNames[sg.field])
			}
		}
	}
	return nil
}

// render fills segs for the gateway gw and the local CONNECT c. A local value that is
// empty, or holds "+", "#" or a control character, is refused: it would land in the
// remote broker's ACL patterns under the gateway's namespace.
func (r *Rewrite) render(segs []segment, gw handshake.Identity, c *Connect) ([]byte, *Reject) {
	var b []byte
	for _, sg := range segs {
		switch sg.field {
		case fieldLiteral:
			b = append(b, sg.lit...)
		case fieldClientID, fieldUsername:
			v, name := c.ClientID, "client ID"
			if sg.field == fieldUsername {
				v, name = c.Username, "user name"
			}
			if len(v) == 0 {
				return nil, reject(CodeClientIDNotValid, ReasonClientIDInvalid, "the local client sent an empty %s, which the rewrite template needs", name)
			}
			if ch, bad := unsafeRune(string(v), true); bad {
				return nil, reject(CodeClientIDNotValid, ReasonClientIDInvalid, "the local client's %s %s holds %s", name, quote(v), describeRune(ch))
			}
			b = append(b, v...)
		default:
			v, _ := fieldValue(gw, sg.field)
			b = append(b, v...)
		}
	}
	return b, nil
}

// Bind rewrites the local client's CONNECT c for the remote broker, under the gateway's
// credential gw. The error is always a *Reject. With nothing to change it returns c.Raw.
func (r *Rewrite) Bind(gw handshake.Identity, c *Connect) (Decision, error) {
	d := Decision{ClientID: c.ClientID, Packet: c.Raw}
	out := *c
	changed := false
	if r.clientID != nil {
		id, rej := r.render(r.clientID, gw, c)
		if rej != nil {
			return d, rej
		}
		out.ClientID, changed = id, true
	}
	if r.username != nil {
		u, rej := r.render(r.username, gw, c)
		if rej != nil {
			return d, rej
		}
		out.Flags |= flagUsername
		out.Username, changed = u, true
	}
	if len(out.ClientID) > 0xffff || len(out.Username) > 0xffff {
		return d, reject(CodeClientIDNotValid, ReasonClientIDInvalid, "the rewritten client ID or user name is over %d bytes", 0xffff)
	}
	if err := checkClientID(&out); err != nil {
		return d, err
	}
	d.ClientID = out.ClientID
	if !changed {
		return d, nil
	}
	rem := out.remainingLength()
	if rem > MaxRemainingLength {
		return d, reject(CodePacketTooLarge, ReasonPacketTooLarge, "rewritten CONNECT needs a remaining length of %d, over %d", rem, MaxRemainingLength)
	}
	d.Packet = out.AppendEncode(make([]byte, 0, 1+vbiLen(rem)+rem))
	d.Rewritten = true
	return d, nil
}
