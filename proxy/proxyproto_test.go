package proxy_test

import (
	"bytes"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// PROXY protocol v2 headers (proxy-protocol.txt §2.2): the 12-byte signature, version and
// command, family and transport, then the address block's length and the addresses.
var (
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
	// LOCAL: the balancer's own connection, a health check; no address block.
	proxyV2Local = cat(proxyV2Sig, []byte{0x20, 0x00, 0x00, 0x00})
	// PROXY over UNSPEC: a client was forwarded but the header does not say who.
	proxyV2Unspec = cat(proxyV2Sig, []byte{0x21, 0x00, 0x00, 0x00})
	// PROXY over TCP/IPv4 from 192.0.2.7:40000 to 127.0.0.1:8883.
	proxyV2TCP4 = cat(proxyV2Sig, []byte{0x21, 0x11, 0x00, 0x0c,
		192, 0, 2, 7, 127, 0, 0, 1, 0x9c, 0x40, 0x22, 0xb3})
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// dialThroughBalancer connects to addr as a load balancer would, writes header (nothing
// when nil), then runs the device's TLS handshake and sends a CONNECT. It returns the
// device's conn, or the handshake error.
func dialThroughBalancer(tb testing.TB, addr string, header []byte) (*tls.Conn, error) {
	tb.Helper()
	raw, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(waitTimeout))
	if header != nil {
		mustWrite(tb, raw, header)
	}
	dev := tls.Client(raw, deviceConfig())
	if err := dev.Handshake(); err != nil {
		return nil, err
	}
	if _, err := dev.Write(connectPacket(policy.Level311, deviceCN)); err != nil {
		return nil, err
	}
	return dev, nil
}

func TestProxyHeaderFromTrustedSource(t *testing.T) {
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tests := []struct {
		name    string
		header  []byte
		outcome string
		reason  string
		remote  string // the audit line's remote address, when forwarded
	}{
		// A client at a trusted address that sends no header would pass for the balancer:
		// it is not rate limited per address, and logs name the balancer.
		{"no header", nil, proxy.OutcomeRefused, proxy.ReasonProxyHeaderMissing, ""},
		{"PROXY over UNSPEC names no client", proxyV2Unspec, proxy.OutcomeHandshakeFailed, proxy.ReasonProxyHeader, ""},
		{"v2 LOCAL health check", proxyV2Local, proxy.OutcomeForwarded, "", "127.0.0.1:"},
		{"v1 UNKNOWN health check", []byte("PROXY UNKNOWN\r\n"), proxy.OutcomeForwarded, "", "127.0.0.1:"},
		{"v2 TCP4 client", proxyV2TCP4, proxy.OutcomeForwarded, "", "192.0.2.7:40000"},
		{"v1 TCP4 client", []byte("PROXY TCP4 192.0.2.8 127.0.0.1 40001 8883\r\n"), proxy.OutcomeForwarded, "", "192.0.2.8:40001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer checkGoroutines(t)
			handle := ackThenEcho
			if tt.outcome != proxy.OutcomeForwarded {
				handle = nil // the broker's connections are checked instead: there must be none
			}
			b := startBroker(t, "tcp", "", handle)
			p := startProxy(t, b.upstream(), policy.Config{ClientID: policy.ClientIDEnforce}, func(c *proxy.Config) {
				c.TrustProxyFrom = loopback
			})
			dev, err := dialThroughBalancer(t, p.addr, tt.header)
			if tt.outcome == proxy.OutcomeForwarded {
				if err != nil {
					t.Fatalf("%v; log:\n%s", err, p.log)
				}
				if got := mustReadPacket(t, dev); !bytes.Equal(got, connackAccepted) {
					t.Fatalf("device got % x, want the broker's CONNACK", got)
				}
				dev.Close()
			} else {
				if err == nil {
					if pkt, rerr := readPacket(dev); rerr == nil {
						t.Errorf("device got % x; want the connection closed", pkt)
					}
				}
				b.checkNoConns(t)
			}
			a := p.log.waitAudits(t, 1)[0]
			if a.Outcome != tt.outcome || a.Reason != tt.reason {
				t.Errorf("audit outcome %q reason %q, want %q %q; log:\n%s", a.Outcome, a.Reason, tt.outcome, tt.reason, p.log)
			}
			if tt.remote != "" && !strings.Contains(p.log.String(), `"remote":"`+tt.remote) {
				t.Errorf("audit line does not name remote %s; log:\n%s", tt.remote, p.log)
			}
		})
	}
}

// The per-address rate applies to the client a trusted balancer names, and a client at the
// balancer's address cannot dodge it by sending no header.
func TestProxyHeaderPerIPRate(t *testing.T) {
	defer checkGoroutines(t)
	b := startBroker(t, "tcp", "", ackThenEcho)
	p := startProxy(t, b.upstream(), policy.Config{}, func(c *proxy.Config) {
		c.TrustProxyFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.PerIPRate, c.PerIPBurst = 1e-6, 1 // one connection per address for the test's life
	})
	for i, want := range []string{proxy.OutcomeForwarded, proxy.OutcomeRefused, proxy.OutcomeRefused, proxy.OutcomeRefused} {
		header := proxyV2TCP4
		if i >= 2 {
			header = nil
		}
		dev, err := dialThroughBalancer(t, p.addr, header)
		if want == proxy.OutcomeForwarded {
			if err != nil {
				t.Fatal(err)
			}
			mustReadPacket(t, dev)
			dev.Close()
		} else if err == nil {
			if pkt, rerr := readPacket(dev); rerr == nil {
				t.Errorf("connection %d: device got % x; want it refused", i, pkt)
			}
		}
		if got := p.log.waitAudits(t, i+1)[i]; got.Outcome != want {
			t.Errorf("connection %d: outcome %q (%s), want %q", i, got.Outcome, got.Reason, want)
		}
	}
}
