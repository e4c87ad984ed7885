//go:build linux

package proxy

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/internal/sockio"
)

// tryConn is a socket that claims TryRead, enough for parkPipe to consider parking it.
type tryConn struct{ *net.TCPConn }

func (tryConn) TryRead([]byte) (int, error) { return 0, sockio.ErrWouldBlock }

// TestParkWithoutPoller: when the epoll set cannot be made, sessions are not parked (the
// goroutine pipe takes them) and the operator is told once, not once per session.
func TestParkWithoutPoller(t *testing.T) {
	saved := sharedPoller
	sharedPoller = func() (*poller, error) { return nil, errors.New("epoll_create1: too many open files") }
	t.Cleanup(func() { sharedPoller = saved })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func() (*net.TCPConn, *net.TCPConn) {
		a, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		b, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close(); b.Close() })
		return a.(*net.TCPConn), b.(*net.TCPConn)
	}
	var logs bytes.Buffer
	srv := &Server{log: zerolog.New(&logs)}
	for range 2 {
		dev, up := pair()
		c := &conn{srv: srv, device: dev, cfg: &Config{}}
		if c.parkPipe(tryConn{dev}, up) {
			t.Fatal("parkPipe parked a session without an epoll set")
		}
	}
	if n := strings.Count(logs.String(), "cannot park idle sessions"); n != 1 {
		t.Errorf("%d warnings for two sessions, want 1; log:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the warning does not say why: %s", logs.String())
	}
}
