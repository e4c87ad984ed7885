package datagram_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mqtls/mqtls/proxy/datagram"
)

// Packet fixtures. Each is a whole MQTT packet: fixed header (type and flags, then the
// remaining length as a variable byte integer [MQTT-1.5.5]) and body.
var (
	// PINGREQ: type 12, no body [MQTT-3.12].
	pingreq = []byte{0xc0, 0x00}
	// PINGRESP: type 13, no body [MQTT-3.13].
	pingresp = []byte{0xd0, 0x00}
	// CONNACK 3.1.1: session present 0, return code 0 [MQTT-3.2].
	connack = []byte{0x20, 0x02, 0x00, 0x00}
	// PUBLISH QoS 0 to "a/b" with payload "hi": topic length 3, topic, payload [MQTT-3.3].
	publish = []byte{0x30, 0x07, 0x00, 0x03, 'a', '/', 'b', 'h', 'i'}
)

// packetOf returns a PUBLISH (QoS 0, topic "t") whose whole length, fixed header included,
// is size bytes. size must be at least 5.
func packetOf(size int) []byte {
	for hl := 2; hl <= 5; hl++ {
		body := size - hl
		if body < 0 {
			break
		}
		if varIntLen(body) == hl-1 {
			b := []byte{0x30}
			for n := body; ; {
				d := byte(n % 128)
				n /= 128
				if n > 0 {
					d |= 0x80
				}
				b = append(b, d)
				if n == 0 {
					break
				}
			}
			b = append(b, 0x00, 0x01, 't')
			for len(b) < size {
				b = append(b, byte(len(b)))
			}
			return b
		}
	}
	panic(fmt.Sprintf("no packet of %d bytes", size))
}

func varIntLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	}
	return 4
}

func cat(bs ...[]byte) []byte { return slices.Concat(bs...) }

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		n    int
		err  error
	}{
		{"one packet without body", pingreq, 1, nil},
		{"one packet with body", publish, 1, nil},
		{"several packets", cat(connack, publish, pingresp), 3, nil},
		{"two-byte remaining length", packetOf(200), 1, nil},
		{"three-byte remaining length", packetOf(20000), 1, nil},
		{"packet then packet of 200", cat(publish, packetOf(200)), 2, nil},
		{"empty", nil, 0, datagram.ErrIncomplete},
		{"first byte only", []byte{0x30}, 0, datagram.ErrIncomplete},
		{"length continues past the end", []byte{0x30, 0x80}, 0, datagram.ErrIncomplete},
		{"body cut short", publish[:len(publish)-1], 0, datagram.ErrIncomplete},
		{"whole packet then a cut one", cat(publish, connack[:3]), 1, datagram.ErrIncomplete},
		{"whole packets then a lone first byte", cat(pingreq, pingresp, []byte{0xc0}), 2, datagram.ErrIncomplete},
		// [MQTT-1.5.5]: at most four bytes of remaining length.
		{"five-byte remaining length", []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, 0, datagram.ErrMalformed},
		// [MQTT-1.5.5-1]: the shortest encoding; 0x80 0x00 is a two-byte zero.
		{"non-shortest remaining length", []byte{0x30, 0x80, 0x00}, 0, datagram.ErrMalformed},
		{"malformed after a good packet", cat(pingreq, []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}), 1, datagram.ErrMalformed},
		// The largest length MQTT can encode; the datagram is far shorter.
		{"claims 256 MiB", []byte{0x30, 0xff, 0xff, 0xff, 0x7f, 0x00}, 0, datagram.ErrIncomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := datagram.Split(tc.in)
			if n != tc.n || !errors.Is(err, tc.err) {
				t.Errorf("Split(% x) = %d, %v; want %d, %v", tc.in, n, err, tc.n, tc.err)
			}
		})
	}
}

func TestSplitAllocates(t *testing.T) {
	in := cat(connack, publish, packetOf(300), pingresp)
	if a := testing.AllocsPerRun(100, func() { _, _ = datagram.Split(in) }); a != 0 {
		t.Errorf("Split allocates %v times per call, want 0", a)
	}
}

// msgConn is an in-memory message-oriented net.Conn, standing in for a DTLS conn: each
// Write is recorded as one datagram, and each Read returns one datagram from in (io.EOF once
// in is closed). A datagram larger than the Read buffer is an error, as in pion.
type msgConn struct {
	in chan []byte

	mu       sync.Mutex
	sent     [][]byte
	writeErr error // returned by every Write when set
}

func newMsgConn(in ...[]byte) *msgConn {
	c := &msgConn{in: make(chan []byte, len(in))}
	for _, d := range in {
		c.in <- d
	}
	close(c.in)
	return c
}

func (c *msgConn) Read(p []byte) (int, error) {
	d, ok := <-c.in
	if !ok {
		return 0, io.EOF
	}
	if len(d) > len(p) {
		return 0, io.ErrShortBuffer
	}
	return copy(p, d), nil
}

func (c *msgConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writeErr != nil {
		return 0, c.writeErr
	}
	c.sent = append(c.sent, slices.Clone(p))
	return len(p), nil
}

func (c *msgConn) datagrams() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent)
}

func (c *msgConn) Close() error                     { return nil }
func (c *msgConn) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *msgConn) RemoteAddr() net.Addr             { return &net.UDPAddr{} }
func (c *msgConn) SetDeadline(time.Time) error      { return nil }
func (c *msgConn) SetReadDeadline(time.Time) error  { return nil }
func (c *msgConn) SetWriteDeadline(time.Time) error { return nil }

// dropLog records what OnDrop was called with.
type dropLog struct {
	mu   sync.Mutex
	errs []error
}

func (d *dropLog) add(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.errs = append(d.errs, err)
}

func TestReadDropsBadDatagrams(t *testing.T) {
	in := [][]byte{
		cat(connack, publish),                // good: two packets
		publish[:4],                          // cut: dropped
		{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, // malformed: dropped
		pingresp,                             // good
		{},                                   // empty: dropped
		cat(publish, pingresp[:1]),           // good packet then a cut one: dropped whole
		packetOf(1000),                       // good, bigger than a small read
		cat(pingresp, []byte{0x30, 0x80, 0x00, 0}), // non-shortest length: dropped
	}
	want := cat(connack, publish, pingresp, packetOf(1000))
	wantDrops := []error{datagram.ErrIncomplete, datagram.ErrMalformed, datagram.ErrIncomplete, datagram.ErrIncomplete, datagram.ErrMalformed}

	for _, rd := range []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"record-sized reads", func(r io.Reader) io.Reader { return r }},
		{"one-byte reads", iotest.OneByteReader},
		{"half-record reads", func(r io.Reader) io.Reader { return &chunkReader{r, datagram.MaxRecord / 2} }},
	} {
		t.Run(rd.name, func(t *testing.T) {
			var drops dropLog
			c := datagram.New(newMsgConn(in...), datagram.Options{OnDrop: drops.add})
			// io.ReadAll would read with a small buffer; read with a record-sized one.
			got, err := readAll(rd.wrap(c))
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("read % x\nwant % x", got, want)
			}
			if c.Dropped() != uint64(len(wantDrops)) {
				t.Errorf("Dropped() = %d, want %d", c.Dropped(), len(wantDrops))
			}
			if len(drops.errs) != len(wantDrops) {
				t.Fatalf("OnDrop called with %v, want %v", drops.errs, wantDrops)
			}
			for i, err := range drops.errs {
				if !errors.Is(err, wantDrops[i]) {
					t.Errorf("drop %d: OnDrop(%v), want %v", i, err, wantDrops[i])
				}
			}
		})
	}
}

// chunkReader reads from r with reads of at most n bytes.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// readAll reads r to io.EOF with a buffer that holds any record.
func readAll(r io.Reader) ([]byte, error) {
	var out []byte
	buf := make([]byte, datagram.MaxRecord)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

func TestReadNilOnDrop(t *testing.T) {
	c := datagram.New(newMsgConn([]byte{0x30}, pingreq), datagram.Options{})
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], pingreq) {
		t.Fatalf("Read = % x, %v; want % x, nil", buf[:n], err, pingreq)
	}
	if c.Dropped() != 1 {
		t.Errorf("Dropped() = %d, want 1", c.Dropped())
	}
}

func TestReadPassesErrors(t *testing.T) {
	c := datagram.New(newMsgConn(), datagram.Options{})
	if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read on a closed conn = %d, %v; want 0, EOF", n, err)
	}
}

// TestReadKeepsRest checks that a datagram read a little at a time is handed out whole
// before the next datagram is read.
func TestReadKeepsRest(t *testing.T) {
	first, second := packetOf(100), packetOf(50)
	c := datagram.New(newMsgConn(first, second), datagram.Options{})
	buf := make([]byte, 30)
	var got []byte
	for len(got) < len(first) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, first) {
		t.Fatalf("first datagram read as % x, want % x", got, first)
	}
	buf = make([]byte, datagram.MaxRecord)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], second) {
		t.Fatalf("second Read = % x, %v; want % x", buf[:n], err, second)
	}
}

func TestWritePacks(t *testing.T) {
	small := packetOf(20)
	big := packetOf(100)
	for _, tc := range []struct {
		name   string
		max    int
		writes [][]byte
		want   [][]byte // the datagrams sent
	}{
		{
			name:   "small packets packed up to the maximum",
			max:    64,
			writes: [][]byte{cat(small, small, small, small, small, small, small, small, small, small)},
			want:   [][]byte{cat(small, small, small), cat(small, small, small), cat(small, small, small), small},
		},
		{
			name:   "exactly the maximum",
			max:    60,
			writes: [][]byte{cat(small, small, small, small)},
			want:   [][]byte{cat(small, small, small), small},
		},
		{
			name:   "a packet over the maximum travels alone",
			max:    64,
			writes: [][]byte{cat(small, big, small, small)},
			want:   [][]byte{small, big, cat(small, small)},
		},
		{
			name:   "a packet over the maximum first",
			max:    64,
			writes: [][]byte{cat(big, small)},
			want:   [][]byte{big, small},
		},
		{
			name:   "each Write sends what it completes",
			max:    64,
			writes: [][]byte{small, cat(small, small)},
			want:   [][]byte{small, cat(small, small)},
		},
		{
			name:   "default maximum",
			writes: [][]byte{bytes.Repeat(small, 100)},
			want: [][]byte{
				bytes.Repeat(small, 58), bytes.Repeat(small, 42), // 58*20 = 1160 <= 1168
			},
		},
		{
			name:   "maximum above a record is a record",
			max:    1 << 20,
			writes: [][]byte{cat(packetOf(10000), packetOf(10000))},
			want:   [][]byte{packetOf(10000), packetOf(10000)},
		},
		{
			name:   "a record-sized packet",
			max:    64,
			writes: [][]byte{cat(small, packetOf(datagram.MaxRecord))},
			want:   [][]byte{small, packetOf(datagram.MaxRecord)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := newMsgConn()
			c := datagram.New(mc, datagram.Options{MaxDatagram: tc.max})
			for _, w := range tc.writes {
				if n, err := c.Write(w); n != len(w) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", len(w), n, err)
				}
			}
			got := mc.datagrams()
			if len(got) != len(tc.want) {
				t.Fatalf("sent %d datagrams of %v bytes, want %d of %v", len(got), lens(got), len(tc.want), lens(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Errorf("datagram %d: % x\nwant % x", i, got[i], tc.want[i])
				}
			}
			if c.Pending() != 0 {
				t.Errorf("Pending() = %d after whole packets, want 0", c.Pending())
			}
		})
	}
}

func lens(ds [][]byte) []int {
	out := make([]int, len(ds))
	for i, d := range ds {
		out[i] = len(d)
	}
	return out
}

// TestWriteHoldsPartialPacket writes packets the way paho does, in pieces (fixed header,
// variable header, payload), and checks that each travels as one datagram once complete.
func TestWriteHoldsPartialPacket(t *testing.T) {
	pkt := packetOf(300) // a two-byte remaining length
	for _, cuts := range [][]int{
		{1, 2},     // first byte alone, then half the length
		{3, 10},    // fixed header, then part of the body
		{150, 299}, // in the middle, then all but the last byte
		{0, 3},     // an empty Write first
	} {
		t.Run(fmt.Sprint(cuts), func(t *testing.T) {
			mc := newMsgConn()
			c := datagram.New(mc, datagram.Options{})
			pieces := [][]byte{pkt[:cuts[0]], pkt[cuts[0]:cuts[1]], pkt[cuts[1]:]}
			for i, p := range pieces {
				if n, err := c.Write(p); n != len(p) || err != nil {
					t.Fatalf("Write(piece %d) = %d, %v", i, n, err)
				}
				if i < 2 {
					if got := len(mc.datagrams()); got != 0 {
						t.Fatalf("after piece %d: %d datagrams sent, want none", i, got)
					}
					if c.Pending() != cuts[i] {
						t.Errorf("after piece %d: Pending() = %d, want %d", i, c.Pending(), cuts[i])
					}
				}
			}
			got := mc.datagrams()
			if len(got) != 1 || !bytes.Equal(got[0], pkt) {
				t.Fatalf("sent %v bytes, want one datagram holding the packet", lens(got))
			}
			if c.Pending() != 0 {
				t.Errorf("Pending() = %d, want 0", c.Pending())
			}
		})
	}
}

// TestWritePartialThenMore checks that a held partial packet is packed with the packets
// that follow it.
func TestWritePartialThenMore(t *testing.T) {
	mc := newMsgConn()
	c := datagram.New(mc, datagram.Options{MaxDatagram: 64})
	a, b := packetOf(20), packetOf(20)
	mustWrite(t, c, a[:5])
	mustWrite(t, c, cat(a[5:], b, b[:1]))
	mustWrite(t, c, b[1:])
	got := mc.datagrams()
	want := [][]byte{cat(a, b), b}
	if len(got) != len(want) || !bytes.Equal(got[0], want[0]) || !bytes.Equal(got[1], want[1]) {
		t.Fatalf("sent %v, want %v", lens(got), lens(want))
	}
}

func mustWrite(t *testing.T, c *datagram.Conn, p []byte) {
	t.Helper()
	if n, err := c.Write(p); n != len(p) || err != nil {
		t.Fatalf("Write(% x) = %d, %v", p, n, err)
	}
}

func TestWriteErrors(t *testing.T) {
	tooLarge := packetOf(datagram.MaxRecord + 1)
	for _, tc := range []struct {
		name   string
		writes [][]byte
		err    error
		sent   int // datagrams sent before the error
	}{
		{"packet over a record", [][]byte{tooLarge}, datagram.ErrPacketTooLarge, 0},
		// The fixed header says enough: nothing of the packet is buffered first.
		{"fixed header of a packet over a record", [][]byte{tooLarge[:4]}, datagram.ErrPacketTooLarge, 0},
		{"over a record after whole packets in the same Write", [][]byte{cat(pingreq, tooLarge)}, datagram.ErrPacketTooLarge, 0},
		{"over a record after an earlier Write", [][]byte{pingreq, tooLarge}, datagram.ErrPacketTooLarge, 1},
		{"malformed length", [][]byte{{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}}, datagram.ErrMalformed, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := newMsgConn()
			c := datagram.New(mc, datagram.Options{})
			var err error
			for i, w := range tc.writes {
				var n int
				n, err = c.Write(w)
				if i < len(tc.writes)-1 && err != nil {
					t.Fatalf("Write %d: %v", i, err)
				}
				if err != nil && n != 0 {
					t.Errorf("failed Write returned n = %d, want 0", n)
				}
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("Write = %v, want %v", err, tc.err)
			}
			if got := mc.datagrams(); len(got) != tc.sent {
				t.Errorf("sent %d datagrams, want %d", len(got), tc.sent)
			}
		})
	}
}

func TestWriteSendError(t *testing.T) {
	mc := newMsgConn()
	boom := errors.New("boom")
	mc.writeErr = boom
	c := datagram.New(mc, datagram.Options{})
	if n, err := c.Write(pingreq); n != 0 || !errors.Is(err, boom) {
		t.Errorf("Write = %d, %v; want 0, %v", n, err, boom)
	}
}

// TestConcurrentReadWrite runs Read and Write at once, as the proxy's two copiers do.
func TestConcurrentReadWrite(t *testing.T) {
	in := make([][]byte, 100)
	for i := range in {
		in[i] = packetOf(10 + i)
	}
	mc := newMsgConn(in...)
	c := datagram.New(mc, datagram.Options{MaxDatagram: 200})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, p := range in {
			if _, err := c.Write(p); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got, err := readAll(c)
	wg.Wait()
	if err != nil || !bytes.Equal(got, slices.Concat(in...)) {
		t.Errorf("read %d bytes, %v; want %d", len(got), err, len(slices.Concat(in...)))
	}
	if sent := slices.Concat(mc.datagrams()...); !bytes.Equal(sent, slices.Concat(in...)) {
		t.Errorf("sent %d bytes, want %d", len(sent), len(slices.Concat(in...)))
	}
}

// countConn is a message conn whose Write only counts, for the benchmark.
type countConn struct {
	msgConn
	n int
}

func (c *countConn) Write(p []byte) (int, error) { c.n++; return len(p), nil }

// BenchmarkWritePack measures packing a broker's typical output (small PUBLISH packets,
// 4 KiB per Write as the pipe reads it) into datagrams.
func BenchmarkWritePack(b *testing.B) {
	var chunk []byte
	for len(chunk)+64 <= 4096 {
		chunk = append(chunk, packetOf(64)...)
	}
	cc := &countConn{}
	c := datagram.New(cc, datagram.Options{})
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cc.n)/float64(b.N), "datagrams/op")
}
