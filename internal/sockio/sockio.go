// Package sockio is the non-blocking socket read that the parked pipe (package proxy) and
// the TLS-PSK record layer (package tlspsk) share: one read(2) through syscall.RawConn that
// never waits for the network.
package sockio

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// ErrWouldBlock is TryReader.Read finding nothing to read.
var ErrWouldBlock = errors.New("sockio: no input ready")

// TryReader reads a socket without waiting. The socket's read deadline still applies: a
// passed deadline is an error, as for a blocking read. Set Conn before the first Read; a
// TryReader is used by one goroutine at a time.
type TryReader struct {
	Conn syscall.RawConn

	fn  func(fd uintptr) bool // readFD, made on the first Read rather than on every one
	buf []byte
	n   int
	err error
}

func (r *TryReader) readFD(fd uintptr) bool {
	for {
		r.n, r.err = syscall.Read(int(fd), r.buf)
		if r.err != syscall.EINTR {
			return true
		}
	}
}

// Read reads what the socket has into p: n > 0 bytes, io.EOF at the end of the stream,
// ErrWouldBlock when nothing has arrived, or the error.
func (r *TryReader) Read(p []byte) (int, error) {
	if r.fn == nil {
		r.fn = r.readFD
	}
	r.buf = p
	err := r.Conn.Read(r.fn)
	r.buf = nil
	switch {
	case err != nil:
		return 0, err
	case r.err == syscall.EAGAIN:
		return 0, ErrWouldBlock
	case r.err != nil:
		return 0, os.NewSyscallError("read", r.err)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}
