package handshake

import (
	"bytes"
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// TestTryRead: TryRead returns the plaintext crypto/tls already holds and what the socket
// has, reports "would block" at once when there is neither, and leaves the conn usable:
// a blocking Read and a write work afterwards, and the end of the stream still shows.
func TestTryRead(t *testing.T) {
	s := newTestServers(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			accepted <- result{err: err}
			return
		}
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		c, _, err := s.tls.Handshake(handshakeCtx(t), raw)
		accepted <- result{c, err}
	}()
	raw, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	dev := s.certClient(raw, tls.VersionTLS13)
	// Two packets in one record: the server reads the first exactly, the way the proxy
	// reads a CONNECT, and the second stays inside crypto/tls, where WaitRead cannot see it.
	if _, err := dev.Write([]byte("firstsecond")); err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	sc := r.c.(*Conn)
	defer sc.Close()
	first := make([]byte, 5)
	if _, err := sc.Read(first); err != nil || string(first) != "first" {
		t.Fatalf("first read %q, %v", first, err)
	}
	buf := make([]byte, 16<<10)
	n, err := sc.TryRead(buf)
	if err != nil || string(buf[:n]) != "second" {
		t.Fatalf("TryRead with plaintext held = %q, %v; want \"second\", nil", buf[:n], err)
	}
	start := time.Now()
	n, err = sc.TryRead(buf)
	if n != 0 || !IsWouldBlock(err) {
		t.Fatalf("TryRead with nothing sent = %d, %v; want 0 and would-block", n, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("TryRead with nothing sent waited %v", d)
	}
	// Not poisoned: the next record arrives through TryRead (once the socket has it), a
	// blocking Read and a write.
	if _, err := dev.Write([]byte("third")); err != nil {
		t.Fatal(err)
	}
	if err := sc.WaitRead(); err != nil {
		t.Fatal(err)
	}
	if n, err = sc.TryRead(buf); err != nil || string(buf[:n]) != "third" {
		t.Fatalf("TryRead after WaitRead = %q, %v; want \"third\"", buf[:n], err)
	}
	if _, err := dev.Write([]byte("fourth")); err != nil {
		t.Fatal(err)
	}
	if n, err = sc.Read(buf); err != nil || string(buf[:n]) != "fourth" {
		t.Fatalf("Read after TryRead = %q, %v", buf[:n], err)
	}
	if _, err := sc.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := dev.Read(got); err != nil || !bytes.Equal(got, []byte("back")) {
		t.Fatalf("device read %q, %v", got, err)
	}
	dev.Close()
	if err := sc.WaitRead(); err != nil {
		t.Fatal(err)
	}
	if n, err = sc.TryRead(buf); n != 0 || err == nil || IsWouldBlock(err) {
		t.Fatalf("TryRead at the end of the stream = %d, %v; want an end-of-stream error", n, err)
	}
}
