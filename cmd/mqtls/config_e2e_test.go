package main

// End-to-end tests of `serve --config`: several listeners with their own policies at once,
// every class of config error, reload by SIGHUP, a unix-socket upstream, and the PROXY
// protocol in both directions. Real Mosquitto and real clients wherever a broker is the
// other side; a test upstream where the PROXY header itself is under test.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"

	"github.com/mqtls/mqtls/handshake/tlspsk"
	"github.com/mqtls/mqtls/internal/config"
)

// TestConfigListenersWithOwnPolicies serves three listeners from one file against one
// Mosquitto, each with its own handshake and binding policy: mutual TLS enforcing the
// certificate's CN as client ID, TLS-PSK rewriting the client ID to the PSK identity, and
// one-way TLS leaving the client ID alone.
func TestConfigListenersWithOwnPolicies(t *testing.T) {
	checkGoroutines(t)
	b := startBroker(t, "")
	p := newPKI(t)
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	dev := addPSKDevice(t, pskFile, "dev-1")
	// busy_poll: every listener must work the same with the busy poller on.
	file := writeConfig(t, dir, "mqtls.yaml", `
drain_timeout: 5s
busy_poll: 1ms
listeners:
  - name: mtls
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{cert}}, key: {{key}}, client_ca: {{ca}}}
    policy: {client_id: enforce}
  - name: psk
    listen: 127.0.0.1:0
    upstream: {{broker}}
    psk: {file: {{psk}}}
    policy: {client_id: rewrite}
  - name: tls
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{cert}}, key: {{key}}}
`, map[string]string{"broker": b.addr, "cert": p.serverCertFile, "key": p.serverKey, "ca": p.caFile, "psk": pskFile})
	if out, err := runApp(t, "check", "--config", file); err != nil {
		t.Fatalf("mqtls check --config: %v\n%s", err, out)
	}
	s := startConfigServer(t, signals{}, file, "mtls", "psk", "tls")
	mtls, psk, oneWay := s.addrOf(t, "mtls"), s.addrOf(t, "psk"), s.addrOf(t, "tls")

	t.Run("mtls enforce", func(t *testing.T) {
		d := p.device(t, "sensor-1")
		d.mustPub(t, mtls, "sensor-1", "mqttv311", "devices/sensor-1/temp", "21.5")
		b.waitLog(t, " as sensor-1 ")
		wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == "sensor-1" }), map[string]string{
			"listener": "mtls", "outcome": "forwarded", "identity": "sensor-1", "client_id_forwarded": "sensor-1",
		})
		out, err := d.pub(t, mtls, "spoof", "mqttv311", "devices/spoof/temp", "1")
		if err == nil || !strings.Contains(out, "identifier rejected") {
			t.Errorf("mosquitto_pub -i spoof with sensor-1's certificate: %v, %q; want CONNACK identifier rejected", err, out)
		}
		wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == "spoof" }), map[string]string{
			"listener": "mtls", "outcome": "rejected", "reason": "client_id_mismatch", "identity": "sensor-1",
		})
	})

	t.Run("psk rewrite", func(t *testing.T) {
		dev.mustPub(t, psk, "whatever-i-like", "mqttv311", "devices/dev-1/temp", "20")
		b.waitLog(t, " as dev-1 ")
		wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == "whatever-i-like" }), map[string]string{
			"listener": "psk", "outcome": "forwarded", "identity": "dev-1", "psk_identity": "dev-1", "client_id_forwarded": "dev-1",
		})
	})

	t.Run("one-way tls off", func(t *testing.T) {
		conn, local, err := p.anonymous().handshake(oneWay)
		if err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		if code := rawConnect(t, conn, 4, "free-choice"); code != 0 {
			t.Fatalf("CONNACK %#x, want 0 (accepted)", code)
		}
		b.waitLog(t, " as free-choice ")
		conn.Close() // the audit line is written when the session ends
		wantAudit(t, s.auditFrom(t, local), map[string]string{
			"listener": "tls", "outcome": "forwarded", "identity": "", "client_id": "free-choice", "client_id_forwarded": "free-choice",
		})
	})
}

// TestConfigErrors: every class of config error, with the exact message check gives (and
// serve, for a file that cannot be loaded).
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	const listener = "  - name: a\n    listen: 127.0.0.1:8883\n    tls: {cert: /x.crt, key: /x.key}\n"
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown key", "listeners:\n" + listener + "    polcy: {client_id: enforce}\n",
			"unmarshal errors:\n  line 5: unknown key polcy in a listener (did you mean policy?)"},
		{"unknown nested key", "listeners:\n  - name: a\n    listen: 127.0.0.1:8883\n    tls:\n      cert: /x.crt\n      client_cert: /ca.crt\n",
			"unmarshal errors:\n  line 6: unknown key client_cert in tls (did you mean cert?)"},
		{"unknown top-level key", "listener:\n" + listener,
			"unmarshal errors:\n  line 1: unknown key listener at the top level (did you mean listeners?)"},
		{"bad type", "listeners:\n" + listener + "    limits:\n      max_connections: lots\n",
			"unmarshal errors:\n  line 6: cannot unmarshal !!str `lots` into int"},
		{"listener not a mapping", "listeners:\n  - [a, b]\n",
			"unmarshal errors:\n  line 2: cannot unmarshal !!seq into a listener"},
		{"bad duration", "listeners:\n" + listener + "    timeouts:\n      idle: 10 minutes\n",
			`line 6: "10 minutes" is not a duration like 10s, 5m or 720h`},
		{"duration without unit", "drain_timeout: 30\nlisteners:\n" + listener,
			`line 1: "30" is not a duration like 10s, 5m or 720h`},
		{"negative memory release", "memory_release_after: -1s\nlisteners:\n" + listener,
			"memory_release_after -1s: must not be negative (0 turns it off)"},
		{"busy poll too long", "busy_poll: 2s\nlisteners:\n" + listener,
			"busy_poll 2s: want 0 (off) to 100ms; the poll holds a CPU this long after each event"},
		{"missing listeners", "drain_timeout: 5s\n",
			"listeners: the file defines none; add at least one"},
		{"empty file", "",
			"listeners: the file defines none; add at least one"},
		{"duplicate name", "listeners:\n" + listener + strings.Replace(listener, "8883", "8884", 1),
			`listeners[1].name "a": listeners[0] has the same name; names must be unique`},
		{"duplicate listen address", "listeners:\n" + listener + strings.Replace(listener, "name: a", "name: b", 1),
			`listeners[1].listen "127.0.0.1:8883": listeners[0] listens there too`},
		{"PSK-only DTLS listener with client_ca", "listeners:\n  - name: d\n    transport: dtls\n    listen: 127.0.0.1:5684\n    psk: {file: /psk}\n    tls: {client_ca: /ca.crt}\n",
			"listeners[0].tls.client_ca needs listeners[0].tls.cert and listeners[0].tls.key: a PSK-only listener has no certificate handshakes"},
		{"unknown transport", "listeners:\n" + listener + "    transport: quic\n",
			`listeners[0].transport "quic": want tcp or dtls`},
		{"several at once", "log: {format: xml}\nlisteners:\n" + listener + "    policy: {client_id: enforce}\n",
			"log.format \"xml\": want json, console or auto\n" +
				"listeners[0].policy.client_id enforce needs an identity, but without listeners[0].tls.client_ca, listeners[0].tls.client_keys or listeners[0].psk.file no device proves one: add listeners[0].tls.client_ca (device certificates), listeners[0].tls.client_keys (pinned device keys) or listeners[0].psk.file (pre-shared keys), or drop listeners[0].policy.client_id enforce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.file, nil)
			out, err := runApp(t, "check", "--config", file)
			want := "config file " + file + ": " + tc.want
			if err == nil || err.Error() != want {
				t.Errorf("mqtls check --config:\n%v\nwant:\n%s", err, want)
			}
			if out != "" {
				t.Errorf("mqtls check printed %q for a file that does not validate, want nothing", out)
			}
		})
	}

	// Files the config names are loaded by check and by serve, not by the parser.
	for _, tc := range []struct {
		name, file, want string
	}{
		{"missing certificate", "listeners:\n  - name: a\n    listen: 127.0.0.1:0\n    tls: {cert: " + dir + "/none.crt, key: " + dir + "/none.key}\n",
			"listener a: listeners[0].tls.cert: open " + dir + "/none.crt: no such file or directory\n" +
				"listener a: listeners[0].tls.key: open " + dir + "/none.key: no such file or directory"},
		{"missing PSK file", "listeners:\n  - name: a\n    listen: 127.0.0.1:0\n    psk: {file: " + dir + "/none.psk}\n",
			"listener a: listeners[0].psk.file: reading PSK file: open " + dir + "/none.psk: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.file, nil)
			if _, err := runApp(t, "check", "--config", file); err == nil || err.Error() != tc.want {
				t.Errorf("mqtls check --config:\n%v\nwant:\n%s", err, tc.want)
			}
			var stdout lockedBuffer
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			err := newApp(&stdout, io.Discard).RunContext(ctx, []string{"mqtls", "serve", "--config", file})
			if err == nil || err.Error() != tc.want {
				t.Errorf("mqtls serve --config:\n%v\nwant:\n%s", err, tc.want)
			}
			if ctx.Err() != nil {
				t.Errorf("serve ran until its context ended, want it to refuse to start")
			}
		})
	}

	// Port 0 asks the system for a free port, so two listeners on it never collide.
	t.Run("port 0 twice is not a duplicate", func(t *testing.T) {
		l := strings.Replace(listener, "8883", "0", 1)
		file := "listeners:\n" + l + strings.Replace(l, "name: a", "name: b", 1)
		if _, err := config.Parse("port0.yaml", []byte(file)); err != nil {
			t.Errorf("two listeners on 127.0.0.1:0: %v, want no error", err)
		}
	})

	t.Run("missing config file", func(t *testing.T) {
		file := filepath.Join(dir, "none.yaml")
		want := "reading config file: open " + file + ": no such file or directory"
		if _, err := runApp(t, "check", "--config", file); err == nil || err.Error() != want {
			t.Errorf("mqtls check --config:\n%v\nwant:\n%s", err, want)
		}
	})
}

// TestConfigReload edits the config file under a running serve and sends SIGHUP (the hup
// channel main feeds from the signal): a listener is added and one removed, while a
// session on a third carries on; then a broken file is refused and the running
// configuration kept.
func TestConfigReload(t *testing.T) {
	checkGoroutines(t)
	b := startBroker(t, "")
	p := newPKI(t)
	dir := t.TempDir()
	const tmpl = `
{{top}}
listeners:
  - name: keep
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{cert}}, key: {{key}}}
  - name: {{second}}
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{cert}}, key: {{key}}}
`
	vars := map[string]string{"broker": b.addr, "cert": p.serverCertFile, "key": p.serverKey, "second": "gone", "top": "drain_timeout: 2s"}
	file := writeConfig(t, dir, "mqtls.yaml", tmpl, vars)
	hup := make(chan struct{}, 1)
	s := startConfigServer(t, signals{hup: hup}, file, "keep", "gone")
	keep, gone := s.addrOf(t, "keep"), s.addrOf(t, "gone")

	// A session on the listener the reload leaves alone.
	session, err := p.anonymous().dialTLS(keep)
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	if code := rawConnect(t, session, 4, "long-lived"); code != 0 {
		t.Fatalf("CONNACK %#x, want 0", code)
	}
	b.waitLog(t, " as long-lived ")

	vars["second"] = "added"
	// Of the top-level settings, busy_poll applies at once; the others are named as
	// waiting for a restart.
	vars["top"] = "drain_timeout: 3s\nbusy_poll: 1ms"
	writeConfig(t, dir, "mqtls.yaml", tmpl, vars)
	hup <- struct{}{}
	s.waitLine(t, "listener added", func(e logEntry) bool { return e.str("listener") == "added" })
	if e := s.waitLine(t, "busy poll changed", nil); e["busy_poll"] != "1ms" {
		t.Errorf("busy poll changed to %v, want 1ms", e["busy_poll"])
	}
	if e := s.waitLine(t, "config reload: these settings take effect when mqtls restarts", nil); fmt.Sprint(e["keys"]) != "[drain_timeout]" {
		t.Errorf("restart-only keys %v, want [drain_timeout]", e["keys"])
	}
	s.waitLine(t, "listener removed", func(e logEntry) bool { return e.str("listener") == "gone" })
	if n := s.logs.count(func(l string) bool {
		e, ok := parseEntry(l)
		return ok && strings.HasPrefix(e.str("message"), "listener ") && e.str("listener") == "keep"
	}); n != 0 {
		t.Errorf("the reload touched listener keep (%d log lines), want it left alone", n)
	}

	added := s.addrOf(t, "added")
	conn, err := p.anonymous().dialTLS(added)
	if err != nil {
		t.Fatalf("TLS handshake with the added listener: %v", err)
	}
	if code := rawConnect(t, conn, 4, "newcomer"); code != 0 {
		t.Fatalf("CONNACK %#x from the added listener, want 0", code)
	}
	b.waitLog(t, " as newcomer ")
	conn.Close()
	mustRefuse(t, gone)
	pingPong(t, session)

	// A file that does not validate: the running listeners stay as they are.
	writeConfig(t, dir, "mqtls.yaml", "listeners:\n  - name: x\n    listen: nowhere\n", nil)
	hup <- struct{}{}
	e := s.waitLine(t, "config reload failed: keeping the running configuration", nil)
	if got := e.str("error"); !strings.Contains(got, `listeners[0].listen "nowhere"`) {
		t.Errorf("reload error %q, want it to name listeners[0].listen", got)
	}
	pingPong(t, session)
	conn, err = p.anonymous().dialTLS(added)
	if err != nil {
		t.Fatalf("TLS handshake with the added listener after a failed reload: %v", err)
	}
	defer conn.Close()
	if code := rawConnect(t, conn, 4, "after-failed-reload"); code != 0 {
		t.Fatalf("CONNACK %#x, want 0", code)
	}
}

// pingPong sends PINGREQ on an MQTT session and wants PINGRESP back.
func pingPong(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte{0xc0, 0x00}); err != nil { // PINGREQ [MQTT-3.12]
		t.Fatalf("writing PINGREQ: %v", err)
	}
	typ, body, err := readPacket(conn)
	if err != nil || typ != 0xd0 || len(body) != 0 { // PINGRESP [MQTT-3.13]
		t.Fatalf("after PINGREQ got packet %#x % x, %v; want PINGRESP", typ, body, err)
	}
}

// TestConfigUnixUpstream forwards to Mosquitto listening on a unix socket only
// (`listener 0 /path`, Mosquitto 2.0 and later): a device's publish reaches a subscriber
// connected to the broker's socket directly.
func TestConfigUnixUpstream(t *testing.T) {
	checkGoroutines(t)
	b := startUnixBroker(t)
	p := newPKI(t)
	dir := t.TempDir()
	file := writeConfig(t, dir, "mqtls.yaml", `
listeners:
  - name: tls
    listen: 127.0.0.1:0
    upstream: unix:{{socket}}
    tls: {cert: {{cert}}, key: {{key}}}
`, map[string]string{"socket": b.socket, "cert": p.serverCertFile, "key": p.serverKey})
	s := startConfigServer(t, signals{}, file, "tls")
	addr := s.addrOf(t, "tls")

	sub := startSub(t, "--unix", b.socket, "-i", "watcher", "-t", "devices/#", "-v", "-C", "1", "-W", "20")
	b.waitLog(t, "Sending SUBACK to watcher")
	p.anonymous().mustPub(t, addr, "sensor-u", "mqttv311", "devices/sensor-u/temp", "19.5")
	if got := sub.lines(t); len(got) != 1 || got[0] != "devices/sensor-u/temp 19.5" {
		t.Errorf("the subscriber on the unix socket got %q, want the device's publish", got)
	}
	b.waitLog(t, " as sensor-u ")
	wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == "sensor-u" }), map[string]string{
		"listener": "tls", "outcome": "forwarded",
	})
}

// proxyUpstream is a broker stand-in that reads the PROXY header mqtls sends, then the
// CONNECT, and answers CONNACK accepted.
type proxyUpstream struct {
	addr    string
	headers chan *proxyproto.Header
}

func startProxyUpstream(t *testing.T) *proxyUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &proxyUpstream{addr: ln.Addr().String(), headers: make(chan *proxyproto.Header, 8)}
	done := make(chan struct{})
	conns := make(chan net.Conn, 16)
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
			go u.serve(t, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return u
}

func (u *proxyUpstream) serve(t *testing.T, c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		t.Errorf("upstream: reading the PROXY header: %v", err)
		c.Close()
		return
	}
	if h.Command == proxyproto.LOCAL {
		// mqtls looking at the broker at start, on its own behalf: no device follows.
		c.Close()
		return
	}
	if typ, _, err := readPacket(br); err != nil || typ != 0x10 {
		t.Errorf("upstream: after the PROXY header got packet %#x, %v; want CONNECT", typ, err)
		c.Close()
		return
	}
	if _, err := c.Write([]byte{0x20, 0x02, 0x00, 0x00}); err != nil { // CONNACK accepted [MQTT-3.2]
		t.Errorf("upstream: writing CONNACK: %v", err)
	}
	u.headers <- h
	_, _ = io.Copy(io.Discard, br) // until mqtls closes
	c.Close()
}

func (u *proxyUpstream) header(t *testing.T) *proxyproto.Header {
	t.Helper()
	select {
	case h := <-u.headers:
		return h
	case <-time.After(waitTimeout):
		t.Fatal("the upstream got no PROXY header")
		return nil
	}
}

// TestConfigProxyProtocolSend checks the PROXY header mqtls sends the broker: v2 carries
// the device's address, and the SSL TLVs with the TLS version, the cipher suite and the
// client certificate's CN (none for PSK); v1 carries the addresses.
func TestConfigProxyProtocolSend(t *testing.T) {
	checkGoroutines(t)
	u := startProxyUpstream(t)
	p := newPKI(t)
	dir := t.TempDir()
	pskFile := filepath.Join(dir, "psk")
	dev := addPSKDevice(t, pskFile, "dev-1")
	file := writeConfig(t, dir, "mqtls.yaml", `
listeners:
  - name: v2
    listen: 127.0.0.1:0
    upstream: {{upstream}}
    tls: {cert: {{cert}}, key: {{key}}, client_ca: {{ca}}}
    psk: {file: {{psk}}}
    proxy_protocol: {send: v2}
  - name: v1
    listen: 127.0.0.1:0
    upstream: {{upstream}}
    tls: {cert: {{cert}}, key: {{key}}, client_ca: {{ca}}}
    proxy_protocol: {send: v1}
`, map[string]string{"upstream": u.addr, "cert": p.serverCertFile, "key": p.serverKey, "ca": p.caFile, "psk": pskFile})
	s := startConfigServer(t, signals{}, file, "v2", "v1")
	v2, v1 := s.addrOf(t, "v2"), s.addrOf(t, "v1")
	d := p.device(t, "sensor-1")

	// session makes a session through mqtls and returns the header the upstream got, the
	// device's local address and mqtls's audit line for it.
	session := func(t *testing.T, addr string, dial func() (net.Conn, string, error)) (*proxyproto.Header, string, logEntry) {
		t.Helper()
		conn, local, err := dial()
		if err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		if code := rawConnect(t, conn, 4, "c1"); code != 0 {
			conn.Close()
			t.Fatalf("CONNACK %#x, want 0", code)
		}
		h := u.header(t)
		conn.Close() // the audit line is written when the session ends
		return h, local, s.auditFrom(t, local)
	}
	tlsDial := func(addr string, maxVersion uint16) func() (net.Conn, string, error) {
		return func() (net.Conn, string, error) {
			raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return nil, "", err
			}
			cfg := d.tlsConfig()
			cfg.MaxVersion = maxVersion
			conn := tls.Client(raw, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, "", err
			}
			return conn, raw.LocalAddr().String(), nil
		}
	}
	wantAddrs := func(t *testing.T, h *proxyproto.Header, version byte, local, listen string) {
		t.Helper()
		if h.Version != version || h.SourceAddr.String() != local || h.DestinationAddr.String() != listen {
			t.Errorf("PROXY v%d header from %v to %v, want v%d from the device %s to the listener %s",
				h.Version, h.SourceAddr, h.DestinationAddr, version, local, listen)
		}
	}
	sslOf := func(t *testing.T, h *proxyproto.Header) tlvparse.PP2SSL {
		t.Helper()
		tlvs, err := h.TLVs()
		if err != nil {
			t.Fatalf("parsing the header's TLVs: %v", err)
		}
		ssl, ok := tlvparse.FindSSL(tlvs)
		if !ok {
			t.Fatalf("the v2 header has no SSL TLV (TLVs %v)", tlvs)
		}
		return ssl
	}

	for _, tc := range []struct {
		name       string
		maxVersion uint16
		version    string
	}{{"v2 TLS 1.3", tls.VersionTLS13, "TLS 1.3"}, {"v2 TLS 1.2", tls.VersionTLS12, "TLS 1.2"}} {
		t.Run(tc.name, func(t *testing.T) {
			h, local, e := session(t, v2, tlsDial(v2, tc.maxVersion))
			wantAddrs(t, h, 2, local, v2)
			ssl := sslOf(t, h)
			version, _ := ssl.SSLVersion()
			cipher, _ := ssl.SSLCipher()
			cn, _ := ssl.ClientCN()
			if !ssl.ClientSSL() || !ssl.ClientCertConn() || !ssl.Verified() || version != tc.version || cn != "sensor-1" ||
				cipher == "" || cipher != e.str("cipher_suite") {
				t.Errorf("SSL TLV: ssl %v, cert %v, verified %v, version %q, cipher %q, CN %q; want a verified certificate, %q, the cipher of the audit line %q, CN sensor-1",
					ssl.ClientSSL(), ssl.ClientCertConn(), ssl.Verified(), version, cipher, cn, tc.version, e.str("cipher_suite"))
			}
			wantAudit(t, e, map[string]string{"tls_version": tc.version, "identity": "sensor-1"})
		})
	}

	t.Run("v2 TLS-PSK", func(t *testing.T) {
		h, local, e := session(t, v2, func() (net.Conn, string, error) {
			c, local, err := dialPSK(t, v2, &tlspsk.ClientConfig{Identity: dev.identity, Key: hexKey(t, dev.keyHex)})
			return c, local, err
		})
		wantAddrs(t, h, 2, local, v2)
		ssl := sslOf(t, h)
		version, _ := ssl.SSLVersion()
		cipher, _ := ssl.SSLCipher()
		_, hasCN := ssl.ClientCN()
		if !ssl.ClientSSL() || ssl.ClientCertConn() || ssl.Verified() || hasCN || version != "TLS 1.2" || cipher == "" || cipher != e.str("cipher_suite") {
			t.Errorf("SSL TLV: ssl %v, cert %v, verified %v, CN %v, version %q, cipher %q; want SSL without a certificate, TLS 1.2, the audit's cipher %q",
				ssl.ClientSSL(), ssl.ClientCertConn(), ssl.Verified(), hasCN, version, cipher, e.str("cipher_suite"))
		}
	})

	t.Run("v1", func(t *testing.T) {
		h, local, _ := session(t, v1, tlsDial(v1, 0))
		wantAddrs(t, h, 1, local, v1)
		if tlvs, err := h.TLVs(); err != nil || len(tlvs) != 0 {
			t.Errorf("v1 header TLVs %v, %v; want none", tlvs, err)
		}
	})
}

func hexKey(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConfigProxyProtocolAccept: a PROXY header (v1 or v2) from a trusted source makes the
// address it names the device's remote address in the audit line; from a source the
// listener does not trust, the header is just bytes before the ClientHello, and the
// handshake fails as not TLS.
func TestConfigProxyProtocolAccept(t *testing.T) {
	checkGoroutines(t)
	b := startBroker(t, "")
	p := newPKI(t)
	dir := t.TempDir()
	file := writeConfig(t, dir, "mqtls.yaml", `
listeners:
  - name: trusted
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{cert}}, key: {{key}}}
    proxy_protocol: {accept_from: [127.0.0.1/32]}
  - name: untrusted
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{cert}}, key: {{key}}}
    proxy_protocol: {accept_from: [10.0.0.0/8]}
`, map[string]string{"broker": b.addr, "cert": p.serverCertFile, "key": p.serverKey})
	s := startConfigServer(t, signals{}, file, "trusted", "untrusted")
	trusted, untrusted := s.addrOf(t, "trusted"), s.addrOf(t, "untrusted")

	// dial connects, sends a PROXY header naming client, and starts TLS.
	dial := func(t *testing.T, addr string, version byte, client string) (*tls.Conn, string, error) {
		t.Helper()
		raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		src, err := net.ResolveTCPAddr("tcp", client)
		if err != nil {
			t.Fatal(err)
		}
		dst, _ := net.ResolveTCPAddr("tcp", addr)
		if _, err := proxyproto.HeaderProxyFromAddrs(version, src, dst).WriteTo(raw); err != nil {
			t.Fatalf("writing the PROXY header: %v", err)
		}
		conn := tls.Client(raw, p.anonymous().tlsConfig())
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		return conn, raw.LocalAddr().String(), conn.HandshakeContext(ctx)
	}

	for _, tc := range []struct {
		version byte
		client  string
	}{{2, "203.0.113.7:40001"}, {1, "198.51.100.9:40002"}} {
		t.Run("trusted v"+string('0'+tc.version), func(t *testing.T) {
			conn, local, err := dial(t, trusted, tc.version, tc.client)
			if err != nil {
				t.Fatalf("TLS handshake after a PROXY header from a trusted source: %v", err)
			}
			id := "proxied-v" + string('0'+tc.version)
			if code := rawConnect(t, conn, 4, id); code != 0 {
				t.Fatalf("CONNACK %#x, want 0", code)
			}
			b.waitLog(t, " as "+id+" ")
			conn.Close()
			wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == id }), map[string]string{
				"listener": "trusted", "outcome": "forwarded", "remote": tc.client, "proxied_by": local,
			})
		})
	}

	t.Run("untrusted", func(t *testing.T) {
		_, local, err := dial(t, untrusted, 2, "203.0.113.7:40003")
		if err == nil {
			t.Fatal("TLS handshake succeeded after a PROXY header from an untrusted source, want it to fail")
		}
		wantAudit(t, s.auditFrom(t, local), map[string]string{
			"listener": "untrusted", "outcome": "handshake_failed", "reason": "not_tls",
		})
	})
}
