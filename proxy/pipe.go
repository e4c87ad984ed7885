package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// bufSize is one TLS record's plaintext: the secure conn hands over at most one record per
// Read, and a larger buffer would only sit half empty.
const bufSize = 16 << 10

// bufPool lends copy buffers only while bytes are moving, so an idle session owns none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// readWaiter is a conn that can wait for input without holding a buffer (see
// handshake.Conn.WaitRead). After WaitRead returns nil, a Read does not block on the network.
type readWaiter interface{ WaitRead() error }

type closeWriter interface{ CloseWrite() error }

// pipe copies both ways until both directions end. When one side finishes cleanly its
// end is passed on as a half-close (close_notify and FIN towards the device, FIN towards
// the broker) and the other direction gets CloseTimeout to finish; any error ends both.
// It reports whether the session was parked (parkPipe), in which case it returns at once
// and the connection is finished by whichever direction ends last.
func (c *conn) pipe(device, up net.Conn) (parked bool) {
	if c.parkPipe(device, up) {
		return true
	}
	// Each copier says it ended before it passes the end on: once the peer has seen the
	// half-close it may end the other direction at once, and that must not be taken for
	// the side that ended first.
	ended := make(chan string, 2) // which direction ended, in order
	done := make(chan struct{})
	var toDevice, toUpstream copyResult
	go func() {
		defer close(done)
		toDevice = copyToDevice(device, up)
		ended <- "upstream"
		c.halfClose(device, up, toDevice, c.device)
	}()
	toUpstream = copyToUpstream(up, device, c.idleArm())
	ended <- "device"
	c.halfClose(up, device, toUpstream, up)
	<-done
	c.endedBy = <-ended
	c.settle(toDevice, toUpstream)
	return false
}

// settle records how the pipe ended, once both directions have.
func (c *conn) settle(toDevice, toUpstream copyResult) {
	c.bytesIn += toUpstream.n
	c.bytesOut += toDevice.n
	switch {
	case toUpstream.err != nil && c.endedBy == "device":
		c.err = toUpstream.err
		if isTimeout(c.err) && !c.closing.Load() {
			c.reason = ReasonIdleTimeout
		}
	case toDevice.err != nil && c.endedBy == "upstream":
		c.err = toDevice.err
		if errors.Is(c.err, datagram.ErrPacketTooLarge) {
			c.reason = ReasonDatagramTooLarge
		}
	}
	c.mu.Lock()
	if c.aborted {
		c.endedBy = "shutdown"
	}
	c.mu.Unlock()
}

// halfClose passes a finished direction's end on to dst. other is the socket the opposite
// direction reads from: it gets a deadline after a clean end, which is returned, and is
// closed after an error so that the opposite copier returns at once.
func (c *conn) halfClose(dst, src net.Conn, r copyResult, other net.Conn) (deadline time.Time, ok bool) {
	if r.err == nil {
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			c.closing.Store(true)
			deadline = time.Now().Add(orDuration(c.cfg.CloseTimeout, DefaultCloseTimeout))
			_ = other.SetReadDeadline(deadline)
			return deadline, true
		}
	}
	// An error, or a conn that cannot half-close: nothing more can flow either way.
	_ = dst.Close()
	_ = src.Close()
	_ = other.Close()
	return time.Time{}, false
}

type copyResult struct {
	n   int64
	err error // nil for a clean end of stream
}

// idleArm returns what copyToUpstream calls before each wait for the device: it pushes the
// idle deadline on, unless a close deadline has been armed since.
func (c *conn) idleArm() func() {
	d := c.cfg.IdleTimeout
	if d <= 0 {
		return nil
	}
	return func() {
		if !c.closing.Load() {
			_ = c.device.SetReadDeadline(time.Now().Add(d))
		}
	}
}

// copyToUpstream moves the device's bytes to the broker. The secure conn may still hold
// the rest of the record the CONNECT arrived in, which no wait would report: that is
// taken first, without waiting.
func copyToUpstream(dst, src net.Conn, beforeRead func()) copyResult {
	var r copyResult
	if t, ok := src.(tryReader); ok {
		bp := bufPool.Get().(*[]byte)
		n, err := t.TryRead(*bp)
		if n > 0 {
			r.n, r.err = writeAll(dst, (*bp)[:n])
		}
		bufPool.Put(bp)
		if r.err != nil {
			return r
		}
		if err != nil && !handshake.IsWouldBlock(err) {
			r.err = endErr(err)
			return r
		}
	}
	rest := copyLoop(dst, src, beforeRead)
	rest.n += r.n
	return rest
}

// copyToDevice moves the broker's bytes to the device.
func copyToDevice(dst, src net.Conn) copyResult {
	return copyLoop(dst, src, nil)
}

// tryReader is a secure conn that can read without waiting for the network
// (handshake.Conn.TryRead).
type tryReader interface{ TryRead([]byte) (int, error) }

func writeAll(dst net.Conn, b []byte) (int64, error) {
	n, err := dst.Write(b)
	return int64(n), err
}

// copyLoop copies src to dst until src ends, waiting for input without a buffer where src
// allows: a secure conn through WaitRead or its socket, a plain socket by reading inside
// the poller's callback (copySocket). Only a src with no way to wait (a DTLS conn, whose
// reads come from a shared socket) is read with a buffer held across the wait.
func copyLoop(dst, src net.Conn, beforeRead func()) copyResult {
	var wait func() error
	switch s := src.(type) {
	case readWaiter:
		wait = s.WaitRead
	case bufferedConn:
		wait = bufferedWaiter(s)
	default:
		if sr := newSocketReader(src); sr != nil {
			return copySocket(dst, sr, beforeRead)
		}
	}
	var r copyResult
	for {
		if beforeRead != nil {
			beforeRead()
		}
		if wait != nil {
			if err := wait(); err != nil {
				r.err = endErr(err)
				return r
			}
		}
		bp := bufPool.Get().(*[]byte)
		nr, rerr := src.Read(*bp)
		if nr > 0 {
			nw, werr := dst.Write((*bp)[:nr])
			r.n += int64(nw)
			if werr != nil {
				bufPool.Put(bp)
				r.err = werr
				return r
			}
		}
		bufPool.Put(bp)
		if rerr != nil {
			r.err = endErr(rerr)
			return r
		}
	}
}

// copySocket is copyLoop for a plain socket source: one read system call per chunk.
func copySocket(dst net.Conn, src *socketReader, beforeRead func()) copyResult {
	var r copyResult
	for {
		if beforeRead != nil {
			beforeRead()
		}
		bp, n, err := src.read()
		if err != nil {
			r.err = endErr(err)
			return r
		}
		nw, werr := dst.Write((*bp)[:n])
		bufPool.Put(bp)
		r.n += int64(nw)
		if werr != nil {
			r.err = werr
			return r
		}
	}
}

// bufferedWaiter waits on the socket under a TLS layer that keeps its own buffer
// (tlspsk), but only when that buffer holds nothing a Read could return. It returns nil
// (the copier then holds a buffer while it waits) when there is no socket to wait on.
func bufferedWaiter(c bufferedConn) func() error {
	wait := socketWaiter(c.NetConn())
	if wait == nil {
		return nil
	}
	return func() error {
		if c.Buffered() > 0 {
			return nil
		}
		return wait()
	}
}

// bufferedConn is a secure conn over a socket that reports what it has buffered.
type bufferedConn interface {
	NetConn() net.Conn
	Buffered() int
}

// endErr maps a clean end of stream to nil.
func endErr(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
