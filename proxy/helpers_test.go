package proxy_test

// Shared fixtures for the proxy tests: a PKI made at run time, a fake broker on a real
// loopback socket, an mqtls server with its log captured, a device (crypto/tls with a
// client certificate), MQTT packet fixtures, and the goroutine-leak check. Nothing here
// sleeps to wait for a condition: tests wait on sockets (under deadlines) or on log lines.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// waitTimeout bounds every wait for something that should happen promptly; it is also the
// deadline set on every test socket, so a missing byte fails a test instead of hanging it.
const waitTimeout = 10 * time.Second

// deviceCN is the common name of the device certificate, and so its identity ("{cn}").
const deviceCN = "dev-1"

// pki is the test PKI, made once by TestMain: a CA, a server certificate for 127.0.0.1 and
// localhost, and a device certificate. No key outlives the run.
var pki struct {
	roots                      *x509.CertPool
	serverCert, serverKey, cas string // files
	device                     tls.Certificate
	ca                         *handshaketest.CA // issues the certificates a test needs of its own
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mqtls-proxy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := makePKI(dir); err != nil {
		fmt.Fprintln(os.Stderr, "making the test PKI:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if leaked, ok := waitGoroutines(0, 5*time.Second); !ok {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the proxy tests:\n\n%s\n", strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

func makePKI(dir string) error {
	ca, err := handshaketest.NewCA("mqtls proxy test CA")
	if err != nil {
		return err
	}
	server, err := ca.Issue(handshaketest.Template{
		CommonName:  "mqtls",
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		return err
	}
	device, err := ca.Issue(handshaketest.Template{CommonName: deviceCN})
	if err != nil {
		return err
	}
	if pki.serverCert, pki.serverKey, err = server.Files(dir, "server"); err != nil {
		return err
	}
	if pki.cas, err = handshaketest.WriteFile(dir, "ca.crt", ca.CertPEM); err != nil {
		return err
	}
	pki.roots = ca.Pool()
	pki.ca = ca
	pki.device = device.TLSCertificate()
	return nil
}

// relevantGoroutines returns the stacks of the goroutines a test could have leaked: those
// running (or started by) this package or the tests, but not the caller nor the testing
// package's own runners, which also show test functions on their stacks.
func relevantGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		switch {
		case i == 0, // the caller is listed first
			!strings.Contains(g, "github.com/mqtls/mqtls/proxy"),
			strings.Contains(g, "testing.tRunner("),
			strings.Contains(g, "testing.(*M)."),
			strings.Contains(g, "testing.(*B)."),
			// the process's shared epoll loop for parked sessions, started once and kept
			strings.Contains(g, "proxy.(*poller).loop"):
			continue
		}
		out = append(out, g)
	}
	return out
}

// waitGoroutines waits up to timeout for at most want relevant goroutines to be left. It
// polls: a goroutine's exit signals nothing one could wait on, and this is only the leak
// check, never how a test waits for the code under test.
func waitGoroutines(want int, timeout time.Duration) ([]string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		gs := relevantGoroutines()
		if len(gs) <= want {
			return gs, true
		}
		if time.Now().After(deadline) {
			return gs, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkGoroutines fails tb if, once its cleanups have run, more relevant goroutines are
// alive than when it was called. Call it first, so that its cleanup runs last.
func checkGoroutines(tb testing.TB) {
	tb.Helper()
	before := len(relevantGoroutines())
	tb.Cleanup(func() {
		if after, ok := waitGoroutines(before, 5*time.Second); !ok {
			tb.Errorf("goroutine leak: %d before the test, %d after:\n\n%s", before, len(after), strings.Join(after, "\n\n"))
		}
	})
}

// ---- MQTT packets ----

// connackAccepted is what the fake broker answers a CONNECT with: CONNACK (type 2) with
// remaining length 2, acknowledge flags 0 (no session present), return code 0 accepted
// [MQTT-3.2.2-1]. It is a valid 3.1.1 CONNACK; the tests send it whatever the level, since
// mqtls forwards it without reading it.
var connackAccepted = []byte{0x20, 0x02, 0x00, 0x00}

// appendFixedHeader appends an MQTT fixed header: the type-and-flags byte, then the
// remaining length as a variable byte integer, 7 bits a byte, low group first [MQTT-1.5.5].
func appendFixedHeader(dst []byte, first byte, remaining int) []byte {
	dst = append(dst, first)
	for {
		d := byte(remaining % 128)
		remaining /= 128
		if remaining > 0 {
			d |= 0x80
		}
		dst = append(dst, d)
		if remaining == 0 {
			return dst
		}
	}
}

// connectPacket returns a CONNECT for protocol level 4 (3.1.1) or 5 (5.0) with clean
// session set, keep-alive 60 s, no will, user name or password, and clientID.
func connectPacket(level byte, clientID string) []byte {
	body := []byte{
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name [MQTT-3.1.2-1]
		level,      // protocol level: 4 is 3.1.1, 5 is 5.0 [MQTT-3.1.2-2]
		0x02,       // connect flags: clean session / clean start only [MQTT-3.1.2-4]
		0x00, 0x3c, // keep alive: 60 s (3.1.2.10)
	}
	if level == policy.Level5 {
		body = append(body, 0x00) // property length: none (5.0 §3.1.2.11)
	}
	body = append(body, byte(len(clientID)>>8), byte(len(clientID))) // client identifier length
	body = append(body, clientID...)                                 // client identifier [MQTT-3.1.3-3]
	return append(appendFixedHeader(nil, 0x10, len(body)), body...)  // CONNECT: type 1, flags 0 [MQTT-3.1.1]
}

// publishPacket returns a QoS 0 PUBLISH of payload to topic [MQTT-3.3]: no packet
// identifier at QoS 0, no properties (so it is only valid as 3.1.1; mqtls does not care).
func publishPacket(topic string, payload []byte) []byte {
	body := []byte{byte(len(topic) >> 8), byte(len(topic))}         // topic name length
	body = append(body, topic...)                                   // topic name [MQTT-3.3.2-1]
	body = append(body, payload...)                                 // application message
	return append(appendFixedHeader(nil, 0x30, len(body)), body...) // PUBLISH: type 3, DUP 0, QoS 0, RETAIN 0
}

// readPacket reads one MQTT packet: its fixed header a byte at a time, checked with
// policy.ParseFixedHeader, then exactly its body.
func readPacket(r io.Reader) ([]byte, error) {
	var hdr [5]byte
	for n := 1; ; n++ {
		if n > len(hdr) {
			return nil, errors.New("fixed header longer than 5 bytes")
		}
		if _, err := io.ReadFull(r, hdr[n-1:n]); err != nil {
			return nil, err
		}
		_, remaining, hl, err := policy.ParseFixedHeader(hdr[:n])
		if errors.Is(err, policy.ErrIncomplete) {
			continue
		}
		if err != nil {
			return nil, err
		}
		pkt := make([]byte, hl+remaining)
		copy(pkt, hdr[:hl])
		if _, err := io.ReadFull(r, pkt[hl:]); err != nil {
			return nil, fmt.Errorf("reading a %d-byte packet body: %w", remaining, err)
		}
		return pkt, nil
	}
}

// connackCode returns the return code (3.x) or reason code (5.0) of a CONNACK: the byte
// after the acknowledge flags [MQTT-3.2.2].
func connackCode(pkt []byte) (byte, error) {
	_, _, hl, err := policy.ParseFixedHeader(pkt)
	if err != nil {
		return 0, err
	}
	if pkt[0] != 0x20 || len(pkt) < hl+2 {
		return 0, fmt.Errorf("not a CONNACK: % x", pkt)
	}
	return pkt[hl+1], nil
}

// ---- the fake broker ----

// broker is an upstream MQTT broker stand-in on a loopback TCP or unix socket. With a
// handler it serves each connection with it; without, tests take connections with next.
type broker struct {
	network, addr string
	ln            net.Listener
	handle        func(net.Conn)
	conns         chan net.Conn
	accepted      atomic.Int64

	mu   sync.Mutex
	open map[net.Conn]struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// startBroker listens on network ("tcp" or "unix") at addr (for tcp "" means a free
// loopback port; for unix "" means a fresh socket path) and stops at the end of tb.
func startBroker(tb testing.TB, network, addr string, handle func(net.Conn)) *broker {
	tb.Helper()
	switch {
	case network == "tcp" && addr == "":
		addr = "127.0.0.1:0"
	case network == "unix" && addr == "":
		// Not tb.TempDir: a socket path must stay under ~104 bytes, and test names are long.
		dir, err := os.MkdirTemp("", "mq")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { os.RemoveAll(dir) })
		addr = filepath.Join(dir, "broker.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatalf("starting the fake broker: %v", err)
	}
	b := &broker{network: network, addr: ln.Addr().String(), ln: ln, handle: handle,
		conns: make(chan net.Conn, 1024), open: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.acceptLoop()
	tb.Cleanup(b.stop)
	return b
}

// upstream is the broker's address as proxy.Config.Upstream spells it.
func (b *broker) upstream() string {
	if b.network == "unix" {
		return "unix:" + b.addr
	}
	return b.addr
}

func (b *broker) acceptLoop() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.accepted.Add(1)
		b.mu.Lock()
		b.open[c] = struct{}{}
		b.mu.Unlock()
		if b.handle == nil {
			b.conns <- c
			continue
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			b.handle(c)
		}()
	}
}

// stop closes the listener and every connection, and waits for the handlers.
func (b *broker) stop() {
	b.once.Do(func() {
		b.ln.Close()
		b.mu.Lock()
		for c := range b.open {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
}

// next returns the next connection the broker accepted, with a deadline, closed at the
// end of tb (before the proxy is shut down, so no session waits on it).
func (b *broker) next(tb testing.TB) net.Conn {
	tb.Helper()
	select {
	case c := <-b.conns:
		_ = c.SetDeadline(time.Now().Add(waitTimeout))
		tb.Cleanup(func() { c.Close() })
		return c
	case <-time.After(waitTimeout):
		tb.Fatal("the broker got no connection")
		return nil
	}
}

// checkNoConns fails tb if the broker has been connected to, even by a connection still
// in its accept queue: it dials a sentinel, which the kernel queues after every earlier
// connection, so the sentinel must be the first (and only) connection accepted.
func (b *broker) checkNoConns(tb testing.TB) {
	tb.Helper()
	s, err := net.DialTimeout(b.network, b.addr, waitTimeout)
	if err != nil {
		tb.Fatalf("dialing the broker: %v", err)
	}
	defer s.Close()
	c := b.next(tb)
	if c.RemoteAddr().String() != s.LocalAddr().String() {
		tb.Errorf("the broker was connected to from %v", c.RemoteAddr())
	}
	if n := b.accepted.Load(); n != 1 {
		tb.Errorf("the broker accepted %d connections besides the sentinel, want 0", n-1)
	}
}

// ackThenEcho is a broker handler: it reads the CONNECT, answers connackAccepted, then
// echoes every byte until the client ends its side.
func ackThenEcho(c net.Conn) {
	if !ack(c) {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// ackThenSmallEcho is ackThenEcho with a 256-byte buffer, for a broker of many idle clients.
func ackThenSmallEcho(c net.Conn) {
	if !ack(c) {
		return
	}
	var buf [256]byte
	for {
		n, err := c.Read(buf[:])
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func ack(c net.Conn) bool {
	pkt, err := readPacket(c)
	if err != nil || pkt[0] != 0x10 {
		return false
	}
	_, err = c.Write(connackAccepted)
	return err == nil
}

// ---- the proxy under test ----

// proxyServer is an mqtls listener serving on 127.0.0.1 with mutual TLS.
type proxyServer struct {
	*proxy.Server
	addr string
	log  *lineLog

	served   chan struct{} // closed when Serve returns
	serveErr error         // what Serve returned, once served is closed
	// wantServeErr is what Serve must have returned by the end of the test.
	wantServeErr error
}

// startProxy serves a fresh listener on a free loopback port; see serveProxy.
func startProxy(tb testing.TB, upstream string, pc policy.Config, tweak func(*proxy.Config)) *proxyServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return serveProxy(tb, ln, upstream, pc, tweak)
}

// serveProxy builds a server with handshake.NewTLSServer (client certificates required),
// policy pc and upstream, lets tweak adjust the config, and serves ln. At the end of tb it
// shuts the server down within a deadline and checks what Serve returned.
func serveProxy(tb testing.TB, ln net.Listener, upstream string, pc policy.Config, tweak func(*proxy.Config)) *proxyServer {
	tb.Helper()
	hs, err := handshake.NewTLSServer(handshake.TLSConfig{
		CertFile:     pki.serverCert,
		KeyFile:      pki.serverKey,
		ClientCAFile: pki.cas,
		ClientAuth:   handshake.ClientAuthRequire,
	})
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	pol, err := policy.New(pc)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	lines := newLineLog()
	cfg := proxy.Config{
		Upstream:   upstream,
		Handshaker: hs,
		Policy:     pol,
		Logger:     zerolog.New(lines),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	srv, err := proxy.New(cfg)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	p := &proxyServer{Server: srv, addr: ln.Addr().String(), log: lines,
		served: make(chan struct{}), wantServeErr: proxy.ErrServerClosed}
	go func() {
		p.serveErr = srv.Serve(ln)
		close(p.served)
	}()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown at the end of the test: %v", err)
		}
		if err := p.waitServe(); !errors.Is(err, p.wantServeErr) {
			tb.Errorf("Serve returned %v, want %v", err, p.wantServeErr)
		}
	})
	return p
}

// waitServe waits for Serve to return and returns its error.
func (p *proxyServer) waitServe() error {
	select {
	case <-p.served:
		return p.serveErr
	case <-time.After(waitTimeout):
		return errors.New("Serve did not return")
	}
}

// deviceConfig is a device's TLS configuration: it trusts the test CA and presents the
// device certificate.
func deviceConfig() *tls.Config {
	return &tls.Config{RootCAs: pki.roots, Certificates: []tls.Certificate{pki.device}, ServerName: "localhost"}
}

// dialDevice connects to addr and completes the TLS handshake. The conn has a deadline
// and is closed at the end of tb.
func dialDevice(tb testing.TB, addr string, cfg *tls.Config) *tls.Conn {
	tb.Helper()
	c, err := dial(addr, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// dial connects to addr and completes the TLS handshake; the conn has a deadline.
func dial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: waitTimeout}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("device handshake: %w", err)
	}
	tc := c.(*tls.Conn)
	_ = tc.SetDeadline(time.Now().Add(waitTimeout))
	return tc, nil
}

// mustWrite writes b to w or fails tb.
func mustWrite(tb testing.TB, w io.Writer, b []byte) {
	tb.Helper()
	if _, err := w.Write(b); err != nil {
		tb.Fatalf("writing %d bytes: %v", len(b), err)
	}
}

// mustRead reads exactly n bytes from r or fails tb.
func mustRead(tb testing.TB, r io.Reader, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		tb.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// mustReadPacket reads one MQTT packet from r or fails tb.
func mustReadPacket(tb testing.TB, r io.Reader) []byte {
	tb.Helper()
	pkt, err := readPacket(r)
	if err != nil {
		tb.Fatalf("reading a packet: %v", err)
	}
	return pkt
}

// openSession has dev send connect, takes the broker's connection, checks it received
// wantUpstream (connect itself when nil), answers connackAccepted, and checks that dev
// receives it. It returns the broker's side of the session.
func openSession(tb testing.TB, dev *tls.Conn, b *broker, connect, wantUpstream []byte) net.Conn {
	tb.Helper()
	if wantUpstream == nil {
		wantUpstream = connect
	}
	mustWrite(tb, dev, connect)
	up := b.next(tb)
	if got := mustReadPacket(tb, up); !bytes.Equal(got, wantUpstream) {
		tb.Fatalf("the broker received CONNECT\n% x\nwant\n% x", got, wantUpstream)
	}
	mustWrite(tb, up, connackAccepted)
	if got := mustReadPacket(tb, dev); !bytes.Equal(got, connackAccepted) {
		tb.Fatalf("the device received % x, want the broker's CONNACK % x", got, connackAccepted)
	}
	return up
}

// readEOF reads r to its end and returns what came before it; an error other than a
// clean end of stream fails tb.
func readEOF(tb testing.TB, r io.Reader) []byte {
	tb.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatalf("reading to the end of stream: %v (after %d bytes)", err, len(b))
	}
	return b
}

// ---- the log ----

// auditLine holds the fields of the audit line ("message":"connection") the tests check.
type auditLine struct {
	Outcome           string `json:"outcome"`
	Reason            string `json:"reason"`
	Identity          string `json:"identity"`
	MQTTLevel         int    `json:"mqtt_level"`
	ClientID          string `json:"client_id"`
	ClientIDForwarded string `json:"client_id_forwarded"`
	BytesIn           int64  `json:"bytes_in"`
	BytesOut          int64  `json:"bytes_out"`
	EndedBy           string `json:"ended_by"`
}

// logLine is one line of the server's JSON log.
type logLine struct {
	Level   string `json:"level"`
	Message string `json:"message"`
	auditLine
}

// lineLog is the server's log writer: it keeps the lines and lets tests wait for them.
// zerolog writes each event with one Write; lineLog is safe for concurrent use.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []logLine
	raw     []string
	changed chan struct{} // closed and replaced whenever a line arrives
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	consumed := 0
	for {
		i := bytes.IndexByte(l.partial[consumed:], '\n')
		if i < 0 {
			break
		}
		line := l.partial[consumed : consumed+i]
		consumed += i + 1
		var ll logLine
		if err := json.Unmarshal(line, &ll); err != nil {
			ll.Message = "unparsable log line: " + string(line)
		}
		l.lines = append(l.lines, ll)
		l.raw = append(l.raw, string(line))
	}
	l.partial = append(l.partial[:0], l.partial[consumed:]...)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// count returns how many lines carry message msg.
func (l *lineLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ll := range l.lines {
		if ll.Message == msg {
			n++
		}
	}
	return n
}

// waitAudits waits until at least n audit lines have been written and returns them all.
func (l *lineLog) waitAudits(tb testing.TB, n int) []auditLine {
	tb.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		var got []auditLine
		for _, ll := range l.lines {
			if ll.Message == "connection" {
				got = append(got, ll.auditLine)
			}
		}
		changed := l.changed
		raw := strings.Join(l.raw, "\n")
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-timeout.C:
			tb.Fatalf("waited for %d audit lines, have %d; the log:\n%s", n, len(got), raw)
		}
	}
}

// waitAudit waits for the first audit line and checks it is want.
func (l *lineLog) waitAudit(tb testing.TB, want auditLine) {
	tb.Helper()
	if got := l.waitAudits(tb, 1)[0]; got != want {
		tb.Errorf("audit line\n got %+v\nwant %+v", got, want)
	}
}

// String returns the whole log, for failure messages.
func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}
