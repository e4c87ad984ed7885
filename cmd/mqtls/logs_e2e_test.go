package main

// Logs an operator can read: the audit line whatever --log-level is, conn_id unique in
// the process, durations that say their unit.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// refuseNotTLS sends plain MQTT to a TLS port and returns the local address it used.
func refuseNotTLS(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(connectPacket(4, "plain")); err != nil {
		t.Fatal(err)
	}
	readUntilClosed(t, c, waitTimeout)
	return c.LocalAddr().String()
}

func TestAuditLineWhateverLogLevel(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	t.Run("--log-level warn keeps refusals", func(t *testing.T) {
		t.Parallel()
		s := startQuietServer(t, append(p.serverArgs(b.addr, true), "--log-level", "warn")...)
		e := s.auditFrom(t, refuseNotTLS(t, s.addr))
		wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "level": "info"})
		if _, ok := e.num("duration_ms"); !ok {
			t.Errorf("audit line lacks a numeric duration_ms: %v", map[string]any(e))
		}
		if n := s.logs.count(func(l string) bool { return strings.Contains(l, `"level":"debug"`) }); n != 0 {
			t.Errorf("--log-level warn wrote %d debug lines", n)
		}
	})
	t.Run("--audit-log=false turns it off", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, append(p.serverArgs(b.addr, true), "--audit-log=false")...)
		refuseNotTLS(t, s.addr)
		s.stop(t) // every connection is over once serve returns
		if n := s.logs.count(func(l string) bool { return strings.Contains(l, `"message":"connection"`) }); n != 0 {
			t.Errorf("--audit-log=false wrote %d audit lines:\n%s", n, s.logs)
		}
	})
}

// TestConnIDUniqueInProcess: two listeners never give two connections one conn_id.
func TestConnIDUniqueInProcess(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	s1 := startServer(t, p.serverArgs(b.addr, false)...)
	s2 := startServer(t, p.serverArgs(b.addr, false)...)
	e1 := s1.auditFrom(t, refuseNotTLS(t, s1.addr))
	e2 := s2.auditFrom(t, refuseNotTLS(t, s2.addr))
	if e1.str("conn_id") == e2.str("conn_id") {
		t.Errorf("two listeners' first connections share conn_id %s", e1.str("conn_id"))
	}
}

// startQuietServer is startServer for a log level that hides the "listening" line: it
// listens on a free port and waits until that port accepts.
func startQuietServer(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{logs: newLineLog(), stderr: newLineLog(), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	argv := append([]string{"mqtls", "serve", "--listen", s.addr}, args...)
	go func() {
		defer close(s.done)
		s.err = newApp(s.logs, s.stderr).RunContext(ctx, argv)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mqtls %s\nstdout:\n%s\nstderr:\n%s", strings.Join(argv[1:], " "), s.logs, s.stderr)
		}
	})
	t.Cleanup(func() { s.stop(t) })
	deadline := time.Now().Add(waitTimeout)
	for backoff := 5 * time.Millisecond; ; backoff *= 2 {
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("mqtls serve returned %v", s.err)
		case <-time.After(backoff):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mqtls serve does not accept on %s: %v", s.addr, err)
		}
	}
}

// TestReloadFailureNamesFileAndListener: a reload that fails names the file at fault with
// its flag, even when another file changed, and the listener it concerns.
func TestReloadFailureNamesFileAndListener(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	copyFile(t, p.serverCertFile, certFile)
	copyFile(t, p.serverKey, keyFile)
	hup := make(chan struct{}, 1)
	s := startServerWith(t, signals{hup: hup}, "--upstream", b.addr, "--cert", certFile, "--key", keyFile, "--reload-interval", "0")
	// A new certificate arrives without its key: the old key does not match it.
	other, err := p.ca.Issue(handshaketest.Template{CommonName: "localhost", DNSNames: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- struct{}{}
	e := s.waitLine(t, "reload failed: keeping the previous certificates and keys", nil)
	if msg := e.str("error"); !strings.Contains(msg, "--key: "+keyFile+" does not match the certificate in "+certFile) {
		t.Errorf("reload error %q does not name --key %s", msg, keyFile)
	}
	if got := fmt.Sprint(e["listeners"]); got != "[tcp]" {
		t.Errorf("reload line names listeners %s, want [tcp]", got)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
