package handshake

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"os"
	"syscall"
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
