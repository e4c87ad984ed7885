//go:build !linux

package proxy

import "net"

// parkedPipe exists on Linux only (park_linux.go); elsewhere every session is piped by two
// goroutines.
type parkedPipe struct{}

func (*parkedPipe) wake() {}

func (c *conn) parkPipe(device, up net.Conn) bool { return false }
