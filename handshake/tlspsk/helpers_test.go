package tlspsk

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMain fails the run if any goroutine is still executing this package's code after
// every test has returned (a leaked reader, writer or handshake watcher).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines leaked by tlspsk tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines running code of this package, other
// than the caller's, waiting up to wait for stragglers that are already on their way out.
func leakedGoroutines(wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "handshake/tlspsk.") && !strings.Contains(g, "tlspsk.leakedGoroutines") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Test keys are made up at run time by the tests; these are fixed only so that failures
// reproduce. None of them protects anything.
var (
	testIdentity = "device-1"
	testKey      = mustHex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
	otherKey     = mustHex("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100")
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// testLookup knows testIdentity with testKey.
func testLookup(identity string) ([]byte, bool) {
	if identity == testIdentity {
		return testKey, true
	}
	return nil, false
}

// handshakeResult is what the test server saw on one connection.
type handshakeResult struct {
	state State
	err   error
	data  []byte // what handle returned, if anything
}

// testServer accepts loopback TCP connections and runs the PSK server on each. handle, if
// not nil, runs after a successful handshake. Cleanup closes the listener and waits (at most
// 10 s) for every goroutine it started, so a leak fails the test.
type testServer struct {
	t       testing.TB
	ln      net.Listener
	results chan handshakeResult
	wg      sync.WaitGroup
}

func startServer(t testing.TB, cfg *Config, handle func(*Conn) ([]byte, error)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{t: t, ln: ln, results: make(chan handshakeResult, 64)}
	s.wg.Add(1)
	go s.acceptLoop(cfg, handle)
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

func (s *testServer) acceptLoop(cfg *Config, handle func(*Conn) ([]byte, error)) {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go s.serveOne(nc, cfg, handle)
	}
}

func (s *testServer) serveOne(nc net.Conn, cfg *Config, handle func(*Conn) ([]byte, error)) {
	defer s.wg.Done()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := Server(nc, cfg)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.HandshakeContext(ctx)
	res := handshakeResult{state: c.ConnectionState(), err: err}
	if err == nil && handle != nil {
		res.data, res.err = handle(c)
	}
	s.results <- res
}

func (s *testServer) stop() {
	s.ln.Close()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("test server goroutines still running 10 s after the test ended")
	}
}

// result waits for the next connection's result.
func (s *testServer) result() handshakeResult {
	s.t.Helper()
	select {
	case r := <-s.results:
		return r
	case <-time.After(30 * time.Second):
		s.t.Fatal("no connection result within 30 s")
		return handshakeResult{}
	}
}

// needPeer returns the path of a peer binary, failing the test with the install command
// when it is missing: the interop tests never skip, in CI or not.
func needPeer(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		where := ""
		if os.Getenv("CI") == "true" {
			where = " (CI)"
		}
		t.Fatalf("%s is not installed%s; install it with: sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl gnutls-bin mosquitto-clients'", name, where)
	}
	return p
}

// reasonOf is ReasonOf with a check that err is an *Error at all.
func asError(t testing.TB, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *tlspsk.Error", err, err)
	}
	return e
}
