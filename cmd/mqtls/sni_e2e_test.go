package main

// Several tenants on one port, chosen by SNI (#18): each with its own server certificate,
// client CA, policy and upstream.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake/handshaketest"
)

// tenantPKI is one tenant's CA, its server certificate for name, and a device.
type tenantPKI struct {
	ca                        *handshaketest.CA
	caFile, certFile, keyFile string
	dev                       *handshaketest.Cert
}

func newTenantPKI(t *testing.T, dir, name, deviceCN string, serverNames ...string) tenantPKI {
	t.Helper()
	ca, err := handshaketest.NewCA(name + " CA")
	if err != nil {
		t.Fatal(err)
	}
	tp := tenantPKI{ca: ca}
	if tp.caFile, err = handshaketest.WriteFile(dir, name+"-ca.crt", ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(handshaketest.Template{CommonName: serverNames[0], DNSNames: serverNames})
	if err != nil {
		t.Fatal(err)
	}
	if tp.certFile, tp.keyFile, err = srv.Files(dir, name+"-server"); err != nil {
		t.Fatal(err)
	}
	if tp.dev, err = ca.Issue(handshaketest.Template{CommonName: deviceCN}); err != nil {
		t.Fatal(err)
	}
	return tp
}

// dialSNI connects to addr asking for serverName, trusting roots and presenting dev.
func dialSNI(addr, serverName string, roots tenantPKI, dev *handshaketest.Cert) (*tls.Conn, error) {
	cert := dev.TLSCertificate()
	cfg := &tls.Config{ServerName: serverName, RootCAs: roots.ca.Pool(),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	d := &net.Dialer{Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c, err := (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

const sniConfig = `
listeners:
  - name: tenants
    listen: 127.0.0.1:0
    upstream: {{broker}}
    tls: {cert: {{defCert}}, key: {{defKey}}, client_ca: {{caA}}}
    policy: {client_id: enforce}
    sni:
      unknown: {{unknown}}
      tenants:
        - name: a
          server_names: [tenant-a.example]
          tls: {cert: {{aCert}}, key: {{aKey}}, client_ca: {{caA}}}
          policy: {client_id: enforce}
        - name: b
          server_names: [TENANT-B.example]
          upstream: {{brokerB}}
          tls: {cert: {{bCert}}, key: {{bKey}}, client_ca: {{caB}}}
          policy: {client_id: prefix}
`

func TestSNITenants(t *testing.T) {
	checkGoroutines(t)
	dir := t.TempDir()
	a := newTenantPKI(t, dir, "a", "dev-a", "tenant-a.example")
	b := newTenantPKI(t, dir, "b", "dev-b", "tenant-b.example")
	def := newTenantPKI(t, dir, "default", "unused", "other.example")
	brokerA, brokerB := startBroker(t, ""), startBroker(t, "")

	for _, unknown := range []string{"default", "refuse"} {
		t.Run("unknown "+unknown, func(t *testing.T) {
			file := writeConfig(t, t.TempDir(), "mqtls.yaml", "admin: {listen: 127.0.0.1:0}\n"+sniConfig, map[string]string{
				"broker": brokerA.addr, "brokerB": brokerB.addr, "unknown": unknown,
				"defCert": def.certFile, "defKey": def.keyFile, "caA": a.caFile, "caB": b.caFile,
				"aCert": a.certFile, "aKey": a.keyFile, "bCert": b.certFile, "bKey": b.keyFile,
			})
			if unknown == "default" { // mqtls check loads and shows every tenant's files
				out, err := runApp(t, "check", "--config", file)
				if err != nil {
					t.Fatalf("mqtls check: %v\n%s", err, out)
				}
				for _, w := range []string{"tenant tenants/a [tenant-a.example]", "tenant tenants/b [tenant-b.example] -> " + brokerB.addr, b.caFile, "\nok\n"} {
					if !strings.Contains(out, w) {
						t.Errorf("mqtls check printed\n%s\nwant it to contain %q", out, w)
					}
				}
			}
			s := startConfigServer(t, signals{}, file, "tenants")
			addr := s.addrOf(t, "tenants")

			// Each tenant's device on its own name reaches its own broker.
			for _, tc := range []struct {
				name, clientID string
				pki            tenantPKI
				broker         *broker
			}{
				{"tenant-a.example", "dev-a", a, brokerA},
				{"tenant-b.example", "dev-b/1", b, brokerB},
			} {
				c, err := dialSNI(addr, tc.name, tc.pki, tc.pki.dev)
				if err != nil {
					t.Fatalf("%s: handshake: %v", tc.name, err)
				}
				if code := rawConnect(t, c, 4, tc.clientID); code != 0 {
					t.Errorf("%s: CONNACK %d, want 0", tc.name, code)
				}
				tc.broker.waitLog(t, "as "+tc.clientID)
				c.Close()
				e := s.audit(t, func(e logEntry) bool { return e.str("client_id") == tc.clientID })
				wantAudit(t, e, map[string]string{"outcome": "forwarded", "tenant": "tenants/" + tc.name[7:8]})
			}

			// Tenant A's device on tenant B's name: B's CA does not know it.
			if c, err := dialSNI(addr, "tenant-b.example", b, a.dev); err == nil {
				readUntilClosed(t, c, waitTimeout)
				c.Close()
			}
			e := s.audit(t, func(e logEntry) bool { return e.str("tenant") == "tenants/b" && e.str("outcome") == "handshake_failed" })
			wantAudit(t, e, map[string]string{"reason": "untrusted_cert"})

			// An unknown name.
			c, err := dialSNI(addr, "other.example", def, a.dev)
			switch unknown {
			case "default": // the listener's own entry: its certificate, CA A and policy
				if err != nil {
					t.Fatalf("unknown name with a default entry: %v", err)
				}
				if code := rawConnect(t, c, 4, "dev-a"); code != 0 {
					t.Errorf("default entry: CONNACK %d, want 0", code)
				}
				c.Close()
				// Metrics (counted before each audit line is written): each tenant's sessions
				// under its name; the listener's gauge of open connections, which counted
				// them at accept, back to zero once the last one's line is out.
				s.audit(t, func(e logEntry) bool { return e.str("client_id") == "dev-a" && e.str("tenant") == "" })
				m := scrapeMetrics(t, s.adminAddr(t))
				fwdA := m[series("mqtls_connections_total", "listener", "tenants/a", "mode", "server", "outcome", "forwarded")]
				fwdB := m[series("mqtls_connections_total", "listener", "tenants/b", "mode", "server", "outcome", "forwarded")]
				active := m[series("mqtls_connections_active", "listener", "tenants")]
				if fwdA != 1 || fwdB != 1 || active != 0 {
					t.Errorf("metrics: tenants/a forwarded %v, tenants/b forwarded %v, tenants active %v; want 1, 1, 0", fwdA, fwdB, active)
				}
			case "refuse":
				// crypto/tls reports an alert received as a *net.OpError "remote error"
				// around its (unexported) alert, which prints the alert's name.
				var op *net.OpError
				if err == nil || !errors.As(err, &op) || op.Op != "remote error" || op.Err.Error() != "tls: unrecognized name" {
					t.Errorf("unknown name: handshake error %v, want the alert unrecognized_name", err)
				}
				e := s.audit(t, func(e logEntry) bool { return e.str("reason") == "unrecognized_name" })
				wantAudit(t, e, map[string]string{"outcome": "handshake_failed"})
			}
		})
	}
}

// TestSNIRevokeTerminates: with admin.revoke_terminates, a reload judges each tenant's
// sessions by that tenant's files: a change elsewhere leaves them open, and removing the
// tenant's CA closes them.
func TestSNIRevokeTerminates(t *testing.T) {
	checkGoroutines(t)
	dir := t.TempDir()
	a := newTenantPKI(t, dir, "a", "dev-a", "tenant-a.example")
	b := newTenantPKI(t, dir, "b", "dev-b", "tenant-b.example")
	def := newTenantPKI(t, dir, "default", "unused", "other.example")
	br := startBroker(t, "")
	cfg := "admin: {reload_interval: 100ms, revoke_terminates: true}\n" + sniConfig
	file := writeConfig(t, t.TempDir(), "mqtls.yaml", cfg, map[string]string{
		"broker": br.addr, "brokerB": br.addr, "unknown": "refuse",
		"defCert": def.certFile, "defKey": def.keyFile, "caA": a.caFile, "caB": b.caFile,
		"aCert": a.certFile, "aKey": a.keyFile, "bCert": b.certFile, "bKey": b.keyFile,
	})
	s := startConfigServer(t, signals{}, file, "tenants")
	addr := s.addrOf(t, "tenants")
	c, err := dialSNI(addr, "tenant-b.example", b, b.dev)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code := rawConnect(t, c, 4, "dev-b/1"); code != 0 {
		t.Fatalf("CONNACK %d, want 0", code)
	}
	ping := func() error {
		_ = c.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := c.Write([]byte{0xc0, 0}); err != nil {
			return err
		}
		typ, _, err := readPacket(c)
		if err == nil && typ != 0xd0 {
			err = errors.New("not a PINGRESP")
		}
		return err
	}

	// Tenant A's CA file changes: tenant B's session is not judged by it.
	extra, err := os.ReadFile(def.caFile)
	if err != nil {
		t.Fatal(err)
	}
	appendFile(t, a.caFile, extra)
	s.waitLine(t, "reloaded", func(e logEntry) bool { return strings.Contains(fmt.Sprint(e["files"]), a.caFile) })
	if err := ping(); err != nil {
		t.Fatalf("tenant B's session after a reload of tenant A's files: %v", err)
	}

	// Tenant B's CA is replaced by another: its session no longer verifies, and is closed.
	if err := os.WriteFile(b.caFile, extra, 0o600); err != nil {
		t.Fatal(err)
	}
	s.waitLine(t, "closed sessions whose credentials the reloaded files no longer accept", nil)
	if err := ping(); err == nil {
		t.Errorf("tenant B's session still open after its CA was removed")
	}
}

func appendFile(t *testing.T, name string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
}
