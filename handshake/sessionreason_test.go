package handshake

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// TestSessionReason: a refusal by this side of an established TLS-PSK session has its own
// reason; the peer or the socket going away has none, so the caller's applies.
func TestSessionReason(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"renegotiation refused", &tlspsk.Error{Reason: tlspsk.ReasonRenegotiationRefused, Alert: 100}, "renegotiation_refused"},
		{"wrapped bad record MAC", fmt.Errorf("reading: %w", &tlspsk.Error{Reason: tlspsk.ReasonBadRecordMAC, Alert: 20}), "bad_record_mac"},
		{"peer's alert", &tlspsk.Error{Reason: "user_canceled", Alert: 90, Remote: true}, ""},
		{"EOF", &tlspsk.Error{Reason: tlspsk.ReasonEOF, Err: io.ErrUnexpectedEOF}, ""},
		{"deadline", &tlspsk.Error{Reason: tlspsk.ReasonIO, Err: os.ErrDeadlineExceeded}, ""},
		{"crypto/tls or plain socket error", errors.New("tls: bad record MAC"), ""},
		{"nil", nil, ""},
	} {
		if got := SessionReason(tc.err); got != tc.want {
			t.Errorf("%s: SessionReason(%v) = %q, want %q", tc.name, tc.err, got, tc.want)
		}
	}
}
