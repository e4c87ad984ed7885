// Package handshake secures an accepted connection and says who is on the other end.
//
// It sits between accept and bind in mqtls's accept → handshake → bind → pipe path: every
// kind of session (TLS, mutual TLS, and later TLS-PSK and DTLS) ends in the same pair, a
// secure net.Conn and an Identity. The package knows nothing about MQTT; policy decides what
// the Identity means for a CONNECT, and proxy owns sockets and deadlines.
package handshake
