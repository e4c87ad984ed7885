package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// MQTT 3.1.1 packet types (fixed header, high nibble), the only version the load tool
// speaks: every target forwards it unchanged, and its packets are the smallest.
const (
	typeConnect    = 0x10
	typeConnack    = 0x20
	typePublish    = 0x30
	typePuback     = 0x40
	typeSubscribe  = 0x82 // with the reserved flags 0010 [MQTT-3.8.1-1]
	typeSuback     = 0x90
	typePingreq    = 0xC0
	typePingresp   = 0xD0
	typeDisconnect = 0xE0
)

// Fixed packets.
var (
	pingreq    = []byte{typePingreq, 0}
	pingresp   = []byte{typePingresp, 0}
	disconnect = []byte{typeDisconnect, 0}
	connackOK  = []byte{typeConnack, 2, 0, 0}
)

// maxPacket bounds what readPacket accepts, so a confused peer cannot make the tool
// allocate without limit.
const maxPacket = 1 << 20

var errMalformed = errors.New("mqtt: malformed fixed header")

// appendVarint appends MQTT's variable byte integer (remaining length).
func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// connectPacket builds an MQTT 3.1.1 CONNECT with a clean session. keepAlive 0 turns the
// broker's keep-alive check off, so held sessions stay idle.
func connectPacket(clientID string, keepAlive uint16) []byte {
	body := appendString(nil, "MQTT")
	body = append(body, 4, 0x02, byte(keepAlive>>8), byte(keepAlive))
	body = appendString(body, clientID)
	return append(appendVarint([]byte{typeConnect}, len(body)), body...)
}

// publishPacket appends a PUBLISH; id is used only when qos is 1.
func appendPublish(b []byte, topic string, qos byte, id uint16, payload []byte) []byte {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	b = appendVarint(append(b, typePublish|qos<<1), n)
	b = appendString(b, topic)
	if qos > 0 {
		b = append(b, byte(id>>8), byte(id))
	}
	return append(b, payload...)
}

func appendPuback(b []byte, id uint16) []byte {
	return append(b, typePuback, 2, byte(id>>8), byte(id))
}

func subscribePacket(id uint16, filter string, qos byte) []byte {
	body := []byte{byte(id >> 8), byte(id)}
	body = append(appendString(body, filter), qos)
	return append(appendVarint([]byte{typeSubscribe}, len(body)), body...)
}

// readHeader reads a fixed header: the first byte and the remaining length.
func readHeader(r io.ByteReader) (byte, int, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	n, mult := 0, 1
	for i := 0; i < 4; i++ {
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, 0, err
		}
		n += int(c&0x7f) * mult
		if c&0x80 == 0 {
			return h, n, nil
		}
		mult <<= 7
	}
	return 0, 0, errMalformed
}

// readPacket reads one packet and returns its first byte and body; the body reuses buf
// when it is large enough.
func readPacket(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	h, n, err := readHeader(r)
	if err != nil {
		return 0, nil, err
	}
	if n > maxPacket {
		return 0, nil, fmt.Errorf("mqtt: packet of %d bytes over the %d-byte cap", n, maxPacket)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return h, buf, nil
}

// expectConnack reads a packet and fails unless it is a CONNACK accepting the session.
func expectConnack(r *bufio.Reader) error {
	h, body, err := readPacket(r, nil)
	if err != nil {
		return fmt.Errorf("reading CONNACK: %w", err)
	}
	if h != typeConnack || len(body) != 2 {
		return fmt.Errorf("got packet %#02x (%d bytes) instead of CONNACK", h, len(body))
	}
	if body[1] != 0 {
		return fmt.Errorf("CONNACK refused the session: return code %#02x", body[1])
	}
	return nil
}

// publishInfo parses a PUBLISH body: its QoS (from the header) and packet ID.
func publishInfo(h byte, body []byte) (qos byte, id uint16, err error) {
	qos = (h >> 1) & 3
	if len(body) < 2 {
		return 0, 0, errMalformed
	}
	tl := int(body[0])<<8 | int(body[1])
	if qos == 0 {
		if len(body) < 2+tl {
			return 0, 0, errMalformed
		}
		return 0, 0, nil
	}
	if len(body) < 2+tl+2 {
		return 0, 0, errMalformed
	}
	return qos, uint16(body[2+tl])<<8 | uint16(body[3+tl]), nil
}
