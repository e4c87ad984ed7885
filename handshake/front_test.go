package handshake_test

// Tests of the DTLS front socket: spoofed-source floods, unproven state, record order.

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/dtlsflood"
	"github.com/mqtls/mqtls/proxy/datagram"
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
	if st.Hellos+st.Dropped < hellos/2 {
		t.Errorf("only %d spoofed hellos reached the listener (%d shed), want most of %d", st.Hellos+st.Dropped, st.Dropped, hellos)
	}
	if peak.Load() > maxUnproven+256 { // a shed address that asks again may overflow the table by 256
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

// swapRelay relays datagrams between one client and dst. While armed, it holds the next
// datagram from the client and sends it after the one that follows: a reordering path.
type swapRelay struct {
	pc    *net.UDPConn
	armed atomic.Bool
	done  chan struct{}
}

func newSwapRelay(t *testing.T, dst *net.UDPAddr) *swapRelay {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &swapRelay{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 1<<16)
		var client *net.UDPAddr
		var held []byte
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if from.Port == dst.Port {
				if client != nil {
					_, _ = pc.WriteToUDP(buf[:n], client)
				}
				continue
			}
			client = from
			switch {
			case r.armed.Load() && held == nil:
				held = append([]byte(nil), buf[:n]...)
			case held != nil:
				_, _ = pc.WriteToUDP(buf[:n], dst)
				_, _ = pc.WriteToUDP(held, dst)
				held = nil
				r.armed.Store(false)
			default:
				_, _ = pc.WriteToUDP(buf[:n], dst)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-r.done })
	return r
}

// TestDTLSRecordOrder sends two MQTT packets, "open" then "closed", over a path that
// swaps them: the server must read "closed" and never "open" after it (a retained
// message read out of order is the broker's wrong final state), and count the late one.
func TestDTLSRecordOrder(t *testing.T) {
	psk := newTestPSK(t)
	var drops dropCounts
	s := listenDTLS(t, handshake.DTLSConfig{PSK: psk.server(t), OnDrop: drops.add})
	relay := newSwapRelay(t, s.addr)
	for _, suite := range []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256} {
		t.Run(suite.String(), func(t *testing.T) {
			c, err := dialDTLS(t, relay.pc.LocalAddr(), pskClient("dev-1", psk.key, suite)...)
			if err != nil {
				t.Fatal(err)
			}
			r := s.result(t)
			if r.err != nil {
				t.Fatal(r.err)
			}
			late := drops.get(handshake.DropLateRecord)
			relay.armed.Store(true)
			// PUBLISH retain "door" "open", then PUBLISH retain "door" "closed".
			open := []byte{0x31, 10, 0, 4, 'd', 'o', 'o', 'r', 'o', 'p', 'e', 'n'}
			closed := []byte{0x31, 12, 0, 4, 'd', 'o', 'o', 'r', 'c', 'l', 'o', 's', 'e', 'd'}
			for _, p := range [][]byte{open, closed} {
				if _, err := c.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			buf := make([]byte, 1<<14)
			for {
				_ = r.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				n, err := r.conn.Read(buf)
				if err != nil {
					break
				}
				got = append(got, string(buf[8:n]))
			}
			if len(got) != 1 || got[0] != "closed" {
				t.Errorf("the server read %q, want only [closed]: a record that arrived late was delivered", got)
			}
			if d := drops.get(handshake.DropLateRecord) - late; d != 1 {
				t.Errorf("%d late records counted, want 1", d)
			}
			c.Close()
		})
	}
}

// tapRelay relays between one client and dst and records the size of every datagram the
// server sends.
type tapRelay struct {
	pc   *net.UDPConn
	mu   sync.Mutex
	down []int
	done chan struct{}
}

func newTapRelay(t *testing.T, dst *net.UDPAddr) *tapRelay {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &tapRelay{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 1<<16)
		var client *net.UDPAddr
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if from.Port == dst.Port {
				r.mu.Lock()
				r.down = append(r.down, n)
				r.mu.Unlock()
				if client != nil {
					_, _ = pc.WriteToUDP(buf[:n], client)
				}
				continue
			}
			client = from
			_, _ = pc.WriteToUDP(buf[:n], dst)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-r.done })
	return r
}

func (r *tapRelay) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.down...)
}

// TestDTLSUnknownPSKIdentityLooksLikeWrongKey checks RFC 4279 §2: a client that names an
// unknown identity sees exactly what a client with a wrong key sees (the same datagrams
// from the server, then silence: its Finished does not decrypt), so identities cannot be
// enumerated; the server still logs unknown_psk_identity. RefuseUnknownPSKIdentity
// restores the explicit refusal.
func TestDTLSUnknownPSKIdentityLooksLikeWrongKey(t *testing.T) {
	psk := newTestPSK(t)
	wrong := make([]byte, 32)
	run := func(t *testing.T, cfg handshake.DTLSConfig, identity string, key []byte) ([]int, string, time.Duration) {
		s := listenDTLSTimeout(t, cfg, 800*time.Millisecond)
		relay := newTapRelay(t, s.addr)
		start := time.Now()
		if _, err := dialDTLSTimeout(t, relay.pc.LocalAddr(), 800*time.Millisecond, pskClient(identity, key, dtls.TLS_PSK_WITH_AES_128_CCM_8)...); err == nil {
			t.Fatal("client handshake succeeded")
		}
		took := time.Since(start)
		r := s.result(t)
		time.Sleep(50 * time.Millisecond) // anything still in flight
		return relay.sizes(), handshake.Reason(r.err), took
	}
	cfg := func() handshake.DTLSConfig { return handshake.DTLSConfig{PSK: psk.server(t)} }
	wrongKey, wrongReason, _ := run(t, cfg(), "dev-1", wrong)
	unknown, unknownReason, _ := run(t, cfg(), "dev-9", psk.key)
	if fmt.Sprint(wrongKey) != fmt.Sprint(unknown) {
		t.Errorf("the server sent datagrams of %v bytes to an unknown identity, %v to a wrong key: tells them apart", unknown, wrongKey)
	}
	if wrongReason != handshake.ReasonTimeout || unknownReason != "unknown_psk_identity" {
		t.Errorf("reasons %q (wrong key), %q (unknown identity); want %q, %q", wrongReason, unknownReason, handshake.ReasonTimeout, "unknown_psk_identity")
	}
	refusing := cfg()
	refusing.RefuseUnknownPSKIdentity = true
	refused, reason, took := run(t, refusing, "dev-9", psk.key)
	if reason != "unknown_psk_identity" || fmt.Sprint(refused) == fmt.Sprint(wrongKey) || took > 500*time.Millisecond {
		t.Errorf("RefuseUnknownPSKIdentity: reason %q, datagrams %v, refused after %v; want unknown_psk_identity, an alert, at once", reason, refused, took)
	}
}

// BenchmarkDTLSFrontFlood measures what one spoofed cookieless ClientHello costs the
// listener: b.N hellos from b.N distinct loopback addresses at 20,000 per second, the
// goal's rate. cpu-µs/hello is the process's CPU time (listener and sender; the raw
// socket sender's share is a few µs) per hello the listener handled; B/op likewise.
func BenchmarkDTLSFrontFlood(b *testing.B) {
	psk := newTestPSK(b)
	s := listenDTLS(b, handshake.DTLSConfig{PSK: psk.server(b)})
	target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.addr.Port))
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	if _, err := dtlsflood.Run(context.Background(), dtlsflood.Config{Target: target, Rate: 20000, Count: b.N}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the last hellos
	b.StopTimer()
	st := s.srv.Stats()
	b.ReportMetric(float64(st.Hellos)/float64(b.N), "handled/op")
	b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(max(st.Hellos, 1)), "cpu-µs/hello")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rebindRelay relays between one client and dst; after rebind, it sends the client's
// datagrams to dst from a new socket, as a NAT that gives the device a new port does.
type rebindRelay struct {
	front, back, back2 *net.UDPConn
	rebound            atomic.Bool
	client             atomic.Pointer[net.UDPAddr]
	done               sync.WaitGroup
}

func newRebindRelay(t *testing.T, dst *net.UDPAddr) *rebindRelay {
	t.Helper()
	r := &rebindRelay{}
	for _, pc := range []**net.UDPConn{&r.front, &r.back, &r.back2} {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		*pc = c
	}
	pump := func(from *net.UDPConn, to func([]byte, *net.UDPAddr)) {
		defer r.done.Done()
		buf := make([]byte, 1<<16)
		for {
			n, a, err := from.ReadFromUDP(buf)
			if err != nil {
				return
			}
			to(buf[:n], a)
		}
	}
	toClient := func(b []byte, _ *net.UDPAddr) {
		if c := r.client.Load(); c != nil {
			_, _ = r.front.WriteToUDP(b, c)
		}
	}
	r.done.Add(3)
	go pump(r.front, func(b []byte, a *net.UDPAddr) {
		r.client.Store(a)
		out := r.back
		if r.rebound.Load() {
			out = r.back2
		}
		_, _ = out.WriteToUDP(b, dst)
	})
	go pump(r.back, toClient)
	go pump(r.back2, toClient)
	t.Cleanup(func() { r.front.Close(); r.back.Close(); r.back2.Close(); r.done.Wait() })
	return r
}

// TestDTLSRebindingByConnectionID moves the client to a new source port mid-session: the
// connection ID routes its records to the same session, and the answers follow it.
func TestDTLSRebindingByConnectionID(t *testing.T) {
	psk := newTestPSK(t)
	s := listenDTLS(t, handshake.DTLSConfig{PSK: psk.server(t)})
	relay := newRebindRelay(t, s.addr)
	c, err := dialDTLS(t, relay.front.LocalAddr(), pskClient("dev-1", psk.key, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256)...)
	if err != nil {
		t.Fatal(err)
	}
	r := s.result(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	roundTrip(t, c, r.conn)
	relay.rebound.Store(true)
	relay.back.Close() // the old port is gone: the answers must follow the new one
	roundTrip(t, c, r.conn)
	if st := s.srv.Stats(); st.Sessions != 1 || st.Proven != 1 {
		t.Errorf("front %+v, want the one session", st)
	}
}

// TestDTLSMbedTLSClient: an mbedTLS DTLS-PSK client (what constrained devices run) does
// the cookie exchange through the front and exchanges records with the server.
func TestDTLSMbedTLSClient(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatal("no C compiler: apt-get install -y gcc libmbedtls-dev")
	}
	bin := filepath.Join(t.TempDir(), "client")
	if out, err := exec.Command(cc, "-o", bin, "testdata/mbedtls/dtls_psk_client.c", "-lmbedtls", "-lmbedx509", "-lmbedcrypto").CombinedOutput(); err != nil {
		t.Fatalf("building the mbedTLS client (apt-get install -y libmbedtls-dev): %v\n%s", err, out)
	}
	psk := newTestPSK(t)
	s := listenDTLS(t, handshake.DTLSConfig{PSK: psk.server(t)})
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "127.0.0.1", fmt.Sprint(s.addr.Port), "dev-1", hex.EncodeToString(psk.key)).CombinedOutput()
		done <- result{out, err}
	}()
	r := s.result(t)
	if r.err != nil {
		t.Fatal(r.err)
	}
	buf := make([]byte, datagram.MaxRecord)
	_ = r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := r.conn.Read(buf)
	if err != nil || n < 2 || buf[0] != 0x10 {
		t.Fatalf("server read % x, %v; want the client's CONNECT", buf[:n], err)
	}
	if _, err := r.conn.Write([]byte{0x20, 2, 0, 0}); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || !strings.Contains(string(res.out), "connack: 20 02 00 00") {
		t.Fatalf("mbedTLS client: %v\n%s", res.err, res.out)
	}
	if r.id.PSKIdentity != "dev-1" {
		t.Errorf("identity %+v, want PSK dev-1", r.id)
	}
}
