// Package config is mqtls's configuration schema: every setting of serve, with its
// config-file key, its flag, its default and its validation, in one place.
//
// The YAML file fills File; serve's flags fill the same File through Settings, the one
// table of flags; both are validated by the same code into a Config of ready-to-serve
// ListenerSpecs, and every problem names the key path ("listeners[1].tls.client_ca") or
// the flag ("--client-ca") to change. Unknown keys are errors.
//
// It sits before the connection path (accept → handshake → bind → pipe): it turns text
// into the plain config structs of handshake, policy and proxy, and imports those three
// only. It never opens a socket or loads a certificate; internal/supervisor does.
package config
