package main

// End-to-end: the command line itself — refused flag combinations, environment variables,
// and draining on shutdown.

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// TestBadFlags: a flag combination that cannot work is refused before serving, with a
// message naming the flag(s) (or the file) to fix.
func TestBadFlags(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	missing := filepath.Join(p.dir, "missing.crt")
	garbage, err := handshaketest.WriteFile(p.dir, "garbage.crt", []byte("not a certificate\n"))
	if err != nil {
		t.Fatal(err)
	}
	cert, key := p.serverCertFile, p.serverKey
	// Each case gets its own slice: the subtests run in parallel.
	tls := func(extra ...string) []string { return append([]string{"--cert", cert, "--key", key}, extra...) }
	mutual := func(extra ...string) []string { return tls(append([]string{"--client-ca", p.caFile}, extra...)...) }

	for _, tc := range []struct {
		name string
		args []string
		want []string // each must appear in the error
	}{
		{"--client-id enforce without --client-ca", tls("--client-id", "enforce"), []string{"--client-id", "--client-ca"}},
		{"--client-id rewrite without --client-ca", tls("--client-id", "rewrite"), []string{"--client-id", "--client-ca"}},
		{"--username identity without --client-ca", tls("--username", "identity"), []string{"--username", "--client-ca"}},
		{"--client-auth require without --client-ca", tls("--client-auth", "require"), []string{"--client-auth", "--client-ca"}},
		{"--cert without --key", []string{"--cert", cert}, []string{"--key"}},
		{"--key without --cert", []string{"--key", key}, []string{"--cert"}},
		{"no certificate at all", nil, []string{"--cert"}},
		{"unreadable certificate file", []string{"--cert", missing, "--key", key}, []string{missing}},
		{"certificate file that is not PEM", []string{"--cert", garbage, "--key", key}, []string{garbage}},
		{"unreadable client CA file", tls("--client-ca", missing), []string{missing}},
		{"unreadable CRL file", mutual("--crl", missing), []string{missing}},
		{"unknown --client-id mode", mutual("--client-id", "sometimes"), []string{"--client-id"}},
		{"unknown --client-auth mode", mutual("--client-auth", "maybe"), []string{"--client-auth"}},
		{"unsupported --min-tls", tls("--min-tls", "1.1"), []string{"--min-tls"}},
		{"unknown field in --identity", mutual("--identity", "{nope}"), []string{"--identity"}},
		{"bad --allow expression", mutual("--allow", "("), []string{"--allow"}},
		{"bad --upstream", tls("--upstream", "nowhere"), []string{"--upstream"}},
		{"negative --memory-release-after", tls("--memory-release-after", "-1s"), []string{"--memory-release-after", "negative"}},
		{"--busy-poll too long", tls("--busy-poll", "1s"), []string{"--busy-poll 1s", "want 0 (off) to 100ms"}},
		{"negative --busy-poll", tls("--busy-poll", "-1ms"), []string{"--busy-poll -1ms", "want 0 (off) to 100ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			argv := []string{"mqtls", "serve", "--listen", "127.0.0.1:0"}
			if !hasFlag(tc.args, "--upstream") {
				argv = append(argv, "--upstream", "127.0.0.1:1")
			}
			argv = append(argv, tc.args...)
			stdout, stderr := newLineLog(), newLineLog()
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			start := time.Now()
			err := newApp(stdout, stderr).RunContext(ctx, argv)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("RunContext took %v to refuse the flags", elapsed)
			}
			if err == nil {
				t.Fatalf("mqtls %s: RunContext returned nil, want an error naming %q", strings.Join(argv[1:], " "), tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if stdout.count(func(l string) bool { return strings.Contains(l, `"listening"`) }) > 0 {
				t.Errorf("mqtls started listening before refusing the flags:\n%s", stdout)
			}
		})
	}
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

// TestDrain: when its context is cancelled (what SIGTERM does), mqtls stops accepting,
// gives live sessions --drain-timeout to finish, then closes them and returns nil.
func TestDrain(t *testing.T) {
	checkGoroutines(t)
	const drain = 300 * time.Millisecond
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, true), "--drain-timeout", drain.String())...)
	dev := p.device(t, "sensor-1")

	conn := dev.mustDialTLS(t, s.addr)
	if rc := rawConnect(t, conn, 4, "drain-1"); rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	if _, err := conn.Write([]byte{0xc0, 0x00}); err != nil { // PINGREQ: the session is live
		t.Fatal(err)
	}
	if typ, _, err := readPacket(conn); err != nil || typ != 0xd0 {
		t.Fatalf("PINGREQ got %#x, %v; want PINGRESP", typ, err)
	}

	start := time.Now()
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(drain + 5*time.Second):
		t.Fatalf("RunContext did not return within %v of cancellation (--drain-timeout %v)", drain+5*time.Second, drain)
	}
	if elapsed := time.Since(start); elapsed > drain+2*time.Second {
		t.Errorf("RunContext returned %v after cancellation, want about --drain-timeout %v", elapsed, drain)
	}
	if s.err != nil {
		t.Errorf("RunContext returned %v, want nil", s.err)
	}
	wantClosed(t, conn, 2*time.Second)
	if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
		c.Close()
		t.Errorf("mqtls still accepts connections after it returned")
	}
	e := s.auditFrom(t, conn.LocalAddr().String())
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "client_id": "drain-1"})
}

// TestEnvironment: MQTLS_<FLAG> sets a flag; MQTLS_CLIENT_ID=rewrite works like
// --client-id rewrite.
func TestEnvironment(t *testing.T) {
	checkGoroutines(t)
	t.Setenv("MQTLS_CLIENT_ID", "rewrite")
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	s := startServer(t, p.serverArgs(b.addr, true)...)
	dev := p.device(t, "sensor-1")

	conn := dev.mustDialTLS(t, s.addr)
	if rc := rawConnect(t, conn, 4, "spoof"); rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	b.waitLog(t, " as sensor-1 (p2,")
	if _, err := conn.Write([]byte{0xe0, 0x00}); err != nil { // DISCONNECT
		t.Fatal(err)
	}
	wantClosed(t, conn, waitTimeout)
	e := s.auditFrom(t, conn.LocalAddr().String())
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "client_id": "spoof", "client_id_forwarded": "sensor-1"})
}
