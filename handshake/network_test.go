package handshake

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestListenNetwork(t *testing.T) {
	for _, tc := range []struct{ base, addr, want string }{
		{"tcp", "0.0.0.0:8883", "tcp4"},
		{"tcp", "127.0.0.1:8883", "tcp4"},
		{"tcp", "[::]:8883", "tcp6"},
		{"udp", "[::1]:5684", "udp6"},
		{"udp", "0.0.0.0:5684", "udp4"},
		{"tcp", ":8883", "tcp"},
		{"tcp", "localhost:8883", "tcp"},
		{"tcp", "[::ffff:127.0.0.1]:8883", "tcp"},
	} {
		if got := ListenNetwork(tc.base, tc.addr); got != tc.want {
			t.Errorf("ListenNetwork(%q, %q) = %q, want %q", tc.base, tc.addr, got, tc.want)
		}
	}
}

// TestListenIPv4OnlyRefusesIPv6: 0.0.0.0 no longer accepts IPv6 connections.
func TestListenIPv4OnlyRefusesIPv6(t *testing.T) {
	if c, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Fatalf("this test needs IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	addr := "0.0.0.0:0"
	ln, err := net.Listen(ListenNetwork("tcp", addr), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	if c, err := net.DialTimeout("tcp", "[::1]:"+port, 2*time.Second); err == nil {
		c.Close()
		t.Fatalf("a listener on %s accepted an IPv6 connection", addr)
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 2*time.Second)
	if err != nil {
		t.Fatalf("a listener on %s refused IPv4: %v", addr, err)
	}
	c.Close()
}
