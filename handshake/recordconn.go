package handshake

import (
	"io"
	"net"
	"sync"
	"syscall"
)

// recordConn sits between crypto/tls and the socket so that an idle session holds no read
// buffer. Two things make that possible:
//
//   - It hands crypto/tls at most the rest of the current TLS record per Read. crypto/tls
//     therefore never buffers bytes of a following record, and once tls.Conn.Read has
//     returned a whole record's plaintext (it returns one record per call), nothing is left
//     inside tls.Conn: whether more is coming is a question about this conn alone.
//   - It reads the socket through syscall.RawConn, borrowing a pooled buffer only when the
//     kernel has bytes, and gives the buffer back as soon as it is drained.
//
// A conn that is not a syscall.Conn (net.Pipe in tests) falls back to blocking reads.
type recordConn struct {
	net.Conn
	// helloReason is why the ClientHello cannot succeed (protocol_version,
	// no_shared_cipher), noted by the TLS server's GetConfigForClient; crypto/tls's own
	// errors for these carry no type to tell them by.
	helloReason string
	raw         syscall.RawConn // nil: fall back to Conn.Read

	buf  *[]byte // pooled; nil whenever r == w
	r, w int

	// Position in the record stream: hdrN bytes of the next header seen so far, then left
	// bytes of the record's body still to hand over.
	hdr  [recordHeaderLen]byte
	hdrN int
	left int

	// readFn is rawRead as a func value, made once: a closure per fill would cost an
	// allocation on every socket read. n and rerr carry its results.
	readFn func(fd uintptr) bool
	n      int
	rerr   error

	// nonblock makes fill return errWouldBlock instead of waiting for the socket (TryRead).
	nonblock bool
	tryFn    func(fd uintptr) bool
}

// errWouldBlock is what a non-blocking fill returns when the socket has nothing. It is a
// temporary net.Error, so crypto/tls hands it up without marking the conn as failed.
var errWouldBlock error = wouldBlockError{}

type wouldBlockError struct{}

func (wouldBlockError) Error() string   { return "handshake: no input ready" }
func (wouldBlockError) Timeout() bool   { return true }
func (wouldBlockError) Temporary() bool { return true }

const (
	recordHeaderLen = 5
	// rawBufSize is one socket read while bytes stream: several records, so that a bulk
	// transfer costs one system call per 64 KiB (a loopback segment) rather than per
	// record. It holds a full TLS 1.2 ciphertext record (2^14 + 2048) and its header with
	// room to spare. Only a conn with bytes buffered holds one.
	rawBufSize = 64 << 10
)

var rawBufPool = sync.Pool{New: func() any { b := make([]byte, rawBufSize); return &b }}

func newRecordConn(c net.Conn) *recordConn {
	rc := &recordConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			rc.raw = raw
			rc.readFn = rc.rawRead
			rc.tryFn = func(fd uintptr) bool { rc.rawRead(fd); return true }
		}
	}
	return rc
}

// preload makes b the first bytes Read returns, as if they had just arrived: the
// ClientHello a mixed listener read to route the connection. b must fit a raw buffer.
func (c *recordConn) preload(b []byte) {
	if len(b) == 0 {
		return
	}
	c.buf = rawBufPool.Get().(*[]byte)
	c.r, c.w = 0, copy(*c.buf, b)
}

// Read hands over buffered bytes up to the end of the current record, filling from the
// socket first when nothing is buffered.
func (c *recordConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.r == c.w {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := 0
	for n < len(p) && c.r < c.w {
		if c.left == 0 { // at a header
			k := copy(p[n:], (*c.buf)[c.r:min(c.w, c.r+recordHeaderLen-c.hdrN)])
			copy(c.hdr[c.hdrN:], p[n:n+k])
			c.hdrN += k
			c.r += k
			n += k
			if c.hdrN < recordHeaderLen {
				continue
			}
			c.hdrN = 0
			c.left = int(c.hdr[3])<<8 | int(c.hdr[4])
			if c.left == 0 {
				break // an empty record ends here
			}
		}
		k := copy(p[n:], (*c.buf)[c.r:min(c.w, c.r+c.left)])
		c.r += k
		c.left -= k
		n += k
		if c.left == 0 {
			break // never hand over bytes of the next record
		}
	}
	c.release()
	return n, nil
}

// waitRead returns once at least one byte is buffered, holding no buffer while it waits.
func (c *recordConn) waitRead() error {
	if c.r < c.w {
		return nil
	}
	return c.fill()
}

func (c *recordConn) release() {
	if c.r == c.w && c.buf != nil {
		rawBufPool.Put(c.buf)
		c.buf, c.r, c.w = nil, 0, 0
	}
}

// rawRead is the syscall.RawConn read callback of fill: it borrows a buffer only once the
// kernel has bytes, and gives it back before the poller parks the goroutine.
func (c *recordConn) rawRead(fd uintptr) bool {
	c.buf = rawBufPool.Get().(*[]byte)
	for {
		c.n, c.rerr = syscall.Read(int(fd), *c.buf)
		if c.rerr != syscall.EINTR {
			break
		}
	}
	if c.rerr == syscall.EAGAIN {
		rawBufPool.Put(c.buf)
		c.buf = nil
		return false
	}
	return true
}

// fill reads what the socket has into a freshly borrowed buffer. Called only when empty.
func (c *recordConn) fill() error {
	if c.raw == nil {
		c.buf = rawBufPool.Get().(*[]byte)
		n, err := c.Conn.Read(*c.buf)
		c.r, c.w = 0, n
		if n > 0 {
			return nil
		}
		c.release()
		return err
	}
	fn := c.readFn
	if c.nonblock {
		fn = c.tryFn
	}
	err := c.raw.Read(fn)
	n, rerr := c.n, c.rerr
	switch {
	case err == nil && rerr == syscall.EAGAIN:
		c.r, c.w = 0, 0
		return errWouldBlock
	case err == nil && rerr == nil && n > 0:
		c.r, c.w = 0, n
		return nil
	case err == nil && rerr == nil:
		err = io.EOF
	case err == nil:
		err = &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: rerr}
	}
	if c.buf != nil {
		rawBufPool.Put(c.buf)
		c.buf = nil
	}
	c.r, c.w = 0, 0
	return err
}
