// Package supervisor runs a validated config.Config: it loads each listener's
// certificates and keys, starts its proxy.Server, moves the listeners to a new
// configuration on reload (supervisor.go), drains them on shutdown, re-reads certificate,
// CA, CRL and PSK files when they change and closes the sessions they now revoke
// (reload.go), warns before anything expires, feeds /readyz, returns memory after a
// handshake storm (memrelease.go), and checks a configuration without serving (check.go).
//
// It is where the connection path (accept → handshake → bind → pipe, in proxy, handshake
// and policy) is assembled and started; it imports those three, internal/config for
// what to run and internal/admin for the endpoints and metrics it serves.
package supervisor
