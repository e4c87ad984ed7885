package main

// End-to-end: operations. Certificates, CAs, CRLs and PSKs rotated in place while devices
// keep connecting; a broken replacement; each connection limit; the admin listener's
// /metrics, /healthz and /readyz; draining on the first signal and stopping on the second.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqtls/mqtls/handshake/handshaketest"
	"github.com/mqtls/mqtls/handshake/tlspsk"
)

// reloadInterval is the --reload-interval of these tests: short, so a change is seen at once.
const reloadInterval = "100ms"

// TestRotationUnderLoad swaps a Kubernetes-style Secret volume (the ..data symlink) to a new
// server certificate, a CA bundle holding the old and a new CA, and a CRL revoking one
// device, while devices keep connecting. No valid device may fail across the swap; after
// the reload new handshakes see the new certificate, the revoked device is refused, a
// device of the new CA is accepted, and sessions established before are left alone, except
// the revoked device's with --revoke-terminates.
func TestRotationUnderLoad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		revokeTerminates bool
	}{
		{"sessions kept", false},
		{"--revoke-terminates", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testRotationUnderLoad(t, tc.revokeTerminates)
		})
	}
}

func testRotationUnderLoad(t *testing.T, revokeTerminates bool) {
	p := newPKI(t)
	b := startBroker(t, "")
	newCA, err := handshaketest.NewCA("mqtls e2e CA v2")
	if err != nil {
		t.Fatal(err)
	}
	serverV1, serverV2 := issueServerCert(t, p.ca), issueServerCert(t, p.ca)
	victim := p.device(t, "victim")
	crlV1, err := p.ca.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crlV2, err := p.ca.CRL(victim.cert.Cert)
	if err != nil {
		t.Fatal(err)
	}
	// Once a CRL is configured every client CA needs one: the new CA's goes in the same file.
	newCRL, err := newCA.CRL()
	if err != nil {
		t.Fatal(err)
	}
	crlV2 = append(crlV2, newCRL...)
	vol := newSecretVolume(t, "..2026_v1", map[string][]byte{
		"tls.crt": serverV1.CertPEM, "tls.key": serverV1.KeyPEM, "ca.crt": p.ca.CertPEM, "ca.crl": crlV1,
	})
	args := []string{"--upstream", b.addr, "--cert", vol.path("tls.crt"), "--key", vol.path("tls.key"),
		"--client-ca", vol.path("ca.crt"), "--crl", vol.path("ca.crl"), "--reload-interval", reloadInterval}
	if revokeTerminates {
		args = append(args, "--revoke-terminates")
	}
	s := startServer(t, args...)

	// Before the swap: two live sessions, and the new CA's device is not trusted yet.
	steady := p.device(t, "steady")
	steadyConn := steady.mustDialTLS(t, s.addr)
	if rc := rawConnect(t, steadyConn, 4, "steady"); rc != 0 {
		t.Fatalf("steady: CONNACK %#x, want 0", rc)
	}
	victimConn := victim.mustDialTLS(t, s.addr)
	if rc := rawConnect(t, victimConn, 4, "victim"); rc != 0 {
		t.Fatalf("victim before the swap: CONNACK %#x, want 0", rc)
	}
	fromNewCA := p.deviceFrom(t, newCA, handshaketest.Template{CommonName: "newca-1"})
	wantHandshakeRefused(t, s, fromNewCA, "untrusted_cert")

	// The load: devices of the old CA handshake, CONNECT, PUBLISH (QoS 1) and DISCONNECT in
	// a loop, each noting when it started and which server certificate it saw.
	type result struct {
		start  time.Time
		serial *big.Int
		err    error
	}
	results := make(chan result, 64)
	stop := make(chan struct{})
	var workers sync.WaitGroup
	for i := range 4 {
		d := p.device(t, fmt.Sprintf("load-%d", i))
		workers.Add(1)
		go func() {
			defer workers.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				serial, err := mqttSession(d, s.addr, fmt.Sprintf("load-%d-%d", i, n))
				results <- result{start, serial, err}
			}
		}()
	}
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(stop)
			go func() { workers.Wait(); close(results) }()
		}
	}
	defer func() {
		stopLoad()
		for range results {
		}
	}()

	var all []result
	deadline := time.NewTimer(3 * waitTimeout)
	defer deadline.Stop()
	next := func() result {
		select {
		case r := <-results:
			all = append(all, r)
			return r
		case <-deadline.C:
			t.Fatalf("the load did not make progress: %d sessions so far", len(all))
			return result{}
		}
	}
	for range 16 { // some sessions on the old material first
		next()
	}

	vol.swap(t, "..2026_v2", map[string][]byte{
		"tls.crt": serverV2.CertPEM, "tls.key": serverV2.KeyPEM,
		"ca.crt": append(append([]byte(nil), p.ca.CertPEM...), newCA.CertPEM...), "ca.crl": crlV2,
	})
	swapped := time.Now()
	reloaded := make(chan time.Time, 1)
	go func() {
		_, ok := s.logs.wait(waitTimeout, nil, func(line string) bool {
			e, ok := parseEntry(line)
			return ok && e.str("message") == "reloaded"
		})
		if !ok {
			reloaded <- time.Time{}
			return
		}
		reloaded <- time.Now() // the new material was in use before the line was written
	}()
	var reloadedAt time.Time
	afterReload := 0
	for reloadedAt.IsZero() || afterReload < 16 {
		select {
		case reloadedAt = <-reloaded:
			if reloadedAt.IsZero() {
				t.Fatalf("no \"reloaded\" line within %v of swapping ..data", waitTimeout)
			}
			reloaded = nil
			for _, r := range all {
				if r.start.After(reloadedAt) {
					afterReload++
				}
			}
		default:
			if r := next(); !reloadedAt.IsZero() && r.start.After(reloadedAt) {
				afterReload++
			}
		}
	}
	stopLoad()
	for r := range results {
		all = append(all, r)
	}

	var failed, beforeSwap, acrossSwap, newSeen int
	for _, r := range all {
		switch {
		case r.err != nil:
			failed++
			if failed <= 5 {
				t.Errorf("a valid device's session started %v after the swap failed: %v", r.start.Sub(swapped), r.err)
			}
			continue
		case r.start.Before(swapped):
			beforeSwap++
		case r.start.Before(reloadedAt):
			acrossSwap++
		}
		switch {
		case r.serial.Cmp(serverV2.Cert.SerialNumber) == 0:
			newSeen++
		case r.serial.Cmp(serverV1.Cert.SerialNumber) != 0:
			t.Errorf("a device saw server certificate serial %x, neither the old nor the new one", r.serial)
		case r.start.After(reloadedAt):
			t.Errorf("a handshake started %v after the \"reloaded\" line got the old server certificate", r.start.Sub(reloadedAt))
		}
	}
	t.Logf("%d sessions (%d started before the swap, %d between the swap and the \"reloaded\" line %v later, %d after), %d failed; %d saw the new certificate",
		len(all), beforeSwap, acrossSwap, reloadedAt.Sub(swapped).Round(time.Millisecond), len(all)-beforeSwap-acrossSwap-failed, failed, newSeen)
	if failed > 0 {
		t.Errorf("%d of %d sessions of valid devices failed across the swap, want none", failed, len(all))
	}

	// After the reload: the CRL refuses the victim, the new CA's device gets in.
	wantHandshakeRefused(t, s, victim, "revoked_cert")
	if _, err := mqttSession(fromNewCA, s.addr, "newca-1"); err != nil {
		t.Errorf("the new CA's device after the reload: %v", err)
	}
	e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "newca-1" })
	wantAudit(t, e, map[string]string{"outcome": "forwarded", "identity": "newca-1"})

	if revokeTerminates {
		wantClosed(t, victimConn, waitTimeout)
		e := s.auditFrom(t, victimConn.LocalAddr().String())
		wantAudit(t, e, map[string]string{"outcome": "forwarded", "reason": "credentials_revoked", "ended_by": "revoked", "identity": "victim"})
	} else {
		wantPing(t, victimConn)
	}
	wantPing(t, steadyConn)
}

// issueServerCert issues a server certificate for 127.0.0.1 from ca.
func issueServerCert(t *testing.T, ca *handshaketest.CA) *handshaketest.Cert {
	t.Helper()
	c, err := ca.Issue(handshaketest.Template{
		CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secretVolume is a directory laid out the way the kubelet mounts a Secret: each version's
// files in a hidden directory, ..data a symlink to the current one, and every key a
// symlink through ..data, so that one rename swaps them all at once.
type secretVolume struct{ dir string }

func newSecretVolume(t *testing.T, version string, files map[string][]byte) *secretVolume {
	t.Helper()
	v := &secretVolume{dir: t.TempDir()}
	v.writeVersion(t, version, files)
	if err := os.Symlink(version, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), v.path(name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// path is the file the application is configured with: the top-level symlink.
func (v *secretVolume) path(name string) string { return filepath.Join(v.dir, name) }

func (v *secretVolume) writeVersion(t *testing.T, version string, files map[string][]byte) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(v.dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(v.dir, version, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// swap writes version and points ..data at it atomically, as the kubelet does: a new
// symlink under a temporary name renamed over the old one.
func (v *secretVolume) swap(t *testing.T, version string, files map[string][]byte) {
	t.Helper()
	v.writeVersion(t, version, files)
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// mqttSession is one device's whole session through mqtls, as a device in the field runs
// it: handshake, CONNECT (3.1.1), PUBLISH at QoS 1 and its PUBACK, DISCONNECT. It returns
// the serial of the server certificate the device saw. Safe to call from any goroutine.
func mqttSession(d device, addr, clientID string) (*big.Int, error) {
	conn, _, err := d.handshake(addr)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	defer conn.Close()
	serial := conn.ConnectionState().PeerCertificates[0].SerialNumber
	if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		return serial, err
	}
	if _, err := conn.Write(connectPacket(4, clientID)); err != nil {
		return serial, fmt.Errorf("writing CONNECT: %w", err)
	}
	if typ, body, err := readPacket(conn); err != nil || typ != 0x20 || len(body) != 2 || body[1] != 0 {
		return serial, fmt.Errorf("CONNACK: got %#x % x, %v; want 20 00 00", typ, body, err)
	}
	if _, err := conn.Write(qos1Publish("load/"+clientID, "x", 1)); err != nil {
		return serial, fmt.Errorf("writing PUBLISH: %w", err)
	}
	if typ, body, err := readPacket(conn); err != nil || typ != 0x40 || string(body) != "\x00\x01" {
		return serial, fmt.Errorf("PUBACK: got %#x % x, %v; want 40 00 01", typ, body, err)
	}
	if _, err := conn.Write([]byte{0xe0, 0x00}); err != nil { // DISCONNECT
		return serial, fmt.Errorf("writing DISCONNECT: %w", err)
	}
	return serial, nil
}

// qos1Publish is a 3.1.1 PUBLISH at QoS 1 (§3.3): topic, packet identifier, payload.
func qos1Publish(topic, payload string, id uint16) []byte {
	body := appendString(nil, topic)                         // topic name
	body = append(body, byte(id>>8), byte(id))               // packet identifier
	return appendPacket(nil, 0x32, append(body, payload...)) // 0x32: PUBLISH, QoS 1
}

// wantPing checks that a session is still piped both ways: PINGREQ gets PINGRESP.
func wantPing(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := conn.SetDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte{0xc0, 0x00}); err != nil {
		t.Fatalf("writing PINGREQ: %v", err)
	}
	if typ, _, err := readPacket(conn); err != nil || typ != 0xd0 {
		t.Fatalf("PINGREQ got %#x, %v; want PINGRESP", typ, err)
	}
}

// wantHandshakeRefused checks that d's handshake is refused and audited with reason.
func wantHandshakeRefused(t *testing.T, s *server, d device, reason string) {
	t.Helper()
	conn, local, err := d.handshake(s.addr)
	if err == nil {
		// TLS 1.3: the client finishes first; the refusal arrives as an alert on read.
		defer conn.Close()
		_, _ = conn.Write(connectPacket(4, "refused"))
		wantClosed(t, conn, waitTimeout)
	}
	wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "handshake_failed", "reason": reason, "identity": ""})
}

// TestBrokenReplacementKeepsOldMaterial replaces the server certificate with garbage, or
// the key with one of another certificate: the reload fails with an error naming the file,
// counted in mqtls_reloads_total, and handshakes go on with the old certificate.
func TestBrokenReplacementKeepsOldMaterial(t *testing.T) {
	t.Parallel()
	other, err := newPKI(t).ca.Issue(handshaketest.Template{CommonName: "other"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		file    func(p *pki) string
		content []byte
	}{
		{"garbage PEM certificate", func(p *pki) string { return p.serverCertFile },
			[]byte("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")},
		{"key of another certificate", func(p *pki) string { return p.serverKey }, other.KeyPEM},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPKI(t)
			s := startServer(t, "--upstream", "127.0.0.1:1", "--cert", p.serverCertFile, "--key", p.serverKey,
				"--admin-listen", "127.0.0.1:0", "--reload-interval", reloadInterval)
			admin := newAdminClient(t, s)
			old := serverSerial(t, p.anonymous(), s.addr)

			file := tc.file(p)
			replaceFile(t, file, tc.content)
			line, ok := s.logs.wait(waitTimeout, nil, func(line string) bool {
				e, ok := parseEntry(line)
				return ok && strings.HasPrefix(e.str("message"), "reload failed") && strings.Contains(e.str("files"), file)
			})
			if !ok {
				t.Fatalf("no \"reload failed\" line naming %s within %v", file, waitTimeout)
			}
			e, _ := parseEntry(line)
			if e.str("level") != "error" || !strings.Contains(e.str("error"), file) {
				t.Errorf("reload failure logged at level %q with error %q; want level error and an error naming %s", e.str("level"), e.str("error"), file)
			}

			if got := serverSerial(t, p.anonymous(), s.addr); got.Cmp(old) != 0 {
				t.Errorf("after the failed reload the server presents serial %x, want the old %x", got, old)
			}
			m := admin.metrics(t)
			if v, _ := m.value("mqtls_reloads_total", "file", file, "result", "error"); v < 1 {
				t.Errorf("mqtls_reloads_total{file=%q,result=\"error\"} = %v, want at least 1", file, v)
			}
			if v, ok := m.value("mqtls_reloads_total", "result", "ok"); ok {
				t.Errorf("mqtls_reloads_total{result=\"ok\"} = %v, want none", v)
			}
		})
	}
}

// TestSIGHUPReloads: with --reload-interval 0 nothing is polled, and SIGHUP reloads.
func TestSIGHUPReloads(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	hup := make(chan struct{}, 1)
	s := startServerWith(t, signals{hup: hup}, "--upstream", "127.0.0.1:1", "--cert", p.serverCertFile, "--key", p.serverKey,
		"--reload-interval", "0")
	old := serverSerial(t, p.anonymous(), s.addr)
	next := issueServerCert(t, p.ca)
	replaceFile(t, p.serverCertFile, next.CertPEM)
	replaceFile(t, p.serverKey, next.KeyPEM)
	if got := serverSerial(t, p.anonymous(), s.addr); got.Cmp(old) != 0 {
		t.Fatalf("without SIGHUP the server presents serial %x, want the old %x: --reload-interval 0 must not poll", got, old)
	}
	hup <- struct{}{}
	s.waitLine(t, "SIGHUP: reloading", nil)
	s.waitLine(t, "reloaded", func(e logEntry) bool { return strings.Contains(e.str("files"), p.serverCertFile) })
	if got := serverSerial(t, p.anonymous(), s.addr); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("after SIGHUP the server presents serial %x, want the new %x", got, next.Cert.SerialNumber)
	}
}

// replaceFile replaces file's contents at once (a new file renamed over it), so the
// reloader never reads half of it.
func replaceFile(t *testing.T, file string, data []byte) {
	t.Helper()
	tmp := file + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// serverSerial handshakes as d and returns the serial of the server certificate it saw.
func serverSerial(t *testing.T, d device, addr string) *big.Int {
	t.Helper()
	conn, err := d.dialTLS(addr)
	if err != nil {
		t.Fatalf("TLS handshake with mqtls: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestPSKFileEditedInPlace rewrites the PSK file in place (same inode): a new identity gets
// in without a restart, a removed one is refused, a kept one's session goes on.
func TestPSKFileEditedInPlace(t *testing.T) {
	t.Parallel()
	b := startBroker(t, "")
	keys := map[string][]byte{"dev-a": randomKey(t), "dev-b": randomKey(t), "dev-c": randomKey(t)}
	line := func(id string) string { return id + ":" + hex.EncodeToString(keys[id]) + "\n" }
	file, err := handshaketest.WriteFile(t.TempDir(), "psk.txt", []byte(line("dev-a")+line("dev-c")))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "--upstream", b.addr, "--psk-file", file, "--reload-interval", reloadInterval)
	dial := func(id string) (*tlspsk.Conn, string, error) {
		return dialPSKOnce(s.addr, &tlspsk.ClientConfig{Identity: id, Key: keys[id]})
	}

	kept, _, err := dial("dev-c")
	if err != nil {
		t.Fatalf("dev-c: %v", err)
	}
	defer kept.Close()
	if rc := rawConnect(t, kept, 4, "dev-c"); rc != 0 {
		t.Fatalf("dev-c: CONNACK %#x, want 0", rc)
	}
	if _, local, err := dial("dev-b"); err == nil {
		t.Fatal("dev-b got in before it was added to the file")
	} else {
		wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "handshake_failed", "reason": "unknown_psk_identity"})
	}

	// Rewrite the file in place: one write at offset 0 of the longer new contents, so the
	// reloader sees either the old file or the new one, never an empty one.
	before, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := "# dev-a retired, dev-b added\n" + line("dev-b") + line("dev-c")
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(edited), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if after, err := os.Stat(file); err != nil || !os.SameFile(before, after) || after.Size() != int64(len(edited)) {
		t.Fatalf("the PSK file was not rewritten in place (%v)", err)
	}
	s.waitLine(t, "reloaded", func(e logEntry) bool { return strings.Contains(e.str("files"), file) })

	added, _, err := dial("dev-b")
	if err != nil {
		t.Fatalf("dev-b after it was added: %v", err)
	}
	defer added.Close()
	if rc := rawConnect(t, added, 4, "dev-b"); rc != 0 {
		t.Fatalf("dev-b: CONNACK %#x, want 0", rc)
	}
	if _, err := added.Write([]byte{0xe0, 0x00}); err != nil { // DISCONNECT
		t.Fatal(err)
	}
	wantClosed(t, added, waitTimeout)
	added.Close() // as a device does: else mqtls waits out its close timeout for our end
	wantAudit(t, s.auditFrom(t, added.LocalAddr().String()), map[string]string{
		"outcome": "forwarded", "identity": "dev-b", "psk_identity": "dev-b", "client_id": "dev-b",
	})
	if _, local, err := dial("dev-a"); err == nil {
		t.Error("dev-a still gets in after it was removed from the file")
	} else {
		wantAudit(t, s.auditFrom(t, local), map[string]string{"outcome": "handshake_failed", "reason": "unknown_psk_identity"})
	}
	wantPing(t, kept)
}

// dialPSKOnce connects to addr and runs the TLS-PSK handshake with cfg. It returns the local
// address (the "remote" of the audit line) even when the handshake fails; the connection
// is returned open only on success.
func dialPSKOnce(addr string, cfg *tlspsk.ClientConfig) (*tlspsk.Conn, string, error) {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, "", err
	}
	local := raw.LocalAddr().String()
	conn := tlspsk.Client(raw, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, local, err
	}
	return conn, local, nil
}

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestLimits: each limit refuses the one connection over it, early and with its reason,
// and serves the others.
func TestLimits(t *testing.T) {
	t.Parallel()

	t.Run("--max-connections", func(t *testing.T) {
		t.Parallel()
		p := newPKI(t)
		b := startBroker(t, "")
		s := startServer(t, append(p.serverArgs(b.addr, false), "--max-connections", "2", "--admin-listen", "127.0.0.1:0")...)
		admin := newAdminClient(t, s)
		d := p.anonymous()
		held := []*tls.Conn{d.mustDialTLS(t, s.addr), d.mustDialTLS(t, s.addr)}
		for i, c := range held {
			if rc := rawConnect(t, c, 4, fmt.Sprintf("held-%d", i)); rc != 0 {
				t.Fatalf("session %d: CONNACK %#x, want 0", i, rc)
			}
		}

		third := dialRaw(t, s.addr)
		if got := readUntilClosed(t, third, waitTimeout); len(got) > 0 {
			t.Errorf("the connection over --max-connections received % x, want EOF and no ServerHello", got)
		}
		wantRefusedAtAccept(t, s, third, "max_connections")
		if v, _ := admin.metrics(t).value("mqtls_connections_refused_total", "listener", "tcp", "reason", "max_connections"); v != 1 {
			t.Errorf("mqtls_connections_refused_total{reason=\"max_connections\"} = %v, want 1", v)
		}
		for _, c := range held {
			wantPing(t, c)
		}
	})

	t.Run("--max-handshakes", func(t *testing.T) {
		t.Parallel()
		p := newPKI(t)
		b := startBroker(t, "")
		s := startServer(t, append(p.serverArgs(b.addr, false), "--max-handshakes", "1")...)

		// A handshake that stalls: a ClientHello, the server's first flight read, and then
		// nothing. Reading that flight shows the server is inside the handshake.
		stalled := dialRaw(t, s.addr)
		if _, err := stalled.Write(clientHelloRecord(t)); err != nil {
			t.Fatal(err)
		}
		var rec [5]byte
		if err := stalled.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(stalled, rec[:]); err != nil || rec[0] != 0x16 {
			t.Fatalf("reading the ServerHello: % x, %v", rec, err)
		}

		second := dialRaw(t, s.addr) // sends nothing: refused before its handshake starts
		start := time.Now()
		if got := readUntilClosed(t, second, waitTimeout); len(got) > 0 {
			t.Errorf("the handshake over --max-handshakes received % x, want EOF and nothing else", got)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("the handshake over --max-handshakes was closed after %v, want at once (--handshake-timeout is 10s)", took)
		}
		wantAudit(t, s.auditFrom(t, second.LocalAddr().String()), map[string]string{"outcome": "refused", "reason": "max_handshakes"})

		stalled.Close()
		wantAudit(t, s.auditFrom(t, stalled.LocalAddr().String()), map[string]string{"outcome": "handshake_failed"})
		conn := p.anonymous().mustDialTLS(t, s.addr)
		if rc := rawConnect(t, conn, 4, "after-stall"); rc != 0 {
			t.Fatalf("a handshake once the stalled one ended: CONNACK %#x, want 0", rc)
		}
	})

	t.Run("--per-ip-rate", func(t *testing.T) {
		t.Parallel()
		p := newPKI(t)
		b := startBroker(t, "")
		s := startServer(t, append(p.serverArgs(b.addr, false),
			"--per-ip-rate", "1", "--per-ip-burst", "2", "--admin-listen", "127.0.0.1:0")...)
		admin := newAdminClient(t, s)
		// Three connections within milliseconds: the bucket holds two, and refills one a second.
		conns := []net.Conn{dialRaw(t, s.addr), dialRaw(t, s.addr), dialRaw(t, s.addr)}

		if got := readUntilClosed(t, conns[2], waitTimeout); len(got) > 0 {
			t.Errorf("the connection over --per-ip-burst received % x, want EOF and no ServerHello", got)
		}
		wantRefusedAtAccept(t, s, conns[2], "per_ip_rate")
		for i, raw := range conns[:2] {
			if rc := rawConnect(t, tls.Client(raw, p.anonymous().tlsConfig()), 4, fmt.Sprintf("rate-%d", i)); rc != 0 {
				t.Errorf("connection %d within the burst: CONNACK %#x, want 0", i, rc)
			}
		}
		if v, _ := admin.metrics(t).value("mqtls_connections_refused_total", "listener", "tcp", "reason", "per_ip_rate"); v != 1 {
			t.Errorf("mqtls_connections_refused_total{reason=\"per_ip_rate\"} = %v, want 1", v)
		}
	})

	t.Run("--max-connections-per-identity", func(t *testing.T) {
		t.Parallel()
		p := newPKI(t)
		b := startBroker(t, "")
		s := startServer(t, append(p.serverArgs(b.addr, true), "--max-connections-per-identity", "1")...)
		d := p.device(t, "sensor-1")
		first := d.mustDialTLS(t, s.addr)
		if rc := rawConnect(t, first, 4, "s1-a"); rc != 0 {
			t.Fatalf("first session: CONNACK %#x, want 0", rc)
		}
		for _, tc := range []struct {
			level    byte
			clientID string
			want     byte
		}{
			{4, "s1-b", 0x03}, // 3.1.1 §3.2.2.3: server unavailable
			{5, "s1-c", 0x89}, // 5.0 §3.2.2.2: server busy
		} {
			conn := d.mustDialTLS(t, s.addr)
			if rc := rawConnect(t, conn, tc.level, tc.clientID); rc != tc.want {
				t.Errorf("second session of sensor-1 on level %d: CONNACK %#x, want %#x", tc.level, rc, tc.want)
			}
			wantClosed(t, conn, waitTimeout)
			conn.Close() // else mqtls lingers for what we might still send after its CONNACK
			wantAudit(t, s.auditFrom(t, conn.LocalAddr().String()), map[string]string{
				"outcome": "rejected", "reason": "max_connections_per_identity", "identity": "sensor-1",
			})
		}
		other := p.device(t, "sensor-2").mustDialTLS(t, s.addr)
		if rc := rawConnect(t, other, 4, "s2-a"); rc != 0 {
			t.Errorf("another identity: CONNACK %#x, want 0", rc)
		}
		wantPing(t, first)

		// Once the first session ends, its slot is free again.
		if _, err := first.Write([]byte{0xe0, 0x00}); err != nil { // DISCONNECT
			t.Fatal(err)
		}
		wantClosed(t, first, waitTimeout)
		first.Close()
		s.auditFrom(t, first.LocalAddr().String())
		again := d.mustDialTLS(t, s.addr)
		if rc := rawConnect(t, again, 4, "s1-d"); rc != 0 {
			t.Errorf("sensor-1 after its first session ended: CONNACK %#x, want 0", rc)
		}
		if n := b.connections(t); n != 3 {
			t.Errorf("the broker saw %d connections, want 3 (s1-a, s2-a, s1-d): the refused ones must not reach it", n)
		}
	})
}

// dialRaw opens a plain TCP connection, closed when t ends.
func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wantRefusedAtAccept waits for the line of a connection closed at accept by a limit.
func wantRefusedAtAccept(t *testing.T, s *server, c net.Conn, reason string) {
	t.Helper()
	e := s.waitLine(t, "connection refused at accept", func(e logEntry) bool { return e.str("remote") == c.LocalAddr().String() })
	if got := e.str("reason"); got != reason {
		t.Errorf("connection refused at accept with reason %q, want %q", got, reason)
	}
}

// clientHelloRecord returns the TLS record of a ClientHello crypto/tls would send.
func clientHelloRecord(t *testing.T) []byte {
	t.Helper()
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(client, &tls.Config{ServerName: "localhost"}).Handshake()
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

// TestMetricsAndHealth scrapes /metrics before and after traffic, and checks /healthz and
// /readyz.
func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, true), "--admin-listen", "127.0.0.1:0")...)
	admin := newAdminClient(t, s)
	if code, body := admin.get(t, "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q, want 200 \"ok\"", code, body)
	}

	before := admin.metrics(t)
	for _, tc := range []struct {
		file, role string
		notAfter   time.Time
	}{
		{p.serverCertFile, "server", readCertFile(t, p.serverCertFile).NotAfter},
		{p.caFile, "client_ca", p.ca.Cert.NotAfter},
	} {
		if v, ok := before.value("mqtls_certificate_expiry_timestamp_seconds", "file", tc.file, "role", tc.role); !ok || v != float64(tc.notAfter.Unix()) {
			t.Errorf("mqtls_certificate_expiry_timestamp_seconds{role=%q} = %v (present %v), want %d", tc.role, v, ok, tc.notAfter.Unix())
		}
	}
	if v, _ := before.value("mqtls_connections_total", "outcome", "forwarded"); v != 0 {
		t.Errorf("before any traffic mqtls_connections_total{outcome=\"forwarded\"} = %v, want 0", v)
	}

	// One session that publishes, and one device from a CA nobody trusts.
	if _, err := mqttSession(p.device(t, "sensor-1"), s.addr, "metrics-1"); err != nil {
		t.Fatal(err)
	}
	e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == "metrics-1" })
	wantAudit(t, e, map[string]string{"outcome": "forwarded"})
	otherCA, err := handshaketest.NewCA("untrusted CA")
	if err != nil {
		t.Fatal(err)
	}
	wantHandshakeRefused(t, s, p.deviceFrom(t, otherCA, handshaketest.Template{CommonName: "intruder"}), "untrusted_cert")

	after := admin.metrics(t)
	// Device → broker: CONNECT, PUBLISH, DISCONNECT; broker → device: CONNACK, PUBACK.
	wantIn := len(connectPacket(4, "metrics-1")) + len(qos1Publish("load/metrics-1", "x", 1)) + 2
	for _, w := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mqtls_connections_total", []string{"listener", "tcp", "outcome", "forwarded"}, 1},
		{"mqtls_connections_total", []string{"listener", "tcp", "outcome", "handshake_failed"}, 1},
		{"mqtls_connect_decisions_total", []string{"outcome", "forwarded"}, 1},
		{"mqtls_bytes_total", []string{"listener", "tcp", "direction", "in"}, float64(wantIn)},
		{"mqtls_bytes_total", []string{"listener", "tcp", "direction", "out"}, 8},
		{"mqtls_handshake_duration_seconds_count", []string{"kind", "mtls"}, 1},
		{"mqtls_handshake_failures_total", []string{"listener", "tcp", "reason", "untrusted_cert"}, 1},
		{"mqtls_connections_active", []string{"listener", "tcp"}, 0},
	} {
		if v, ok := after.value(w.name, w.labels...); !ok || v != w.want {
			t.Errorf("after traffic %s%v = %v (present %v), want %v", w.name, w.labels, v, ok, w.want)
		}
	}
	if in, _ := e.num("bytes_in"); in != float64(wantIn) {
		t.Errorf("audit bytes_in = %v, want %d, as mqtls_bytes_total says", in, wantIn)
	}
	if _, ok := after.value("mqtls_certificate_expiry_timestamp_seconds", "role", "server"); !ok {
		t.Error("mqtls_certificate_expiry_timestamp_seconds{role=\"server\"} is gone after traffic")
	}
	// The session dialled the broker just now.
	if code, body := admin.get(t, "/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Errorf("/readyz with the broker reached: %d %q, want 200 \"ready\"", code, body)
	}
}

func readCertFile(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM block", file)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDrainFinishesInFlightExchange: on the first signal (the context cancelled) /readyz
// turns 503 and an open MQTT 5 session keeps working, its QoS 1 exchanges acknowledged,
// until the device leaves; then serve returns nil, long before --drain-timeout. (That the
// listener stops accepting is TestDrain's: the log line comes just before it closes, so
// a connection made right after the line could still be accepted.)
func TestDrainFinishesInFlightExchange(t *testing.T) {
	t.Parallel()
	const drainTimeout = 20 * time.Second
	p := newPKI(t)
	b := startBroker(t, "")
	s := startServer(t, append(p.serverArgs(b.addr, true),
		"--admin-listen", "127.0.0.1:0", "--drain-timeout", drainTimeout.String())...)
	admin := newAdminClient(t, s)
	msgs := make(chan *paho.Publish, 8)
	subscribeOnBroker(t, b.addr, "drain-sub", "drain/#", msgs)
	pub, ack, err := p.device(t, "sensor-1").paho(t, s.addr, &paho.Connect{ClientID: "drain-pub", CleanStart: true, KeepAlive: 30}, nil)
	if err != nil {
		t.Fatalf("CONNECT: %v (CONNACK %+v)", err, ack)
	}
	publish := func(n int) error {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_, err := pub.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("drain/%d", n), QoS: 1, Payload: []byte(strconv.Itoa(n))})
		return err
	}
	received := func(n int) {
		t.Helper()
		select {
		case m := <-msgs:
			if want := fmt.Sprintf("drain/%d", n); m.Topic != want {
				t.Errorf("the subscriber received %q, want %q", m.Topic, want)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("the subscriber did not receive drain/%d", n)
		}
	}
	if err := publish(1); err != nil {
		t.Fatalf("PUBLISH before the drain: %v", err)
	}
	received(1)

	inFlight := make(chan error, 1)
	go func() { inFlight <- publish(2) }()
	cancelled := time.Now()
	s.cancel()
	s.waitLine(t, "shutting down: draining connections", nil)
	if code, body := admin.get(t, "/readyz"); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "draining" {
		t.Errorf("/readyz while draining: %d %q, want 503 \"draining\"", code, body)
	}
	if err := <-inFlight; err != nil {
		t.Errorf("the PUBLISH in flight when the drain began: %v, want its PUBACK", err)
	}
	received(2)
	if err := publish(3); err != nil {
		t.Errorf("PUBLISH during the drain: %v, want its PUBACK", err)
	}
	received(3)
	select {
	case <-s.done:
		t.Fatal("serve returned while a session was still open")
	default:
	}

	if err := pub.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(waitTimeout):
		t.Fatalf("serve did not return within %v of the last session ending", waitTimeout)
	}
	if took := time.Since(cancelled); took > drainTimeout/2 {
		t.Errorf("serve returned %v after the signal, want soon after the session ended (--drain-timeout %v)", took, drainTimeout)
	}
	if s.err != nil {
		t.Errorf("serve returned %v, want nil", s.err)
	}
	// Not ended_by: the device's DISCONNECT and close race the broker's close.
	wantAudit(t, s.audit(t, func(e logEntry) bool { return e.str("client_id") == "drain-pub" }),
		map[string]string{"outcome": "forwarded", "reason": ""})
	if n := s.logs.count(func(l string) bool { return strings.Contains(l, "drain timeout") }); n > 0 {
		t.Errorf("the drain timed out although the session ended:\n%s", s.logs)
	}
}

// subscribeOnBroker connects a paho MQTT 5 client straight to the broker and subscribes
// to topic at QoS 1; what it receives goes to msgs. It is disconnected when t ends.
func subscribeOnBroker(t *testing.T, addr, clientID, topic string, msgs chan<- *paho.Publish) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{
		Conn: packets.NewThreadSafeConn(conn),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case msgs <- pr.Packet:
				default:
				}
				return true, nil
			},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30}); err != nil {
		conn.Close()
		t.Fatalf("subscriber CONNECT to the broker: %v", err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		<-c.Done()
	})
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		t.Fatalf("SUBSCRIBE %s: %v", topic, err)
	}
}

// TestSecondSignalEndsDrain: a second signal while draining closes the open sessions at
// once, long before --drain-timeout, and serve still returns nil.
func TestSecondSignalEndsDrain(t *testing.T) {
	t.Parallel()
	const drainTimeout = 30 * time.Second
	p := newPKI(t)
	b := startBroker(t, "")
	hardStop := make(chan struct{})
	s := startServerWith(t, signals{hardStop: hardStop}, append(p.serverArgs(b.addr, true), "--drain-timeout", drainTimeout.String())...)
	conn := p.device(t, "sensor-1").mustDialTLS(t, s.addr)
	if rc := rawConnect(t, conn, 4, "hard-1"); rc != 0 {
		t.Fatalf("CONNACK %#x, want 0", rc)
	}

	s.cancel()
	s.waitLine(t, "shutting down: draining connections", nil)
	wantPing(t, conn) // draining: the session is still served
	start := time.Now()
	close(hardStop)
	select {
	case <-s.done:
	case <-time.After(waitTimeout):
		t.Fatalf("serve did not return within %v of the second signal (--drain-timeout %v)", waitTimeout, drainTimeout)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("serve returned %v after the second signal, want at once", took)
	}
	if s.err != nil {
		t.Errorf("serve returned %v, want nil", s.err)
	}
	s.waitLine(t, "second signal: closing all connections now", nil)
	wantClosed(t, conn, waitTimeout)
	wantAudit(t, s.auditFrom(t, conn.LocalAddr().String()), map[string]string{"outcome": "forwarded", "ended_by": "shutdown"})
}

// adminClient talks to mqtls's admin listener.
type adminClient struct {
	base string
	http *http.Client
}

// newAdminClient waits for s's "admin listening" line and returns a client for it.
func newAdminClient(t *testing.T, s *server) *adminClient {
	t.Helper()
	return &adminClient{
		base: "http://" + s.adminAddr(t),
		// No keep-alive: no idle connection (and its goroutines) outlives a request.
		http: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: waitTimeout},
	}
}

// get returns the status and body of path.
func (a *adminClient) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := a.http.Get(a.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// metrics scrapes /metrics.
func (a *adminClient) metrics(t *testing.T) promSamples {
	t.Helper()
	code, body := a.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	m, err := parsePromText(body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return m
}

// promSample is one sample of the Prometheus text format.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

type promSamples []promSample

// value sums the samples called name whose labels include the given name, value pairs,
// and reports whether there was any.
func (m promSamples) value(name string, labels ...string) (float64, bool) {
	sum, found := 0.0, false
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if v, ok := s.labels[labels[i]]; !ok || v != labels[i+1] {
				continue next
			}
		}
		sum, found = sum+s.value, true
	}
	return sum, found
}

// parsePromText parses the Prometheus text exposition format (version 0.0.4): comments
// skipped, label values unescaped.
func parsePromText(text string) (promSamples, error) {
	var out promSamples
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := promSample{labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			return nil, fmt.Errorf("line %d: no metric name: %q", n, line)
		}
		s.name, line = line[:i], line[i:]
		if line[0] == '{' {
			line = line[1:]
			for {
				line = strings.TrimLeft(line, " ,")
				if strings.HasPrefix(line, "}") {
					line = line[1:]
					break
				}
				eq := strings.Index(line, "=\"")
				if eq <= 0 {
					return nil, fmt.Errorf("line %d: bad label in %q", n, line)
				}
				key := line[:eq]
				var val strings.Builder
				j := eq + 2
				for ; j < len(line) && line[j] != '"'; j++ {
					c := line[j]
					if c == '\\' && j+1 < len(line) {
						j++
						c = line[j]
						if c == 'n' {
							c = '\n'
						}
					}
					val.WriteByte(c)
				}
				if j == len(line) {
					return nil, fmt.Errorf("line %d: unterminated label value", n)
				}
				s.labels[key] = val.String()
				line = line[j+1:]
			}
		}
		fields := strings.Fields(line) // value, then an optional timestamp
		if len(fields) == 0 {
			return nil, fmt.Errorf("line %d: no value", n)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: value: %w", n, err)
		}
		s.value = v
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no samples")
	}
	return out, nil
}
