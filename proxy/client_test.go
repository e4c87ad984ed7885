package proxy_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// startClientMode serves a client-mode listener toward remote (a TLS listener of the test
// CA), presenting the device certificate of the test PKI.
func startClientMode(tb testing.TB, remote string, tweak func(*proxy.Config)) *proxyServer {
	tb.Helper()
	dir := tb.TempDir()
	certFile, keyFile, err := deviceFiles(dir)
	if err != nil {
		tb.Fatal(err)
	}
	cl, err := handshake.NewClient(handshake.ClientConfig{CAFile: pki.cas, CertFile: certFile, KeyFile: keyFile, ServerName: "localhost"})
	if err != nil {
		tb.Fatal(err)
	}
	return startProxy(tb, remote, policy.Config{}, func(c *proxy.Config) {
		c.Handshaker, c.Uplink = proxy.Plain{}, cl
		if tweak != nil {
			tweak(c)
		}
	})
}

// deviceFiles writes a fresh device certificate of the test CA (CN gw-1) and its key.
func deviceFiles(dir string) (string, string, error) {
	c, err := pki.ca.Issue(handshaketest.Template{CommonName: "gw-1"})
	if err != nil {
		return "", "", err
	}
	return c.Files(dir, "gateway")
}

// TestClientModeRefusals: a local client hears CONNACK "server unavailable" in its own
// version when the remote cannot be reached or refuses the handshake, and the audit line
// says why.
func TestClientModeRefusals(t *testing.T) {
	checkGoroutines(t)
	plain := startBroker(t, "tcp", "", ackThenEcho) // not TLS: the handshake fails
	for _, tc := range []struct {
		name, remote, reason string
		level                byte
		code                 byte
	}{
		{"unreachable, 3.1.1", "127.0.0.1:1", proxy.ReasonUpstreamUnavailable, 4, 0x03},
		{"unreachable, 5.0", "127.0.0.1:1", proxy.ReasonUpstreamUnavailable, 5, 0x88},
		{"not TLS", plain.upstream(), proxy.ReasonUpstreamClosed, 4, 0x03},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startClientMode(t, tc.remote, nil)
			c, err := net.DialTimeout("tcp", p.addr, waitTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(waitTimeout))
			mustWrite(t, c, connectPacket(tc.level, "dev-1"))
			pkt := mustReadPacket(t, c)
			if code, err := connackCode(pkt); err != nil || code != tc.code {
				t.Errorf("CONNACK % x, want code %#x", pkt, tc.code)
			}
			a := p.log.waitAudits(t, 1)[0]
			if a.Outcome != proxy.OutcomeUpstreamUnavailable || a.Reason != tc.reason {
				t.Errorf("audit outcome %s reason %s, want %s %s", a.Outcome, a.Reason, proxy.OutcomeUpstreamUnavailable, tc.reason)
			}
		})
	}
}

// BenchmarkConnectClientMode measures whole client-mode sessions over loopback, one after
// another: a plain CONNECT in, the TLS 1.3 mutual-TLS handshake toward the remote (here
// mqtls's own server mode in front of a fake broker, so both handshake ends and the remote
// proxy run in this process), the remote's CONNACK back to the local client, and the close.
func BenchmarkConnectClientMode(b *testing.B) {
	br := startBroker(b, "tcp", "", ackThenEcho)
	remote := startProxy(b, br.upstream(), policy.Config{}, quietLog)
	p := startClientMode(b, remote.addr, quietLog)
	connect := connectPacket(4, "sensor-7")
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(connect); err != nil {
			b.Fatal(err)
		}
		got, err := readPacket(c)
		c.Close()
		if err != nil || !bytes.Equal(got, connackAccepted) {
			b.Fatalf("CONNACK % x, %v", got, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
}
