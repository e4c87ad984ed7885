// Package handshake secures an accepted connection and says who is on the other end.
//
// It sits between accept and bind in mqtls's accept → handshake → bind → pipe path: every
// kind of session (TLS, mutual TLS, and later TLS-PSK and DTLS) ends in the same pair, a
// secure net.Conn and an Identity. The package knows nothing about MQTT; policy decides what
// the Identity means for a CONNECT, and proxy owns sockets and deadlines.
//
// The material a handshake is checked against (server certificate, client CAs, CRLs,
// pinned device keys, PSKs) is loaded and reloaded here, and refuses what it cannot vouch
// for: a device is named by a pinned key (pinnedkeys.go) or by a chain to a client CA whose
// every certificate its issuer's current CRLs clear (crl.go, tls.go).
package handshake
