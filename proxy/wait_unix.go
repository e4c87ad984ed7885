//go:build unix

package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
)

// socketWaiter waits for a TCP or unix socket to become readable by peeking one byte with
// MSG_PEEK|MSG_DONTWAIT: unlike a zero-length read, a peek tells data from nothing, and
// unlike a real read it consumes nothing, so no buffer is needed until bytes are there.
// End of stream and errors count as readable; the Read that follows reports them.
func socketWaiter(c net.Conn) func() error {
	raw := rawConn(c)
	if raw == nil {
		return nil
	}
	return func() error { return raw.Read(peekReady) }
}

// peekReady is a syscall.RawConn read callback that returns once the socket has a byte to
// read, its end or an error, and consumes nothing.
func peekReady(fd uintptr) bool {
	var one [1]byte
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

func rawConn(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// socketReader reads a plain socket into pooled buffers in one system call per read: it
// borrows a buffer inside the poller's callback, only once the kernel has bytes, and gives
// it back before the goroutine parks. Waiting with a peek and then reading would cost two.
type socketReader struct {
	raw  syscall.RawConn
	fn   func(fd uintptr) bool // made once, not per read
	bp   *[]byte
	n    int
	rerr error
}

func newSocketReader(c net.Conn) *socketReader {
	raw := rawConn(c)
	if raw == nil {
		return nil
	}
	r := &socketReader{raw: raw}
	r.fn = r.readFD
	return r
}

func (r *socketReader) readFD(fd uintptr) bool {
	r.bp = bufPool.Get().(*[]byte)
	for {
		r.n, r.rerr = syscall.Read(int(fd), *r.bp)
		if r.rerr != syscall.EINTR {
			break
		}
	}
	if r.rerr == syscall.EAGAIN {
		bufPool.Put(r.bp)
		r.bp = nil
		return false
	}
	return true
}

// read returns a pooled buffer holding n bytes, which the caller puts back, or an error
// (io.EOF at the end of the stream) and no buffer.
func (r *socketReader) read() (*[]byte, int, error) {
	err := r.raw.Read(r.fn)
	bp, n, rerr := r.bp, r.n, r.rerr
	r.bp = nil
	switch {
	case err == nil && rerr == nil && n > 0:
		return bp, n, nil
	case err == nil && rerr == nil:
		err = io.EOF
	case err == nil:
		err = os.NewSyscallError("read", rerr)
	}
	if bp != nil {
		bufPool.Put(bp)
	}
	return nil, 0, err
}
