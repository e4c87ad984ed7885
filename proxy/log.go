package proxy

// Log field names, shared by every line the package writes.
const (
	fieldListener        = "listener"
	fieldMode            = "mode"
	fieldTenant          = "tenant"
	fieldAddr            = "addr"
	fieldConnID          = "conn_id"
	fieldRemote          = "remote"
	fieldOutcome         = "outcome"
	fieldReason          = "reason"
	fieldIdentity        = "identity"
	fieldIdentityKind    = "identity_kind"
	fieldClientID        = "client_id"
	fieldClientIDForward = "client_id_forwarded"
	fieldProtocolLevel   = "mqtt_level"
	fieldTLSVersion      = "tls_version"
	fieldCipherSuite     = "cipher_suite"
	fieldBytesIn         = "bytes_in"
	fieldBytesOut        = "bytes_out"
	fieldDuration        = "duration_ms" // milliseconds, fractional
	fieldEndedBy         = "ended_by"
	fieldPSKIdentity     = "psk_identity"
	fieldDropped         = "datagrams_dropped"
)

// Outcomes of a connection, one per audit line.
const (
	OutcomeForwarded           = "forwarded"
	OutcomeRejected            = "rejected"
	OutcomeHandshakeFailed     = "handshake_failed"
	OutcomeBadFirstPacket      = "bad_first_packet"
	OutcomeUpstreamUnavailable = "upstream_unavailable"
	OutcomeRefused             = "refused" // over a limit, before any handshake work
)

// Reasons this package assigns; handshake and policy assign their own.
const (
	ReasonFirstPacketTimeout  = "first_packet_timeout"
	ReasonNotConnect          = "not_connect"
	ReasonMalformedPacket     = "malformed_packet"
	ReasonPacketTooLarge      = "packet_too_large"
	ReasonClientClosed        = "client_closed"
	ReasonUpstreamUnavailable = "upstream_unavailable"
	ReasonMaxConnections      = "max_connections"
	ReasonMaxHandshakes       = "max_handshakes"
	ReasonPerIPRate           = "per_ip_rate"
	ReasonMaxPerIdentity      = "max_connections_per_identity"
	// ReasonRevoked: the session's PSK was removed or its certificate revoked by a reload.
	ReasonRevoked     = "credentials_revoked"
	ReasonIdleTimeout = "idle_timeout"
	// ReasonDatagramTooLarge: the broker sent a packet larger than a DTLS record can carry.
	ReasonDatagramTooLarge = "packet_too_large_for_datagram"
)
