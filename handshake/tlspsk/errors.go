package tlspsk

import (
	"errors"
	"strconv"
)

// Reasons are the stable, snake_case values of Error.Reason. Logs and metrics use them as
// labels, so they never change meaning; new ones may be added.
const (
	// ReasonUnknownPSKIdentity: the client named an identity that Lookup does not know
	// (RFC 4279 §2). The client was answered as for a wrong key (decrypt_error), unless
	// Config.RevealUnknownIdentity is set.
	ReasonUnknownPSKIdentity = "unknown_psk_identity"
	// ReasonDecryptError: the peer's Finished did not verify, almost always because the two
	// sides hold different keys for the identity.
	ReasonDecryptError = "decrypt_error"
	// ReasonNoSharedCipher: the ClientHello offers no suite this side accepts (for example a
	// certificate-only client).
	ReasonNoSharedCipher = "no_shared_cipher"
	// ReasonCBCWithoutETM: the only shared suites are CBC suites and the client did not offer
	// encrypt_then_mac (RFC 7366); MAC-then-encrypt CBC is refused (Lucky13).
	ReasonCBCWithoutETM = "cbc_without_etm"
	// ReasonProtocolVersion: the peer offers no version the Config accepts (TLS 1.0/1.1,
	// TLS 1.3 only against MaxVersion 1.2, TLS 1.2 only against MinVersion 1.3).
	ReasonProtocolVersion = "protocol_version"
	// ReasonMalformedHandshake: a handshake message or extension does not parse.
	ReasonMalformedHandshake = "malformed_handshake"
	// ReasonIllegalParameter: a handshake message parses but carries a value that is not
	// allowed (an invalid ECDH point, a non-empty renegotiation_info, ...).
	ReasonIllegalParameter = "illegal_parameter"
	// ReasonRecordOverflow: a record is longer than RFC 5246 §6.2 allows.
	ReasonRecordOverflow = "record_overflow"
	// ReasonBadRecordMAC: a protected record failed authentication after the handshake.
	ReasonBadRecordMAC = "bad_record_mac"
	// ReasonUnexpectedMessage: a record or handshake message arrived out of order.
	ReasonUnexpectedMessage = "unexpected_message"
	// ReasonRenegotiationRefused: the peer tried to renegotiate; it was told
	// no_renegotiation and the connection is not read any further.
	ReasonRenegotiationRefused = "renegotiation_refused"
	// ReasonNotTLS: the first bytes are not a TLS handshake record (plain MQTT, HTTP, ...).
	// No alert is sent.
	ReasonNotTLS = "not_tls"
	// ReasonEOF: the peer closed the TCP connection in the middle of the handshake.
	ReasonEOF = "eof"
	// ReasonIO: reading or writing the underlying connection failed (deadline, reset, ...);
	// Err holds the cause, so errors.Is(err, os.ErrDeadlineExceeded) works.
	ReasonIO = "io"
	// ReasonCanceled: the context given to HandshakeContext ended first.
	ReasonCanceled = "canceled"
	// ReasonConfig: the Config or ClientConfig is not usable; Err says which field.
	ReasonConfig = "config"
	// ReasonInternal: something on this side failed (randomness, a key Lookup returned that
	// cannot be used).
	ReasonInternal = "internal_error"
)

// Alert descriptions (RFC 5246 §7.2, RFC 4279 §6, RFC 7366, RFC 5746).
const (
	alertCloseNotify          uint8 = 0
	alertUnexpectedMessage    uint8 = 10
	alertBadRecordMAC         uint8 = 20
	alertRecordOverflow       uint8 = 22
	alertHandshakeFailure     uint8 = 40
	alertIllegalParameter     uint8 = 47
	alertDecodeError          uint8 = 50
	alertDecryptError         uint8 = 51
	alertProtocolVersion      uint8 = 70
	alertInternalError        uint8 = 80
	alertUserCanceled         uint8 = 90
	alertNoRenegotiation      uint8 = 100
	alertMissingExtension     uint8 = 109
	alertUnsupportedExtension uint8 = 110
	alertUnknownPSKIdentity   uint8 = 115
)

const (
	alertLevelWarning uint8 = 1
	alertLevelFatal   uint8 = 2
)

var alertNames = map[uint8]string{
	0:   "close_notify",
	10:  "unexpected_message",
	20:  "bad_record_mac",
	21:  "decryption_failed",
	22:  "record_overflow",
	30:  "decompression_failure",
	40:  "handshake_failure",
	41:  "no_certificate",
	42:  "bad_certificate",
	43:  "unsupported_certificate",
	44:  "certificate_revoked",
	45:  "certificate_expired",
	46:  "certificate_unknown",
	47:  "illegal_parameter",
	48:  "unknown_ca",
	49:  "access_denied",
	50:  "decode_error",
	51:  "decrypt_error",
	60:  "export_restriction",
	70:  "protocol_version",
	71:  "insufficient_security",
	80:  "internal_error",
	86:  "inappropriate_fallback",
	90:  "user_canceled",
	100: "no_renegotiation",
	109: "missing_extension",
	110: "unsupported_extension",
	112: "unrecognized_name",
	115: "unknown_psk_identity",
	120: "no_application_protocol",
}

// AlertName returns the RFC name of a TLS alert description ("decrypt_error"), or
// "alert_N" for one it does not know.
func AlertName(a uint8) string {
	if n, ok := alertNames[a]; ok {
		return n
	}
	return "alert_" + strconv.Itoa(int(a))
}

// Error is what every failure of this package looks like. Branch on Reason (or on Err with
// errors.Is) rather than on the message. Error never carries key material.
type Error struct {
	// Reason is one of the Reason* constants, or, when Remote is set, the name of the alert
	// the peer sent (AlertName).
	Reason string
	// Alert is the alert description sent to the peer, or received from it when Remote is
	// set; 0 with Remote unset means no alert went out (close_notify is never an error here).
	Alert uint8
	// Remote reports that the peer ended the session with Alert.
	Remote bool
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	s := "tlspsk: " + e.Reason
	if e.Remote {
		return s + ": peer sent alert " + AlertName(e.Alert)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Alert != 0 {
		s += " (sent alert " + AlertName(e.Alert) + ")"
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, &Error{Reason: r}) match any *Error with the same Reason.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Reason == e.Reason
}

// ReasonOf returns the Reason of the first *Error in err's chain, or "" if there is none.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// errShutdown is returned by Write after CloseWrite or Close.
var errShutdown = errors.New("tlspsk: write after close_notify")
