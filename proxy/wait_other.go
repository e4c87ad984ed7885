//go:build !unix

package proxy

import "net"

// socketWaiter has no portable way to wait for readability here: the copier holds a buffer
// while it waits.
func socketWaiter(net.Conn) func() error { return nil }

type socketReader struct{}

func newSocketReader(net.Conn) *socketReader { return nil }

func (*socketReader) read() (*[]byte, int, error) { panic("unreachable") }
