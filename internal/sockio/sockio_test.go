package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestTryReader: nothing sent is ErrWouldBlock at once, bytes are returned, the peer's
// close is io.EOF, and a passed read deadline is an error rather than a wait.
func TestTryReader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	r := &TryReader{Conn: raw}
	buf := make([]byte, 16)

	start := time.Now()
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("nothing sent: %d, %v; want 0, ErrWouldBlock", n, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Read waited %v with nothing to read", took)
	}

	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got := ""
	for i := 0; i < 500 && got != "hello"; i++ {
		n, err := r.Read(buf)
		if err != nil && !errors.Is(err, ErrWouldBlock) {
			t.Fatal(err)
		}
		got += string(buf[:n])
		if n == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got != "hello" {
		t.Fatalf("read %q, want hello", got)
	}

	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	peer.Close()
	var rerr error
	for i := 0; i < 500; i++ {
		if _, rerr = r.Read(buf); !errors.Is(rerr, ErrWouldBlock) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rerr != io.EOF {
		t.Errorf("after the peer closed: %v, want io.EOF", rerr)
	}
}
