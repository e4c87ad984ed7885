package datagram_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/mqtls/mqtls/proxy/datagram"
)

// FuzzSplit checks Split against its contract and against Conn.Write: a datagram Split
// accepts is whole packets, and what Write makes of such a stream are datagrams Split
// accepts, of at most MaxDatagram bytes unless one packet alone is larger, which together
// are the stream.
func FuzzSplit(f *testing.F) {
	for _, seed := range [][]byte{
		pingreq,
		cat(connack, publish, pingresp),
		packetOf(200),
		publish[:4],
		{0x30, 0x80, 0x00},
		{0x30, 0x80, 0x80, 0x80, 0x80, 0x01},
		{0x30, 0xff, 0xff, 0xff, 0x7f},
	} {
		f.Add(seed, uint16(64), uint8(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, maxDatagram uint16, cut uint8) {
		n, err := datagram.Split(b)
		if err != nil {
			if !errors.Is(err, datagram.ErrIncomplete) && !errors.Is(err, datagram.ErrMalformed) {
				t.Fatalf("Split: unexpected error %v", err)
			}
			return
		}
		// Walk the packets the way a broker would, summing their lengths.
		sum, count, largest := 0, 0, 0
		for rest := b; len(rest) > 0; count++ {
			size := fixedLen(t, rest)
			sum += size
			largest = max(largest, size)
			rest = rest[size:]
		}
		if sum != len(b) || count != n {
			t.Fatalf("Split says %d packets; they are %d packets and %d of %d bytes", n, count, sum, len(b))
		}

		// Round trip through Write, the stream cut in two at an arbitrary point.
		mc := newMsgConn()
		c := datagram.New(mc, datagram.Options{MaxDatagram: int(maxDatagram)})
		at := int(cut) % (len(b) + 1)
		_, err1 := c.Write(b[:at])
		_, err2 := c.Write(b[at:])
		if largest > datagram.MaxRecord {
			if !errors.Is(errors.Join(err1, err2), datagram.ErrPacketTooLarge) {
				t.Fatalf("Write of a %d-byte packet: %v, %v; want ErrPacketTooLarge", largest, err1, err2)
			}
			return
		}
		if err1 != nil || err2 != nil {
			t.Fatalf("Write: %v, %v", err1, err2)
		}
		limit := int(maxDatagram)
		if limit <= 0 {
			limit = datagram.DefaultMaxDatagram
		}
		limit = min(limit, datagram.MaxRecord)
		var all []byte
		for i, d := range mc.datagrams() {
			if _, err := datagram.Split(d); err != nil {
				t.Fatalf("datagram %d (% x) does not split: %v", i, d, err)
			}
			if k, _ := datagram.Split(d); len(d) > limit && k != 1 {
				t.Fatalf("datagram %d has %d bytes in %d packets, over the %d maximum", i, len(d), k, limit)
			}
			all = append(all, d...)
		}
		if !bytes.Equal(all, b) {
			t.Fatalf("datagrams carry % x, want % x", all, b)
		}
		if c.Pending() != 0 {
			t.Fatalf("Pending() = %d after whole packets", c.Pending())
		}

		// And back through Read: every datagram is delivered, none dropped.
		rc := datagram.New(newMsgConn(mc.datagrams()...), datagram.Options{})
		got, err := readAll(rc)
		if err != nil || !bytes.Equal(got, b) || rc.Dropped() != 0 {
			t.Fatalf("Read back % x, %v, %d dropped; want % x", got, err, rc.Dropped(), b)
		}
	})
}

// fixedLen decodes the fixed header at the start of b independently of the package.
func fixedLen(t *testing.T, b []byte) int {
	rem, mult := 0, 1
	for i := 1; i <= 4; i++ {
		if i >= len(b) {
			t.Fatalf("Split accepted a cut fixed header % x", b)
		}
		rem += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			if 1+i+rem > len(b) {
				t.Fatalf("Split accepted a cut packet % x", b)
			}
			return 1 + i + rem
		}
		mult *= 128
	}
	t.Fatalf("Split accepted a five-byte length % x", b)
	return 0
}
