package handshake_test

import (
	"context"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mqtls/mqtls/handshake"
)

// TestDTLSProtocolVersion: a DTLS 1.0 client (openssl s_client -dtls1, a real peer) is
// named protocol_version. (No shared suite is in TestDTLSRefusals.)
func TestDTLSProtocolVersion(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is missing: apt-get install -y openssl")
	}
	psk := newTestPSK(t)

	t.Run("DTLS 1.0 openssl", func(t *testing.T) {
		// pion refuses a DTLS 1.0 hello with a protocol_version alert before any
		// HelloVerifyRequest, so the address is never proven and no handshake is accepted:
		// the front names it through OnDrop.
		var drops dropCounts
		s := listenDTLSTimeout(t, handshake.DTLSConfig{PSK: psk.server(t), OnDrop: drops.add}, 2*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, openssl, "s_client", "-dtls1", "-connect", s.addr.String(),
			"-psk_identity", "dev-1", "-psk", hex.EncodeToString(psk.key),
			"-cipher", "PSK-AES128-CBC-SHA:@SECLEVEL=0", "-quiet")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("openssl -dtls1 succeeded, want it refused: %s", out)
		}
		if !strings.Contains(string(out), "protocol version") {
			t.Errorf("openssl did not get a protocol_version alert: %s", out)
		}
		if got := drops.get(handshake.DropProtocolVersion); got < 1 {
			t.Errorf("OnDrop(%s) %d times, want at least 1; openssl: %s", handshake.DropProtocolVersion, got, out)
		}
		select {
		case r := <-s.results:
			t.Errorf("a DTLS 1.0 client got a session (err %v)", r.err)
		default:
		}
	})
}
