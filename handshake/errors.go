package handshake

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
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
		reason = ReasonNotTLS
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		reason = ReasonTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		reason = ReasonClientClosed
	}
	return &Error{Reason: reason, Err: err}
}
