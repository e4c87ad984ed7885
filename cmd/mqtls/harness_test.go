package main

// The end-to-end harness: it runs mqtls in-process through newApp, starts a real Mosquitto
// broker per test on a free loopback port, and drives real peers (mosquitto_pub/sub, paho,
// hand-built MQTT packets over crypto/tls) through it. Nothing here sleeps to wait: tests
// wait for a log line (from mqtls or from the broker) under a deadline.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/handshake/tlspsk"
	"github.com/mqtls/mqtls/internal/logbuf"
)

// installHint is what a developer runs when a peer binary the tests need is missing.
const installHint = "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients openssl gnutls-bin (or run ./scripts/test.sh, which does it)"

// waitTimeout bounds every wait for something that should happen promptly.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	before := liveGoroutines()
	code := m.Run()
	if code == 0 {
		if after, ok := waitGoroutines(len(before), 5*time.Second); !ok {
			fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines before the tests, %d after:\n\n%s\n",
				len(before), len(after), strings.Join(after, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// liveGoroutines returns the stacks of the goroutines a test could have leaked: all but the
// caller and those the runtime, the testing package and os/signal keep for the process.
func liveGoroutines() []string {
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
		if i == 0 { // the calling goroutine is listed first
			continue
		}
		switch {
		case strings.Contains(g, "testing.(*M)."),
			strings.Contains(g, "testing.tRunner("),
			strings.Contains(g, "testing.runFuzzing"),
			strings.Contains(g, "os/signal."),
			strings.Contains(g, "runtime.ensureSigM"),
			strings.Contains(g, "runtime/trace"),
			// the process's shared epoll loop for parked sessions, started once and kept
			strings.Contains(g, "proxy.(*poller).loop"):
			continue
		}
		out = append(out, g)
	}
	return out
}

// waitGoroutines waits up to timeout for the leak-relevant goroutine count to come back to
// at most want. It polls: a goroutine exiting signals nothing we could wait on, and this is
// only used for leak checks.
func waitGoroutines(want int, timeout time.Duration) ([]string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		gs := liveGoroutines()
		if len(gs) <= want {
			return gs, true
		}
		if time.Now().After(deadline) {
			return gs, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkGoroutines records the goroutines alive now and, when the test ends, fails it if
// more are alive after its cleanups ran. Only sequential tests may use it.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := len(liveGoroutines())
	t.Cleanup(func() {
		if after, ok := waitGoroutines(before, 5*time.Second); !ok {
			t.Errorf("goroutine leak: %d before the test, %d after:\n\n%s", before, len(after), strings.Join(after, "\n\n"))
		}
	})
}

// lineLog is an io.Writer that keeps what is written to it as lines and lets tests wait for
// a line. It is safe for concurrent use.
type lineLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	changed chan struct{} // closed (and replaced) whenever a line is added
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(bytes.TrimRight(l.partial[:i], "\r")))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		l.partial = append([]byte(nil), l.partial...)
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// Lines returns a copy of the complete lines written so far.
func (l *lineLog) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// String returns everything written so far, for failure messages.
func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n") + "\n" + string(l.partial)
}

// wait returns the first line (already written or written later) for which match is true.
// It gives up after timeout, or as soon as abort is closed and no line matched.
func (l *lineLog) wait(timeout time.Duration, abort <-chan struct{}, match func(string) bool) (string, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next := 0
	aborted := false
	for {
		l.mu.Lock()
		for ; next < len(l.lines); next++ {
			if match(l.lines[next]) {
				line := l.lines[next]
				l.mu.Unlock()
				return line, true
			}
		}
		changed := l.changed
		l.mu.Unlock()
		if aborted {
			return "", false
		}
		select {
		case <-changed:
		case <-abort:
			aborted = true // one more look: the line may have been written just before
			abort = nil
		case <-timer.C:
			return "", false
		}
	}
}

// count returns how many lines written so far match.
func (l *lineLog) count(match func(string) bool) int {
	n := 0
	for _, line := range l.Lines() {
		if match(line) {
			n++
		}
	}
	return n
}

// logEntry is one JSON log line of mqtls.
type logEntry map[string]any

func parseEntry(line string) (logEntry, bool) {
	var e logEntry
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		return nil, false
	}
	return e, true
}

// str returns field k as a string ("" when absent); numbers are formatted without exponent.
func (e logEntry) str(k string) string {
	switch v := e[k].(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

// num returns field k as a number, and whether it was one.
func (e logEntry) num(k string) (float64, bool) {
	v, ok := e[k].(float64)
	return v, ok
}

// server is one mqtls "serve" running in-process.
type server struct {
	addr     string
	listener string   // the "listener" field of its "listening" line
	logs     *lineLog // stdout: the JSON log
	stderr   *lineLog
	cancel   context.CancelFunc
	done     chan struct{} // closed when RunContext returned
	err      error         // what RunContext returned; read only after done is closed
}

// startServer runs `mqtls serve --listen 127.0.0.1:0` plus args and waits until it logs
// the address it listens on. The server is stopped (and must stop cleanly) when t ends.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	return startServerWith(t, signals{}, args...)
}

// stop cancels the server's context and waits for RunContext to return.
func (s *server) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case <-s.done:
		if s.err != nil {
			t.Errorf("mqtls serve returned %v after its context was cancelled, want nil", s.err)
		}
	case <-time.After(waitTimeout):
		t.Errorf("mqtls serve did not return within %v of its context being cancelled", waitTimeout)
	}
}

// audit waits for the audit line ("message":"connection") for which match is true.
func (s *server) audit(t *testing.T, match func(logEntry) bool) logEntry {
	t.Helper()
	line, ok := s.logs.wait(waitTimeout, nil, func(line string) bool {
		e, ok := parseEntry(line)
		return ok && e.str("message") == "connection" && match(e)
	})
	if !ok {
		t.Fatalf("no matching audit line (\"message\":\"connection\") within %v", waitTimeout)
	}
	e, _ := parseEntry(line)
	return e
}

// auditFrom waits for the audit line of the connection made from local address remote.
func (s *server) auditFrom(t *testing.T, remote string) logEntry {
	t.Helper()
	return s.audit(t, func(e logEntry) bool { return e.str("remote") == remote })
}

// wantAudit checks fields of an audit line.
func wantAudit(t *testing.T, e logEntry, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := e.str(k); got != v {
			t.Errorf("audit %s = %q, want %q (line: %v)", k, got, v, map[string]any(e))
		}
	}
}

// peerBin returns the path of a peer program the tests run, failing the test (never
// skipping it) with the install command when it is missing.
func peerBin(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); isExecutable(p) { // Debian puts mosquitto there
		return p
	}
	t.Fatalf("%s is not installed; install it with: %s", name, installHint)
	return ""
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// freePort returns a loopback TCP port nobody listened on a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// broker is a real Mosquitto started for one test.
type broker struct {
	addr   string
	log    *lineLog
	exited chan struct{}
	stop   func() // SIGTERM, and wait for it to exit

	mu     sync.Mutex
	probes map[string]bool // local addresses of the harness's own connections
}

// Mosquitto ACL files the binding tests deploy, the way a user would.
const (
	aclClientID = "pattern write devices/%c/#\npattern read #\n"
	aclUsername = "pattern write devices/%u/#\npattern read #\n"
)

// startBroker starts Mosquitto on a free loopback port with the given ACL file contents
// ("" for none). It is stopped when t ends.
func startBroker(t *testing.T, acl string) *broker {
	t.Helper()
	var lastErr error
	for range 3 { // the free port may be taken between freePort and mosquitto's bind
		b, err := startBrokerOn(t, freePort(t), acl)
		if err == nil {
			return b
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return nil
}

// startBrokerOn starts Mosquitto on 127.0.0.1:port and waits until it accepts connections.
func startBrokerOn(t *testing.T, port int, acl string) (*broker, error) {
	t.Helper()
	return startBrokerConf(t, port, acl, "")
}

// startBrokerConf is startBrokerOn with further mosquitto.conf lines (more listeners, a
// bridge) after the plain listener the harness uses.
func startBrokerConf(t *testing.T, port int, acl, extra string) (*broker, error) {
	t.Helper()
	bin := peerBin(t, "mosquitto")
	dir := t.TempDir()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type all\nconnection_messages true\n", port)
	if os.Geteuid() == 0 {
		// Started as root, Mosquitto switches to the "mosquitto" user unless told otherwise.
		conf += "user root\n"
	}
	if acl != "" {
		aclFile, err := handshaketest.WriteFile(dir, "acl", []byte(acl))
		if err != nil {
			t.Fatal(err)
		}
		conf += "acl_file " + aclFile + "\n"
	}
	confFile, err := handshaketest.WriteFile(dir, "mosquitto.conf", []byte(conf+extra))
	if err != nil {
		t.Fatal(err)
	}

	b := &broker{
		addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		log:    newLineLog(),
		exited: make(chan struct{}),
		probes: map[string]bool{},
	}
	cmd := exec.Command(bin, "-c", confFile)
	cmd.Stdout = b.log // log_dest stderr: unbuffered, so lines arrive as they are logged
	cmd.Stderr = b.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting mosquitto: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		close(b.exited)
	}()
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-b.exited:
			case <-time.After(5 * time.Second):
				t.Errorf("mosquitto (pid %d) ignored SIGTERM for 5s; killing it", cmd.Process.Pid)
				_ = cmd.Process.Kill()
				<-b.exited
			}
		})
	}
	b.stop = stop

	if _, ok := b.log.wait(waitTimeout, b.exited, func(l string) bool { return strings.Contains(l, " running") }); !ok {
		stop()
		return nil, fmt.Errorf("mosquitto on port %d did not start:\n%s", port, b.log)
	}
	// Running means its listener is open; make sure it really accepts before going on.
	deadline := time.Now().Add(5 * time.Second)
	for backoff := 5 * time.Millisecond; ; backoff *= 2 {
		c, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			b.addProbe(c.LocalAddr().String())
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("mosquitto on %s does not accept connections: %v\n%s", b.addr, err, b.log)
		}
		time.Sleep(backoff)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", b.log)
		}
	})
	return b, nil
}

func (b *broker) addProbe(local string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probes[local] = true
}

func (b *broker) isProbe(remote string) bool {
	if _, ok := startProbes.Load(b.addr + " " + remote); ok {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.probes[remote]
}

// startProbes are the look mqtls takes at the broker when it starts ("broker
// reachable"), not a device's connection: "broker-address local-address", since a later
// test's connection to another broker may reuse the local port.
var startProbes sync.Map

// noteStartProbes records the start-up probes a server's log names. The probe runs before
// the listeners start, so its line is there once "listening" is.
func noteStartProbes(logs *lineLog) {
	for _, l := range logs.Lines() {
		if e, ok := parseEntry(l); ok && e.str("message") == "broker reachable" {
			startProbes.Store(e.str("upstream")+" "+e.str("local"), true)
		}
	}
}

// waitLog waits for a broker log line containing substr.
func (b *broker) waitLog(t *testing.T, substr string) string {
	t.Helper()
	line, ok := b.log.wait(waitTimeout, b.exited, func(l string) bool { return strings.Contains(l, substr) })
	if !ok {
		t.Fatalf("mosquitto did not log %q within %v", substr, waitTimeout)
	}
	return line
}

// hasLog reports whether the broker logged a line containing substr so far.
func (b *broker) hasLog(substr string) bool {
	return b.log.count(func(l string) bool { return strings.Contains(l, substr) }) > 0
}

const newConnection = "New connection from "

// connections returns how many TCP connections the broker has accepted from anyone but the
// harness. It first makes a connection of its own and waits until the broker logs it: the
// broker accepts in order, so any connection mqtls opened before this call is counted.
func (b *broker) connections(t *testing.T) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", b.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dialing the broker: %v", err)
	}
	local := c.LocalAddr().String()
	b.addProbe(local)
	b.waitLog(t, newConnection+local+" ")
	c.Close()
	return b.log.count(func(l string) bool {
		i := strings.Index(l, newConnection)
		if i < 0 {
			return false
		}
		from, _, _ := strings.Cut(l[i+len(newConnection):], " ")
		return !b.isProbe(from)
	})
}

// wantNoConnections fails the test if anything but the harness connected to the broker.
func (b *broker) wantNoConnections(t *testing.T) {
	t.Helper()
	if n := b.connections(t); n != 0 {
		t.Errorf("the broker saw %d connection(s) through mqtls, want none", n)
	}
}

// pki is a throw-away PKI: a CA, a server certificate for 127.0.0.1 and device certificates.
type pki struct {
	dir                               string
	ca                                *handshaketest.CA
	caFile, serverCertFile, serverKey string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	var err error
	if p.ca, err = handshaketest.NewCA("mqtls e2e CA"); err != nil {
		t.Fatal(err)
	}
	if p.caFile, err = handshaketest.WriteFile(p.dir, "ca.crt", p.ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	srv, err := p.ca.Issue(handshaketest.Template{
		CommonName:  "localhost",
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.serverCertFile, p.serverKey, err = srv.Files(p.dir, "server"); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverArgs are the mqtls flags for one-way TLS (mutual false) or mutual TLS in front of
// upstream.
func (p *pki) serverArgs(upstream string, mutual bool) []string {
	args := []string{"--upstream", upstream, "--cert", p.serverCertFile, "--key", p.serverKey}
	if mutual {
		args = append(args, "--client-ca", p.caFile)
	}
	return args
}

// device is a client: an optional certificate, and how to trust the server.
type device struct {
	cert     *handshaketest.Cert // nil: no client certificate
	certFile string
	keyFile  string
	caFile   string
	p        *pki
}

// anonymous is a client with no certificate (one-way TLS).
func (p *pki) anonymous() device { return device{caFile: p.caFile, p: p} }

// device issues a client certificate with common name cn from p's CA.
func (p *pki) device(t *testing.T, cn string) device {
	t.Helper()
	return p.deviceFrom(t, p.ca, handshaketest.Template{CommonName: cn})
}

// deviceFrom issues a client certificate from ca (which may not be p's CA).
func (p *pki) deviceFrom(t *testing.T, ca *handshaketest.CA, tmpl handshaketest.Template) device {
	t.Helper()
	c, err := ca.Issue(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("device-%s-%s", tmpl.CommonName, c.Cert.SerialNumber.Text(16))
	certFile, keyFile, err := c.Files(p.dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return device{cert: c, certFile: certFile, keyFile: keyFile, caFile: p.caFile, p: p}
}

// tlsConfig is the device's crypto/tls client configuration.
func (d device) tlsConfig() *tls.Config {
	cfg := &tls.Config{RootCAs: d.p.ca.Pool(), ServerName: "127.0.0.1"}
	if d.cert != nil {
		// Always present the certificate: crypto/tls would otherwise send none when the
		// server's acceptable CAs do not include its issuer, and a device from another CA
		// would look like one without a certificate.
		cert := d.cert.TLSCertificate()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg
}

// mosquittoArgs are the connection options of mosquitto_pub and mosquitto_sub.
func (d device) mosquittoArgs(addr, clientID, version string) []string {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-h", host, "-p", port, "--cafile", d.caFile, "-i", clientID, "-V", version}
	if d.cert != nil {
		args = append(args, "--cert", d.certFile, "--key", d.keyFile)
	}
	return args
}

// pub runs mosquitto_pub once and returns its combined output and error.
func (d device) pub(t *testing.T, addr, clientID, version, topic, msg string, extra ...string) (string, error) {
	t.Helper()
	bin := peerBin(t, "mosquitto_pub")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := append(d.mosquittoArgs(addr, clientID, version), "-t", topic, "-m", msg)
	out, err := exec.CommandContext(ctx, bin, append(args, extra...)...).CombinedOutput()
	return string(out), err
}

// mustPub is pub that fails the test when mosquitto_pub fails.
func (d device) mustPub(t *testing.T, addr, clientID, version, topic, msg string, extra ...string) {
	t.Helper()
	if out, err := d.pub(t, addr, clientID, version, topic, msg, extra...); err != nil {
		t.Fatalf("mosquitto_pub -i %s -t %s: %v\n%s", clientID, topic, err, out)
	}
}

// subscriber is a running mosquitto_sub.
type subscriber struct {
	out  lockedBuffer
	done chan struct{}
	err  error
}

type lockedBuffer = logbuf.Buffer

// sub starts mosquitto_sub printing "topic payload" lines and exiting after count messages.
// The caller waits for the broker's SUBACK (b.waitLog(t, "Sending SUBACK to "+id)) before
// publishing.
func (d device) sub(t *testing.T, addr, clientID, version, topic string, count int) *subscriber {
	t.Helper()
	bin := peerBin(t, "mosquitto_sub")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	args := append(d.mosquittoArgs(addr, clientID, version), "-t", topic, "-v", "-C", strconv.Itoa(count), "-W", "20")
	cmd := exec.CommandContext(ctx, bin, args...)
	s := &subscriber{done: make(chan struct{})}
	cmd.Stdout = &s.out
	cmd.Stderr = &s.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting mosquitto_sub: %v", err)
	}
	go func() {
		s.err = cmd.Wait()
		cancel()
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// lines waits for mosquitto_sub to exit and returns what it printed.
func (s *subscriber) lines(t *testing.T) []string {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("mosquitto_sub did not exit")
	}
	if s.err != nil {
		t.Fatalf("mosquitto_sub: %v\n%s", s.err, s.out.String())
	}
	return strings.Split(strings.TrimSpace(s.out.String()), "\n")
}

// dialTLS connects to addr and completes the TLS handshake as d.
func (d device) dialTLS(addr string) (*tls.Conn, error) {
	conn, _, err := d.handshake(addr)
	return conn, err
}

// handshake connects to addr and runs the TLS handshake as d. It returns the local
// address (the "remote" of mqtls's audit line) even when the handshake fails; the
// connection is returned open only on success.
func (d device) handshake(addr string) (*tls.Conn, string, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, "", err
	}
	local := raw.LocalAddr().String()
	conn := tls.Client(raw, d.tlsConfig())
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, local, err
	}
	return conn, local, nil
}

// mustDialTLS is dialTLS that fails the test on error and closes the conn when t ends.
func (d device) mustDialTLS(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	conn, err := d.dialTLS(addr)
	if err != nil {
		t.Fatalf("TLS handshake with mqtls: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// paho connects d to addr with paho.golang over MQTT 5.0. It returns the CONNACK and
// paho's error; when the connection is up it is disconnected when t ends. Received
// publishes are sent on msgs when it is not nil.
func (d device) paho(t *testing.T, addr string, cp *paho.Connect, msgs chan<- *paho.Publish) (*paho.Client, *paho.Connack, error) {
	t.Helper()
	conn, err := d.dialTLS(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	cfg := paho.ClientConfig{Conn: packets.NewThreadSafeConn(conn)}
	if msgs != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case msgs <- pr.Packet:
				default:
				}
				return true, nil
			},
		}
	}
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

// MQTT packets built by hand, for what the clients above cannot send.

// connectPacket returns a minimal clean-session CONNECT for protocol level 3 (MQTT 3.1,
// "MQIsdp"), 4 (3.1.1) or 5 (5.0), with keep-alive 60s and the given client ID.
func connectPacket(level byte, clientID string) []byte {
	name := "MQTT"
	if level == 3 {
		name = "MQIsdp" // [MQTT 3.1 §3.1]
	}
	var body []byte
	body = appendString(body, name) // protocol name
	body = append(body, level)      // protocol level
	body = append(body, 0x02)       // connect flags: clean session only
	body = append(body, 0x00, 0x3c) // keep alive: 60s
	if level == 5 {
		body = append(body, 0x00) // properties length: none [MQTT-3.1.2.11]
	}
	body = appendString(body, clientID) // payload: client identifier
	return appendPacket(nil, 0x10, body)
}

func appendString(b []byte, s string) []byte {
	b = append(b, byte(len(s)>>8), byte(len(s)))
	return append(b, s...)
}

// appendPacket appends a packet with first byte typ and the given body.
func appendPacket(b []byte, typ byte, body []byte) []byte {
	b = append(b, typ)
	n := len(body)
	for {
		digit := byte(n % 128)
		n /= 128
		if n > 0 {
			digit |= 0x80
		}
		b = append(b, digit)
		if n == 0 {
			break
		}
	}
	return append(b, body...)
}

// readPacket reads one MQTT packet and returns its first byte and body. It reads no byte
// beyond the packet.
func readPacket(r io.Reader) (byte, []byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, nil, err
	}
	typ := b[0]
	n, mult := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return typ, nil, errors.New("malformed remaining length")
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return typ, nil, err
		}
		n += int(b[0]&0x7f) * mult
		mult *= 128
		if b[0]&0x80 == 0 {
			break
		}
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return typ, body, err
}

// rawConnect sends connectPacket(level, clientID) on conn and returns the CONNACK's return
// code (3.x) or reason code (5.0).
func rawConnect(t *testing.T, conn net.Conn, level byte, clientID string) byte {
	t.Helper()
	if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(connectPacket(level, clientID)); err != nil {
		t.Fatalf("writing CONNECT: %v", err)
	}
	typ, body, err := readPacket(conn)
	if err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	if typ != 0x20 || len(body) < 2 {
		t.Fatalf("got packet %#x % x, want a CONNACK", typ, body)
	}
	return body[1]
}

// wantClosed reads from conn until it fails, and fails the test if the peer sent anything
// or the connection is still open after within.
func wantClosed(t *testing.T, conn net.Conn, within time.Duration) {
	t.Helper()
	if got := readUntilClosed(t, conn, within); len(got) > 0 {
		t.Errorf("received % x before the connection closed, want nothing (no CONNACK)", got)
	}
}

// wantClosedRaw is wantClosed for a plain TCP connection to the TLS port: the server may
// answer with a TLS alert record, but with nothing else.
func wantClosedRaw(t *testing.T, conn net.Conn, within time.Duration) {
	t.Helper()
	if got := readUntilClosed(t, conn, within); len(got) > 0 && got[0] != 0x15 {
		t.Errorf("received % x before the connection closed, want nothing or a TLS alert", got)
	}
}

// readUntilClosed reads from conn until it fails and returns what it read; it fails the
// test if the connection is still open after within.
func readUntilClosed(t *testing.T, conn net.Conn, within time.Duration) []byte {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				t.Fatalf("connection still open after %v (received % x)", within, got)
			}
			return got
		}
	}
}

// TLS-PSK devices, for the listeners that take pre-shared keys.

// pskDevice is a TLS-PSK client: an identity and its key in hex, as mosquitto_pub takes it.
type pskDevice struct {
	identity string
	keyHex   string
}

// mosquittoArgs are the connection options of mosquitto_pub and mosquitto_sub for d. With
// --psk the clients trust no certificate, so there is no --cafile.
func (d pskDevice) mosquittoArgs(addr, clientID, version string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"-h", host, "-p", port, "--psk", d.keyHex, "--psk-identity", d.identity, "-i", clientID, "-V", version}
}

// pub runs mosquitto_pub once as d and returns its combined output and error.
func (d pskDevice) pub(t *testing.T, addr, clientID, version, topic, msg string) (string, error) {
	t.Helper()
	return runPeerBin(t, "mosquitto_pub", append(d.mosquittoArgs(addr, clientID, version), "-t", topic, "-m", msg)...)
}

// mustPub is pub that fails the test when mosquitto_pub fails.
func (d pskDevice) mustPub(t *testing.T, addr, clientID, version, topic, msg string) {
	t.Helper()
	if out, err := d.pub(t, addr, clientID, version, topic, msg); err != nil {
		t.Fatalf("mosquitto_pub --psk-identity %s -i %s -t %s: %v\n%s", d.identity, clientID, topic, err, out)
	}
}

// sub starts mosquitto_sub as d; see device.sub.
func (d pskDevice) sub(t *testing.T, addr, clientID, version, topic string, count int) *subscriber {
	t.Helper()
	return startSub(t, append(d.mosquittoArgs(addr, clientID, version), "-t", topic, "-v", "-C", strconv.Itoa(count), "-W", "20")...)
}

// runPeerBin runs a peer program with stdin at EOF and returns its combined output.
func runPeerBin(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	bin := peerBin(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within 20s:\n%s", name, strings.Join(args, " "), out)
	}
	return string(out), err
}

// startSub starts mosquitto_sub with args; it is stopped when t ends.
func startSub(t *testing.T, args ...string) *subscriber {
	t.Helper()
	bin := peerBin(t, "mosquitto_sub")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, bin, args...)
	s := &subscriber{done: make(chan struct{})}
	cmd.Stdout = &s.out
	cmd.Stderr = &s.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting mosquitto_sub: %v", err)
	}
	go func() {
		s.err = cmd.Wait()
		cancel()
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// dialPSK connects to addr and runs the TLS-PSK handshake as identity with key, using the
// package's own client. It returns the local address (the "remote" of the audit line) even
// when the handshake fails; the connection is returned open only on success and is closed
// when t ends.
func dialPSK(t *testing.T, addr string, cfg *tlspsk.ClientConfig) (*tlspsk.Conn, string, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	local := raw.LocalAddr().String()
	conn := tlspsk.Client(raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, local, err
	}
	t.Cleanup(func() { conn.Close() })
	return conn, local, nil
}

// pskAddOutput matches what `mqtls psk add` prints for the device side.
var pskAddOutput = regexp.MustCompile(`(?m)^device side: mosquitto_pub --psk ([0-9a-f]{64}) --psk-identity (\S+) \.\.\.$`)

// runApp runs the mqtls command line in-process and returns what it wrote to stdout.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	err := newApp(&stdout, &stderr).RunContext(ctx, append([]string{"mqtls"}, args...))
	return stdout.String(), err
}

// addPSKDevice runs `mqtls psk add --file file identity` and returns the device with the
// key it printed.
func addPSKDevice(t *testing.T, file, identity string) pskDevice {
	t.Helper()
	out, err := runApp(t, "psk", "add", "--file", file, identity)
	if err != nil {
		t.Fatalf("mqtls psk add --file %s %s: %v", file, identity, err)
	}
	m := pskAddOutput.FindStringSubmatch(out)
	if m == nil || m[2] != identity {
		t.Fatalf("mqtls psk add printed %q, want the mosquitto_pub arguments for %s", out, identity)
	}
	return pskDevice{identity: identity, keyHex: m[1]}
}

// DTLS listeners.

// dtlsAddr waits for the "listening" line of the DTLS listener (started with --dtls-listen)
// and returns the UDP address it logged.
func (s *server) dtlsAddr(t *testing.T) string {
	t.Helper()
	line, ok := s.logs.wait(waitTimeout, s.done, func(line string) bool {
		e, ok := parseEntry(line)
		return ok && e.str("message") == "listening" && e.str("listener") == "dtls" && e.str("addr") != ""
	})
	if !ok {
		t.Fatalf("mqtls did not log \"listening\" for the dtls listener within %v", waitTimeout)
	}
	e, _ := parseEntry(line)
	return e.str("addr")
}

// Operations: servers started with signals, and their admin listener.

// startServerWith is startServer with the signals serve hears besides its context: a
// SIGHUP channel and a second-signal (hard stop) channel; a nil channel never fires.
func startServerWith(t *testing.T, sig signals, args ...string) *server {
	t.Helper()
	s := &server{logs: newLineLog(), stderr: newLineLog(), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	argv := append([]string{"mqtls", "serve", "--listen", "127.0.0.1:0", "--log-level", "debug"}, args...)
	go func() {
		defer close(s.done)
		s.err = newAppWith(s.logs, s.stderr, sig).RunContext(ctx, argv)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mqtls %s\nstdout:\n%s\nstderr:\n%s", strings.Join(argv[1:], " "), s.logs, s.stderr)
		}
	})
	t.Cleanup(func() { s.stop(t) })

	line, ok := s.logs.wait(waitTimeout, s.done, func(line string) bool {
		e, ok := parseEntry(line)
		return ok && e.str("message") == "listening" && e.str("addr") != "" && e.str("listener") == "tcp"
	})
	if !ok {
		s.cancel()
		<-s.done
		t.Fatalf("mqtls did not log \"listening\" (RunContext returned %v)", s.err)
	}
	e, _ := parseEntry(line)
	s.addr, s.listener = e.str("addr"), e.str("listener")
	noteStartProbes(s.logs)
	return s
}

// adminAddr waits for the "admin listening" line of a server started with --admin-listen
// and returns the address it names.
func (s *server) adminAddr(t *testing.T) string {
	t.Helper()
	line, ok := s.logs.wait(waitTimeout, s.done, func(line string) bool {
		e, ok := parseEntry(line)
		return ok && e.str("message") == "admin listening" && e.str("addr") != ""
	})
	if !ok {
		t.Fatalf("mqtls did not log \"admin listening\" with an addr within %v", waitTimeout)
	}
	e, _ := parseEntry(line)
	return e.str("addr")
}

// waitLine waits for a log line with the given message for which match (nil: any) is
// true, and returns it.
func (s *server) waitLine(t *testing.T, message string, match func(logEntry) bool) logEntry {
	t.Helper()
	line, ok := s.logs.wait(waitTimeout, nil, func(line string) bool {
		e, ok := parseEntry(line)
		return ok && e.str("message") == message && (match == nil || match(e))
	})
	if !ok {
		t.Fatalf("mqtls did not log %q within %v", message, waitTimeout)
	}
	e, _ := parseEntry(line)
	return e
}
