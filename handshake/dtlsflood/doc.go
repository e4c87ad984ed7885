// Package dtlsflood sends cookieless DTLS 1.2 ClientHellos from many spoofed loopback
// source addresses: the attack a DTLS listener's cookie exchange exists for. The load tool
// (mqtls-bench dtls-flood) and the DTLS listener's tests use it to check that real devices
// keep connecting while it runs. It only ever sends to loopback, and every run is bounded
// in count and in time.
package dtlsflood
