// Package devpki writes what `mqtls init DIR` gives a first-day user: a development PKI
// (an ECDSA CA, a server certificate, device certificates), a PSK file, a pinned-key
// file, a ready mqtls.yaml, and a Mosquitto configuration and ACL that rest on the client
// ID mqtls binds (%c). It sits before accept → handshake → bind → pipe: it only makes the
// files serve and check read. Nothing it writes is meant for production.
package devpki
