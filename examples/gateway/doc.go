// Package gateway is the gateway example: mqtls in place of stunnel in front of Mosquitto
// on one host, with one config file (mqtls.yaml: mutual TLS, TLS-PSK and DTLS listeners,
// each binding the client ID to the device's identity) and a hardened systemd unit
// (mqtls.service). README.md walks through the migration, from `mqtls convert stunnel` to
// `systemctl enable --now mqtls`.
//
// It holds no code, only those files and the tests that keep them honest: the config is
// run through the real binary's `mqtls check` and `mqtls serve` (reloaded and stopped the
// way the unit does it) against generated certificates and keys, the README's conversion
// is run and compared with what the README shows, and the unit is checked key by key
// (and by systemd-analyze where it is installed).
package gateway
