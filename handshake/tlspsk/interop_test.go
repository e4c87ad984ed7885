package tlspsk

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Which suite each real peer on Debian 12 can be made to use (checked with
// `openssl ciphers -v PSK` for OpenSSL 3.0 and `gnutls-cli -l` for GnuTLS 3.7.9). Every
// cell marked yes is a test below, in both directions (their client against our server,
// our client against their server):
//
//	suite                                         openssl   gnutls    mosquitto_pub (OpenSSL)
//	TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256   yes       yes¹      yes (its default)
//	TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256         no        no        no   ← no Debian peer
//	TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256         yes       yes¹
//	TLS_PSK_WITH_CHACHA20_POLY1305_SHA256         yes       yes
//	TLS_PSK_WITH_AES_128_GCM_SHA256               yes       yes
//	TLS_PSK_WITH_AES_256_GCM_SHA384               yes       yes
//	TLS_PSK_WITH_AES_128_CCM                      yes       yes
//	TLS_PSK_WITH_AES_128_CCM_8                    yes       yes       yes (--ciphers)
//	TLS_PSK_WITH_AES_128_CBC_SHA256               yes       yes
//
// ¹ gnutls-cli 3.7.9 segfaults on any ECDHE-PSK handshake when TLS 1.3 is switched off in
// its priority string, even against gnutls-serv; with TLS 1.3 still offered it falls back
// to TLS 1.2 cleanly, so its ECDHE_PSK cases keep TLS 1.3 on.
//
// TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256 (RFC 8442) is implemented by no Debian peer. Its
// parts — the ECDHE_PSK key exchange, AES-128-GCM records, the SHA-256 PRF — are each
// proven against peers through the other suites; the whole is proven by the package's own
// client (TestSuitesInProcess) and the independent vectors (TestRecordKnownAnswers).

// opensslNames maps OpenSSL's suite names to IANA ids.
var opensslNames = map[string]uint16{
	"ECDHE-PSK-CHACHA20-POLY1305": TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-PSK-AES128-CBC-SHA256": TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
	"PSK-CHACHA20-POLY1305":       TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
	"PSK-AES128-GCM-SHA256":       TLS_PSK_WITH_AES_128_GCM_SHA256,
	"PSK-AES256-GCM-SHA384":       TLS_PSK_WITH_AES_256_GCM_SHA384,
	"PSK-AES128-CCM":              TLS_PSK_WITH_AES_128_CCM,
	"PSK-AES128-CCM8":             TLS_PSK_WITH_AES_128_CCM_8,
	"PSK-AES128-CBC-SHA256":       TLS_PSK_WITH_AES_128_CBC_SHA256,
}

func opensslName(id uint16) string {
	for n, v := range opensslNames {
		if v == id {
			return n
		}
	}
	return ""
}

// runPeer runs a peer binary with stdin, returning its combined output.
func runPeer(t *testing.T, bin string, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not finish in 20 s:\n%s", bin, strings.Join(args, " "), out)
	}
	return string(out), err
}

// pingPong answers the peer's first line with "pong <line>", sends close_notify, and reads
// until the peer's close_notify (io.EOF; a bare TCP close would be an error).
func pingPong(c *Conn) ([]byte, error) {
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("reading the ping: %w", err)
	}
	if _, err := fmt.Fprintf(c, "pong %s", line); err != nil {
		return nil, err
	}
	if err := c.CloseWrite(); err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, fmt.Errorf("waiting for the peer's close_notify: %w", err)
	}
	return []byte(line), nil
}

// pongAfterEOF reads until the peer's close_notify, then answers "pong <data>" and closes
// with its own close_notify. gnutls-cli sends close_notify when its stdin ends but does not
// answer one, so this is the order that proves close_notify both ways with it.
func pongAfterEOF(c *Conn) ([]byte, error) {
	data, err := io.ReadAll(c)
	if err != nil {
		return data, fmt.Errorf("reading until the peer's close_notify: %w", err)
	}
	if _, err := fmt.Fprintf(c, "pong %s", data); err != nil {
		return data, err
	}
	return data, c.Close()
}

var opensslCipherLine = regexp.MustCompile(`New, (\S+), Cipher is (\S+)`)

// TestOpenSSLClient runs `openssl s_client -psk` against the server.
func TestOpenSSLClient(t *testing.T) {
	openssl := needPeer(t, "openssl")
	keyHex := hex.EncodeToString(testKey)
	type tc struct {
		name     string
		args     []string
		identity string
		key      string
		want     uint16 // negotiated suite; 0 when the handshake must fail
		reason   string // server's Reason when it fails
		peerSays string // s_client's output when it fails
		wantSNI  string
		noPSK    bool // a certificate-only s_client
		max12    bool // against a listener capped at TLS 1.2 (MaxVersion)
	}
	tests := []tc{
		{name: "TLS 1.2 default list", args: []string{"-tls1_2"}, want: TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256},
		// Against a listener capped at TLS 1.2; the TLS 1.3 answers are in TestOpenSSLClientTLS13.
		{name: "TLS 1.3 offered first, clean 1.2 answer", max12: true, want: TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256},
		{name: "TLS 1.3 offered with a pinned 1.2 suite", max12: true, args: []string{"-cipher", "PSK-AES128-CCM8"}, want: TLS_PSK_WITH_AES_128_CCM_8},
		{name: "ECDHE over P-256", args: []string{"-tls1_2", "-cipher", "ECDHE-PSK-CHACHA20-POLY1305", "-curves", "P-256"}, want: TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256},
		{name: "SNI", args: []string{"-tls1_2", "-servername", "broker.example"}, want: TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, wantSNI: "broker.example"},
		{name: "wrong key", args: []string{"-tls1_2"}, key: hex.EncodeToString(otherKey), reason: ReasonDecryptError, peerSays: "alert decrypt error"},
		{name: "unknown identity", args: []string{"-tls1_2"}, identity: "device-2", reason: ReasonUnknownPSKIdentity, peerSays: "alert decrypt error"},
		{name: "TLS 1.1 only", args: []string{"-tls1_1", "-cipher", "PSK@SECLEVEL=0"}, reason: ReasonProtocolVersion, peerSays: "alert protocol version"},
		{name: "TLS 1.3 only", max12: true, args: []string{"-tls1_3"}, reason: ReasonProtocolVersion, peerSays: "alert protocol version"},
		{name: "certificate client", noPSK: true, reason: ReasonNoSharedCipher, peerSays: "alert handshake failure"},
	}
	for _, name := range slices.Sorted(maps.Keys(opensslNames)) {
		id := opensslNames[name]
		tests = append(tests, tc{name: "pinned " + name, args: []string{"-tls1_2", "-cipher", name}, want: id})
		if !suiteByID(id).aead() {
			tests = append(tests, tc{name: "pinned " + name + " -no_etm", args: []string{"-tls1_2", "-cipher", name, "-no_etm"},
				reason: ReasonCBCWithoutETM, peerSays: "alert handshake failure"})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &Config{Lookup: testLookup, Hint: "mqtls"}
			if tt.max12 {
				cfg.MaxVersion = VersionTLS12
			}
			srv := startServer(t, cfg, pingPong)
			identity, key := testIdentity, keyHex
			if tt.identity != "" {
				identity = tt.identity
			}
			if tt.key != "" {
				key = tt.key
			}
			args := []string{"s_client", "-connect", srv.addr(), "-ign_eof"}
			if !tt.noPSK {
				args = append(args, "-psk", key, "-psk_identity", identity)
			}
			args = append(args, tt.args...)
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
			m := opensslCipherLine.FindStringSubmatch(out)
			if m == nil || opensslNames[m[2]] != tt.want || !strings.Contains(out, "Protocol  : TLSv1.2") {
				t.Errorf("s_client did not report TLS 1.2 with %s:\n%s", opensslName(tt.want), out)
			}
			if r.state.CipherSuite != tt.want || r.state.Identity != testIdentity || r.state.Version != VersionTLS12 {
				t.Errorf("server state %+v, want suite %s", r.state, CipherSuiteName(tt.want))
			}
			if !r.state.ExtendedMasterSecret {
				t.Error("extended master secret not negotiated with OpenSSL")
			}
			if r.state.ServerName != tt.wantSNI {
				t.Errorf("ServerName %q, want %q", r.state.ServerName, tt.wantSNI)
			}
			if string(r.data) != "ping\n" || !strings.Contains(out, "pong ping") {
				t.Errorf("data did not make the round trip: server got %q; s_client:\n%s", r.data, out)
			}
		})
	}
}

// TestOpenSSLClientRenegotiation: s_client's "R" command renegotiates; the server answers
// no_renegotiation and reports renegotiation_refused.
func TestOpenSSLClientRenegotiation(t *testing.T) {
	openssl := needPeer(t, "openssl")
	srv := startServer(t, &Config{Lookup: testLookup}, func(c *Conn) ([]byte, error) {
		_, err := io.Copy(io.Discard, c)
		return nil, err
	})
	out, _ := runPeer(t, openssl, strings.NewReader("R\n"), "s_client", "-connect", srv.addr(), "-tls1_2",
		"-psk", hex.EncodeToString(testKey), "-psk_identity", testIdentity)
	r := srv.result()
	if ReasonOf(r.err) != ReasonRenegotiationRefused {
		t.Fatalf("server: %v, want renegotiation_refused; s_client:\n%s", r.err, out)
	}
	if !strings.Contains(out, "RENEGOTIATING") || !strings.Contains(strings.ToLower(out), "no renegotiation") {
		t.Errorf("s_client did not see its renegotiation refused:\n%s", out)
	}
}

// gnutlsDescription matches "- Description: (TLS1.2-X.509)-(PSK)-(AES-128-CCM-8)".
var gnutlsDescription = regexp.MustCompile(`Description: \((TLS[0-9.]+)-[^)]*\)-\(([^)]+)\)-\(([^)]+)\)(?:-\(([^)]+)\))?`)

// TestGnuTLSClient runs `gnutls-cli --pskusername --pskkey` against a server capped at
// TLS 1.2 (GnuTLS offers TLS 1.3 with the PSK first: TestGnuTLSClientTLS13 has those).
func TestGnuTLSClient(t *testing.T) {
	gnutls := needPeer(t, "gnutls-cli")
	const only12 = "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:-CIPHER-ALL:-MAC-ALL"
	tests := []struct {
		name     string
		priority string
		key      []byte
		want     uint16
		wantDesc string // kx-cipher[-mac] as gnutls-cli prints it
		reason   string
		peerSays string
	}{
		{"default, TLS 1.3 offered first", "NORMAL:+ECDHE-PSK:+PSK", testKey, TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, "ECDHE-X25519-CHACHA20-POLY1305", "", ""},
		// gnutls-cli 3.7.9 segfaults on ECDHE-PSK when TLS 1.3 is switched off (also against
		// gnutls-serv), so ECDHE_PSK is pinned with TLS 1.3 still offered.
		{"ECDHE_PSK ChaCha20 P-256", "NORMAL:-KX-ALL:+ECDHE-PSK:-GROUP-ALL:+GROUP-SECP256R1", testKey, TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, "ECDHE-SECP256R1-CHACHA20-POLY1305", "", ""},
		{"ECDHE_PSK AES-128-CBC-SHA256 (EtM)", "NORMAL:-KX-ALL:+ECDHE-PSK:-CIPHER-ALL:+AES-128-CBC:+AES-128-GCM:-MAC-ALL:+SHA256:+AEAD", testKey, TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256, "ECDHE-X25519-AES-128-CBC-SHA256", "", ""},
		{"PSK ChaCha20", only12 + ":+PSK:+CHACHA20-POLY1305:+AEAD", testKey, TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, "PSK-CHACHA20-POLY1305", "", ""},
		{"PSK AES-128-GCM", only12 + ":+PSK:+AES-128-GCM:+AEAD", testKey, TLS_PSK_WITH_AES_128_GCM_SHA256, "PSK-AES-128-GCM", "", ""},
		{"PSK AES-256-GCM", only12 + ":+PSK:+AES-256-GCM:+AEAD", testKey, TLS_PSK_WITH_AES_256_GCM_SHA384, "PSK-AES-256-GCM", "", ""},
		{"PSK AES-128-CCM", only12 + ":+PSK:+AES-128-CCM:+AEAD", testKey, TLS_PSK_WITH_AES_128_CCM, "PSK-AES-128-CCM", "", ""},
		{"PSK AES-128-CCM-8", only12 + ":+PSK:+AES-128-CCM-8:+AEAD", testKey, TLS_PSK_WITH_AES_128_CCM_8, "PSK-AES-128-CCM-8", "", ""},
		{"PSK AES-128-CBC-SHA256 (EtM)", only12 + ":+PSK:+AES-128-CBC:+SHA256", testKey, TLS_PSK_WITH_AES_128_CBC_SHA256, "PSK-AES-128-CBC-SHA256", "", ""},
		{"PSK AES-128-CBC-SHA256 without EtM", only12 + ":+PSK:+AES-128-CBC:+SHA256:%NO_ETM", testKey, 0, "", ReasonCBCWithoutETM, "Handshake failed"},
		{"wrong key", "NORMAL:+ECDHE-PSK:+PSK", otherKey, 0, "", ReasonDecryptError, "Decrypt error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup, Hint: "mqtls", MaxVersion: VersionTLS12}, pongAfterEOF)
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
			m := gnutlsDescription.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no Description line from gnutls-cli:\n%s", out)
			}
			desc := m[2] + "-" + m[3]
			if m[4] != "" && m[4] != "AEAD" {
				desc += "-" + m[4]
			}
			if m[1] != "TLS1.2" || desc != tt.wantDesc {
				t.Errorf("gnutls-cli negotiated %s %s, want TLS1.2 %s", m[1], desc, tt.wantDesc)
			}
			if r.state.CipherSuite != tt.want || r.state.Identity != testIdentity {
				t.Errorf("server state %+v, want suite %s", r.state, CipherSuiteName(tt.want))
			}
			if !strings.Contains(out, "PSK hint 'mqtls'") {
				t.Errorf("gnutls-cli did not see the hint:\n%s", out)
			}
			if string(r.data) != "ping\n" || !strings.Contains(out, "pong ping") {
				t.Errorf("data did not make the round trip: server got %q; gnutls-cli:\n%s", r.data, out)
			}
		})
	}
}

// TestOpenSSLServer runs the package's client against `openssl s_server -psk -rev`, which
// answers every line reversed.
func TestOpenSSLServer(t *testing.T) {
	openssl := needPeer(t, "openssl")
	type tc struct {
		name   string
		args   []string
		offer  []uint16
		etm    bool
		groups []uint16
		want   uint16
		key    []byte
		alert  uint8 // the alert our client must receive when the handshake fails
	}
	var tests []tc
	for _, name := range slices.Sorted(maps.Keys(opensslNames)) {
		id := opensslNames[name]
		tests = append(tests, tc{name: name, args: []string{"-cipher", name}, offer: []uint16{id}, etm: true, want: id})
	}
	tests = append(tests,
		tc{name: "default lists, hint", args: []string{"-psk_hint", "openssl-hint"}, want: TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256},
		tc{name: "ECDHE over P-256", args: []string{"-cipher", "ECDHE-PSK-CHACHA20-POLY1305", "-groups", "P-256"}, offer: []uint16{TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256}, groups: []uint16{groupP256}, want: TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256},
		tc{name: "wrong key", key: otherKey, alert: 20}, // OpenSSL answers a Finished it cannot decrypt with bad_record_mac
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			port := startPeerServer(t, "ACCEPT", func(ctx context.Context, port string) *exec.Cmd {
				args := append([]string{"s_server", "-accept", "127.0.0.1:" + port, "-nocert", "-psk", hex.EncodeToString(testKey),
					"-psk_identity", testIdentity, "-rev", "-naccept", "1"}, tt.args...)
				cmd := exec.CommandContext(ctx, openssl, args...)
				stderr.Reset()
				cmd.Stderr = &stderr
				return cmd
			})

			key := testKey
			if tt.key != nil {
				key = tt.key
			}
			c, err := dialClient(t, net.JoinHostPort("127.0.0.1", port), &ClientConfig{Identity: testIdentity, Key: key, Suites: tt.offer, OfferETM: tt.etm, groups: tt.groups})
			if tt.alert != 0 {
				if ce := asError(t, err); !ce.Remote || ce.Alert != tt.alert {
					t.Fatalf("client error %v, want alert %s from s_server", err, AlertName(tt.alert))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake with s_server: %v\n%s", err, stderr.String())
			}
			if _, err := io.WriteString(c, "hello, openssl\n"); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "lssnepo ,olleh\n" {
				t.Fatalf("s_server answered %q, %v", line, err)
			}
			st := c.ConnectionState()
			if st.CipherSuite != tt.want || !st.ExtendedMasterSecret {
				t.Errorf("state %+v, want suite %s with EMS", st, CipherSuiteName(tt.want))
			}
			if tt.want == TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256 || tt.want == TLS_PSK_WITH_AES_128_CBC_SHA256 {
				if !st.EncryptThenMAC {
					t.Error("CBC suite without encrypt_then_mac")
				}
			}
			if len(tt.args) > 0 && tt.args[0] == "-psk_hint" && st.Hint != "openssl-hint" {
				t.Errorf("hint %q, want openssl-hint", st.Hint)
			}
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestGnuTLSServer runs the package's client against `gnutls-serv --echo` with a PSK file,
// for every suite GnuTLS knows.
func TestGnuTLSServer(t *testing.T) {
	needPeer(t, "gnutls-cli") // gnutls-serv ships in the same package
	serv := needPeer(t, "gnutls-serv")
	pskFile := filepath.Join(t.TempDir(), "psk.txt")
	if err := os.WriteFile(pskFile, []byte(testIdentity+":"+hex.EncodeToString(testKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	suites := []uint16{
		TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
		TLS_PSK_WITH_CHACHA20_POLY1305_SHA256, TLS_PSK_WITH_AES_128_GCM_SHA256, TLS_PSK_WITH_AES_256_GCM_SHA384,
		TLS_PSK_WITH_AES_128_CCM, TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CBC_SHA256,
	}
	for _, id := range suites {
		t.Run(CipherSuiteName(id), func(t *testing.T) {
			// gnutls-serv binds IPv4 and IPv6 in turn; the IPv4 socket is the one dialled.
			port := startPeerServer(t, "IPv4 0.0.0.0 port", func(ctx context.Context, port string) *exec.Cmd {
				cmd := exec.CommandContext(ctx, serv, "--echo", "--pskpasswd", pskFile, "--priority", "NORMAL:+ECDHE-PSK:+PSK:+AES-128-CCM:+AES-128-CCM-8:+SHA256", "-p", port)
				cmd.Stderr = nil // merged into stdout below
				return cmd
			})

			c, err := dialClient(t, net.JoinHostPort("127.0.0.1", port), &ClientConfig{Identity: testIdentity, Key: testKey, Suites: []uint16{id}, OfferETM: true})
			if err != nil {
				t.Fatalf("handshake with gnutls-serv: %v", err)
			}
			if _, err := io.WriteString(c, "hello, gnutls\n"); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "hello, gnutls\n" {
				t.Fatalf("gnutls-serv echoed %q, %v", line, err)
			}
			if st := c.ConnectionState(); st.CipherSuite != id || !st.ExtendedMasterSecret || st.EncryptThenMAC == suiteByID(id).aead() {
				t.Errorf("state %+v, want suite %s with EMS", st, CipherSuiteName(id))
			}
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestMosquittoPubClient: `mosquitto_pub --psk`, the PSK client devices and scripts really
// use, connects, and the server plays just enough of an MQTT 3.1.1 broker (CONNACK) to see
// the CONNECT, the PUBLISH and the DISCONNECT arrive through the PSK session.
func TestMosquittoPubClient(t *testing.T) {
	pub := needPeer(t, "mosquitto_pub")
	for _, tt := range []struct {
		name    string
		args    []string
		max     uint16 // Config.MaxVersion
		want    uint16
		version uint16
	}{
		// mosquitto_pub offers TLS 1.3 with the PSK whatever --tls-version says.
		{"default", nil, 0, TLS_AES_128_GCM_SHA256, VersionTLS13},
		{"default against a TLS 1.2 listener", nil, VersionTLS12, TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, VersionTLS12},
		{"CCM-8 against a TLS 1.2 listener", []string{"--tls-version", "tlsv1.2", "--ciphers", "PSK-AES128-CCM8"}, VersionTLS12, TLS_PSK_WITH_AES_128_CCM_8, VersionTLS12},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, &Config{Lookup: testLookup, MaxVersion: tt.max}, func(c *Conn) ([]byte, error) {
				br := bufio.NewReader(c)
				connect, err := readMQTTPacket(br)
				if err != nil || connect[0] != 0x10 {
					return nil, fmt.Errorf("first packet %x, %v; want CONNECT", connect, err)
				}
				if _, err := c.Write([]byte{0x20, 0x02, 0x00, 0x00}); err != nil { // CONNACK accepted
					return nil, err
				}
				var got []byte
				for {
					p, err := readMQTTPacket(br)
					if err != nil {
						return got, err
					}
					got = append(got, p...)
					if p[0] == 0xE0 { // DISCONNECT
						return got, nil
					}
				}
			})
			host, port, _ := net.SplitHostPort(srv.addr())
			args := append([]string{"-h", host, "-p", port, "--psk", hex.EncodeToString(testKey), "--psk-identity", testIdentity,
				"-i", "dev1", "-t", "sensors/1", "-m", "21.5"}, tt.args...)
			out, err := runPeer(t, pub, nil, args...)
			r := srv.result()
			if err != nil || r.err != nil {
				t.Fatalf("mosquitto_pub: %v %s; server: %v", err, out, r.err)
			}
			if !bytes.Contains(r.data, []byte("sensors/1")) || !bytes.Contains(r.data, []byte("21.5")) {
				t.Errorf("no PUBLISH of 21.5 to sensors/1 in %q", r.data)
			}
			if r.state.CipherSuite != tt.want || r.state.Identity != testIdentity || r.state.Version != tt.version {
				t.Errorf("server state %+v, want %s", r.state, CipherSuiteName(tt.want))
			}
		})
	}
}

// readMQTTPacket reads one MQTT control packet (fixed header, remaining length, body).
func readMQTTPacket(br *bufio.Reader) ([]byte, error) {
	first, err := br.ReadByte()
	if err != nil {
		return nil, err
	}
	pkt := []byte{first}
	n, mult := 0, 1
	for i := 0; i < 4; i++ {
		b, err := br.ReadByte()
		if err != nil {
			return nil, err
		}
		pkt = append(pkt, b)
		n += int(b&0x7f) * mult
		mult *= 128
		if b&0x80 == 0 {
			break
		}
	}
	if n > 1<<16 {
		return nil, fmt.Errorf("MQTT packet of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil, err
	}
	return append(pkt, body...), nil
}

// freePort returns a loopback TCP port that was free a moment ago.
// startPeerServer starts a peer's TLS server on a free port, made by build, and waits for
// the output line that contains ready and says the socket is bound ("...done" for
// gnutls-serv). A port taken between freePort and the peer's bind (other tests run in
// parallel) is retried with another. The server is stopped when t ends.
func startPeerServer(t *testing.T, ready string, build func(ctx context.Context, port string) *exec.Cmd) string {
	t.Helper()
	var out bytes.Buffer
	for range 5 {
		port := freePort(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := build(ctx, port)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if cmd.Stderr == nil {
			cmd.Stderr = cmd.Stdout
		}
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		bound := false
		out.Reset()
		for lines.Scan() {
			line := lines.Text()
			out.WriteString(line + "\n")
			if strings.Contains(line, ready) {
				bound = !strings.Contains(line, "failed")
				break
			}
		}
		go io.Copy(io.Discard, stdout) // drainServerOutput
		if bound {
			t.Cleanup(func() {
				cancel()
				_ = cmd.Wait()
			})
			return port
		}
		cancel()
		_ = cmd.Wait()
	}
	t.Fatalf("the peer server did not bind a port in 5 tries:\n%s", out.String())
	return ""
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
