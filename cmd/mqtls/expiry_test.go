package main

import (
	"strings"
	"testing"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// TestExpiryWarning: at start, every certificate, CA and CRL expiring within
// --expiry-warning gets a warning line naming its file and role; nothing does when the
// window ends before they expire.
func TestExpiryWarning(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	crl, err := p.ca.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crlFile, err := handshaketest.WriteFile(p.dir, "ca.crl", crl)
	if err != nil {
		t.Fatal(err)
	}

	// A ten-year window covers the test PKI's certificates and the CRL's next update.
	s := startServer(t, append(p.serverArgs(b.addr, true), "--crl", crlFile, "--expiry-warning", "87600h")...)
	roles := map[string]string{}
	for _, want := range []struct{ role, msg string }{
		{"server", "certificate expires soon"},
		{"client_ca", "certificate expires soon"},
		{"crl", "CRL next update due soon: publish a new CRL"},
	} {
		line, ok := s.logs.wait(waitTimeout, nil, func(l string) bool {
			e, ok := parseEntry(l)
			return ok && e.str("role") == want.role && e.str("message") == want.msg
		})
		if !ok {
			t.Fatalf("no %q warning for the %s file", want.msg, want.role)
		}
		e, _ := parseEntry(line)
		if e.str("level") != "warn" || e.str("file") == "" || e.str("not_after") == "" {
			t.Errorf("warning line lacks level warn, file or not_after: %s", line)
		}
		roles[want.role] = e.str("file")
	}
	if roles["server"] != p.serverCertFile || roles["client_ca"] != p.caFile || roles["crl"] != crlFile {
		t.Errorf("warnings name files %v, want the server cert, CA and CRL given", roles)
	}

	// The test PKI is valid for a day: a one-hour window raises nothing.
	s2 := startServer(t, append(p.serverArgs(b.addr, true), "--expiry-warning", "1h")...)
	s2.stop(t)
	if n := s2.logs.count(func(l string) bool { return strings.Contains(l, "expires soon") || strings.Contains(l, "due soon") }); n != 0 {
		t.Errorf("%d expiry warnings with a one-hour window for certificates valid for a day:\n%s", n, s2.logs)
	}
}
