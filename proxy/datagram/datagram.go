// Package datagram carries an MQTT byte stream over a message-oriented connection such as
// DTLS, where every Read returns one datagram and every Write sends one.
//
// It is the framing rule of mqtls's DTLS listener, and the device side of it:
//
//   - Each datagram holds one or more whole MQTT packets. A datagram that does not split
//     exactly into whole packets is dropped (and counted), never half-delivered, so a lost
//     or duplicated datagram can never put a partial packet into the broker's stream.
//   - Toward the peer, the stream is cut at packet boundaries and whole packets are packed
//     into datagrams of at most MaxDatagram bytes. A packet larger than that travels alone
//     in one datagram, up to MaxRecord (the DTLS plaintext limit); a larger one is an
//     error (ErrPacketTooLarge), never truncated.
//
// Conn turns such a connection into a net.Conn with stream semantics, so the proxy's
// first-packet reader and pipe, or an MQTT client library that writes one packet in
// several Write calls (paho does), work unchanged on top of it.
package datagram

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// MaxRecord is the largest datagram payload: a DTLS 1.2 record's plaintext (RFC 6347
// §4.1, 2^14 bytes).
const MaxRecord = 1 << 14

// DefaultMaxDatagram keeps a datagram within a 1280-byte path MTU (the IPv6 minimum) after
// IPv6 (40), UDP (8) and DTLS record overhead with a connection ID and an AEAD suite
// (13 + 8 CID + 8 nonce + 16 tag, rounded up).
const DefaultMaxDatagram = 1280 - 40 - 8 - 64

// Errors. ErrMalformed and ErrIncomplete describe a datagram that is dropped; the others
// end the connection.
var (
	ErrIncomplete     = errors.New("datagram: ends inside an MQTT packet")
	ErrMalformed      = errors.New("datagram: MQTT fixed header malformed")
	ErrPacketTooLarge = fmt.Errorf("datagram: MQTT packet larger than a DTLS record (%d bytes)", MaxRecord)
)

// Split checks that b is a sequence of whole MQTT packets and returns how many. It reads
// only fixed headers and allocates nothing. An empty b holds zero packets and is an error
// (ErrIncomplete): a datagram is never empty on purpose.
func Split(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, ErrIncomplete
	}
	n := 0
	for len(b) > 0 {
		size, err := packetLen(b)
		if err != nil {
			return n, err
		}
		if size > len(b) {
			return n, ErrIncomplete
		}
		b = b[size:]
		n++
	}
	return n, nil
}

// packetLen returns the length of the packet at the start of b, fixed header included, or
// ErrIncomplete when b ends inside the fixed header.
func packetLen(b []byte) (int, error) {
	rem, mult := 0, 1
	for i := 1; i <= 4; i++ {
		if i >= len(b) {
			return 0, ErrIncomplete
		}
		c := b[i]
		rem += int(c&0x7f) * mult
		if c&0x80 == 0 {
			if i > 1 && c == 0 { // [MQTT-1.5.5-1]: not the shortest form
				return 0, ErrMalformed
			}
			return 1 + i + rem, nil
		}
		mult <<= 7
	}
	return 0, ErrMalformed
}

// Conn is a stream over a datagram connection; see the package comment. Read and Write may
// be called from different goroutines.
type Conn struct {
	net.Conn
	max    int
	onDrop func(error)

	rmu  sync.Mutex
	rbuf []byte // what is left of the last good datagram; nil when drained
	scr  []byte // borrowed for a Read into a buffer smaller than a record

	wmu  sync.Mutex
	wbuf []byte // stream bytes not yet sent: at most one partial packet after Write returns

	dropped atomic.Uint64
}

// Options for New. The zero value means the defaults.
type Options struct {
	// MaxDatagram caps the datagrams Write sends; default DefaultMaxDatagram, at most
	// MaxRecord.
	MaxDatagram int
	// OnDrop is called for every datagram dropped by Read, with the reason (ErrIncomplete
	// or ErrMalformed).
	OnDrop func(error)
}

// New wraps c, whose Read returns one datagram and whose Write sends one.
func New(c net.Conn, o Options) *Conn {
	max := o.MaxDatagram
	if max <= 0 {
		max = DefaultMaxDatagram
	}
	return &Conn{Conn: c, max: min(max, MaxRecord), onDrop: o.OnDrop}
}

// Dropped returns how many datagrams Read has dropped for not holding whole packets.
func (c *Conn) Dropped() uint64 { return c.dropped.Load() }

var scratchPool = sync.Pool{New: func() any { b := make([]byte, MaxRecord); return &b }}

// Read returns stream bytes from whole-packet datagrams, dropping any other datagram.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.rbuf) == 0 {
		// A buffer that holds any record is read into directly; a smaller one (the proxy
		// reads the CONNECT's fixed header a byte at a time) through a borrowed one.
		dst := p
		var sp *[]byte
		if len(p) < MaxRecord {
			sp = scratchPool.Get().(*[]byte)
			dst = *sp
		}
		n, err := c.Conn.Read(dst)
		if err != nil {
			if sp != nil {
				scratchPool.Put(sp)
			}
			return 0, err
		}
		if _, err := Split(dst[:n]); err != nil {
			c.dropped.Add(1)
			if c.onDrop != nil {
				c.onDrop(err)
			}
			if sp != nil {
				scratchPool.Put(sp)
			}
			continue
		}
		if sp == nil {
			return n, nil
		}
		c.rbuf = append(make([]byte, 0, n), dst[:n]...)
		scratchPool.Put(sp)
	}
	n := copy(p, c.rbuf)
	c.rbuf = c.rbuf[n:]
	if len(c.rbuf) == 0 {
		c.rbuf = nil
	}
	return n, nil
}

// Write takes stream bytes and sends every whole packet they complete, packed into
// datagrams of at most MaxDatagram bytes. A trailing partial packet is kept until a later
// Write completes it; it returns len(p) unless sending fails or a packet is over
// MaxRecord (ErrPacketTooLarge, and nothing more is sent).
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := p
	if len(c.wbuf) > 0 {
		c.wbuf = append(c.wbuf, p...)
		b = c.wbuf
	}
	start, end := 0, 0 // the datagram being packed is b[start:end]
	for end < len(b) {
		size, err := packetLen(b[end:])
		switch {
		case err == ErrMalformed:
			return 0, fmt.Errorf("%w in the stream to send", ErrMalformed)
		case err == nil && size > MaxRecord:
			return 0, ErrPacketTooLarge
		case err != nil || end+size > len(b):
			goto partial // the rest is an incomplete packet
		}
		if end > start && end-start+size > c.max {
			if err := c.send(b[start:end]); err != nil {
				return 0, err
			}
			start = end
		}
		end += size
	}
partial:
	if end > start {
		if err := c.send(b[start:end]); err != nil {
			return 0, err
		}
	}
	rest := b[end:]
	c.wbuf = append(c.wbuf[:0], rest...)
	if len(c.wbuf) == 0 {
		c.wbuf = nil
	}
	return len(p), nil
}

func (c *Conn) send(d []byte) error {
	_, err := c.Conn.Write(d)
	return err
}

// Pending reports how many stream bytes Write holds back as an incomplete packet.
func (c *Conn) Pending() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return len(c.wbuf)
}

// Conn has no CloseWrite: DTLS has no half-close, so a stream pipe that finds none closes
// the whole session (close_notify) when either side ends, which is what a datagram session
// wants.
