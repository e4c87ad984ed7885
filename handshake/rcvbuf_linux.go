package handshake

import (
	"net"
	"syscall"
)

// setReadBuffer sizes pc's receive buffer to n bytes: past net.core.rmem_max when the
// process may (SO_RCVBUFFORCE needs CAP_NET_ADMIN), else as far as the kernel allows.
func setReadBuffer(pc *net.UDPConn, n int) {
	if rc, err := pc.SyscallConn(); err == nil {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, n)
		}); err == nil && serr == nil {
			return
		}
	}
	_ = pc.SetReadBuffer(n)
}
