//go:build !linux

package handshake

import "net"

// setReadBuffer sizes pc's receive buffer to n bytes, as far as the system allows.
func setReadBuffer(pc *net.UDPConn, n int) { _ = pc.SetReadBuffer(n) }
