// Package pskfile manages the file of pre-shared keys serve's psk.file names (mqtls psk
// add, mqtls psk list): it makes a random key for a new device and appends it, after
// checking that the file parses and that the identity can be written as one line.
//
// It sits outside the connection path, beside the handshake: handshake parses and serves
// these files; this package only writes them. It imports handshake only.
package pskfile
