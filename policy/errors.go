package policy

import (
	"errors"
	"fmt"
	"strconv"
)

// Errors returned by the parsers. Details are wrapped with %w, so branch with errors.Is.
var (
	// ErrIncomplete means more bytes are needed before the packet can be judged.
	ErrIncomplete = errors.New("policy: incomplete packet")
	// ErrNotConnect means the first packet is not a CONNECT; the spec wants the connection
	// closed without a CONNACK.
	ErrNotConnect = errors.New("policy: first packet is not CONNECT")
	// ErrMalformed means the packet breaks the specification; the message names the clause.
	ErrMalformed = errors.New("policy: malformed packet")
	// ErrTooLarge means the packet is bigger than the caller's cap (see CheckSize).
	ErrTooLarge = errors.New("policy: packet too large")
)

// malformed wraps ErrMalformed with a detail that should end in the spec clause it breaks.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Code is an MQTT 5 CONNACK reason code. The MQTT 3.x return code is derived from it (V3),
// so one value describes a refusal for every protocol level.
type Code byte

// Reason codes a refusal can carry (MQTT 5.0 §3.2.2.2).
const (
	CodeUnspecified         Code = 0x80
	CodeMalformed           Code = 0x81
	CodeProtocolError       Code = 0x82
	CodeUnsupportedVersion  Code = 0x84
	CodeClientIDNotValid    Code = 0x85
	CodeBadUsernamePassword Code = 0x86
	CodeNotAuthorized       Code = 0x87
	CodeServerUnavailable   Code = 0x88
	CodeServerBusy          Code = 0x89
	CodePacketTooLarge      Code = 0x95
)

// V3 returns the MQTT 3.1/3.1.1 CONNACK return code for c (3.1.1 §3.2.2.3):
//
//	0x84 unsupported version        → 0x01 unacceptable protocol version
//	0x85 client ID not valid        → 0x02 identifier rejected
//	0x88 unavailable, 0x89 busy     → 0x03 server unavailable
//	0x86 bad user name or password  → 0x04 bad user name or password
//	0x87 not authorized             → 0x05 not authorized
//	anything else                   → 0x03 server unavailable
//
// 3.x has no code for "unspecified", "packet too large" or "malformed", and for the last the
// 3.x spec wants the connection closed with no CONNACK at all [MQTT-3.1.4-1]. "Server
// unavailable" is the honest fallback: the server cannot serve this request, which is true,
// whereas "not authorized" would claim an authorization decision that was never made and
// sends operators looking at ACLs.
func (c Code) V3() byte {
	switch c {
	case 0x00:
		return 0x00
	case CodeUnsupportedVersion:
		return 0x01
	case CodeClientIDNotValid:
		return 0x02
	case CodeBadUsernamePassword:
		return 0x04
	case CodeNotAuthorized:
		return 0x05
	default:
		return 0x03
	}
}

// String returns the reason code's name as the MQTT 5 spec spells it, in lower case.
func (c Code) String() string {
	switch c {
	case 0x00:
		return "success"
	case CodeUnspecified:
		return "unspecified error"
	case CodeMalformed:
		return "malformed packet"
	case CodeProtocolError:
		return "protocol error"
	case CodeUnsupportedVersion:
		return "unsupported protocol version"
	case CodeClientIDNotValid:
		return "client identifier not valid"
	case CodeBadUsernamePassword:
		return "bad user name or password"
	case CodeNotAuthorized:
		return "not authorized"
	case CodeServerUnavailable:
		return "server unavailable"
	case CodeServerBusy:
		return "server busy"
	case CodePacketTooLarge:
		return "packet too large"
	default:
		return "reason code 0x" + strconv.FormatUint(uint64(c), 16)
	}
}

// Stable labels carried in Reject.Reason; proxy uses them as the log `reason` field and as a
// metric label, so they never change once released.
const (
	ReasonUnsupportedVersion = "unsupported_protocol_version" // known protocol name, unknown level
	ReasonClientIDInvalid    = "client_id_invalid"            // forwarded client ID breaks its level's rules
	ReasonClientIDMismatch   = "client_id_mismatch"           // enforce or prefix mode did not match
	ReasonNoIdentity         = "no_identity"                  // binding needs an identity; it rendered empty
	ReasonIdentityNotAllowed = "identity_not_allowed"         // allow list set and nothing matched
	ReasonIdentityDenied     = "identity_denied"              // a deny pattern matched
	ReasonIdentityInvalid    = "identity_invalid"             // identity cannot be written as an MQTT string
	ReasonPacketTooLarge     = "packet_too_large"             // rewritten CONNECT would not fit a packet
	// identity holds "/", "+", "#", a control character or invalid UTF-8 (see Config.AllowSlash)
	ReasonIdentityUnsafe = "identity_unsafe"
	// a field value would make the rendering read as other field values, or as another
	// kind of session's identity (see ParseTemplate)
	ReasonIdentityAmbiguous = "identity_ambiguous"
	// the session has several values for a field the template uses, e.g. two CNs
	ReasonIdentityMultivalued = "identity_multivalued"
)

// Reject is a refusal of a well-formed CONNECT. It carries the reason code for the CONNACK
// (see AppendConnack) and a stable label for logs and metrics.
type Reject struct {
	Code   Code
	Reason string // stable snake_case label, one of the Reason constants
	Err    error  // the cause, for logs; never holds a password or key
}

func (r *Reject) Error() string {
	if r.Err == nil {
		return "policy: " + r.Reason
	}
	return "policy: " + r.Reason + ": " + r.Err.Error()
}

// Unwrap returns the cause.
func (r *Reject) Unwrap() error { return r.Err }

func reject(code Code, reason string, format string, args ...any) *Reject {
	return &Reject{Code: code, Reason: reason, Err: fmt.Errorf(format, args...)}
}

// quote renders peer-controlled bytes for an error message: quoted, and cut short so a
// 64 KiB client ID cannot flood a log line.
func quote[T string | []byte](s T) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(string(s[:max])) + "…"
	}
	return strconv.Quote(string(s))
}
