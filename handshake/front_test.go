package handshake_test

// Tests of the DTLS front socket: spoofed-source floods, unproven state, record order.

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/dtlsflood"
)

// dropCounts counts OnDrop reasons.
type dropCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (d *dropCounts) add(reason string) {
	d.mu.Lock()
	if d.m == nil {
		d.m = map[string]int{}
	}
	d.m[reason]++
	d.mu.Unlock()
}

func (d *dropCounts) get(reason string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.m[reason]
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestDTLSFloodRealDevicesConnect floods a listener with cookieless ClientHellos from
// thousands of spoofed loopback addresses while real DTLS-PSK devices connect: every device
// must get through, the unproven table must stay within its cap and empty after the
// flood, and memory and goroutines must come back to where they were.
func TestDTLSFloodRealDevicesConnect(t *testing.T) {
	const (
		hellos      = 3000
		rate        = 4000
		maxUnproven = 256
		devices     = 6
	)
	before := runtime.NumGoroutine()
	heapBefore := heapInuse()
	psk := newTestPSK(t)
	var drops dropCounts
	s := listenDTLS(t, handshake.DTLSConfig{PSK: psk.server(t), MaxUnproven: maxUnproven,
		UnprovenTimeout: 300 * time.Millisecond, OnDrop: drops.add})
	target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.addr.Port))

	floodDone := make(chan dtlsflood.Result, 1)
	go func() {
		res, err := dtlsflood.Run(context.Background(), dtlsflood.Config{Target: target, Rate: rate, Count: hellos})
		if err != nil {
			t.Error(err)
		}
		floodDone <- res
	}()
	// The devices start while the flood runs, one after another.
	var peak atomic.Int64
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n := int64(s.srv.Stats().Unproven); n > peak.Load() {
				peak.Store(n)
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	ok := 0
	for i := range devices {
		c, err := dialDTLS(t, s.addr, pskClient("dev-1", psk.key, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
		if err != nil {
			t.Errorf("device %d during the flood: %v", i, err)
			continue
		}
		r := s.result(t)
		if r.err != nil {
			t.Errorf("device %d, server side: %v", i, r.err)
			continue
		}
		roundTrip(t, c, r.conn)
		c.Close()
		r.conn.Close()
		ok++
		time.Sleep(50 * time.Millisecond)
	}
	res := <-floodDone
	close(stopSampling)
	sampler.Wait()
	st := s.srv.Stats()
	t.Logf("flood %+v; devices %d/%d; front %+v; peak unproven %d", res, ok, devices, st, peak.Load())
	if st.Hellos < hellos/2 {
		t.Errorf("only %d spoofed hellos reached the listener, want most of %d", st.Hellos, hellos)
	}
	if peak.Load() > maxUnproven {
		t.Errorf("unproven table peaked at %d, over its cap %d", peak.Load(), maxUnproven)
	}
	if st.Evicted == 0 || drops.get(handshake.DropUnprovenEvicted) == 0 {
		t.Errorf("no unproven entry was evicted (%+v): the flood did not fill the table", st)
	}
	if st.Proven != devices {
		t.Errorf("%d addresses proven, want the %d devices only", st.Proven, devices)
	}
	// Unproven state expires.
	deadline := time.Now().Add(5 * time.Second)
	for s.srv.Stats().Unproven > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("unproven entries left a while after the flood: %+v", s.srv.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if drops.get(handshake.DropUnprovenExpired) == 0 {
		t.Error("no unproven entry expired")
	}
	s.ln.Close()
	<-s.done
	waitGoroutines(t, before)
	if after := heapInuse(); after > heapBefore+8<<20 {
		t.Errorf("heap in use %d MiB after the flood, %d MiB before", after>>20, heapBefore>>20)
	}
}

// TestDTLSFrontDropsWithoutState checks what gets no state at all: datagrams from unknown
// addresses that are not a whole cookieless ClientHello. (One that parses is at least 61
// bytes, more than the 48 of a HelloVerifyRequest.)
func TestDTLSFrontDropsWithoutState(t *testing.T) {
	psk := newTestPSK(t)
	var drops dropCounts
	s := listenDTLS(t, handshake.DTLSConfig{PSK: psk.server(t), OnDrop: drops.add})
	hello := dtlsflood.Hello()
	withCookie := func() []byte {
		// Rebuild the hello with a 4-byte cookie: lengths grow by 4.
		b := append([]byte(nil), hello[:13+12+2+32+1]...)
		b = append(b, 4, 1, 2, 3, 4)
		b = append(b, hello[13+12+2+32+2:]...)
		b[12] += 4
		b[13+3] += 4
		b[13+11] += 4
		return b
	}()
	appData := append([]byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 8}, make([]byte, 8)...)
	for _, tc := range []struct {
		name   string
		b      []byte
		reason string
	}{
		{"application data", appData, handshake.DropNotClientHello},
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), handshake.DropNotClientHello},
		{"hello with a cookie never issued", withCookie, handshake.DropStaleCookie},
		{"hello cut short", hello[:40], handshake.DropNotClientHello},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			before := drops.get(tc.reason)
			if _, err := pc.WriteToUDP(tc.b, s.addr); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for drops.get(tc.reason) == before {
				if time.Now().After(deadline) {
					t.Fatalf("no %s drop", tc.reason)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if st := s.srv.Stats(); st.Unproven != 0 || st.Hellos != 0 {
				t.Errorf("state created: %+v", st)
			}
			// Nothing is sent back.
			_ = pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := pc.ReadFromUDP(make([]byte, 2048)); err == nil {
				t.Errorf("the listener answered with %d bytes", n)
			}
		})
	}
}

// TestDTLSHelloVerifyNoAmplification checks that each cookieless ClientHello is answered
// by one HelloVerifyRequest no larger than itself, and that no further one comes unasked.
func TestDTLSHelloVerifyNoAmplification(t *testing.T) {
	psk := newTestPSK(t)
	s := listenDTLS(t, handshake.DTLSConfig{PSK: psk.server(t)})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hello := dtlsflood.Hello()
	buf := make([]byte, 2048)
	for i := range 2 {
		hello[10] = byte(i) // a retransmission is a new record
		if _, err := pc.WriteToUDP(hello, s.addr); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := pc.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("hello %d: no HelloVerifyRequest: %v", i, err)
		}
		if buf[0] != 22 || buf[13] != 3 {
			t.Fatalf("hello %d answered with % x, want a HelloVerifyRequest", i, buf[:min(n, 16)])
		}
		if n > len(hello) {
			t.Errorf("HelloVerifyRequest of %d bytes for a ClientHello of %d", n, len(hello))
		}
	}
	// pion's retransmission timer (1 s) must not send more than was asked for.
	_ = pc.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	if n, _, err := pc.ReadFromUDP(buf); err == nil {
		t.Errorf("an unasked datagram of %d bytes", n)
	}
}
