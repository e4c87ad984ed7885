package tlspsk

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// splitConn, once armed, writes the first 3 bytes of its next Write at once and the rest
// only when released: the peer then holds part of a record.
type splitConn struct {
	net.Conn
	armed   bool
	release chan struct{}
}

func (c *splitConn) Write(b []byte) (int, error) {
	if !c.armed || len(b) <= 3 {
		return c.Conn.Write(b)
	}
	c.armed = false
	n, err := c.Conn.Write(b[:3])
	if err != nil {
		return n, err
	}
	<-c.release
	m, err := c.Conn.Write(b[3:])
	return n + m, err
}

// pollTryRead calls TryRead until it returns something other than ErrWouldBlock. It
// polls because the test has no readiness to wait on; the loop is bounded.
func pollTryRead(c *Conn, b []byte) (int, error) {
	for range 500 {
		n, err := c.TryRead(b)
		if !errors.Is(err, ErrWouldBlock) {
			return n, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, errors.New("TryRead still had nothing after 5 s")
}

// TestTryRead: TryRead never waits. With nothing sent, or only part of a record, it
// returns ErrWouldBlock at once, keeps the partial record, and does not make the error
// sticky: the record is returned whole once the rest arrives, a blocking Read still works,
// and close_notify still ends the stream.
func TestTryRead(t *testing.T) {
	type step struct {
		what string
		n    int
		data string
		err  error
		took time.Duration
	}
	steps := make(chan step, 8)
	sent := make(chan struct{}) // the client has written (part of) a record
	srv := startServer(t, &Config{Lookup: testLookup}, func(c *Conn) ([]byte, error) {
		buf := make([]byte, 1024)
		try := func(what string) {
			start := time.Now()
			n, err := c.TryRead(buf)
			steps <- step{what, n, string(buf[:n]), err, time.Since(start)}
		}
		try("nothing sent")
		<-sent
		time.Sleep(50 * time.Millisecond) // let the first 3 bytes arrive
		try("part of a record")
		<-sent
		n, err := pollTryRead(c, buf)
		steps <- step{"whole record", n, string(buf[:n]), err, 0}
		n, err = c.Read(buf)
		steps <- step{"blocking Read", n, string(buf[:n]), err, 0}
		n, err = pollTryRead(c, buf)
		steps <- step{"close_notify", n, "", err, 0}
		return nil, nil
	})
	nc, err := net.DialTimeout("tcp", srv.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	sc := &splitConn{Conn: nc, release: make(chan struct{})}
	c := Client(sc, &ClientConfig{Identity: testIdentity, Key: testKey})
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	want := func(what string, check func(s step) bool) {
		t.Helper()
		select {
		case s := <-steps:
			if s.what != what || !check(s) {
				t.Fatalf("%s: TryRead = %d %q, %v (took %v)", s.what, s.n, s.data, s.err, s.took)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the server did not report", what)
		}
	}
	wouldBlock := func(s step) bool { return s.n == 0 && errors.Is(s.err, ErrWouldBlock) && s.took < 5*time.Second }
	want("nothing sent", wouldBlock)

	sc.armed = true
	written := make(chan error, 1)
	go func() { _, err := c.Write([]byte("hello")); written <- err }()
	sent <- struct{}{}
	want("part of a record", wouldBlock)
	close(sc.release)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	sent <- struct{}{}
	want("whole record", func(s step) bool { return s.err == nil && s.data == "hello" })

	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	want("blocking Read", func(s step) bool { return s.err == nil && s.data == "again" })
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	want("close_notify", func(s step) bool { return s.n == 0 && errors.Is(s.err, io.EOF) })
	if r := srv.result(); r.err != nil {
		t.Fatal(r.err)
	}
}
