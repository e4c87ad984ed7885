// Package proxy owns mqtls's sockets: it accepts connections, runs the handshake and the
// first-packet read under deadlines, asks policy what to do with the CONNECT, dials the
// upstream broker, and pipes bytes both ways until either side ends.
//
// It is the accept and pipe ends of accept → handshake → bind → pipe. It knows nothing
// about cipher suites (handshake does) and decides nothing about identities (policy does).
// The pipe is built for fleets of mostly idle devices: a waiting session holds no copy
// buffer, and on Linux no goroutine either. Its two sockets wait in one epoll set shared by
// the process (park_linux.go), and a goroutine runs only while bytes move. DTLS sessions (one
// socket for all devices) and sessions on other systems are piped by two goroutines.
package proxy
