// Package policy decides what reaches the broker: it parses the client's CONNECT, checks it
// against the MQTT 3.1, 3.1.1 and 5.0 specifications, and binds the identity the handshake
// proved to the client ID and username the broker will see.
//
// It sits at "bind" in mqtls's accept → handshake → bind → pipe path. proxy reads the first
// packet (ParseFixedHeader tells it how many bytes to wait for), hands it to ParseConnect,
// then calls Policy.Bind with the handshake.Identity; the Decision is the CONNECT to forward,
// and a *Reject carries the CONNACK to send instead (AppendConnack). Everything after the
// CONNECT is piped untouched, so this package never sees it.
//
// The package is pure: no I/O, no clocks, no goroutines, and no allocation on the path where
// a CONNECT is accepted as it came, so it is cheap to call per connection and easy to fuzz.
package policy
