// Package stunnel translates a stunnel.conf into an mqtls config file, so a gateway that
// ran stunnel in front of Mosquitto moves to mqtls with one command (mqtls convert
// stunnel). It produces the schema of internal/config and validates its result with that
// package, so the output is always a file serve accepts; every stunnel option without an
// mqtls equivalent is listed with the reason and what to do instead.
//
// It sits before the connection path, at configuration time, and imports internal/config
// and proxy (for a documented default) only.
package stunnel
