package main

// End-to-end tests of the DTLS listener (--dtls-listen): real DTLS peers (openssl
// s_client, gnutls-cli, pion clients with paho.golang on top) through mqtls to a real
// Mosquitto, certificates and PSKs, a lossy relay, NAT rebinding, spoofed ClientHellos and
// drain.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/pion/dtls/v3"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/proxy/datagram"
)

// dtlsPSK is a PSK file for mqtls holding one device, "dev-1", with a random 32-byte key.
type dtlsPSK struct {
	file   string
	keyHex string
}

func newDTLSPSK(t *testing.T) dtlsPSK {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	k := hex.EncodeToString(key)
	file, err := handshaketest.WriteFile(t.TempDir(), "psk.txt", []byte("dev-1:"+k+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return dtlsPSK{file: file, keyHex: k}
}

func (p dtlsPSK) key() []byte {
	b, _ := hex.DecodeString(p.keyHex)
	return b
}

// startDTLSServer runs mqtls with args plus a DTLS listener on a free loopback port and
// returns it with the DTLS listener's address.
func startDTLSServer(t *testing.T, args ...string) (*server, string) {
	t.Helper()
	s := startServer(t, append(args, "--dtls-listen", "127.0.0.1:0")...)
	return s, s.dtlsAddr(t)
}

// dtlsAudit waits for the audit line of the next DTLS connection that match accepts.
func (s *server) dtlsAudit(t *testing.T, match func(logEntry) bool) logEntry {
	t.Helper()
	return s.audit(t, func(e logEntry) bool { return e.str("listener") == "dtls" && match(e) })
}

// watchedBuffer collects a peer's output and lets the test wait for bytes to appear in it.
type watchedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newWatchedBuffer() *watchedBuffer { return &watchedBuffer{changed: make(chan struct{})} }

func (w *watchedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *watchedBuffer) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.b.Bytes())
}

// waitFor waits until the buffer contains want, or exited is closed, or timeout passes.
func (w *watchedBuffer) waitFor(want []byte, exited <-chan struct{}, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		found := bytes.Contains(w.b.Bytes(), want)
		changed := w.changed
		w.mu.Unlock()
		if found {
			return true
		}
		select {
		case <-changed:
		case <-exited:
			return bytes.Contains(w.Bytes(), want)
		case <-timer.C:
			return false
		}
	}
}

// connackAccepted is an MQTT 3.1.1 CONNACK: session present 0, return code 0 accepted
// [MQTT-3.2.2].
var connackAccepted = []byte{0x20, 0x02, 0x00, 0x00}

// peerConnect runs a DTLS command-line client (name with args) that reads its stdin into
// the session and prints what it receives: it writes an MQTT 3.1.1 CONNECT for client ID
// dev-1 on stdin, waits until the CONNACK shows up on stdout, then closes stdin so the
// client ends the session (close_notify) and exits.
func peerConnect(t *testing.T, name string, args ...string) {
	t.Helper()
	bin := peerBin(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := newWatchedBuffer(), newWatchedBuffer()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not exit within 10s of its stdin closing", name)
			cancel()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s %s (exit: %v)\nstdout:\n%q\nstderr:\n%s", name, strings.Join(args, " "), waitErr, stdout.Bytes(), stderr.Bytes())
		}
	}()
	// The CONNECT goes in one write, so the client sends it in one record, one datagram.
	if _, err := stdin.Write(connectPacket(4, "dev-1")); err != nil {
		t.Fatalf("writing CONNECT to %s: %v", name, err)
	}
	if !stdout.waitFor(connackAccepted, exited, waitTimeout) {
		t.Fatalf("%s printed no CONNACK (% x) within %v", name, connackAccepted, waitTimeout)
	}
}

// wantDTLSPSKAudit checks a DTLS-PSK session's audit line.
func wantDTLSPSKAudit(t *testing.T, e logEntry) {
	t.Helper()
	wantAudit(t, e, map[string]string{
		"outcome": "forwarded", "identity_kind": "psk", "psk_identity": "dev-1", "identity": "dev-1",
		"client_id": "dev-1", "tls_version": "DTLS 1.2", "listener": "dtls",
	})
	if s := e.str("cipher_suite"); !strings.HasPrefix(s, "TLS_") || !strings.Contains(s, "_PSK_") {
		t.Errorf("audit cipher_suite %q, want a PSK suite's name", s)
	}
}

// TestDTLSExternalPSKClients: openssl s_client and gnutls-cli, each a DTLS 1.2 PSK client,
// send a real MQTT CONNECT through mqtls and get Mosquitto's CONNACK back.
func TestDTLSExternalPSKClients(t *testing.T) {
	checkGoroutines(t)
	psk := newDTLSPSK(t)
	b := startBroker(t, "")
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file, "--client-id", "enforce")
	host, port, _ := net.SplitHostPort(dtlsAddr)

	openssl := []string{"s_client", "-dtls1_2", "-psk", psk.keyHex, "-psk_identity", "dev-1", "-nocommands", "-connect", dtlsAddr}
	gnutls := []string{"--udp", "--pskusername", "dev-1", "--pskkey", psk.keyHex, "-p", port, host, "--priority"}
	audited := map[string]bool{} // conn_id of the audit lines checked so far
	for _, peer := range []struct {
		name, bin string
		args      []string
		suite     string // "" for whatever the two prefer
	}{
		{"openssl", "openssl", openssl, ""},
		// AES-128-CCM-8 with a plain PSK: what mbedTLS devices usually offer.
		{"openssl CCM-8", "openssl", append(openssl, "-cipher", "PSK-AES128-CCM8"), "TLS_PSK_WITH_AES_128_CCM_8"},
		{"gnutls-cli", "gnutls-cli", append(gnutls, "NORMAL:-VERS-ALL:+VERS-DTLS1.2:+PSK:+ECDHE-PSK"), ""},
		{"gnutls-cli AES-128-GCM", "gnutls-cli", append(gnutls, "NORMAL:-VERS-ALL:+VERS-DTLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:+AES-128-GCM"), "TLS_PSK_WITH_AES_128_GCM_SHA256"},
	} {
		t.Run(peer.name, func(t *testing.T) {
			peerConnect(t, peer.bin, peer.args...)
			e := s.dtlsAudit(t, func(e logEntry) bool { return !audited[e.str("conn_id")] })
			audited[e.str("conn_id")] = true
			wantDTLSPSKAudit(t, e)
			if peer.suite != "" && e.str("cipher_suite") != peer.suite {
				t.Errorf("audit cipher_suite %q, want %q", e.str("cipher_suite"), peer.suite)
			}
			t.Logf("%s: cipher_suite %s, ended_by %s, bytes in %s out %s", peer.name, e.str("cipher_suite"), e.str("ended_by"), e.str("bytes_in"), e.str("bytes_out"))
		})
	}
}

// pion DTLS clients, and paho on top of them.

// dtlsClient is a pion DTLS client: the options it dials with.
type dtlsClient struct {
	opts []dtls.ClientOption
}

// dtlsPSKClient is a DTLS-PSK device with identity and key, offering suite. pion's client
// sends PSKIdentityHint as its identity. It asks for connection IDs (RFC 9146): it sends
// the server's and needs none of its own.
func dtlsPSKClient(identity string, key []byte, suite dtls.CipherSuiteID) dtlsClient {
	return dtlsClient{opts: []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(suite),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithFlightInterval(100 * time.Millisecond),
	}}
}

// dtlsCertClient is a DTLS device that trusts p's CA and presents d's certificate, if any.
func dtlsCertClient(p *pki, d device) dtlsClient {
	opts := []dtls.ClientOption{
		dtls.WithRootCAs(p.ca.Pool()),
		dtls.WithServerName("localhost"),
		dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()),
		dtls.WithFlightInterval(100 * time.Millisecond),
	}
	if d.cert != nil {
		opts = append(opts, dtls.WithCertificates(d.cert.TLSCertificate()))
	}
	return dtlsClient{opts: opts}
}

// dial runs the client's handshake with addr (mqtls, or a relay in front of it) from a new
// loopback UDP socket. It returns the socket's address, which is the "remote" of mqtls's
// audit line when no relay is in between. The conn is closed when t ends.
func (c dtlsClient) dial(t *testing.T, addr string) (*dtls.Conn, string, error) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c.dialFrom(t, listenLoopbackUDP(t), raddr)
}

// dialFrom is dial from the socket pc, which the conn owns from then on.
func (c dtlsClient) dialFrom(t *testing.T, pc net.PacketConn, raddr net.Addr) (*dtls.Conn, string, error) {
	t.Helper()
	conn, err := dtls.ClientWithOptions(pc, raddr, c.opts...)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return conn, pc.LocalAddr().String(), conn.HandshakeContext(ctx)
}

// mustDial is dial that fails the test when the handshake fails.
func (c dtlsClient) mustDial(t *testing.T, addr string) (*dtls.Conn, string) {
	t.Helper()
	conn, local, err := c.dial(t, addr)
	if err != nil {
		t.Fatalf("DTLS handshake with %s: %v", addr, err)
	}
	return conn, local
}

// pahoOver connects paho.golang (MQTT 5) over a DTLS conn, through datagram.Conn so that
// paho's packets, which it writes in several pieces, travel whole. The client is
// disconnected when t ends.
func pahoOver(t *testing.T, conn net.Conn, cp *paho.Connect) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	cfg := paho.ClientConfig{Conn: datagram.New(conn, datagram.Options{})}
	c := paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		conn.Close()
		return nil, ack, err
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("paho client %q did not shut down", cp.ClientID)
		}
	})
	return c, ack, nil
}

// brokerSub is a paho subscriber connected straight to the broker (plain TCP): what
// reached the broker through mqtls, as another client sees it.
type brokerSub struct {
	mu       sync.Mutex
	payloads []string
	changed  chan struct{}
}

func subscribeBroker(t *testing.T, b *broker, clientID, topic string) *brokerSub {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b.addProbe(conn.LocalAddr().String()) // not a connection through mqtls
	s := &brokerSub{changed: make(chan struct{})}
	c := paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.payloads = append(s.payloads, string(pr.Packet.Payload))
				close(s.changed)
				s.changed = make(chan struct{})
				return true, nil
			},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 60}); err != nil {
		conn.Close()
		t.Fatalf("subscriber connecting to the broker: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		<-c.Done()
	})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 0}}}); err != nil {
		t.Fatalf("subscribing to %s: %v", topic, err)
	}
	return s
}

// waitFor waits until a message with payload want has arrived and returns every payload
// received so far.
func (s *brokerSub) waitFor(t *testing.T, want string) []string {
	t.Helper()
	got, ok := s.waitWithin(want, waitTimeout)
	if !ok {
		t.Fatalf("subscriber did not receive %q within %v; received %d messages", want, waitTimeout, len(got))
	}
	return got
}

// waitWithin is waitFor for d, reporting whether want arrived.
func (s *brokerSub) waitWithin(want string, d time.Duration) ([]string, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		got := slices.Clone(s.payloads)
		changed := s.changed
		s.mu.Unlock()
		if slices.Contains(got, want) {
			return got, true
		}
		select {
		case <-changed:
		case <-timer.C:
			return got, false
		}
	}
}

// TestDTLSPahoPublish: a paho.golang device over pion DTLS-PSK publishes through mqtls,
// and mosquitto_sub, itself a TLS-PSK device on mqtls's TCP listener, receives it. The
// broker's ACL (by user name, which mqtls sets to the PSK identity) admits the publish.
func TestDTLSPahoPublish(t *testing.T) {
	checkGoroutines(t)
	psk := newDTLSPSK(t)
	// Client IDs dev-1/<anything>; the broker's ACL lets user dev-1 write devices/dev-1/#.
	b := startBroker(t, aclUsername)
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file, "--client-id", "prefix", "--username", "identity")

	sub := pskDevice{identity: "dev-1", keyHex: psk.keyHex}.sub(t, s.addr, "dev-1/sub", "mqttv311", "devices/dev-1/#", 1)
	b.waitLog(t, "Sending SUBACK to dev-1/sub")

	conn, local := dtlsPSKClient("dev-1", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8).mustDial(t, dtlsAddr)
	c, ack, err := pahoOver(t, conn, &paho.Connect{ClientID: "dev-1/pub", CleanStart: true, KeepAlive: 30})
	if err != nil {
		t.Fatalf("paho over DTLS: CONNACK %+v, %v", ack, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: "devices/dev-1/temp", QoS: 1, Payload: []byte("21.5")}); err != nil {
		t.Fatalf("publishing over DTLS: %v", err)
	}
	if got := sub.lines(t); len(got) != 1 || got[0] != "devices/dev-1/temp 21.5" {
		t.Errorf("mosquitto_sub printed %q, want [\"devices/dev-1/temp 21.5\"]", got)
	}
	if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}
	e := s.auditFrom(t, local)
	wantAudit(t, e, map[string]string{
		"outcome": "forwarded", "listener": "dtls", "identity_kind": "psk", "identity": "dev-1",
		"client_id": "dev-1/pub", "tls_version": "DTLS 1.2", "cipher_suite": "TLS_PSK_WITH_AES_128_CCM_8",
		"datagrams_dropped": "0",
	})
}

// dtlsRawConnect sends an MQTT 3.1.1 CONNECT for clientID over a DTLS conn, framed, and
// returns the CONNACK's return code, leaving the session open.
func dtlsRawConnect(t *testing.T, conn net.Conn, clientID string) (*datagram.Conn, byte) {
	t.Helper()
	dc := datagram.New(conn, datagram.Options{})
	return dc, rawConnect(t, dc, 4, clientID)
}

// dtlsDisconnect sends DISCONNECT and closes the session (close_notify).
func dtlsDisconnect(t *testing.T, dc *datagram.Conn) {
	t.Helper()
	if _, err := dc.Write([]byte{0xe0, 0x00}); err != nil {
		t.Fatalf("writing DISCONNECT: %v", err)
	}
	dc.Close()
}

// TestDTLSCertificates: the DTLS listener with the server certificate, with and without
// --client-ca, against pion devices with and without certificates, and a PSK device with
// an identity the PSK file lacks. Every refusal names its reason and reaches no broker.
func TestDTLSCertificates(t *testing.T) {
	checkGoroutines(t)
	p := newPKI(t)
	other, err := handshaketest.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	psk := newDTLSPSK(t)

	t.Run("mutual", func(t *testing.T) {
		b := startBroker(t, "")
		s, dtlsAddr := startDTLSServer(t, append(p.serverArgs(b.addr, true), "--psk-file", psk.file)...)

		// A device certificate from the client CA: its CN is the identity.
		conn, local := dtlsCertClient(p, p.device(t, "sensor-9")).mustDial(t, dtlsAddr)
		dc, rc := dtlsRawConnect(t, conn, "sensor-9")
		if rc != 0 {
			t.Fatalf("CONNACK %#x, want 0", rc)
		}
		dtlsDisconnect(t, dc)
		e := s.auditFrom(t, local)
		wantAudit(t, e, map[string]string{
			"outcome": "forwarded", "listener": "dtls", "identity_kind": "certificate", "identity": "sensor-9",
			"client_id": "sensor-9", "tls_version": "DTLS 1.2",
		})
		if cs := e.str("cipher_suite"); !strings.HasPrefix(cs, "TLS_ECDHE_ECDSA_WITH_") {
			t.Errorf("cipher_suite %q, want an ECDHE-ECDSA suite", cs)
		}
		b.waitLog(t, "New client connected from 127.0.0.1")

		for _, tc := range []struct {
			name   string
			client dtlsClient
			reason string
		}{
			{"no client certificate", dtlsCertClient(p, p.anonymous()), "no_client_cert"},
			{"certificate from another CA", dtlsCertClient(p, p.deviceFrom(t, other, handshaketest.Template{CommonName: "sensor-9"})), "untrusted_cert"},
			{"unknown PSK identity", dtlsPSKClient("dev-404", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8), "unknown_psk_identity"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if _, local, err := tc.client.dial(t, dtlsAddr); err == nil {
					t.Errorf("handshake succeeded, want it refused")
				} else {
					e := s.auditFrom(t, local)
					wantAudit(t, e, map[string]string{"outcome": "handshake_failed", "reason": tc.reason, "listener": "dtls", "identity_kind": "none"})
				}
			})
		}
		// Only the device with a good certificate reached the broker.
		if n := b.connections(t); n != 1 {
			t.Errorf("the broker saw %d connections through mqtls, want 1 (the accepted device)", n)
		}
	})

	t.Run("one-way", func(t *testing.T) {
		b := startBroker(t, "")
		s, dtlsAddr := startDTLSServer(t, p.serverArgs(b.addr, false)...)
		conn, local := dtlsCertClient(p, p.anonymous()).mustDial(t, dtlsAddr)
		dc, rc := dtlsRawConnect(t, conn, "anyone")
		if rc != 0 {
			t.Fatalf("CONNACK %#x, want 0", rc)
		}
		dtlsDisconnect(t, dc)
		wantAudit(t, s.auditFrom(t, local), map[string]string{
			"outcome": "forwarded", "listener": "dtls", "identity_kind": "none", "identity": "",
			"client_id": "anyone", "tls_version": "DTLS 1.2",
		})
	})

	t.Run("refusals reach no broker", func(t *testing.T) {
		b := startBroker(t, "")
		s, dtlsAddr := startDTLSServer(t, append(p.serverArgs(b.addr, true), "--psk-file", psk.file)...)
		for _, c := range []dtlsClient{
			dtlsCertClient(p, p.anonymous()),
			dtlsCertClient(p, p.deviceFrom(t, other, handshaketest.Template{CommonName: "x"})),
			dtlsPSKClient("nobody", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8),
		} {
			if _, local, err := c.dial(t, dtlsAddr); err == nil {
				t.Errorf("handshake succeeded, want it refused")
			} else {
				s.auditFrom(t, local)
			}
		}
		b.wantNoConnections(t)
	})
}

// udpRelay stands between a DTLS client and mqtls: the client sends to front, the relay
// forwards from back (so mqtls sees back's address) and sends mqtls's answers to the
// client. It can drop, duplicate and reorder datagrams (deterministically seeded), and
// rebind: switch back to a new socket, as a NAT does when its mapping changes. It forwards
// at most maxRelayed datagrams and stops when t ends.
type udpRelay struct {
	t      *testing.T
	front  *net.UDPConn
	target *net.UDPAddr
	wg     sync.WaitGroup

	mu     sync.Mutex
	back   *net.UDPConn
	client *net.UDPAddr // learned from the first datagram
	impair impairment   // what happens to every datagram, both ways
	// lossy replaces impair for the client's datagrams number window[0] to window[1]-1
	// (counting from 0): impairment tied to what the client sent, not to when the relay
	// gets round to reading it.
	lossy      impairment
	window     [2]int
	fromClient int           // datagrams received from the client so far
	received   chan struct{} // closed (and replaced) whenever fromClient grows
	stats      relayStats
	closed     bool
}

// impairment is what the relay does to each datagram, with these probabilities.
type impairment struct {
	drop, dup, swap float64
}

type relayStats struct {
	forwarded, dropped, duplicated, swapped int
}

const maxRelayed = 5000

func newRelay(t *testing.T, target string, seed uint64) *udpRelay {
	t.Helper()
	taddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{t: t, target: taddr, received: make(chan struct{})}
	r.front = listenLoopbackUDP(t)
	r.back = listenLoopbackUDP(t)
	r.wg.Add(2)
	go r.toServer(mrand.New(mrand.NewPCG(seed, 1)))
	go r.toClient(r.back, mrand.New(mrand.NewPCG(seed, 2)))
	t.Cleanup(r.close)
	return r
}

func listenLoopbackUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *udpRelay) addr() string { return r.front.LocalAddr().String() }

// backAddr is the address mqtls sees the client at now.
func (r *udpRelay) backAddr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.back.LocalAddr().String()
}

func (r *udpRelay) setImpairment(i impairment) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.impair = i
}

// waitClient waits until the relay has received n datagrams from the client, so that a
// sender can keep its bursts within what socket buffers hold.
func (r *udpRelay) waitClient(n int) {
	r.t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		got, received := r.fromClient, r.received
		r.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-received:
		case <-timer.C:
			r.t.Fatalf("the relay received %d datagrams from the client within %v, want %d", got, waitTimeout, n)
		}
	}
}

// impairClient applies lossy to the client's datagrams from number first to last-1.
func (r *udpRelay) impairClient(lossy impairment, first, last int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lossy, r.window = lossy, [2]int{first, last}
}

func (r *udpRelay) statistics() relayStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// rebind moves the relay's side toward mqtls to a new socket, a new source port: later
// datagrams from the client reach mqtls from there, and the old socket is closed.
func (r *udpRelay) rebind() {
	nb := listenLoopbackUDP(r.t)
	r.mu.Lock()
	old := r.back
	r.back = nb
	closed := r.closed
	r.mu.Unlock()
	if closed {
		nb.Close()
		return
	}
	r.wg.Add(1)
	go r.toClient(nb, mrand.New(mrand.NewPCG(uint64(nb.LocalAddr().(*net.UDPAddr).Port), 3)))
	old.Close()
}

func (r *udpRelay) close() {
	r.mu.Lock()
	r.closed = true
	back := r.back
	r.mu.Unlock()
	r.front.Close()
	back.Close()
	r.wg.Wait()
}

// toServer forwards the client's datagrams to mqtls.
func (r *udpRelay) toServer(rng *mrand.Rand) {
	defer r.wg.Done()
	r.pump(r.front, true, rng, func(from *net.UDPAddr, d []byte) {
		r.mu.Lock()
		if r.client == nil {
			r.client = from
		}
		back := r.back
		r.mu.Unlock()
		_, _ = back.WriteToUDP(d, r.target)
	})
}

// toClient forwards mqtls's datagrams arriving on back to the client.
func (r *udpRelay) toClient(back *net.UDPConn, rng *mrand.Rand) {
	defer r.wg.Done()
	r.pump(back, false, rng, func(_ *net.UDPAddr, d []byte) {
		r.mu.Lock()
		client := r.client
		r.mu.Unlock()
		if client != nil {
			_, _ = r.front.WriteToUDP(d, client)
		}
	})
}

// pump reads datagrams from c until it is closed and passes each to send, impaired. A
// datagram held back to be swapped goes out after the next one, or after a short while
// when no next one comes.
func (r *udpRelay) pump(c *net.UDPConn, fromClient bool, rng *mrand.Rand, send func(*net.UDPAddr, []byte)) {
	buf := make([]byte, 64<<10)
	var held []byte
	var heldFrom *net.UDPAddr
	for {
		wait := time.Now().Add(time.Second)
		if held != nil {
			wait = time.Now().Add(20 * time.Millisecond)
		}
		_ = c.SetReadDeadline(wait)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				if held != nil {
					send(heldFrom, held)
					held = nil
				}
				continue
			}
			return
		}
		d := slices.Clone(buf[:n])
		r.mu.Lock()
		imp := r.impair
		if fromClient {
			if r.fromClient >= r.window[0] && r.fromClient < r.window[1] {
				imp = r.lossy
			}
			r.fromClient++
			close(r.received)
			r.received = make(chan struct{})
		}
		over := r.stats.forwarded >= maxRelayed
		drop, dup, swap := rng.Float64() < imp.drop, rng.Float64() < imp.dup, rng.Float64() < imp.swap
		switch {
		case over || drop:
			r.stats.dropped++
		case held == nil && swap:
			r.stats.swapped++
		default:
			r.stats.forwarded++
			if dup {
				r.stats.duplicated++
			}
		}
		r.mu.Unlock()
		switch {
		case over || drop:
			continue
		case held == nil && swap:
			held, heldFrom = d, from
			continue
		}
		send(from, d)
		if dup {
			send(from, d)
		}
		if held != nil {
			send(heldFrom, held)
			held = nil
		}
	}
}

// countingUDPConn is a UDP socket that counts the datagrams sent from it.
type countingUDPConn struct {
	*net.UDPConn
	mu   sync.Mutex
	sent int
}

func (c *countingUDPConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.sent++
	c.mu.Unlock()
	return c.UDPConn.WriteTo(p, addr)
}

func (c *countingUDPConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent
}

// publishQoS0 is an MQTT 3.1.1 PUBLISH, QoS 0, of payload to topic [MQTT-3.3].
func publishQoS0(topic, payload string) []byte {
	body := appendString(nil, topic) // topic name; QoS 0 has no packet identifier
	body = append(body, payload...)  // payload
	return appendPacket(nil, 0x30, body)
}

// TestDTLSLossyPath runs a session through a relay that drops, duplicates and reorders
// datagrams. Framing and DTLS replay protection together must deliver every message that
// arrives whole and once: a subscriber on the broker sees no torn, foreign or duplicated
// message, and the session survives the loss.
func TestDTLSLossyPath(t *testing.T) {
	checkGoroutines(t)
	psk := newDTLSPSK(t)
	b := startBroker(t, "")
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file)
	sub := subscribeBroker(t, b, "watcher", "lossy/#")

	relay := newRelay(t, dtlsAddr, 20261126)
	// Every datagram, either way, may be duplicated or reordered; none is lost, except among
	// the publishes below, so that the test never waits on a retransmission timer or a
	// lost CONNACK.
	relay.setImpairment(impairment{dup: 0.2, swap: 0.2})
	pc := &countingUDPConn{UDPConn: listenLoopbackUDP(t)}
	raddr, _ := net.ResolveUDPAddr("udp", relay.addr())
	conn, _, err := dtlsPSKClient("dev-1", psk.key(), dtls.TLS_PSK_WITH_AES_128_GCM_SHA256).dialFrom(t, pc, raddr)
	if err != nil {
		t.Fatalf("DTLS handshake through the relay: %v", err)
	}
	dc, rc := dtlsRawConnect(t, conn, "dev-1")
	if rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}

	relay.waitClient(pc.count())
	first := pc.count()
	relay.impairClient(impairment{drop: 0.15, dup: 0.15, swap: 0.15}, first, 1<<30)
	const n = 200
	sent := map[string]bool{}
	for i := 0; i < n; {
		// Mostly one PUBLISH per datagram, sometimes three packed into one.
		var burst []byte
		for k := 0; k < 1+2*(i%5/4) && i < n; k, i = k+1, i+1 {
			payload := fmt.Sprintf("msg-%03d:%s", i, strings.Repeat(string(rune('a'+i%26)), 20+i%40))
			sent[payload] = true
			burst = append(burst, publishQoS0("lossy/dev-1", payload)...)
		}
		if _, err := dc.Write(burst); err != nil {
			t.Fatalf("publishing through the relay: %v", err)
		}
		if i%20 == 0 {
			relay.waitClient(pc.count())
		}
	}
	relay.waitClient(pc.count())
	relay.impairClient(impairment{drop: 0.15, dup: 0.15, swap: 0.15}, first, pc.count())

	// Datagrams that are not whole packets, sent straight on the DTLS conn, bypassing the
	// framing: mqtls must drop each, and count them.
	torn := publishQoS0("lossy/dev-1", "torn")
	for _, bad := range [][]byte{torn[:5], torn[5:], {0x30, 0x80, 0x80, 0x80, 0x80, 0x01}} {
		if _, err := conn.Write(bad); err != nil {
			t.Fatal(err)
		}
	}
	// The session survived: the last message arrives, after every one that got through.
	// UDP may still lose it on a loaded machine (the relay's sockets have default buffers),
	// so it is sent again, up to three times, until it arrives.
	var got []string
	for try := 1; ; try++ {
		if _, err := dc.Write(publishQoS0("lossy/dev-1", "end")); err != nil {
			t.Fatal(err)
		}
		var ok bool
		if got, ok = sub.waitWithin("end", waitTimeout/3); ok {
			break
		}
		if try == 3 {
			t.Fatalf("subscriber did not receive \"end\", sent three times; received %d messages", len(got))
		}
	}
	seen := map[string]bool{}
	last := ""
	for _, p := range got[:len(got)-1] {
		switch {
		case !sent[p]:
			t.Errorf("the subscriber received %q, which was never sent whole", p)
		case seen[p]:
			t.Errorf("the subscriber received %q twice", p)
		case p[:7] < last:
			// A record that arrives after a later one is dropped, never forwarded late.
			t.Errorf("the subscriber received %q after %q: out of the device's order", p[:7], last)
		}
		seen[p] = true
		last = max(last, p[:7])
	}
	if got[len(got)-1] != "end" {
		t.Errorf("last message %q, want \"end\"", got[len(got)-1])
	}
	st := relay.statistics()
	t.Logf("relay: %+v; %d of %d messages delivered, each once and whole", st, len(seen), n)
	if st.dropped == 0 || st.duplicated == 0 || st.swapped == 0 {
		t.Errorf("the relay impaired nothing of some kind (%+v); the test tests nothing", st)
	}
	if len(seen) == 0 {
		t.Errorf("no message got through")
	}

	dtlsDisconnect(t, dc)
	e := s.auditFrom(t, relay.backAddr())
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "listener": "dtls", "identity": "dev-1"})
	// The torn datagrams are dropped by the framing, unless the relay's swaps made them late
	// records, which are dropped before it (on a loaded machine, all three may be):
	// TestDTLSTornDatagrams counts them on a clean path.
	if d, _ := strconv.Atoi(e.str("datagrams_dropped")); d > 3 {
		t.Errorf("datagrams_dropped %d, want at most the 3 torn datagrams", d)
	}
}

// TestDTLSTornDatagrams: on a clean path, each datagram that is not whole MQTT packets is
// dropped, counted in the audit line, and the session goes on.
func TestDTLSTornDatagrams(t *testing.T) {
	checkGoroutines(t)
	psk := newDTLSPSK(t)
	b := startBroker(t, "")
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file)
	sub := subscribeBroker(t, b, "watcher", "torn/#")
	conn, _ := dtlsPSKClient("dev-1", psk.key(), dtls.TLS_PSK_WITH_AES_128_GCM_SHA256).mustDial(t, dtlsAddr)
	local := conn.LocalAddr().String()
	dc, rc := dtlsRawConnect(t, conn, "dev-1")
	if rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	torn := publishQoS0("torn/dev-1", "torn")
	for _, bad := range [][]byte{torn[:5], torn[5:], {0x30, 0x80, 0x80, 0x80, 0x80, 0x01}} {
		if _, err := conn.Write(bad); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dc.Write(publishQoS0("torn/dev-1", "end")); err != nil {
		t.Fatal(err)
	}
	if got := sub.waitFor(t, "end"); len(got) != 1 {
		t.Errorf("the subscriber received %q, want only \"end\"", got)
	}
	dtlsDisconnect(t, dc)
	wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "forwarded", "identity": "dev-1", "datagrams_dropped": "3"})
}

// TestDTLSRebinding moves the client's address mid-session, as a NAT rebinding does. The
// connection ID the server handed out still names the session: what the device sends from
// the new port reaches the same broker connection, and the broker's answers follow it.
func TestDTLSRebinding(t *testing.T) {
	checkGoroutines(t)
	psk := newDTLSPSK(t)
	b := startBroker(t, "")
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file)
	sub := subscribeBroker(t, b, "watcher", "nat/#")

	relay := newRelay(t, dtlsAddr, 1)
	conn, _ := dtlsPSKClient("dev-1", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8).mustDial(t, relay.addr())
	dc, rc := dtlsRawConnect(t, conn, "dev-1")
	if rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	if _, err := dc.Write(publishQoS0("nat/dev-1", "before")); err != nil {
		t.Fatal(err)
	}
	sub.waitFor(t, "before")
	oldAddr := relay.backAddr()

	relay.rebind()
	if relay.backAddr() == oldAddr {
		t.Fatal("the relay kept its address")
	}
	if _, err := dc.Write(publishQoS0("nat/dev-1", "after")); err != nil {
		t.Fatal(err)
	}
	sub.waitFor(t, "after")
	// The way back follows the new address too: PINGREQ, PINGRESP.
	_ = dc.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := dc.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := readPacket(dc); err != nil || typ != 0xd0 {
		t.Fatalf("after rebinding, PINGREQ got %#x, %v; want PINGRESP", typ, err)
	}

	dtlsDisconnect(t, dc)
	e := s.dtlsAudit(t, func(logEntry) bool { return true })
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "identity": "dev-1", "client_id": "dev-1"})
	if r := e.str("remote"); r != oldAddr {
		t.Logf("audit remote %s (the address the session started from was %s)", r, oldAddr)
	}
	if n := s.logs.count(func(l string) bool {
		e, ok := parseEntry(l)
		return ok && e.str("message") == "connection" && e.str("listener") == "dtls"
	}); n != 1 {
		t.Errorf("%d DTLS audit lines, want 1: one session across the rebinding", n)
	}
	if n := b.connections(t); n != 1 {
		t.Errorf("the broker saw %d connections through mqtls, want 1", n)
	}
}

// DTLS record and handshake types, RFC 6347 §4.1 and §4.2.2.
const (
	dtlsContentHandshake   = 22
	dtlsClientHello        = 1
	dtlsHelloVerifyRequest = 3
	dtlsRecordHeaderLen    = 13
)

// captureClientHello returns the first datagram a pion client sends: its ClientHello,
// without a cookie.
func captureClientHello(t *testing.T, c dtlsClient) []byte {
	t.Helper()
	sink := listenLoopbackUDP(t)
	defer sink.Close()
	pc := listenLoopbackUDP(t)
	conn, err := dtls.ClientWithOptions(pc, sink.LocalAddr(), c.opts...)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = conn.HandshakeContext(ctx) }()
	defer func() { cancel(); <-done; conn.Close() }()
	_ = sink.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 2048)
	n, _, err := sink.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("capturing a ClientHello: %v", err)
	}
	hello := slices.Clone(buf[:n])
	if n <= dtlsRecordHeaderLen || hello[0] != dtlsContentHandshake || hello[dtlsRecordHeaderLen] != dtlsClientHello {
		t.Fatalf("first datagram % x is not a ClientHello", hello)
	}
	return hello
}

// TestDTLSSpoofedClientHello replays a ClientHello from an address that never completes
// the cookie exchange, as an attacker spoofing a victim's address would. The only answer
// is a HelloVerifyRequest no larger than the ClientHello (no amplification), no session
// comes of it, it ends at the handshake deadline, and a real device is served meanwhile.
func TestDTLSSpoofedClientHello(t *testing.T) {
	checkGoroutines(t)
	psk := newDTLSPSK(t)
	b := startBroker(t, "")
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file, "--handshake-timeout", "1s",
		"--dtls-unproven-timeout", "300ms", "--admin-listen", "127.0.0.1:0")
	client := dtlsPSKClient("dev-1", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8)
	hello := captureClientHello(t, client)

	spoofer := listenLoopbackUDP(t)
	defer spoofer.Close()
	target, _ := net.ResolveUDPAddr("udp", dtlsAddr)
	if _, err := spoofer.WriteToUDP(hello, target); err != nil {
		t.Fatal(err)
	}
	// Everything that comes back within a little more than the handshake timeout.
	var replies [][]byte
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(1500 * time.Millisecond)
	for {
		_ = spoofer.SetReadDeadline(deadline)
		n, _, err := spoofer.ReadFromUDP(buf)
		if err != nil {
			break
		}
		replies = append(replies, slices.Clone(buf[:n]))
	}
	if len(replies) == 0 {
		t.Fatal("no HelloVerifyRequest came back")
	}
	for i, r := range replies {
		if len(r) <= dtlsRecordHeaderLen || r[0] != dtlsContentHandshake || r[dtlsRecordHeaderLen] != dtlsHelloVerifyRequest {
			t.Errorf("reply %d (% x) is not a HelloVerifyRequest", i, r)
		}
		if len(r) > len(hello) {
			t.Errorf("reply %d is %d bytes, larger than the %d-byte ClientHello: amplification", i, len(r), len(hello))
		}
	}
	t.Logf("ClientHello %d bytes; %d replies of %v bytes", len(hello), len(replies), datagramSizes(replies))

	// A real device is served.
	conn, _ := client.mustDial(t, dtlsAddr)
	dc, rc := dtlsRawConnect(t, conn, "dev-1")
	if rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	dtlsDisconnect(t, dc)

	// The spoofed address never returns its cookie: it holds unproven state until
	// --dtls-unproven-timeout, then that state expires. It never reaches the proxy, so it
	// takes no handshake slot and leaves no audit line; the drop is counted.
	spoofed := spoofer.LocalAddr().String()
	expired := series("mqtls_dtls_dropped_total", "listener", "dtls", "reason", "dtls_unproven_expired")
	admin := s.adminAddr(t)
	for deadline := time.Now().Add(waitTimeout); scrapeMetrics(t, admin)[expired] < 1; {
		if time.Now().After(deadline) {
			t.Fatalf("%s never counted the spoofed address's state expiring", expired)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.logs.count(func(l string) bool {
		e, ok := parseEntry(l)
		return ok && e.str("message") == "connection" && e.str("remote") == spoofed
	}); n != 0 {
		t.Errorf("mqtls logged %d connections from the spoofed address, want none: it never proved it", n)
	}
	// The admin listener's readiness probe connects too, so count MQTT sessions.
	if n := b.log.count(func(l string) bool { return strings.Contains(l, "New client connected from") }); n != 1 {
		t.Errorf("the broker saw %d MQTT sessions through mqtls, want 1 (the real device)", n)
	}
}

func datagramSizes(ds [][]byte) []int {
	out := make([]int, len(ds))
	for i, d := range ds {
		out[i] = len(d)
	}
	return out
}

// TestDTLSDrain: an open DTLS session does not hold up shutdown beyond --drain-timeout;
// the device hears the session end.
func TestDTLSDrain(t *testing.T) {
	checkGoroutines(t)
	const drain = 300 * time.Millisecond
	psk := newDTLSPSK(t)
	b := startBroker(t, "")
	s, dtlsAddr := startDTLSServer(t, "--upstream", b.addr, "--psk-file", psk.file, "--drain-timeout", drain.String())

	conn, local := dtlsPSKClient("dev-1", psk.key(), dtls.TLS_PSK_WITH_AES_128_CCM_8).mustDial(t, dtlsAddr)
	dc, rc := dtlsRawConnect(t, conn, "dev-1")
	if rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}
	_ = dc.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := dc.Write([]byte{0xc0, 0x00}); err != nil { // PINGREQ: the session is live
		t.Fatal(err)
	}
	if typ, _, err := readPacket(dc); err != nil || typ != 0xd0 {
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
	// mqtls closed the session: close_notify, which the device reads as the end.
	_ = dc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := dc.Read(make([]byte, 64)); err == nil || isNetTimeout(err) {
		t.Errorf("device Read after shutdown = %d, %v; want the session closed", n, err)
	}
	wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "forwarded", "listener": "dtls", "ended_by": "shutdown"})
}

func isNetTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
