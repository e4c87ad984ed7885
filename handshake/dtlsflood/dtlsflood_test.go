package dtlsflood

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestRun floods a plain UDP socket both ways (a raw socket when the test runs as root,
// and one bound socket per hello) and checks what arrives: whole hellos, from as many
// distinct 127.0.0.0/8 addresses as asked, in about the time the rate says.
func TestRun(t *testing.T) {
	for _, noRaw := range []bool{false, true} {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadBuffer(4 << 20)
		target := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
		const count, sources = 600, 300
		done := make(chan Result, 1)
		go func() {
			res, err := Run(context.Background(), Config{Target: target, Rate: 2000, Count: count, Sources: sources, NoRaw: noRaw})
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		seen := map[netip.Addr]bool{}
		hello := Hello()
		buf := make([]byte, 2048)
		got := 0
		for got < count {
			_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if n != len(hello) || buf[0] != 22 || buf[13] != 1 {
				t.Fatalf("received % x, want a ClientHello of %d bytes", buf[:n], len(hello))
			}
			seen[from.Addr()] = true
			got++
		}
		res := <-done
		pc.Close()
		t.Logf("noRaw %v: %+v; received %d from %d addresses", noRaw, res, got, len(seen))
		if res.Sent != count || got < count*9/10 || len(seen) < sources*9/10 {
			t.Errorf("noRaw %v: sent %d, received %d from %d addresses; want %d from %d", noRaw, res.Sent, got, len(seen), count, sources)
		}
		if res.Elapsed < 250*time.Millisecond {
			t.Errorf("noRaw %v: %d hellos at 2,000/s took %v", noRaw, count, res.Elapsed)
		}
	}
}

func TestSource(t *testing.T) {
	seen := map[netip.Addr]bool{}
	for i := range 100000 {
		a := Source(i)
		b := a.As4()
		if b[0] != 127 || b[3] == 0 || b[3] == 255 || seen[a] {
			t.Fatalf("Source(%d) = %v", i, a)
		}
		seen[a] = true
	}
}

func TestRunRefusesNonLoopback(t *testing.T) {
	if _, err := Run(context.Background(), Config{Target: netip.MustParseAddrPort("192.0.2.1:5684"), Rate: 1, Count: 1}); err == nil {
		t.Error("a flood aimed off loopback ran")
	}
}
