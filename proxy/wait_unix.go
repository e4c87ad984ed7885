//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// socketWaiter waits for a TCP or unix socket to become readable by peeking one byte with
// MSG_PEEK|MSG_DONTWAIT: unlike a zero-length read, a peek tells data from nothing, and
// unlike a real read it consumes nothing, so no buffer is needed until bytes are there.
// End of stream and errors count as readable; the Read that follows reports them.
func socketWaiter(c net.Conn) func() error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var one [1]byte
	ready := func(fd uintptr) bool {
		for {
			_, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			return true
		}
	}
	return func() error { return raw.Read(ready) }
}
