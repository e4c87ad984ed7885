package main

import (
	"testing"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// TestPrefixTakeover: with --client-id prefix a device's suffix may not hold the
// separator, so device a cannot claim a/b/x, a session of device a/b (an identity with a
// slash exists only with --allow-slash); without --allow-slash, identity a/b is refused
// (identity_unsafe), since behind devices/%c/# it would write into a's tree.
func TestPrefixTakeover(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, aclClientID)
	a := p.device(t, "a")
	c, err := p.ca.Issue(handshaketest.Template{CommonName: "a/b"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := c.Files(p.dir, "device-a-slash-b") // deviceFrom names files by CN
	if err != nil {
		t.Fatal(err)
	}
	ab := device{cert: c, certFile: certFile, keyFile: keyFile, caFile: p.caFile, p: p}
	connect := func(t *testing.T, s *server, d device, id string) (byte, logEntry) {
		t.Helper()
		conn := d.mustDialTLS(t, s.addr)
		rc := rawConnect(t, conn, 4, id)
		if rc == 0 { // the audit line comes at the end of the session
			conn.Write([]byte{0xe0, 0x00}) // DISCONNECT
		}
		wantClosed(t, conn, waitTimeout)
		conn.Close()
		return rc, s.auditFrom(t, conn.LocalAddr().String())
	}

	t.Run("--allow-slash", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "prefix", "--allow-slash")...)
		if rc, e := connect(t, s, a, "a/b/x"); rc != rcIdentifierRejected {
			t.Errorf("a as a/b/x: CONNACK %#x, want %#x (identifier rejected)", rc, rcIdentifierRejected)
		} else {
			wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "client_id_mismatch", "identity": "a"})
		}
		for _, tc := range []struct {
			d        device
			identity string
		}{{ab, "a/b"}, {a, "a"}} {
			id := tc.identity + "/x"
			if rc, e := connect(t, s, tc.d, id); rc != 0 {
				t.Errorf("%s as %s: CONNACK %#x, want 0", tc.identity, id, rc)
			} else {
				wantAudit(t, e, map[string]string{"outcome": "forwarded", "identity": tc.identity})
			}
		}
	})
	t.Run("default", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, append(p.serverArgs(b.addr, true), "--client-id", "prefix")...)
		if rc, e := connect(t, s, ab, "a/b/x"); rc != rcNotAuthorized {
			t.Errorf("a/b as a/b/x: CONNACK %#x, want %#x (not authorized)", rc, rcNotAuthorized)
		} else {
			wantAudit(t, e, map[string]string{"outcome": "rejected", "reason": "identity_unsafe"})
		}
	})
}

// TestProxyHeaderMissing: a connection from a source trusted to send a PROXY header that
// sends none is refused (proxy_header_missing), rather than taken at its own address:
// otherwise any host in the balancer's range would pass its limits and logs as itself.
func TestProxyHeaderMissing(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, false), "--proxy-protocol-from", "127.0.0.1/32")...)
	if conn, local, err := p.anonymous().handshake(s.addr); err == nil {
		conn.Close()
		t.Error("TLS handshake without a PROXY header from a trusted source succeeded")
	} else {
		wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "refused", "reason": "proxy_header_missing"})
	}
	b.wantNoConnections(t)
}
