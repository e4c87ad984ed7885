package main

// End-to-end: an audit of what mqtls's listeners offer, the way an outside scanner sees
// it. testssl.sh checks the one-way and mutual TLS listeners (protocols, cipher
// categories, every cipher per protocol, forward secrecy, the known vulnerabilities);
// testssl.sh cannot speak TLS-PSK, so openssl s_client, gnutls-cli and hand-made
// ClientHellos probe the PSK listener for every version and suite it must refuse.
// handshake/tlspsk's interop tests cover the same suites against the TLS-PSK server
// alone; these go through mqtls's listener, its routing and its audit line.

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testsslInstall is how to get testssl.sh on Debian/Ubuntu; ./scripts/test.sh does it.
const testsslInstall = "sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y testssl.sh (Debian's command is testssl), or run ./scripts/test.sh, which does it"

// testsslBin returns testssl.sh's path, failing the test (never skipping it) when it is
// missing.
func testsslBin(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"testssl", "testssl.sh"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("testssl.sh is not installed; install it with: %s", testsslInstall)
	return ""
}

// testsslFinding is one entry of testssl.sh's flat JSON output (--jsonfile).
type testsslFinding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"` // DEBUG, INFO, OK, LOW, MEDIUM, HIGH, CRITICAL, WARN
	Finding  string `json:"finding"`
}

// runTestssl scans addr with testssl.sh and returns its findings. The checks are the ones
// that matter for a TLS front end that is not a web server: protocols (-p), cipher
// categories (-s), forward secrecy (-f), vulnerabilities (-U) and every cipher per
// protocol (-E). No DNS lookups (-n none): the target is a loopback address.
func runTestssl(t *testing.T, addr string) map[string]testsslFinding {
	t.Helper()
	bin := testsslBin(t)
	jsonFile := filepath.Join(t.TempDir(), "testssl.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := []string{"--quiet", "--color", "0", "--warnings", "off", "-n", "none", "--jsonfile", jsonFile,
		"-p", "-s", "-f", "-U", "-E", addr}
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.CombinedOutput()
	t.Logf("testssl %s took %v", strings.Join(args, " "), time.Since(start).Round(time.Second))
	if ctx.Err() != nil {
		t.Fatalf("testssl did not finish within 3 minutes:\n%s", out)
	}
	// testssl.sh's exit status adds up findings; 242 and above are its own errors.
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() >= 242 || err != nil && exit == nil {
		t.Fatalf("testssl failed: %v\n%s", err, out)
	}
	data, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatalf("reading testssl's JSON: %v\n%s", err, out)
	}
	var list []testsslFinding
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("parsing testssl's JSON: %v\n%s", err, data)
	}
	findings := map[string]testsslFinding{}
	for _, f := range list {
		findings[f.ID] = f
	}
	if _, ok := findings["scanTime"]; !ok {
		t.Fatalf("testssl's JSON has no scanTime: the scan did not finish\n%s", out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testssl output:\n%s", out)
		}
	})
	return findings
}

// TestTLSAuditTestssl scans the one-way and the mutual TLS listener with testssl.sh and
// requires: nothing below TLS 1.2, no NULL, anonymous, export, low, 3DES or CBC suites,
// only forward-secret AEAD suites on TLS 1.2, and no finding worse than LOW.
func TestTLSAuditTestssl(t *testing.T) {
	t.Parallel()
	testsslBin(t)
	p := newPKI(t)
	upstream := net.JoinHostPort("127.0.0.1", "1") // never reached: no scan sends a CONNECT
	for _, tc := range []struct {
		name   string
		mutual bool
		// warnOK are the findings that may be WARN: checks a required client certificate
		// keeps testssl from running.
		warnOK []string
	}{
		{"one-way TLS", false, nil},
		{"mutual TLS", true, []string{"secure_client_renego", "BREACH"}},
	} {
		// One scan at a time: each runs hundreds of openssl processes.
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, append(p.serverArgs(upstream, tc.mutual), "--log-level", "info")...)
			findings := runTestssl(t, s.addr)

			want := func(id, prefix string) {
				t.Helper()
				f, ok := findings[id]
				if !ok {
					t.Errorf("testssl reported no %s", id)
				} else if !strings.HasPrefix(f.Finding, prefix) {
					t.Errorf("%s: %q (%s), want %q", id, f.Finding, f.Severity, prefix)
				}
			}
			for _, id := range []string{"SSLv2", "SSLv3", "TLS1", "TLS1_1"} {
				want(id, "not offered")
			}
			want("TLS1_2", "offered")
			want("TLS1_3", "offered")
			for _, id := range []string{"cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
				"cipherlist_3DES_IDEA", "cipherlist_AVERAGE"} { // AVERAGE: "Obsolete CBC ciphers"
				want(id, "not offered")
			}
			want("cipherlist_STRONG", "offered")
			want("PFS", "offered")

			// -E lists every suite the listener accepted, per protocol.
			var suites []string
			for id, f := range findings {
				if !strings.HasPrefix(id, "cipher-") {
					continue
				}
				suites = append(suites, f.Finding)
				switch {
				case strings.HasPrefix(id, "cipher-tls1_3_"):
				case strings.HasPrefix(id, "cipher-tls1_2_") && strings.Contains(f.Finding, "TLS_ECDHE_"):
				default:
					t.Errorf("accepted suite %s: %s; want only TLS 1.3 and ECDHE suites on TLS 1.2", id, f.Finding)
					continue
				}
				if !strings.Contains(f.Finding, "GCM") && !strings.Contains(f.Finding, "CHACHA20_POLY1305") {
					t.Errorf("accepted suite %s: %s; want only AEAD suites (AES-GCM, ChaCha20-Poly1305)", id, f.Finding)
				}
			}
			if len(suites) == 0 {
				t.Errorf("testssl -E listed no accepted suite")
			}
			slices.Sort(suites)
			t.Logf("accepted suites:\n%s", strings.Join(suites, "\n"))

			// The vulnerability checks all ran, and nothing anywhere is worse than LOW.
			for _, id := range []string{"heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
				"CRIME_TLS", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN", "LOGJAM", "BEAST", "LUCKY13", "RC4"} {
				if _, ok := findings[id]; !ok {
					t.Errorf("testssl reported nothing for %s", id)
				}
			}
			for _, f := range findings {
				switch f.Severity {
				case "MEDIUM", "HIGH", "CRITICAL":
					t.Errorf("testssl %s %s: %s", f.Severity, f.ID, f.Finding)
				case "WARN":
					if !slices.Contains(tc.warnOK, f.ID) {
						t.Errorf("testssl could not check %s: %s", f.ID, f.Finding)
					}
				}
			}
		})
	}
}

// TestTLSAuditProbes probes a TLS-PSK listener, a listener that serves certificates and
// PSK together, and a mutual TLS one with every protocol version and kind of suite mqtls
// must refuse, through real clients and hand-made ClientHellos, and checks the alert the
// client gets and the reason in mqtls's audit line.
func TestTLSAuditProbes(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	psk := pskDevice{identity: "dev-1", keyHex: randomHexKey(t)}
	pskFile := writePSKFile(t, p.dir, "psk.txt", psk.identity+":"+psk.keyHex)
	upstream := net.JoinHostPort("127.0.0.1", "1")
	pskOnly := []string{"--upstream", upstream, "--psk-file", pskFile}
	mixed := append(p.serverArgs(upstream, true), "--psk-file", pskFile)
	openssl := func(args ...string) []string {
		return append([]string{"-psk", psk.keyHex, "-psk_identity", psk.identity}, args...)
	}
	gnutls := func(priority string) []string {
		return []string{"--pskusername", psk.identity, "--pskkey", psk.keyHex, "--priority", priority}
	}
	const (
		tls12PSK = "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:-MAC-ALL"
		alert40  = "handshake failure" // what each client says, lower-cased
		alert70  = "protocol version"
	)

	type probe struct {
		name     string
		mixed    bool     // against the certificate + PSK listener
		certOnly bool     // against a mutual TLS listener without PSK
		bin      string   // "openssl", "gnutls-cli", or "" for hello
		args     []string // after the address
		hello    []byte   // a raw ClientHello record, for what no client here sends
		stdin    string   // the client's standard input ("": at EOF)
		ok       bool     // the handshake must succeed
		peerSays string   // in the client's output, lower-cased
		outcome  string   // the audit line's; "" means handshake_failed, or bad_first_packet when ok
		reason   string   // the audit line's
	}
	probes := []probe{
		// Controls: the probes reach the listener and a good client gets in.
		{name: "openssl TLS 1.2 default", bin: "openssl", args: openssl("-tls1_2"), ok: true, reason: "client_closed"},
		{name: "gnutls-cli default", bin: "gnutls-cli", args: gnutls("NORMAL:+ECDHE-PSK:+PSK"), ok: true, reason: "client_closed"},

		// Renegotiation (s_client's "R" command) before the CONNECT: refused with
		// no_renegotiation, and the audit line says so rather than "client_closed".
		{name: "openssl renegotiation", bin: "openssl", args: openssl("-tls1_2"), stdin: "R\n",
			peerSays: "no renegotiation", outcome: "bad_first_packet", reason: "renegotiation_refused"},

		// Versions below (and above) TLS 1.2.
		{name: "hello SSL 3.0", hello: handClientHello(0x0300, 0x00a8, 0x008c), peerSays: "", reason: "protocol_version"},
		{name: "openssl TLS 1.0", bin: "openssl", args: openssl("-tls1", "-cipher", "PSK@SECLEVEL=0"), peerSays: alert70, reason: "protocol_version"},
		{name: "openssl TLS 1.1", bin: "openssl", args: openssl("-tls1_1", "-cipher", "PSK@SECLEVEL=0"), peerSays: alert70, reason: "protocol_version"},
		{name: "openssl TLS 1.3 only", bin: "openssl", args: openssl("-tls1_3"), peerSays: alert70, reason: "protocol_version"},
		{name: "gnutls-cli TLS 1.0", bin: "gnutls-cli", args: gnutls("NORMAL:-VERS-ALL:+VERS-TLS1.0:-KX-ALL:+PSK"), peerSays: "error in protocol version", reason: "protocol_version"},
		{name: "gnutls-cli TLS 1.1", bin: "gnutls-cli", args: gnutls("NORMAL:-VERS-ALL:+VERS-TLS1.1:-KX-ALL:+PSK"), peerSays: "error in protocol version", reason: "protocol_version"},
		{name: "gnutls-cli TLS 1.3 only", bin: "gnutls-cli", args: gnutls("NORMAL:-VERS-ALL:+VERS-TLS1.3"), peerSays: "error in protocol version", reason: "protocol_version"},
		{name: "SSLv2-format hello", hello: sslv2Hello(), reason: "not_tls"},

		// CBC with MAC-then-encrypt (Lucky13): refused unless encrypt_then_mac is offered.
		{name: "openssl PSK-AES128-CBC-SHA256 -no_etm", bin: "openssl", args: openssl("-tls1_2", "-cipher", "PSK-AES128-CBC-SHA256", "-no_etm"), peerSays: alert40, reason: "cbc_without_etm"},
		{name: "openssl ECDHE-PSK-AES128-CBC-SHA256 -no_etm", bin: "openssl", args: openssl("-tls1_2", "-cipher", "ECDHE-PSK-AES128-CBC-SHA256", "-no_etm"), peerSays: alert40, reason: "cbc_without_etm"},
		{name: "gnutls-cli PSK AES-128-CBC-SHA256 without EtM", bin: "gnutls-cli", args: gnutls(tls12PSK + ":+AES-128-CBC:+SHA256:%NO_ETM"), peerSays: "handshake failed", reason: "cbc_without_etm"},

		// Suites mqtls does not implement, even with encrypt_then_mac.
		{name: "openssl PSK-AES128-CBC-SHA", bin: "openssl", args: openssl("-tls1_2", "-cipher", "PSK-AES128-CBC-SHA"), peerSays: alert40, reason: "no_shared_cipher"},
		{name: "openssl ECDHE-PSK-AES256-CBC-SHA384", bin: "openssl", args: openssl("-tls1_2", "-cipher", "ECDHE-PSK-AES256-CBC-SHA384"), peerSays: alert40, reason: "no_shared_cipher"},
		{name: "openssl PSK-NULL-SHA256", bin: "openssl", args: openssl("-tls1_2", "-cipher", "PSK-NULL-SHA256:ECDHE-PSK-NULL-SHA256@SECLEVEL=0"), peerSays: alert40, reason: "no_shared_cipher"},
		{name: "openssl PSK-CAMELLIA128-SHA256 and PSK-ARIA128-GCM-SHA256", bin: "openssl", args: openssl("-tls1_2", "-cipher", "PSK-CAMELLIA128-SHA256:PSK-ARIA128-GCM-SHA256"), peerSays: alert40, reason: "no_shared_cipher"},
		{name: "openssl DHE-PSK and RSA-PSK", bin: "openssl", args: openssl("-tls1_2", "-cipher", "DHE-PSK-AES128-GCM-SHA256:RSA-PSK-AES128-GCM-SHA256"), peerSays: alert40, reason: "no_shared_cipher"},
		{name: "gnutls-cli PSK NULL-SHA256", bin: "gnutls-cli", args: gnutls(tls12PSK + ":+NULL:+SHA256"), peerSays: "handshake failed", reason: "no_shared_cipher"},
		{name: "gnutls-cli PSK 3DES-CBC-SHA1", bin: "gnutls-cli", args: gnutls(tls12PSK + ":+3DES-CBC:+SHA1"), peerSays: "handshake failed", reason: "no_shared_cipher"},
		{name: "gnutls-cli PSK ARCFOUR-128-SHA1", bin: "gnutls-cli", args: gnutls(tls12PSK + ":+ARCFOUR-128:+SHA1"), peerSays: "handshake failed", reason: "no_shared_cipher"},
		{name: "gnutls-cli PSK AES-128-CBC-SHA1", bin: "gnutls-cli", args: gnutls(tls12PSK + ":+AES-128-CBC:+SHA1"), peerSays: "handshake failed", reason: "no_shared_cipher"},
		{name: "hello PSK NULL, RC4 and 3DES only", hello: handClientHello(0x0303, 0x002c, 0x00b0, 0x008a, 0x008b), reason: "no_shared_cipher"},

		// Certificate suites on a PSK-only listener.
		{name: "openssl certificate client", bin: "openssl", args: []string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"}, peerSays: alert40, reason: "no_shared_cipher"},
		{name: "gnutls-cli certificate client", bin: "gnutls-cli", args: []string{"--insecure", "--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA"}, peerSays: "handshake failed", reason: "no_shared_cipher"},

		// The listener with certificates too: a hello with a usable PSK suite goes to the
		// PSK server, any other to crypto/tls, which has no PSK suite at all. OpenSSL's
		// TLS 1.1 hello still lists the AEAD PSK suites; GnuTLS's TLS 1.0 one does not.
		{name: "mixed: openssl TLS 1.1 PSK", mixed: true, bin: "openssl", args: openssl("-tls1_1", "-cipher", "PSK@SECLEVEL=0"), peerSays: alert70, reason: "protocol_version"},
		{name: "mixed: openssl PSK CBC -no_etm", mixed: true, bin: "openssl", args: openssl("-tls1_2", "-cipher", "PSK-AES128-CBC-SHA256", "-no_etm"), peerSays: alert40, reason: "no_shared_cipher"},
		{name: "mixed: openssl PSK-NULL-SHA256", mixed: true, bin: "openssl", args: openssl("-tls1_2", "-cipher", "PSK-NULL-SHA256@SECLEVEL=0"), peerSays: alert40, reason: "no_shared_cipher"},
		{name: "mixed: gnutls-cli TLS 1.0 PSK", mixed: true, bin: "gnutls-cli", args: gnutls("NORMAL:-VERS-ALL:+VERS-TLS1.0:-KX-ALL:+PSK"), peerSays: "", reason: "protocol_version"},
		{name: "mixed: hello SSL 3.0", mixed: true, hello: handClientHello(0x0300, 0x00a8, 0x008c), reason: "protocol_version"},

		// The certificate listener's refusals, as testssl.sh sees them, with their reason:
		// crypto/tls gives none more specific than handshake_failed.
		{name: "tls: openssl TLS 1.0", certOnly: true, bin: "openssl", args: []string{"-tls1", "-cipher", "DEFAULT@SECLEVEL=0"}, peerSays: alert70, reason: "protocol_version"},
		{name: "tls: openssl TLS 1.1", certOnly: true, bin: "openssl", args: []string{"-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"}, peerSays: alert70, reason: "protocol_version"},
		{name: "tls: openssl RSA key exchange", certOnly: true, bin: "openssl", args: []string{"-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-GCM-SHA384"}, peerSays: alert40, reason: "no_shared_cipher"},
	}

	for _, pr := range probes {
		t.Run(pr.name, func(t *testing.T) {
			t.Parallel()
			args := pskOnly
			switch {
			case pr.mixed:
				args = mixed
			case pr.certOnly:
				args = p.serverArgs(upstream, true)
			}
			s := startServer(t, args...)
			host, port, _ := net.SplitHostPort(s.addr)
			var out string
			var local string
			switch pr.bin {
			case "":
				conn := dialRawTCP(t, s.addr)
				local = conn.LocalAddr().String()
				sendRaw(conn, pr.hello)
				got := readUntilClosed(t, conn, waitTimeout)
				if len(got) > 0 && got[0] != 0x15 {
					t.Errorf("answer % x, want nothing or a TLS alert", got)
				}
				out = strings.ToLower(strings.TrimSpace(string(got)))
			case "openssl":
				var err error
				out, err = runPeerWithInput(t, pr.stdin, "openssl", append([]string{"s_client", "-connect", s.addr}, pr.args...)...)
				if (err == nil) != pr.ok {
					t.Errorf("openssl s_client: error %v, want success %v:\n%s", err, pr.ok, out)
				}
			case "gnutls-cli":
				var err error
				out, err = runPeerBin(t, "gnutls-cli", append(pr.args, "-p", port, host)...)
				if (err == nil) != pr.ok {
					t.Errorf("gnutls-cli: error %v, want success %v:\n%s", err, pr.ok, out)
				}
			}
			if pr.bin != "" && !strings.Contains(strings.ToLower(out), pr.peerSays) {
				t.Errorf("%s output lacks %q:\n%s", pr.bin, pr.peerSays, out)
			}
			var e logEntry
			if local != "" {
				e = s.auditFrom(t, local)
			} else {
				e = s.audit(t, func(logEntry) bool { return true })
			}
			want := map[string]string{"reason": pr.reason, "outcome": pr.outcome}
			switch {
			case pr.outcome != "":
			case pr.ok:
				want["outcome"] = "bad_first_packet" // the client hangs up without a CONNECT
			default:
				want["outcome"] = "handshake_failed"
			}
			wantAudit(t, e, want)
		})
	}
}

// runPeerWithInput runs a peer program with stdin as its standard input and returns its
// combined output.
func runPeerWithInput(t *testing.T, stdin, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, peerBin(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish within 20s:\n%s", name, strings.Join(args, " "), out)
	}
	return string(out), err
}

// handClientHello returns a TLS ClientHello record with the given client_version and
// cipher suites, no compression and no extensions: the shape of an SSL 3.0 hello, or of a
// TLS 1.2 one offering only what no library here will send.
func handClientHello(version uint16, suites ...uint16) []byte {
	var body []byte
	body = append(body, byte(version>>8), byte(version)) // client_version
	body = append(body, make([]byte, 32)...)             // random
	body = append(body, 0x00)                            // session_id: empty
	body = append(body, byte(len(suites)*2>>8), byte(len(suites)*2))
	for _, s := range suites {
		body = append(body, byte(s>>8), byte(s))
	}
	body = append(body, 0x01, 0x00) // compression_methods: null only
	hs := append([]byte{0x01, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	rec := []byte{0x16, byte(version >> 8), byte(version), byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

// sslv2Hello returns an SSL 2.0-format CLIENT-HELLO (RFC 6101 appendix E.2) offering
// version 3.1 and one suite: the compatibility hello of very old clients.
func sslv2Hello() []byte {
	body := []byte{
		0x01,       // msg_type: CLIENT-HELLO
		0x03, 0x01, // version: TLS 1.0
		0x00, 0x03, // cipher_spec_length
		0x00, 0x00, // session_id_length
		0x00, 0x10, // challenge_length
		0x00, 0x00, 0x8c, // TLS_PSK_WITH_AES_128_CBC_SHA
	}
	body = append(body, make([]byte, 16)...) // challenge
	return append([]byte{0x80 | byte(len(body)>>8), byte(len(body))}, body...)
}
