package main

// End-to-end: DESIGN.md's bad-input table, over every TCP transport a listener serves:
// one-way TLS, mutual TLS, TLS-PSK, and a listener that takes certificates and PSK at once
// (with a session of each kind). Each row is checked three ways: what the peer gets, the
// audit line's reason, and the Prometheus series on the admin listener that counts it.
// (DTLS has its own rows in dtls_e2e_test.go.)

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// badTransport is one way of reaching a listener, and how to open a session over it.
type badTransport struct {
	name string
	args []string // mqtls flags, upstream excluded
	// dial completes the handshake; the conn is closed when t ends.
	dial func(t *testing.T, addr string) net.Conn
	// hello is the first record of a ClientHello this kind of client sends.
	hello func(t *testing.T) []byte
}

// badTransports returns the transports over p's certificates and a PSK file holding psk.
func badTransports(t *testing.T, p *pki, pskFile string, psk pskDevice) []badTransport {
	dev := p.device(t, "sensor-1")
	pskConfig := &tlspsk.ClientConfig{Identity: psk.identity, Key: mustDecodeHex(t, psk.keyHex)}
	tlsDial := func(d device) func(t *testing.T, addr string) net.Conn {
		return func(t *testing.T, addr string) net.Conn { return d.mustDialTLS(t, addr) }
	}
	pskDial := func(t *testing.T, addr string) net.Conn {
		conn, _, err := dialPSK(t, addr, pskConfig)
		if err != nil {
			t.Fatalf("TLS-PSK handshake: %v", err)
		}
		return conn
	}
	tlsHello := func(t *testing.T) []byte {
		return firstRecordOf(t, func(c net.Conn) error {
			return tls.Client(c, &tls.Config{ServerName: "localhost"}).Handshake()
		})
	}
	pskHello := func(t *testing.T) []byte {
		return firstRecordOf(t, func(c net.Conn) error { return tlspsk.Client(c, pskConfig).Handshake() })
	}
	mixed := append(p.serverArgs("", true), "--psk-file", pskFile)
	return []badTransport{
		{"one-way TLS", p.serverArgs("", false), tlsDial(p.anonymous()), tlsHello},
		{"mutual TLS", p.serverArgs("", true), tlsDial(dev), tlsHello},
		{"TLS-PSK", []string{"--psk-file", pskFile}, pskDial, pskHello},
		{"mixed listener, PSK session", mixed, pskDial, pskHello},
		{"mixed listener, certificate session", mixed, tlsDial(dev), tlsHello},
	}
}

// withUpstream returns args with --upstream set to upstream (replacing an empty one).
func withUpstream(args []string, upstream string) []string {
	out := slices.Clone(args)
	if i := slices.Index(out, "--upstream"); i >= 0 {
		out[i+1] = upstream
		return out
	}
	return append(out, "--upstream", upstream)
}

// firstRecordOf runs a client handshake over a pipe and returns the first TLS record it
// writes: its ClientHello.
func firstRecordOf(t *testing.T, handshake func(net.Conn) error) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = handshake(client)
	}()
	defer func() {
		client.Close()
		server.Close()
		<-done
	}()
	if err := server.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 5) // type, version, length
	if _, err := io.ReadFull(server, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(server, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// metricSeries is a scrape of /metrics: each sample's value by its series as the
// exposition writes it, `name{label="value",...}` with the labels sorted by name.
type metricSeries map[string]float64

// scrapeMetrics GETs http://admin/metrics and keys each sample by its series.
func scrapeMetrics(t *testing.T, admin string) metricSeries {
	t.Helper()
	a := &adminClient{base: "http://" + admin, http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitTimeout}}
	m := metricSeries{}
	for _, s := range a.metrics(t) {
		var labels []string
		for k, v := range s.labels {
			labels = append(labels, k, v)
		}
		m[series(s.name, labels...)] += s.value
	}
	return m
}

// series names one series: the metric and its label pairs, in any order.
func series(name string, labels ...string) string {
	type pair struct{ k, v string }
	var ps []pair
	for i := 0; i+1 < len(labels); i += 2 {
		ps = append(ps, pair{labels[i], labels[i+1]})
	}
	slices.SortFunc(ps, func(a, b pair) int { return strings.Compare(a.k, b.k) })
	var b strings.Builder
	b.WriteString(name)
	for i, p := range ps {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(p.k + `="` + p.v + `"`)
	}
	if len(ps) > 0 {
		b.WriteByte('}')
	}
	return b.String()
}

// sum adds up every series of metric name.
func (m metricSeries) sum(name string) float64 {
	total := 0.0
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// wantMoved fails unless each series went up by exactly one from before to after, and the
// sum of every other series of the same metric did not move.
func wantMoved(t *testing.T, before, after metricSeries, want ...string) {
	t.Helper()
	moved := map[string]bool{}
	for _, s := range want {
		name, _, _ := strings.Cut(s, "{")
		moved[name] = true
		if d := after[s] - before[s]; d != 1 {
			t.Errorf("%s moved by %v, want 1", s, d)
		}
	}
	for _, name := range []string{"mqtls_handshake_failures_total", "mqtls_connections_total", "mqtls_connect_decisions_total", "mqtls_upstream_dial_failures_total"} {
		if d := after.sum(name) - before.sum(name); !moved[name] && d != 0 {
			t.Errorf("%s moved by %v in all, want no change", name, d)
		}
	}
}

// badCase is one row of the bad-input table.
type badCase struct {
	name string
	// secured: the handshake completes first and send goes over the secure session;
	// otherwise send goes as raw TCP bytes.
	secured bool
	send    func(t *testing.T, tr badTransport) []byte
	hangUp  bool // close the sending side after send
	outcome string
	reason  string
	connack int // the CONNACK return code the device gets, -1 for none
}

func rawBytes(b []byte) func(*testing.T, badTransport) []byte {
	return func(*testing.T, badTransport) []byte { return b }
}

// TestBadInput runs the bad-input table over each transport.
func TestBadInput(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	psk := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	pskFile := writePSKFile(t, p.dir, "psk.txt", psk.identity+":"+psk.keyHex)
	const timeout = 500 * time.Millisecond
	limits := []string{"--handshake-timeout", timeout.String(), "--connect-timeout", timeout.String(),
		"--max-connect-size", "256", "--admin-listen", "127.0.0.1:0"}

	// The first bytes of a ClientHello that announces 256 bytes, then nothing.
	halfHello := append([]byte{
		0x16, 0x03, 0x01, 0x01, 0x04, // record: handshake, TLS 1.0, length 260
		0x01, 0x00, 0x01, 0x00, // handshake: ClientHello, length 256
		0x03, 0x03, // client_version: TLS 1.2
	}, bytes.Repeat([]byte{0x42}, 32)...) // random
	unsupportedLevel := appendPacket(nil, 0x10, append(appendString(nil, "MQTT"), 6, 0x02, 0x00, 0x3c, 0x00, 0x01, 'x'))

	cases := []badCase{
		{name: "HTTP request", send: rawBytes([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")), outcome: "handshake_failed", reason: "not_tls"},
		{name: "plain MQTT CONNECT", send: rawBytes(connectPacket(4, "sensor-1")), outcome: "handshake_failed", reason: "not_tls"},
		{name: "SSLv2-format ClientHello", send: rawBytes(sslv2Hello()), outcome: "handshake_failed", reason: "not_tls"},
		{name: "nothing within --handshake-timeout", send: rawBytes(nil), outcome: "handshake_failed", reason: "handshake_timeout"},
		{name: "half a ClientHello", send: rawBytes(halfHello), outcome: "handshake_failed", reason: "handshake_timeout"},
		{
			name: "ClientHello, then silence", outcome: "handshake_failed", reason: "handshake_timeout",
			send: func(t *testing.T, tr badTransport) []byte { return tr.hello(t) },
		},
		{name: "half a ClientHello, then FIN", send: rawBytes(halfHello), hangUp: true, outcome: "handshake_failed", reason: "client_closed"},
		{name: "PINGREQ instead of CONNECT", secured: true, send: rawBytes([]byte{0xc0, 0x00}), outcome: "bad_first_packet", reason: "not_connect"},
		{
			name: "remaining length of five bytes", secured: true, outcome: "bad_first_packet", reason: "malformed_packet",
			send: rawBytes(append([]byte{0x10}, append(bytes.Repeat([]byte{0x80}, 5), 0x01)...)),
		},
		{name: "NUL in the client ID", secured: true, send: rawBytes(connectPacket(4, "sensor-1\x00")), outcome: "bad_first_packet", reason: "malformed_packet"},
		{name: "CONNECT header claiming 1 MiB", secured: true, send: rawBytes([]byte{0x10, 0x80, 0x80, 0x40}), outcome: "bad_first_packet", reason: "packet_too_large"},
		{name: "CONNECT over --max-connect-size", secured: true, send: rawBytes(connectPacket(4, strings.Repeat("x", 300))), outcome: "bad_first_packet", reason: "packet_too_large"},
		{name: "nothing within --connect-timeout", secured: true, send: rawBytes(nil), outcome: "bad_first_packet", reason: "first_packet_timeout"},
		{name: "close before CONNECT", secured: true, send: rawBytes(nil), hangUp: true, outcome: "bad_first_packet", reason: "client_closed"},
		{name: "unsupported protocol level 6", secured: true, send: rawBytes(unsupportedLevel), outcome: "rejected", reason: "unsupported_protocol_version", connack: 0x01},
	}
	for i := range cases {
		if cases[i].connack == 0 {
			cases[i].connack = -1
		}
	}

	for _, tr := range badTransports(t, p, pskFile, psk) {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, append(withUpstream(tr.args, b.addr), limits...)...)
			admin := s.adminAddr(t)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := scrapeMetrics(t, admin)
					var conn net.Conn
					if tc.secured {
						conn = tr.dial(t, s.addr)
					} else {
						conn = dialRawTCP(t, s.addr)
					}
					if data := tc.send(t, tr); len(data) > 0 {
						sendRaw(conn, data)
					}
					if tc.hangUp {
						if cw, ok := conn.(interface{ CloseWrite() error }); ok {
							_ = cw.CloseWrite()
						}
					}
					got := readUntilClosed(t, conn, waitTimeout)
					switch {
					case tc.connack >= 0:
						if len(got) < 4 || got[0] != 0x20 || int(got[3]) != tc.connack {
							t.Errorf("received % x, want CONNACK %#02x", got, tc.connack)
						}
					case tc.secured && len(got) > 0:
						t.Errorf("received % x, want nothing (no CONNACK)", got)
					}
					conn.Close()
					e := s.auditFrom(t, conn.LocalAddr().String())
					wantAudit(t, e, map[string]string{"outcome": tc.outcome, "reason": tc.reason})
					after := scrapeMetrics(t, admin)
					total := series("mqtls_connections_total", "listener", "tcp", "mode", "server", "outcome", tc.outcome)
					switch tc.outcome {
					case "handshake_failed":
						wantMoved(t, before, after, total, series("mqtls_handshake_failures_total", "listener", "tcp", "reason", tc.reason))
					case "rejected":
						wantMoved(t, before, after, total, series("mqtls_connect_decisions_total", "listener", "tcp", "outcome", "rejected", "reason", tc.reason))
					default:
						wantMoved(t, before, after, total)
					}
				})
			}
		})
	}

	// The broker is down: "server unavailable" in the device's version, counted as a
	// failed dial.
	t.Run("broker unreachable", func(t *testing.T) {
		down := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		for _, tr := range badTransports(t, p, pskFile, psk) {
			t.Run(tr.name, func(t *testing.T) {
				t.Parallel()
				s := startServer(t, append(withUpstream(tr.args, down), "--admin-listen", "127.0.0.1:0", "--dial-timeout", "2s")...)
				admin := s.adminAddr(t)
				for _, v := range []struct {
					level byte
					code  byte
				}{{4, rcServerUnavailable}, {5, rc5ServerUnavailable}, {3, rcServerUnavailable}} {
					before := scrapeMetrics(t, admin)
					conn := tr.dial(t, s.addr)
					// Every transport's identity is a valid 3.1 client ID.
					if rc := sendConnect(t, conn, connectPacket(v.level, "sensor-1")); rc != v.code {
						t.Errorf("MQTT level %d: CONNACK %#x, want %#x (server unavailable)", v.level, rc, v.code)
					}
					hangUpAfterClose(t, conn)
					e := s.auditFrom(t, conn.LocalAddr().String())
					wantAudit(t, e, map[string]string{"outcome": "upstream_unavailable", "reason": "upstream_unavailable"})
					wantMoved(t, before, scrapeMetrics(t, admin),
						series("mqtls_connections_total", "listener", "tcp", "mode", "server", "outcome", "upstream_unavailable"),
						series("mqtls_upstream_dial_failures_total", "listener", "tcp"))
				}
			})
		}
	})
	// With --admin-listen, mqtls dials the broker now and then for /readyz, so the broker
	// does see connections; none of them may carry a CONNECT.
	t.Cleanup(func() {
		if b.hasLog("New client connected") || b.hasLog("disconnected due to") || b.hasLog("Sending CONNACK") {
			t.Errorf("a CONNECT reached the broker:\n%s", b.log)
		}
	})
}

// dialRawTCP opens a plain TCP connection, closed when t ends.
func dialRawTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
