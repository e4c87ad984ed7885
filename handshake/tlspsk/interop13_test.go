package tlspsk

import (
	"bufio"
	"context"
	"encoding/hex"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

var opensslCipherLine13 = regexp.MustCompile(`(?:New|Reused), (\S+), Cipher is (\S+)`)

// TestOpenSSLClientTLS13 runs `openssl s_client -psk` with TLS 1.3 against the server:
// OpenSSL turns the PSK into a TLS 1.3 external PSK bound to SHA-256.
func TestOpenSSLClientTLS13(t *testing.T) {
	openssl := needPeer(t, "openssl")
	tests := []struct {
		name     string
		args     []string
		cfg      Config
		identity string
		key      []byte
		want     uint16
		reason   string
		peerSays string
	}{
		{name: "-tls1_3", args: []string{"-tls1_3"}, want: TLS_AES_128_GCM_SHA256},
		{name: "no version flag", want: TLS_AES_128_GCM_SHA256},
		{name: "ChaCha20", args: []string{"-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"}, want: TLS_CHACHA20_POLY1305_SHA256},
		{name: "CCM", args: []string{"-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"}, want: TLS_AES_128_CCM_SHA256},
		{name: "CCM-8", args: []string{"-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256"}, want: TLS_AES_128_CCM_8_SHA256},
		{name: "P-256 after HelloRetryRequest", args: []string{"-tls1_3", "-groups", "P-384:P-256"}, want: TLS_AES_128_GCM_SHA256},
		{name: "P-256 share", args: []string{"-tls1_3", "-groups", "P-256"}, want: TLS_AES_128_GCM_SHA256},
		{name: "psk_ke allowed", args: []string{"-tls1_3", "-allow_no_dhe_kex"}, cfg: Config{AllowPSKKE: true}, want: TLS_AES_128_GCM_SHA256},
		{name: "wrong key", args: []string{"-tls1_3"}, key: otherKey, reason: ReasonDecryptError, peerSays: "alert decrypt error"},
		{name: "unknown identity", args: []string{"-tls1_3"}, identity: "device-2", reason: ReasonUnknownPSKIdentity, peerSays: "alert decrypt error"},
		{name: "TLS 1.3 only against MaxVersion 1.2", args: []string{"-tls1_3"}, cfg: Config{MaxVersion: VersionTLS12}, reason: ReasonProtocolVersion, peerSays: "alert protocol version"},
		{name: "TLS 1.2 only against MinVersion 1.3", args: []string{"-tls1_2"}, cfg: Config{MinVersion: VersionTLS13}, reason: ReasonProtocolVersion, peerSays: "alert protocol version"},
		{name: "no common group", args: []string{"-tls1_3", "-groups", "P-384"}, reason: ReasonNoSharedGroup, peerSays: "alert handshake failure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Lookup, cfg.Hint = testLookup, "mqtls"
			srv := startServer(t, &cfg, pingPong)
			identity, key := testIdentity, testKey
			if tt.identity != "" {
				identity = tt.identity
			}
			if tt.key != nil {
				key = tt.key
			}
			args := append([]string{"s_client", "-connect", srv.addr(), "-ign_eof", "-psk", hex.EncodeToString(key), "-psk_identity", identity}, tt.args...)
			out, peerErr := runPeer(t, openssl, strings.NewReader("ping\n"), args...)
			r := srv.result()
			if tt.want == 0 {
				if peerErr == nil || r.err == nil {
					t.Fatalf("handshake succeeded; s_client:\n%s", out)
				}
				if got := ReasonOf(r.err); got != tt.reason {
					t.Errorf("server reason %q (%v), want %q", got, r.err, tt.reason)
				}
				if !strings.Contains(strings.ToLower(out), tt.peerSays) {
					t.Errorf("s_client output lacks %q:\n%s", tt.peerSays, out)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("server: %v\ns_client:\n%s", r.err, out)
			}
			// OpenSSL reports a TLS 1.3 PSK handshake as "Reused".
			m := opensslCipherLine13.FindStringSubmatch(out)
			if m == nil || m[1] != "TLSv1.3" || m[2] != CipherSuiteName(tt.want) {
				t.Errorf("s_client did not report TLSv1.3 with %s:\n%s", CipherSuiteName(tt.want), out)
			}
			if r.state.Version != VersionTLS13 || r.state.CipherSuite != tt.want || r.state.Identity != testIdentity {
				t.Errorf("server state %+v, want TLS 1.3 with %s", r.state, CipherSuiteName(tt.want))
			}
			if string(r.data) != "ping\n" || !strings.Contains(out, "pong ping") {
				t.Errorf("data did not make the round trip: server got %q; s_client:\n%s", r.data, out)
			}
		})
	}
}

// TestGnuTLSClientTLS13 runs `gnutls-cli --pskusername --pskkey` with TLS 1.3 priorities.
func TestGnuTLSClientTLS13(t *testing.T) {
	gnutls := needPeer(t, "gnutls-cli")
	const only13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+PSK:-CIPHER-ALL"
	tests := []struct {
		name     string
		priority string
		cfg      Config
		key      []byte
		want     uint16
		reason   string
		peerSays string
	}{
		{"default priorities", "NORMAL:+ECDHE-PSK:+PSK", Config{}, testKey, TLS_AES_128_GCM_SHA256, "", ""},
		{"AES-128-GCM", only13 + ":+AES-128-GCM", Config{}, testKey, TLS_AES_128_GCM_SHA256, "", ""},
		{"ChaCha20", only13 + ":+CHACHA20-POLY1305", Config{}, testKey, TLS_CHACHA20_POLY1305_SHA256, "", ""},
		{"AES-128-CCM", only13 + ":+AES-128-CCM", Config{}, testKey, TLS_AES_128_CCM_SHA256, "", ""},
		{"AES-128-CCM-8", only13 + ":+AES-128-CCM-8", Config{}, testKey, TLS_AES_128_CCM_8_SHA256, "", ""},
		{"P-256 only (HelloRetryRequest or share)", only13 + ":+AES-128-GCM:-GROUP-ALL:+GROUP-SECP256R1", Config{}, testKey, TLS_AES_128_GCM_SHA256, "", ""},
		{"psk_ke only, allowed", "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK", Config{AllowPSKKE: true}, testKey, TLS_AES_128_GCM_SHA256, "", ""},
		{"psk_ke only, refused", "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK", Config{}, testKey, 0, ReasonPSKKERefused, "Handshake failed"},
		{"wrong key", only13 + ":+AES-128-GCM", Config{}, otherKey, 0, ReasonDecryptError, "Decrypt error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Lookup = testLookup
			srv := startServer(t, &cfg, pongAfterEOF)
			host, port, _ := net.SplitHostPort(srv.addr())
			out, peerErr := runPeer(t, gnutls, strings.NewReader("ping\n"), "--pskusername", testIdentity,
				"--pskkey", hex.EncodeToString(tt.key), "--priority", tt.priority, "-p", port, host)
			r := srv.result()
			if tt.want == 0 {
				if peerErr == nil || r.err == nil {
					t.Fatalf("handshake succeeded; gnutls-cli:\n%s", out)
				}
				if got := ReasonOf(r.err); got != tt.reason {
					t.Errorf("server reason %q (%v), want %q", got, r.err, tt.reason)
				}
				if !strings.Contains(out, tt.peerSays) {
					t.Errorf("gnutls-cli output lacks %q:\n%s", tt.peerSays, out)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("server: %v\ngnutls-cli (%v):\n%s", r.err, peerErr, out)
			}
			if !strings.Contains(out, "Description: (TLS1.3") {
				t.Errorf("gnutls-cli did not negotiate TLS 1.3:\n%s", out)
			}
			if r.state.Version != VersionTLS13 || r.state.CipherSuite != tt.want || r.state.Identity != testIdentity {
				t.Errorf("server state %+v, want TLS 1.3 with %s", r.state, CipherSuiteName(tt.want))
			}
			if string(r.data) != "ping\n" || !strings.Contains(out, "pong ping") {
				t.Errorf("data did not make the round trip: server got %q; gnutls-cli:\n%s", r.data, out)
			}
		})
	}
}

// nodeClient is a Node.js TLS 1.3 PSK client: it sends its first argument's line, prints
// the protocol, the suite and the answer.
const nodeClient = `
const tls = require('tls');
const [host, port, identity, keyHex, ciphers, line] = process.argv.slice(1);
const s = tls.connect({
  host, port: Number(port), minVersion: 'TLSv1.3', ciphers,
  pskCallback: () => ({ psk: Buffer.from(keyHex, 'hex'), identity }),
  checkServerIdentity: () => undefined,
}, () => {
  console.log('PROTOCOL ' + s.getProtocol() + ' ' + s.getCipher().standardName);
  s.write(line + '\n');
  s.end();
});
s.on('data', d => process.stdout.write('GOT ' + d.toString()));
s.on('error', e => { console.log('ERROR ' + e.message); process.exit(1); });
`

// TestNodeClientTLS13 runs Node's tls.connect with pskCallback and minVersion TLSv1.3.
func TestNodeClientTLS13(t *testing.T) {
	node := needNode(t)
	for _, tt := range []struct {
		ciphers string
		want    uint16
		key     []byte
		reason  string
	}{
		{"TLS_AES_128_GCM_SHA256", TLS_AES_128_GCM_SHA256, testKey, ""},
		{"TLS_CHACHA20_POLY1305_SHA256", TLS_CHACHA20_POLY1305_SHA256, testKey, ""},
		{"TLS_AES_128_CCM_SHA256", TLS_AES_128_CCM_SHA256, testKey, ""},
		{"TLS_AES_128_GCM_SHA256", 0, otherKey, ReasonDecryptError},
	} {
		t.Run(tt.ciphers+"/"+map[bool]string{true: "good key", false: "wrong key"}[tt.reason == ""], func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup}, pongAfterEOF)
			host, port, _ := net.SplitHostPort(srv.addr())
			out, peerErr := runPeer(t, node, nil, "-e", nodeClient, host, port, testIdentity, hex.EncodeToString(tt.key), tt.ciphers, "ping")
			r := srv.result()
			if tt.reason != "" {
				if peerErr == nil || ReasonOf(r.err) != tt.reason || !strings.Contains(out, "decrypt") {
					t.Errorf("node: %v %s; server: %v, want %s", peerErr, out, r.err, tt.reason)
				}
				return
			}
			if r.err != nil || peerErr != nil {
				t.Fatalf("server: %v; node (%v):\n%s", r.err, peerErr, out)
			}
			if !strings.Contains(out, "PROTOCOL TLSv1.3 "+CipherSuiteName(tt.want)) || !strings.Contains(out, "GOT pong ping") {
				t.Errorf("node output:\n%s", out)
			}
			if r.state.Version != VersionTLS13 || r.state.CipherSuite != tt.want {
				t.Errorf("server state %+v", r.state)
			}
		})
	}
}

// needNode returns the node binary (Node 18 or later has TLS 1.3 PSK).
func needNode(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed; install Node.js 20 with: sudo sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs'")
	}
	return p
}

// TestOpenSSLServerTLS13 runs the package's TLS 1.3 client against `openssl s_server -psk
// -rev`, for every TLS 1.3 suite and both groups: the client used by the tests and the
// load tool agrees with an independent server.
func TestOpenSSLServerTLS13(t *testing.T) {
	openssl := needPeer(t, "openssl")
	for _, s := range tls13Suites {
		for _, g := range tls13Groups {
			t.Run(s.name+"/"+groupName(g), func(t *testing.T) {
				port := startPeerServer(t, "ACCEPT", func(ctx context.Context, port string) *exec.Cmd {
					return exec.CommandContext(ctx, openssl, "s_server", "-accept", "127.0.0.1:"+port, "-nocert",
						"-psk", hex.EncodeToString(testKey), "-psk_identity", testIdentity, "-rev", "-naccept", "1",
						"-tls1_3", "-ciphersuites", s.name)
				})
				cfg := client13(tls13ClientKnobs{})
				cfg.Suites, cfg.groups = []uint16{s.id}, []uint16{g}
				c, err := dialClient(t, net.JoinHostPort("127.0.0.1", port), cfg)
				if err != nil {
					t.Fatalf("handshake with s_server: %v", err)
				}
				if _, err := io.WriteString(c, "hello, openssl\n"); err != nil {
					t.Fatal(err)
				}
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != "lssnepo ,olleh\n" {
					t.Fatalf("s_server answered %q, %v", line, err)
				}
				if st := c.ConnectionState(); st.Version != VersionTLS13 || st.CipherSuite != s.id {
					t.Errorf("state %+v", st)
				}
			})
		}
	}
}
