package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

func TestNewValidates(t *testing.T) {
	hs, err := handshake.NewTLSServer(handshake.TLSConfig{CertFile: pki.serverCert, KeyFile: pki.serverKey})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New(policy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  proxy.Config
		ok   bool
	}{
		{name: "tcp upstream", cfg: proxy.Config{Upstream: "127.0.0.1:1883", Handshaker: hs, Policy: pol}, ok: true},
		{name: "unix upstream", cfg: proxy.Config{Upstream: "unix:/run/mosquitto.sock", Handshaker: hs, Policy: pol}, ok: true},
		{name: "no handshaker", cfg: proxy.Config{Upstream: "127.0.0.1:1883", Policy: pol}},
		{name: "no policy", cfg: proxy.Config{Upstream: "127.0.0.1:1883", Handshaker: hs}},
		{name: "no upstream", cfg: proxy.Config{Handshaker: hs, Policy: pol}},
		{name: "upstream without port", cfg: proxy.Config{Upstream: "localhost", Handshaker: hs, Policy: pol}},
		{name: "empty unix path", cfg: proxy.Config{Upstream: "unix:", Handshaker: hs, Policy: pol}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := proxy.New(tc.cfg)
			if tc.ok != (err == nil) || (srv != nil) != tc.ok {
				t.Errorf("New: %v, %v; want ok %v", srv, err, tc.ok)
			}
		})
	}
}

// flakyListener fails its first Accept calls with errs, then accepts for real.
type flakyListener struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "accept timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// TestServeSurvivesAcceptErrors checks that an accept error other than a closed listener is
// logged and retried: the connection that comes after it is served.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	checkGoroutines(t)
	opErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{name: "synthetic", err: errors.New("synthetic accept failure")},
		{name: "ECONNABORTED", err: opErr(syscall.ECONNABORTED)},
		{name: "EMFILE", err: opErr(syscall.EMFILE)},
		{name: "timeout", err: timeoutError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const failures = 3
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fl := &flakyListener{Listener: ln}
			for range failures {
				fl.errs = append(fl.errs, tc.err)
			}
			b := startBroker(t, "tcp", "", nil)
			p := serveProxy(t, fl, b.upstream(), policy.Config{}, nil)

			dev := dialDevice(t, p.addr, deviceConfig())
			openSession(t, dev, b, connectPacket(4, deviceCN), nil)
			if n := p.log.count("accepting connection"); n != failures {
				t.Errorf("%d accept errors logged, want %d; the log:\n%s", n, failures, p.log)
			}
		})
	}
}

// TestServeEndsWhenListenerCloses checks that a listener closed by someone other than
// Shutdown ends Serve with that error, not ErrServerClosed and not a retry loop.
func TestServeEndsWhenListenerCloses(t *testing.T) {
	checkGoroutines(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := serveProxy(t, ln, "127.0.0.1:1", policy.Config{}, nil)
	p.wantServeErr = net.ErrClosed
	ln.Close()
	if err := p.waitServe(); !errors.Is(err, net.ErrClosed) || errors.Is(err, proxy.ErrServerClosed) {
		t.Errorf("Serve returned %v, want net.ErrClosed", err)
	}
}

// TestServeAfterShutdown checks that Serve on a shut-down server closes the listener and
// returns ErrServerClosed at once.
func TestServeAfterShutdown(t *testing.T) {
	checkGoroutines(t)
	p := startProxy(t, "127.0.0.1:1", policy.Config{}, nil)
	shutdownWithin(t, p, time.Second, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Serve(ln); !errors.Is(err, proxy.ErrServerClosed) {
		t.Errorf("Serve after Shutdown: %v, want ErrServerClosed", err)
	}
	if c, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		if c != nil {
			c.Close()
		}
		t.Errorf("the listener given to Serve after Shutdown is still open: Accept: %v", err)
	}
}

// shutdownWithin calls Shutdown with a timeout and checks its result: nil, or the
// context's error when wantTimeout; and that it and Serve return in good time.
func shutdownWithin(tb testing.TB, p *proxyServer, timeout time.Duration, wantTimeout bool) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := p.Shutdown(ctx)
	took := time.Since(start)
	switch {
	case wantTimeout && !errors.Is(err, context.DeadlineExceeded):
		tb.Errorf("Shutdown: %v after %v, want %v", err, took, context.DeadlineExceeded)
	case !wantTimeout && err != nil:
		tb.Errorf("Shutdown: %v after %v, want nil", err, took)
	case wantTimeout && took < timeout:
		tb.Errorf("Shutdown returned after %v, before its %v deadline", took, timeout)
	case took > timeout+2*time.Second:
		tb.Errorf("Shutdown took %v with a %v deadline", took, timeout)
	}
	if err := p.waitServe(); !errors.Is(err, proxy.ErrServerClosed) {
		tb.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
}

// TestShutdown checks draining: Shutdown stops accepting at once, waits for open sessions
// until its context ends, then closes them and says so.
func TestShutdown(t *testing.T) {
	checkGoroutines(t)

	t.Run("idle server", func(t *testing.T) {
		p := startProxy(t, "127.0.0.1:1", policy.Config{}, nil)
		start := time.Now()
		shutdownWithin(t, p, 5*time.Second, false)
		if took := time.Since(start); took > time.Second {
			t.Errorf("Shutdown of a server without sessions took %v", took)
		}
		if c, err := net.DialTimeout("tcp", p.addr, waitTimeout); err == nil {
			c.Close()
			t.Error("the listener still accepts after Shutdown")
		}
	})

	t.Run("forwarded session outlives the deadline", func(t *testing.T) {
		b := startBroker(t, "tcp", "", nil)
		p := startProxy(t, b.upstream(), policy.Config{}, nil)
		dev := dialDevice(t, p.addr, deviceConfig())
		connect := connectPacket(4, deviceCN)
		up := openSession(t, dev, b, connect, nil)

		shutdownWithin(t, p, 200*time.Millisecond, true)
		// Both sides of the session are closed: neither waits for its deadline.
		if _, err := io.ReadAll(dev); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the device's connection is still open after Shutdown: %v", err)
		}
		if _, err := io.ReadAll(up); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the broker's connection is still open after Shutdown: %v", err)
		}
		p.log.waitAudit(t, auditLine{
			Outcome:           proxy.OutcomeForwarded,
			Identity:          deviceCN,
			MQTTLevel:         4,
			ClientID:          deviceCN,
			ClientIDForwarded: deviceCN,
			BytesIn:           int64(len(connect)),
			BytesOut:          int64(len(connackAccepted)),
			EndedBy:           "shutdown",
		})
	})

	t.Run("session ends while draining", func(t *testing.T) {
		b := startBroker(t, "tcp", "", nil)
		p := startProxy(t, b.upstream(), policy.Config{}, nil)
		dev := dialDevice(t, p.addr, deviceConfig())
		up := openSession(t, dev, b, connectPacket(4, deviceCN), nil)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- p.Shutdown(ctx) }()
		// Serve returns once Shutdown has closed the listener: draining has begun.
		if err := p.waitServe(); !errors.Is(err, proxy.ErrServerClosed) {
			t.Fatalf("Serve returned %v, want ErrServerClosed", err)
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v with a session open", err)
		default:
		}
		dev.Close()
		readEOF(t, up)
		up.Close()
		select {
		case err := <-shut:
			if err != nil {
				t.Errorf("Shutdown: %v, want nil once the last session ended", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("Shutdown did not return after the last session ended")
		}
		if got := p.log.waitAudits(t, 1)[0]; got.EndedBy != "device" {
			t.Errorf("ended_by %q, want device", got.EndedBy)
		}
	})

	t.Run("device before its first packet", func(t *testing.T) {
		b := startBroker(t, "tcp", "", nil)
		p := startProxy(t, b.upstream(), policy.Config{}, nil)
		dev := dialDevice(t, p.addr, deviceConfig())
		// Part of a CONNECT: the server is waiting, under the 10 s connect timeout, for the rest.
		mustWrite(t, dev, connectPacket(4, deviceCN)[:4])
		shutdownWithin(t, p, 200*time.Millisecond, true)
		if _, err := io.ReadAll(dev); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the device's connection is still open after Shutdown: %v", err)
		}
		if got := p.log.waitAudits(t, 1)[0]; got.Outcome != proxy.OutcomeBadFirstPacket {
			t.Errorf("outcome %q, want %q", got.Outcome, proxy.OutcomeBadFirstPacket)
		}
		b.checkNoConns(t)
	})
}

// TestConcurrentSessions runs several forwarded sessions at once through one server, each
// with its own traffic, so that the race detector sees the server's shared state in use.
func TestConcurrentSessions(t *testing.T) {
	checkGoroutines(t)
	const sessions = 8
	b := startBroker(t, "tcp", "", ackThenEcho)
	p := startProxy(t, b.upstream(), policy.Config{ClientID: policy.ClientIDPrefix}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		dev := dialDevice(t, p.addr, deviceConfig())
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- echoSession(dev, fmt.Sprintf("%s/%d", deviceCN, i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	audits := p.log.waitAudits(t, sessions)
	for _, a := range audits {
		if a.Outcome != proxy.OutcomeForwarded || a.EndedBy != "device" {
			t.Errorf("audit line %+v, want a forwarded session ended by the device", a)
		}
	}
}

// echoSession connects with clientID through an echoing broker, checks a few round trips,
// and hangs up.
func echoSession(dev io.ReadWriteCloser, clientID string) error {
	defer dev.Close()
	if _, err := dev.Write(connectPacket(4, clientID)); err != nil {
		return err
	}
	if ack, err := readPacket(dev); err != nil || string(ack) != string(connackAccepted) {
		return fmt.Errorf("%s: CONNACK % x, %v", clientID, ack, err)
	}
	for i := range 20 {
		msg := publishPacket("t/"+clientID, []byte(fmt.Sprint(i)))
		if _, err := dev.Write(msg); err != nil {
			return err
		}
		got, err := readPacket(dev)
		if err != nil || string(got) != string(msg) {
			return fmt.Errorf("%s: echo % x, %v; want % x", clientID, got, err, msg)
		}
	}
	return nil
}
