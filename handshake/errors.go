package handshake

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"syscall"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// Stable reasons a handshake fails, used as the log `reason` and as metric labels.
const (
	ReasonNotTLS          = "not_tls"
	ReasonNoClientCert    = "no_client_cert"
	ReasonUntrustedCert   = "untrusted_cert"
	ReasonExpiredCert     = "expired_cert"
	ReasonNotYetValidCert = "not_yet_valid_cert"
	ReasonRevokedCert     = "revoked_cert"
	ReasonBadCertUsage    = "bad_cert_usage"
	// ReasonCRLExpired: the CRLs of a CA in the chain are past their nextUpdate (and any
	// grace), so whether the certificate is revoked is not known.
	ReasonCRLExpired = "crl_expired"
	// ReasonCRLMissing: CRLs are configured but a CA in the chain (one the client sent and
	// the client-CA file lacks) has none, so its certificates cannot be checked.
	ReasonCRLMissing = "crl_missing"
	// ReasonKeyNotPinned: the listener trusts pinned keys only, and the leaf's is not one.
	ReasonKeyNotPinned = "key_not_pinned"
	// ReasonIdentityChanged: after a reload, the session's device would be named otherwise
	// (a pinned key renamed, or newly pinned): the broker must not keep the old name.
	ReasonIdentityChanged = "identity_changed"
	ReasonTimeout         = "handshake_timeout"
	ReasonClientClosed    = "client_closed"
	ReasonFailed          = "handshake_failed"
	// ReasonPeerAlert: the device ended an established session with a fatal alert.
	ReasonPeerAlert = "peer_alert"
)

// Error is a failed handshake. Reason is one of the Reason constants.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return "handshake: " + e.Reason + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Reason returns the stable reason for a handshake error, or ReasonFailed if err does not
// say more.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonFailed
}

// SessionReason returns the stable reason for an error read from or written to an
// established session when this side refused something the peer did: a renegotiation
// (renegotiation_refused), a record that failed authentication (bad_record_mac), an
// oversized or out-of-order record, ... It returns "" for errors that only mean the peer or
// the socket went away (EOF, deadline, reset, an alert from the peer), which the caller
// names. Only TLS-PSK sessions say more; crypto/tls's errors carry no stable reason.
func SessionReason(err error) string {
	if r := tlsSessionReason(err); r != "" {
		return r
	}
	var e *tlspsk.Error
	if !errors.As(err, &e) || e.Remote {
		return ""
	}
	switch e.Reason {
	case tlspsk.ReasonEOF, tlspsk.ReasonIO, tlspsk.ReasonCanceled:
		return ""
	}
	return e.Reason
}

// classify turns what crypto/tls returned into an *Error with the most specific reason.
func classify(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var rh tls.RecordHeaderError
	reason := ReasonFailed
	switch {
	case errors.As(err, &rh):
		reason = recordHeaderReason(rh)
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		reason = ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		reason = ReasonClientClosed
	}
	return &Error{Reason: reason, Err: err}
}

// recordHeaderReason names a record crypto/tls refused by its header, as TLS-PSK
// listeners do: a first record that is not TLS at all (HTTP, raw MQTT) or an SSLv2 hello
// is not_tls; a TLS record of the wrong version is protocol_version, and an oversized one
// record_overflow.
func recordHeaderReason(rh tls.RecordHeaderError) string {
	switch n := int(rh.RecordHeader[3])<<8 | int(rh.RecordHeader[4]); {
	case rh.Conn != nil, rh.RecordHeader[0] == 0x80:
		return ReasonNotTLS
	case rh.RecordHeader[0] != 0x80 && n > maxTLSCiphertext:
		return tlspsk.ReasonRecordOverflow
	}
	return tlspsk.ReasonProtocolVersion
}

// maxTLSCiphertext is the largest record body TLS 1.2 allows (RFC 5246 §6.2.3); crypto/tls
// refuses longer ones.
const maxTLSCiphertext = 16384 + 2048

// tlsSessionReason names the end of an established crypto/tls session that was not the
// peer simply going away: an alert this side sent (crypto/tls reports it as a "local
// error" carrying the alert), an alert the peer sent (peer_alert), a record refused by
// its header. It returns "" for everything else.
func tlsSessionReason(err error) string {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return recordHeaderReason(rh)
	}
	var op *net.OpError
	if !errors.As(err, &op) {
		return ""
	}
	switch op.Op {
	case "remote error": // crypto/tls's Op for an alert the peer sent
		return ReasonPeerAlert
	case "local error": // and for one it sent
	default:
		return ""
	}
	// crypto/tls's alert type is unexported: its number is the value.
	v := reflect.ValueOf(op.Err)
	if v.Kind() != reflect.Uint8 {
		return ReasonFailed
	}
	switch v.Uint() {
	case 10:
		return tlspsk.ReasonUnexpectedMessage
	case 20:
		return tlspsk.ReasonBadRecordMAC
	case 22:
		return tlspsk.ReasonRecordOverflow
	case 50:
		return tlspsk.ReasonMalformedHandshake
	case 70:
		return tlspsk.ReasonProtocolVersion
	case 100:
		return tlspsk.ReasonRenegotiationRefused
	}
	return ReasonFailed
}

// localAlert reports whether err is crypto/tls having sent a fatal alert: after one, no
// close_notify may follow (RFC 8446 §6.2; RFC 5246 §7.2.2).
func localAlert(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "local error" {
		return true
	}
	// crypto/tls sends an alert for every record it refuses by its header but the first.
	var rh tls.RecordHeaderError
	return errors.As(err, &rh) && rh.Conn == nil
}
