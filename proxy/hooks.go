package proxy

import "time"

// Hooks are called as connections move through the listener, for metrics. Every field is
// optional; each must be cheap and safe for concurrent use, since it runs on the
// connection's goroutine.
type Hooks struct {
	// Opened is called when a connection is accepted and counted.
	Opened func(listener string)
	// Handshake is called when a handshake ends: kind is "tls", "mtls", "psk" or "dtls" on
	// success ("plain" for a client-mode listener's local side), "" on failure, when reason
	// says why.
	Handshake func(listener, kind, reason string, took time.Duration)
	// Closed is called once per connection with what its audit line says.
	Closed func(Summary)
	// Refused is called for a connection closed at accept by a limit, before any work:
	// reason is ReasonMaxConnections or ReasonPerIPRate.
	Refused func(listener, reason string)
	// UpstreamDial is called after every dial of the broker, with its error (nil on success).
	UpstreamDial func(listener string, err error)
}

// Summary is the end of one connection.
type Summary struct {
	Listener string
	// Tenant is the SNI tenant's name (its Config's Name) when the listener routes by SNI,
	// "" otherwise. The listener's Opened counted the connection under Listener.
	Tenant  string
	Mode    string // ModeServer or ModeClient
	Outcome string // one of the Outcome constants
	Reason  string // "" for a session that ended normally
	// Kind is how the session was secured ("tls", "mtls", "psk", "dtls"); "" when the
	// handshake failed.
	Kind              string
	BytesIn, BytesOut int64
	Duration          time.Duration
}

// sessionKind names how a session was secured, for metric labels.
func sessionKind(dtls bool, kind string) string {
	switch {
	case dtls:
		return "dtls"
	case kind == "psk":
		return "psk"
	case kind == "certificate":
		return "mtls"
	default:
		return "tls"
	}
}
