package tlspsk

import (
	"encoding/hex"
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
