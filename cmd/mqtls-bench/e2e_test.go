package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"

	"github.com/mqtls/mqtls/handshake"
	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/internal/leakcheck"
	"github.com/mqtls/mqtls/policy"
	"github.com/mqtls/mqtls/proxy"
)

// testPKI is a CA, a server certificate for localhost and a device certificate, on disk.
type testPKI struct {
	dir, ca, serverCert, serverKey, clientCert, clientKey string
	pskFile, pskIdentity, pskKey                          string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := handshaketest.NewCA("bench test CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue(handshaketest.Template{CommonName: "localhost", DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue(handshaketest.Template{CommonName: "bench-device",
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, pskIdentity: "bench-device"}
	if p.ca, err = handshaketest.WriteFile(dir, "ca.crt", ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	if p.serverCert, p.serverKey, err = server.Files(dir, "server"); err != nil {
		t.Fatal(err)
	}
	if p.clientCert, p.clientKey, err = client.Files(dir, "client"); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 16)
	rand.Read(key)
	p.pskKey = hex.EncodeToString(key)
	p.pskFile = filepath.Join(dir, "psk.txt")
	if err := os.WriteFile(p.pskFile, []byte(p.pskIdentity+":"+p.pskKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startMqtls serves one mqtls listener in this process in front of upstream and stops it
// when the test ends. transport is "tcp" (mutual TLS), "psk" or "dtls" (DTLS-PSK).
func startMqtls(t *testing.T, p *testPKI, transport, upstream string) string {
	t.Helper()
	var (
		hs   proxy.Handshaker
		ln   net.Listener
		err  error
		pcfg = policy.Config{}
	)
	switch transport {
	case "tcp":
		hs, err = handshake.NewTLSServer(handshake.TLSConfig{CertFile: p.serverCert, KeyFile: p.serverKey,
			ClientCAFile: p.ca, ClientAuth: handshake.ClientAuthRequire})
	case "psk", "dtls":
		pcfg.Identity = "{psk}"
		var store *handshake.PSKStore
		if store, err = handshake.LoadPSKFile(p.pskFile, handshake.PSKFormatMosquitto); err != nil {
			break
		}
		var psk *handshake.PSKServer
		if psk, err = handshake.NewPSKServer(store, ""); err != nil {
			break
		}
		hs = psk
		if transport == "dtls" {
			ln, hs, err = handshake.ListenDTLS("127.0.0.1:0", handshake.DTLSConfig{PSK: psk})
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	pol, err := policy.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Config{Name: transport, Upstream: upstream, Handshaker: hs, Policy: pol,
		Datagram: transport == "dtls", IdleTimeout: map[bool]time.Duration{true: time.Minute}[transport == "dtls"],
		Logger: zerolog.New(io.Discard)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutting mqtls down: %v", err)
		}
		if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("mqtls Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// startSink runs the sink in this process until the test ends.
func startSink(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := serveSink(ctx, ln); done <- err }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	return ln.Addr().String()
}

// startBroker runs mochi-mqtt on loopback until the test ends.
func startBroker(t *testing.T) string {
	t.Helper()
	b := mqtt.New(&mqtt.Options{InlineClient: false,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := b.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	l := listeners.NewTCP(listeners.Config{ID: "plain", Address: "127.0.0.1:0"})
	if err := b.AddListener(l); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return l.Address()
}

// run runs mqtls-bench with args and returns its one result line, decoded.
func run(t *testing.T, args ...string) map[string]any {
	t.Helper()
	var out bytes.Buffer
	if err := newApp(&out).Run(append([]string{"mqtls-bench"}, args...)); err != nil {
		t.Fatalf("mqtls-bench %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("mqtls-bench %s printed %d lines, want one:\n%s", args[0], len(lines), out.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("result line %q: %v", lines[0], err)
	}
	return m
}

func num(t *testing.T, m map[string]any, path string) float64 {
	t.Helper()
	v, ok := field(m, path)
	if !ok {
		t.Fatalf("result has no number at %s: %v", path, m)
	}
	return v
}

// TestEndToEnd runs conns, ping and bulk through an in-process mqtls in front of the sink,
// pub through one in front of a broker, and the PSK modes, all small.
func TestEndToEnd(t *testing.T) {
	before := leakcheck.Count()
	t.Cleanup(func() { leakcheck.Check(t, before) })
	p := newTestPKI(t)
	sink := startSink(t)
	broker := startBroker(t)
	toSink := startMqtls(t, p, "tcp", sink)
	toBroker := startMqtls(t, p, "tcp", broker)
	pid := strconv.Itoa(os.Getpid())
	mtls := []string{"--mode", "mtls", "--ca", p.ca, "--cert", p.clientCert, "--key", p.clientKey, "--pid", pid, "--timeout", "30s"}

	t.Run("conns", func(t *testing.T) {
		m := run(t, append([]string{"conns", "--addr", toSink, "--n", "20", "--c", "4", "--label", "mqtls", "--tag", "conns-mtls"}, mtls...)...)
		if num(t, m, "ok") != 20 || num(t, m, "failed") != 0 {
			t.Fatalf("ok/failed: %v", m)
		}
		if num(t, m, "per_s") <= 0 || num(t, m, "connect_us.p50") <= 0 || num(t, m, "connect_us.p99") < num(t, m, "connect_us.p50") {
			t.Errorf("rates and latencies: %v", m)
		}
		if num(t, m, "handshake_us.p50") > num(t, m, "connect_us.p50") {
			t.Errorf("the handshake took longer than the whole session setup: %v", m)
		}
		if _, ok := field(m, "target_cpu_s"); !ok {
			t.Errorf("no target CPU with --pid: %v", m)
		}
		if str(m, "label") != "mqtls" || str(m, "tag") != "conns-mtls" || str(m, "cmd") != "conns" {
			t.Errorf("header: %v", m)
		}
	})
	t.Run("resume", func(t *testing.T) {
		// One session at a time: the first has no ticket yet, every later one resumes.
		m := run(t, append([]string{"conns", "--addr", toSink, "--n", "10", "--c", "1", "--resume"}, mtls...)...)
		if num(t, m, "ok") != 10 || num(t, m, "resumed") != 9 {
			t.Fatalf("ok/resumed: %v, want 10 sessions of which 9 resumed", m)
		}
		if m := run(t, append([]string{"conns", "--addr", toSink, "--n", "3", "--c", "1"}, mtls...)...); m["resumed"] != nil {
			t.Errorf("resumed reported without --resume: %v", m)
		}
		var out bytes.Buffer
		err := newApp(&out).Run([]string{"mqtls-bench", "conns", "--addr", toSink, "--mode", "psk", "--psk-identity", "a", "--psk-key", "00", "--resume"})
		if err == nil || !strings.Contains(err.Error(), "--resume with --mode psk") {
			t.Errorf("--resume with --mode psk: %v", err)
		}
	})
	t.Run("hold", func(t *testing.T) {
		m := run(t, append([]string{"conns", "--addr", toSink, "--n", "10", "--c", "5", "--hold", "300ms", "--sample-interval", "100ms"}, mtls...)...)
		if num(t, m, "hold.sessions") != 10 || num(t, m, "hold.held.rss_kib") <= 0 || num(t, m, "hold.held.pss_kib") <= 0 {
			t.Fatalf("hold: %v", m)
		}
		if num(t, m, "hold.held_s") < 0.3 {
			t.Errorf("held %v s, want 0.3", num(t, m, "hold.held_s"))
		}
	})
	t.Run("ping", func(t *testing.T) {
		m := run(t, append([]string{"ping", "--addr", toSink, "--count", "50", "--warmup", "5"}, mtls...)...)
		if num(t, m, "rtt_us.n") != 50 || num(t, m, "rtt_us.p50") <= 0 || num(t, m, "rtt_us.max") < num(t, m, "rtt_us.p99") {
			t.Fatalf("ping: %v", m)
		}
	})
	t.Run("bulk", func(t *testing.T) {
		m := run(t, append([]string{"bulk", "--addr", toSink, "--bytes", "1000000", "--packet-size", "30000", "--write-size", "100000", "--streams", "2"}, mtls...)...)
		// Per stream: writes of three 30,000-byte packets (90,1xx bytes with headers) until
		// 1,000,000 bytes are reached (12 writes), then a PINGREQ.
		if b := num(t, m, "bytes"); b < 2*12*90000 || b > 2*12*90200 {
			t.Errorf("bytes %v, want 2 × 12 × about 90,100", b)
		}
		if num(t, m, "mb_per_s") <= 0 || num(t, m, "target_cpu_s_per_gb") < 0 {
			t.Errorf("bulk: %v", m)
		}
	})
	for _, qos := range []string{"0", "1"} {
		t.Run("pub-qos"+qos, func(t *testing.T) {
			m := run(t, append([]string{"pub", "--addr", toBroker, "--publishers", "2", "--subscribers", "2",
				"--messages", "500", "--qos", qos, "--batch", "16", "--window", "200", "--inflight", "64"}, mtls...)...)
			if ok, _ := m["ok"].(bool); !ok || num(t, m, "sent") != 1000 {
				t.Fatalf("pub: %v", m)
			}
			for _, r := range m["received"].([]any) {
				if r.(float64) != 1000 {
					t.Errorf("a subscriber received %v, want 1000", r)
				}
			}
		})
	}
	t.Run("psk", func(t *testing.T) {
		addr := startMqtls(t, p, "psk", sink)
		m := run(t, "conns", "--addr", addr, "--mode", "psk", "--psk-identity", p.pskIdentity, "--psk-key", p.pskKey, "--n", "20", "--c", "4")
		if num(t, m, "ok") != 20 {
			t.Fatalf("psk: %v", m)
		}
	})
	t.Run("dtls-psk", func(t *testing.T) {
		addr := startMqtls(t, p, "dtls", sink)
		psk := []string{"--addr", addr, "--mode", "dtls-psk", "--psk-identity", p.pskIdentity, "--psk-key", p.pskKey}
		if m := run(t, append([]string{"conns", "--n", "20", "--c", "4"}, psk...)...); num(t, m, "ok") != 20 {
			t.Fatalf("dtls-psk conns: %v", m)
		}
		if m := run(t, append([]string{"ping", "--count", "20"}, psk...)...); num(t, m, "rtt_us.n") != 20 {
			t.Fatalf("dtls-psk ping: %v", m)
		}
		// A small flood: 3,000 spoofed hellos in a second and a half, 5 devices meanwhile.
		m := run(t, append([]string{"dtls-flood", "--flood-rate", "2000", "--flood-duration", "1500ms",
			"--flood-sources", "1000", "--devices", "5", "--pid", strconv.Itoa(os.Getpid()), "--settle", "100ms"}, psk...)...)
		if num(t, m, "flood_sent") != 3000 || num(t, m, "flood_sources") != 1000 || num(t, m, "devices") != 5 {
			t.Errorf("dtls-flood: %v", m)
		}
		if num(t, m, "success_pct") != 100 || num(t, m, "mem_max.rss_kib") <= 0 {
			t.Errorf("dtls-flood: %v, want every device through", m)
		}
	})
	t.Run("refused", func(t *testing.T) {
		// A client certificate the target does not trust: every session fails, and the
		// command says so instead of reporting rates.
		var out bytes.Buffer
		err := newApp(&out).Run([]string{"mqtls-bench", "conns", "--addr", toSink, "--mode", "tls", "--ca", p.ca, "--n", "3", "--c", "1", "--timeout", "10s"})
		if err == nil || !strings.Contains(out.String(), `"failed":3`) {
			t.Fatalf("err %v, output %s", err, out.String())
		}
	})
}
